#!/usr/bin/env bash
# Can a model learn the synthetic set's far-back signal, and does a window-only model miss it?
# (issue 11, item 3).  CPU, short histories (L = 256) so that a run takes minutes: GR's HSTU
# (full causal), SLA window only (k1 = 64, k2 = 0) and SLA window + prefix (k2 = 48: the 5
# contextual tokens and the 32 early events), one layer each, D = 128, 2 heads of 64, batch 32,
# GR's dlrm_v3 optimizers, eval on the 1000 unseen users.  Prints each run's eval NE beside the
# generator's Bayes floors (ultra_hstu_plugin.data.synthetic.signal_floors).
# SIGNAL (propensity | cluster, default propensity) and CLUSTERS (default 4) pick the generator's
# early_signal and num_clusters; MODELS (default "hstu_full sla_window sla_prefix") which runs
# to make, all at once.  HIST (default 256) is the history length (the signal stays in its first
# 32 events; the SLA prefix keeps k2 = 48).
# Usage (repository root): [SIGNAL=..] [CLUSTERS=..] bash benchmarks/synthetic_learnability.sh [STEPS] [SEED] [OUT]
set -uo pipefail
steps=${1:-1000}
seed=${2:-0}
out=${3:-/tmp/synthetic_learnability}
data=$out/data
signal=${SIGNAL:-propensity}
clusters=${CLUSTERS:-4}
models=${MODELS:-hstu_full sla_window sla_prefix}
hist=${HIST:-256}
len=$((hist + 10))  # + 10 candidates
mkdir -p "$out"
python -m ultra_hstu_plugin.cli data prepare synthetic-long --out "$data" --set num_users=4000 \
  --set min_len=$len --set max_len=$len --set num_clusters="$clusters" --set early_signal="$signal" \
  > /dev/null
widths='{"hstu_num_heads": 2, "hstu_attn_linear_dim": 64, "hstu_attn_qk_dim": 64, "hstu_embedding_table_dim": 64, "hstu_preprocessor_hidden_dim": 128, "hstu_transducer_embedding_dim": 128, "hstu_attn_num_layers": 1, "max_seq_len": '$((len + 16))'}'
sla() {
  printf '%s\n' 'make_ultra_model.encoder = "ultra_hstu"' \
    'make_ultra_model.merged_item_action_tokens = False' \
    'make_ultra_model.encoder_config = @ultra_hstu.UltraHSTUEncoderConfig()' \
    'ultra_hstu.UltraHSTUEncoderConfig.k1 = 64' "ultra_hstu.UltraHSTUEncoderConfig.k2 = $1" \
    'ultra_hstu.UltraHSTUEncoderConfig.num_full_layers = 1'
}
declare -A encoder=(
  [hstu_full]='make_ultra_model.encoder = "hstu"'
  [sla_window]="$(sla 0)"
  [sla_prefix]="$(sla 48)"
)
for name in $models; do
  [ -n "${encoder[$name]:-}" ] || { echo "unknown model '$name' (MODELS: ${!encoder[*]})" >&2; exit 2; }
  cat > "$out/$name.gin" <<EOF
import ultra_hstu_plugin.gin
include '$PWD/gin_configs/common/ranking_optimizers.gin'
RunSettings.dataset = "synthetic-long"
RunSettings.batch_size = 32
RunSettings.seed = $seed
RunSettings.output_dir = "$out/$name"
RunSettings.save_checkpoint = False
RunSettings.log_every_steps = 50
make_dataloaders.data_dir = "$data"
make_dataloaders.progress = False
make_dataloaders.num_workers = 0
train_loop.num_epochs = 1000
train_loop.num_batches = $steps
train_loop.metric_log_frequency = 1
train_loop.output_trace = False
eval_loop.output_trace = False
make_ultra_model.hstu_overrides = $widths
${encoder[$name]}
EOF
  OMP_NUM_THREADS=1 python -m ultra_hstu_plugin.cli train --gin "$out/$name.gin" --device cpu \
    --mode train-eval > "$out/$name.log" 2>&1 &
done
wait
python - "$out" "$clusters" "$signal" "$len" $models <<'PY'
import json, sys
from ultra_hstu_plugin.data.synthetic import SyntheticConfig, signal_floors, synthetic_arrays

out = sys.argv[1]
cfg = SyntheticConfig(
    num_users=4000, min_len=int(sys.argv[4]), max_len=int(sys.argv[4]), num_clusters=int(sys.argv[2]), early_signal=sys.argv[3]
)
floors = signal_floors(synthetic_arrays(cfg), cfg)
print(f"Bayes floors (NE rating): full {floors.full:.4f}, window-only {floors.window_only:.4f}")
print("| run | eval NE rating | eval NE love | train NE rating (lifetime) |\n|---|---|---|---|")
for name in sys.argv[5:]:
    try:
        m = json.load(open(f"{out}/{name}/metrics.json"))
    except FileNotFoundError:
        print(f"| {name} | failed (see {out}/{name}.log) | | |")
        continue
    ev, tr = m["eval"], m["train"]
    print(f"| {name} | {ev['metric/lifetime_ne/rating']:.4f} | {ev['metric/lifetime_ne/love']:.4f} "
          f"| {tr['metric/lifetime_ne/rating']:.4f} |")
PY
