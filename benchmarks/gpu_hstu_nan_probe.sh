#!/usr/bin/env bash
# Which setting makes GR's HSTU baseline NaN on the GPU (issue 11's quality runs: every hstu run
# on MovieLens-100k stopped at step 3 with a NaN loss, bf16, HammerKernel.TRITON, the autotuning
# bound at 4; the ULTRA runs beside them trained).  One variable changed per run, all in parallel:
#   hstu_bound4   the failing quality-bench run (bf16, TRITON, autotune bound 4)
#   hstu_full     GR's full autotuning (bound None)
#   hstu_fp32     bf16_training off
#   hstu_pytorch  HammerKernel.PYTORCH (GR's PyTorch ops on CUDA, no Triton)
#   ultra_bound4  the ULTRA control
# Writes $OUT/nan_probe.jsonl (one row a run: rc, the error line) and prints a table.
# Usage (repository root, GPU machine, the GPU stack installed, data/ and .gr carried):
#   bash benchmarks/gpu_hstu_nan_probe.sh [STEPS]
set -uo pipefail
steps=${1:-40}
device=${DEVICE:-cuda}  # DEVICE=cpu: a check of the script itself
out=${OUT:-/tmp/out}
mkdir -p "$out/nan_probe"
[ -e ultra_hstu_plugin/kernels ] || ln -s ../kernels ultra_hstu_plugin/kernels
export PYTHONPATH=${PYTHONPATH:-$PWD:$PWD/.gr} PYTHONUNBUFFERED=1 TRITON_CACHE_AUTOTUNING=1
export OMP_NUM_THREADS=2
hstu='make_ultra_model.encoder = "hstu"
make_ultra_model.hstu_overrides = {"hstu_num_heads": 2, "hstu_attn_linear_dim": 64, "hstu_attn_qk_dim": 64, "hstu_embedding_table_dim": 64, "hstu_preprocessor_hidden_dim": 128, "hstu_transducer_embedding_dim": 128, "hstu_attn_num_layers": 1}'
ultra='make_ultra_model.encoder = "ultra_hstu"
make_ultra_model.hstu_overrides = {"hstu_num_heads": 2, "hstu_attn_linear_dim": 64, "hstu_attn_qk_dim": 64, "hstu_embedding_table_dim": 64, "hstu_preprocessor_hidden_dim": 128, "hstu_transducer_embedding_dim": 128, "hstu_attn_num_layers": 1}
make_ultra_model.merged_item_action_tokens = True
make_ultra_model.encoder_config = @ultra_hstu.UltraHSTUEncoderConfig()
ultra_hstu.UltraHSTUEncoderConfig.k1 = 64
ultra_hstu.UltraHSTUEncoderConfig.k2 = 16
ultra_hstu.UltraHSTUEncoderConfig.num_full_layers = 1'
declare -A extra=(
  [hstu_bound4]="$hstu
RunSettings.autotune_max_configs = 4
make_ultra_model.bf16_training = True"
  [hstu_full]="$hstu
RunSettings.autotune_max_configs = None
make_ultra_model.bf16_training = True"
  [hstu_fp32]="$hstu
RunSettings.autotune_max_configs = 4
make_ultra_model.bf16_training = False"
  [hstu_pytorch]="$hstu
RunSettings.hammer_kernel = 'PYTORCH'
make_ultra_model.bf16_training = True"
  [ultra_bound4]="$ultra
RunSettings.autotune_max_configs = 4
make_ultra_model.bf16_training = True"
)
for name in "${!extra[@]}"; do
  dir=/tmp/nan_probe/$name
  rm -rf "$dir" && mkdir -p "$dir"
  cat > "$dir/run.gin" <<EOF
import ultra_hstu_plugin.gin
include '$PWD/gin_configs/common/ranking_optimizers.gin'
RunSettings.dataset = "movielens-100k"
RunSettings.batch_size = 32
RunSettings.seed = 2
RunSettings.output_dir = "$dir"
RunSettings.save_checkpoint = False
RunSettings.log_every_steps = 5
make_dataloaders.data_dir = "$PWD/data"
make_dataloaders.progress = False
make_dataloaders.num_workers = 0
train_loop.num_epochs = 1000  # num_batches ends the run
train_loop.num_batches = $steps
train_loop.metric_log_frequency = 1
train_loop.output_trace = False
${extra[$name]}
EOF
  ( TRITON_CACHE_DIR=/tmp/nan_probe/triton_$name timeout "${PROBE_TIMEOUT:-400}" python -m ultra_hstu_plugin.cli \
      train --gin "$dir/run.gin" --device "$device" --mode train > "$out/nan_probe/$name.log" 2>&1
    echo $? > "$dir/rc" ) &
done
wait
python - "$out" "${!extra[@]}" <<'PY'
import json, sys
out, names = sys.argv[1], sorted(sys.argv[2:])
rows = []
for name in names:
    rc = int(open(f"/tmp/nan_probe/{name}/rc").read())
    log = open(f"{out}/nan_probe/{name}.log").read().splitlines()
    err = next((line for line in log if "error:" in line), "")
    done = next((line.split(": ", 1)[-1] for line in log if "training steps:" in line), "")
    rows.append({"run": name, "rc": rc, "error": err, "done": done})
with open(f"{out}/nan_probe.jsonl", "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
print("| run | rc | outcome |\n|---|---|---|")
for r in rows:
    print(f"| {r['run']} | {r['rc']} | {r['error'] or r['done']} |")
PY
