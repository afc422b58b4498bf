#!/usr/bin/env bash
# The kernel benchmarks and GPU kernel tests in one device call (torch + triton only, plus a GR
# checkout in .gr for GR's Triton attention and layer code).  Rows go to $OUT as measured.
#   part 1: GPU kernel tests, fp8_gemm (with the variant table), int4_embedding
#   part 2: sla_attention, layer (D = 512 and 1024)
# Usage (from the repository root, on the GPU machine): bash benchmarks/gpu_kernels.sh 1|2
set -uo pipefail
part=${1:?part 1 or 2}
out=${OUT:-/tmp/out}
mkdir -p "$out"
# Not pip-installed there: make ultra_hstu_plugin.kernels resolve to kernels/ as an install does.
[ -e ultra_hstu_plugin/kernels ] || ln -s ../kernels ultra_hstu_plugin/kernels
export PYTHONPATH=$PWD:$PWD/.gr${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv
t0=$(date +%s)
if [ "$part" = 1 ]; then
  python -m pytest -q -p no:cacheprovider tests/kernels 2>&1 | tail -15 | tee "$out/kernel_tests.txt"
  python -m ultra_hstu_plugin.bench.fp8_gemm --out "$out/fp8_gemm" --variant-table 2>&1 | tail -40
  python -m ultra_hstu_plugin.bench.int4_embedding --gpu-only --out "$out/int4" 2>&1 | tail -20
else
  python -m ultra_hstu_plugin.bench.sla_attention --out "$out/sla" --gr-path .gr --time-budget 300 2>&1 | tail -40
  python -m ultra_hstu_plugin.bench.layer --out "$out/layer" --gr-path .gr --rounds 5 2>&1 | tail -15
fi
# At most 8 files come back: keep the .json (it holds every row) where a run finished.
for f in $(find "$out" -name '*.jsonl'); do [ -e "${f%l}" ] && rm "$f"; done
echo "part $part took $(( $(date +%s) - t0 )) s"
