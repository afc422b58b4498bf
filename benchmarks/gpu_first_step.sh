#!/usr/bin/env bash
# Time to first training step on the GPU, cold and warm (issue 11: <= 60 s on an H200).
# Cold: an empty Triton cache (TRITON_CACHE_DIR), so every kernel compiles and autotunes
# in the first step; warm: the same run again with the cache the cold run filled.
# Writes $OUT/first_step_<N>.json and prints a table.  Needs the GPU stack (../shared/gpu-stack)
# and MovieLens-100k prepared in data/ (carry it).
# AUTOTUNE_MAX_CONFIGS (default 4, RunSettings' default; "None" for GR's full search) bounds
# the configs every Triton autotuner tries (ultra_hstu_plugin/autotune.py); AUTOTUNE_TABLE
# (default "auto": the committed table of this GPU; "None": none; or a path) gives recorded
# shapes their known config; AUTOTUNE_RECORD=PATH merges the cold run's choices into PATH;
# PHASES (default "cold warm") picks the runs.
# Usage (repository root, GPU machine): [AUTOTUNE_MAX_CONFIGS=N] bash benchmarks/gpu_first_step.sh [GIN]
set -uo pipefail
gin_file=${1:-gin_configs/ml100k_smoke_cpu.gin}
max_configs=${AUTOTUNE_MAX_CONFIGS:-4}
table=${AUTOTUNE_TABLE:-auto}
[ "$table" = None ] || table="'$table'"
phases=${PHASES:-cold warm}
out=${OUT:-/tmp/out}
mkdir -p "$out"
[ -e ultra_hstu_plugin/kernels ] || ln -s ../kernels ultra_hstu_plugin/kernels
export PYTHONPATH=${PYTHONPATH:-$PWD:$PWD/.gr} PYTHONUNBUFFERED=1 TRITON_CACHE_AUTOTUNING=1
# Triton prints each autotuning's duration: the table below sums them per kernel (where the
# cold first step goes); a kernel left with one config is not benchmarked and prints nothing.
export TRITON_PRINT_AUTOTUNING=1
cache=$(mktemp -d /tmp/triton_cold.XXXX)
for phase in $phases; do
  rm -rf "/tmp/first_step_$phase"
  record=()
  [ "$phase" = cold ] && [ -n "${AUTOTUNE_RECORD:-}" ] \
    && record=(--gin-param "RunSettings.autotune_record='$AUTOTUNE_RECORD'")
  t0=$(date +%s.%N)
  TRITON_CACHE_DIR=$cache python -m ultra_hstu_plugin.cli train --gin "$gin_file" --device cuda \
    --mode train --gin-param "make_dataloaders.data_dir='data'" \
    --gin-param "RunSettings.output_dir='/tmp/first_step_$phase'" \
    --gin-param "RunSettings.autotune_table=$table" "${record[@]}" \
    --gin-param "RunSettings.autotune_max_configs=$max_configs" > "$out/first_step_$phase.log" 2>&1
  rc=$?
  echo "$t0 $(date +%s.%N)" > "/tmp/first_step_$phase.wall"
  echo "$phase: rc=$rc"
done
python - "$out" "$gin_file" "$max_configs" "$table" "$phases" <<'PY'
import json, re, subprocess, sys
out, gin_file, max_configs, table, phases = sys.argv[1:6]
table = table.strip("'")
phases = phases.split()
rows = []
for phase in phases:
    try:
        m = json.load(open(f"/tmp/first_step_{phase}/metrics.json"))
    except FileNotFoundError:
        rows.append({"phase": phase, "error": f"no metrics.json (see first_step_{phase}.log)"})
        continue
    t0, t1 = map(float, open(f"/tmp/first_step_{phase}.wall").read().split())
    wall = t1 - t0
    rows.append({"phase": phase, "process_wall_s": round(wall, 1), **{k: m.get(k) for k in ("first_step_seconds", "steps_per_second", "train_steps", "autotune")}})
meta = {
    "device": subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip(),
    "gin": gin_file,
    "command": f"AUTOTUNE_MAX_CONFIGS={max_configs} AUTOTUNE_TABLE={table} PHASES='{' '.join(phases)}' bash benchmarks/gpu_first_step.sh {gin_file}",
    "autotune_max_configs": max_configs,
    "autotune_table": table,
    "target": "first training step <= 60 s (cold Triton cache)",
}
# "Triton autotuning for function NAME, with key as ..., finished after S s, best config ..."
tuned = {}
for phase in phases:
    text = open(f"{out}/first_step_{phase}.log", errors="replace").read()
    for fn, secs in re.findall(r"autotuning for function (\w+),.*?finished after ([0-9.]+)s", text, re.S):
        n, t = tuned.setdefault(phase, {}).get(fn, (0, 0.0))
        tuned[phase][fn] = (n + 1, t + float(secs))
for r in rows:
    per_fn = tuned.get(r["phase"], {})
    r["autotune_s"] = round(sum(t for _, t in per_fn.values()), 1)
    r["autotunings"] = sum(n for n, _ in per_fn.values())
    r["autotune_by_kernel"] = {k: [n, round(t, 1)] for k, (n, t) in sorted(per_fn.items(), key=lambda kv: -kv[1][1])}
tag = max_configs + ("" if table == "None" else "_table")
json.dump({"meta": meta, "rows": rows}, open(f"{out}/first_step_{tag}.json", "w"), indent=1)
print("| phase | first step s | steps/s | steps | whole process s | autotuning s (count) |\n|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['phase']} | {r.get('first_step_seconds')} | {r.get('steps_per_second')} | {r.get('train_steps', r.get('error'))} | {r.get('process_wall_s')} | {r.get('autotune_s')} ({r.get('autotunings')}) |")
for r in rows:
    print(f"{r['phase']}: {r.get('autotune')}")
    for k, (n, t) in list(r.get("autotune_by_kernel", {}).items())[:12]:
        print(f"{r['phase']}: {k}: {n} tunings, {t} s")
PY
