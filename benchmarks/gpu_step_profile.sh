#!/usr/bin/env bash
# Where a quality-bench training step's time goes (issue 11's wall-time target): each config
# trained alone through GR's loop with RunSettings.profile_steps, its step_profile.txt copied to
# $OUT/<config>.txt and printed.  On the GPU machine with the CUDA stack (../shared/gpu-stack),
# data/ and .gr carried; PRESET=cpu-smoke runs it on CPU at toy sizes (to test the script).
# Usage (repository root): [PRESET=gpu] [STEPS=170] [PROFILE="(150, 10)"] \
#   bash benchmarks/gpu_step_profile.sh CONFIG[,CONFIG...]
set -euo pipefail
configs=${1:-hstu_d2,ultra_d2}
preset=${PRESET:-gpu}
steps=${STEPS:-170}
profile=${PROFILE:-(150, 10)}
out=${OUT:-/tmp/out}
work=${WORK:-/tmp/step_profile}
mkdir -p "$out"
[ -e ultra_hstu_plugin/kernels ] || ln -s ../kernels ultra_hstu_plugin/kernels
export PYTHONPATH=${PYTHONPATH:-$PWD:$PWD/.gr} PYTHONUNBUFFERED=1
python -m ultra_hstu_plugin.cli bench quality --preset "$preset" --datasets synthetic --seeds 0 \
  --configs "$configs" --parallel 1 --steps "$steps" --prime-steps 0 \
  --gin-param "RunSettings.profile_steps=$profile" --ml100k-data data \
  --out "$work/bench" --runs "$work/runs" --data-cache "$work/data" > "$out/bench.log" 2>&1 \
  || { tail -20 "$out/bench.log"; exit 1; }
for c in ${configs//,/ }; do
  f="$work/runs/synthetic/$c/seed0/step_profile.txt"
  if [ -f "$f" ]; then cp "$f" "$out/$c.txt"; cp "${f%.txt}.json" "$out/$c.json"; echo "== $c"; head -40 "$f"
  else echo "== $c: no step_profile.txt (see $out/bench.log)"; fi
done
