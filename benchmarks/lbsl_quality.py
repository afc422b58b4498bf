# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Issue 13's quality check: eval NE of LBSL vs no sampling on MovieLens-100k, same steps.

Trains ``gin_configs/ml100k_smoke_cpu.gin`` (no sampling) and ``gin_configs/ml100k_lbsl_cpu.gin``
(the same run with LBSL on the training batches) with the same seed and steps, then compares
the final eval NE (lifetime, over the whole eval split) and reports how much sampling
happened (tokens kept, from the ``load/*`` means in curves.jsonl).  The target of the issue:
LBSL's NE within 0.2% (relative) of no sampling.  A run whose ``metrics.json`` already exists
in ``--runs`` is not trained again.  CPU, about 2 x 8 minutes on two cores.

    python benchmarks/lbsl_quality.py --data data --runs runs/lbsl_quality \\
        --out benchmarks/results [--steps 300] [--seed 0] [--gin-param ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
RUNS = {
    "none": "gin_configs/ml100k_smoke_cpu.gin",
    "lbsl": "gin_configs/ml100k_lbsl_cpu.gin",
}
NE = "metric/lifetime_ne/rating"


def train(name: str, out: Path, a: argparse.Namespace) -> Dict[str, Any]:
    if not (out / "metrics.json").exists():
        params = [
            f"make_dataloaders.data_dir='{a.data}'",
            f"RunSettings.output_dir='{out}'",
            f"RunSettings.seed={a.seed}",
            f"train_loop.num_batches={a.steps}",
            "RunSettings.save_checkpoint=False",
            "make_dataloaders.progress=False",
            *a.gin_param,
        ]
        cmd = [sys.executable, "-m", "ultra_hstu_plugin.cli", "train", "--gin", RUNS[name]]
        cmd += ["--device", "cpu"] + [x for p in params for x in ("--gin-param", p)]
        subprocess.run(cmd, check=True, cwd=REPO)
    return json.loads((out / "metrics.json").read_text())


def load_means(curves: Path) -> Dict[str, float]:
    """Means over the run's train points of the load/* statistics (empty: no sampler)."""
    rows = [json.loads(x) for x in curves.read_text().splitlines()]
    rows = [r for r in rows if r["mode"] == "train" and "load/kept_fraction" in r]
    keys = sorted({k for r in rows for k in r if k.startswith("load/")})
    return {k: sum(r[k] for r in rows if k in r) / len(rows) for k in keys} if rows else {}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data", help="folder with the prepared MovieLens-100k")
    p.add_argument("--runs", default="runs/lbsl_quality", help="run folders go here")
    p.add_argument("--out", default="benchmarks/results", help="lbsl_quality.{json,md} go here")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gin-param", action="append", default=[], help="extra binding, both runs")
    a = p.parse_args(argv)
    runs = Path(a.runs)
    result: Dict[str, Any] = {"steps": a.steps, "seed": a.seed, "gin_param": a.gin_param}
    for name in RUNS:
        m = train(name, runs / name, a)
        result[name] = {
            "eval_ne": m["eval"][NE],
            "eval_gauc": m["eval"].get("metric/lifetime_gauc/rating"),
            "train_steps": m["train_steps"],
            "train_seconds": m.get("train_seconds"),
            "load": load_means(runs / name / "curves.jsonl"),
        }
    none, lbsl = result["none"]["eval_ne"], result["lbsl"]["eval_ne"]
    result["ne_relative_change"] = (lbsl - none) / none
    result["within_0.2%"] = abs(result["ne_relative_change"]) <= 0.002
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lbsl_quality.json").write_text(json.dumps(result, indent=2))
    load = result["lbsl"]["load"]
    md = [
        f"# LBSL quality on MovieLens-100k ({a.steps} steps, seed {a.seed}, CPU)",
        "",
        "| run | eval NE | eval GAUC | train s | tokens kept |",
        "|---|---|---|---|---|",
    ]
    for name in RUNS:
        r = result[name]
        kept = r["load"].get("load/kept_fraction")
        md.append(
            f"| {name} | {r['eval_ne']:.5f} | {r['eval_gauc']:.4f} | {r['train_seconds']} | "
            f"{'1.000' if kept is None else f'{kept:.3f}'} |"
        )
    md += [
        "",
        f"NE change: {100 * result['ne_relative_change']:+.3f}% (target: within 0.2%): "
        f"{'met' if result['within_0.2%'] else 'NOT met'}.  LBSL mean estimated cost "
        f"{load.get('load/cost', 0):.4g} vs {load.get('load/cost_unsampled', 0):.4g} unsampled.",
        "",
    ]
    (out / "lbsl_quality.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
