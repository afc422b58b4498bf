# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu bench lbsl --step-time``: does the measured train step follow the cost model?

    ultra-hstu bench lbsl --step-time --preset gpu --out DIR [--gr-path PATH]

Builds one ULTRA-HSTU encoder (``--config``, a ``bench scaling`` configuration, with its
builders: bf16 + Triton on CUDA, fp32 + PyTorch kernels on CPU), draws ``--batches`` batches
of ``--batch`` users from the long-tailed synthetic length distribution of ``bench lbsl``
(clipped to ``--max-len``), and trims each three ways: none, SL(``--alpha``) and LBSL
(:func:`~ultra_hstu_plugin.sampling.choose_kept_lengths` toward the mean SL batch cost of
the drawn batches, i.e. the warm-up target).  Each trimmed batch (kept history +
``--targets`` candidates per user, jagged) runs the train step (forward + backward of a
random output gradient): one untimed call first (Triton autotuning for a new length bucket
happens there; its seconds are reported apart), then ``--reps`` calls timed with CUDA events
(wall clock on CPU), median kept.  The cost model's estimate of each batch (the calibrated
model of ``--cost-calibration`` and the analytic FLOPs model, both for this encoder's
shape) is correlated with the measured time: Pearson and Spearman, over all batches and per
policy, plus a least-squares line (ms = slope * estimate + intercept).  Groups of
``--ranks`` consecutive batches are also read as the ranks of one synchronous step, giving
the measured max/mean step-time imbalance of each policy.

Rows go to ``DIR/lbsl<tag>.jsonl`` as they are measured, and ``lbsl<tag>.json`` / ``.md``
are rewritten after every batch, so a run cut off keeps what it measured;
``--time-budget`` stops starting new batches.  ``--preset gpu`` (D 512, 18 SLA layers,
max_len 4096, 32 users, ~30k tokens a batch, 40 batches) takes about 2 minutes on one H200;
``--preset smoke`` runs the whole flow on CPU at toy sizes in seconds (the test).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

PRESETS: Dict[str, Dict[str, Any]] = {
    "gpu": {
        "config": "ultra_sla18",
        "max_len": 4096,
        "batch": 32,
        "targets": 16,
        "batches": 40,
        "reps": 5,
        "dim": 512,
        "heads": 4,
        "head_dim": 128,
        "k1": 1024,
        "k2": 128,
        "time_budget": 110.0,
    },
    "smoke": {
        "config": "ultra_sla18",
        "max_len": 96,
        "batch": 4,
        "targets": 4,
        "batches": 4,
        "reps": 1,
        "dim": 32,
        "heads": 2,
        "head_dim": 16,
        "k1": 16,
        "k2": 4,
        "layers": 2,
        "time_budget": 0.0,
    },
}
POLICIES = ("none", "sl", "lbsl")
DEFAULT_CALIBRATION = (
    Path(__file__).resolve().parents[2] / "benchmarks/results/lbsl_cost_calibration_h200.json"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ultra-hstu bench lbsl --step-time",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--step-time", action="store_true", help="(selects this benchmark)")
    p.add_argument("--out", type=Path, required=True, help="directory for lbsl<tag>.*")
    p.add_argument("--tag", default="_step_time", help="suffix of the output files")
    p.add_argument("--preset", choices=sorted(PRESETS), default="gpu", help="sizes (see above)")
    p.add_argument("--gr-path", default=None, help="GR checkout root (if not installed)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--config", default=None, help="a bench scaling configuration (ULTRA only)")
    p.add_argument(
        "--layers", type=int, default=None, help="override the config's SLA layers (smoke)"
    )
    p.add_argument("--max-len", type=int, default=None, help="longest history (clip)")
    p.add_argument("--batch", type=int, default=None, help="users per batch")
    p.add_argument("--targets", type=int, default=None, help="candidates per user")
    p.add_argument("--batches", type=int, default=None, help="batches drawn (x3 policies)")
    p.add_argument("--reps", type=int, default=None, help="timed calls per batch (median)")
    p.add_argument("--dim", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--head-dim", type=int, default=None)
    p.add_argument("--k1", type=int, default=None)
    p.add_argument("--k2", type=int, default=None)
    p.add_argument("--alpha", type=float, default=1.6, help="SL alpha, in (1, 2]")
    p.add_argument("--floor", type=int, default=32, help="LBSL floor")
    p.add_argument("--ranks", type=int, default=8, help="batches per simulated step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cost-calibration",
        default=str(DEFAULT_CALIBRATION),
        help="calibration json for the calibrated cost model ('' = FLOPs only)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds; no new batch starts after this (0 = no limit)",
    )
    return p


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.layers is None:
        args.layers = 0
    return args


def pearson(x: List[float], y: List[float]) -> Optional[float]:
    import torch

    if len(x) < 3:
        return None
    t = torch.tensor([x, y], dtype=torch.float64)
    if float(t[0].std()) == 0 or float(t[1].std()) == 0:
        return None
    return float(torch.corrcoef(t)[0, 1])


def _ranks(v: List[float]) -> List[float]:
    """Ranks (1-based), ties given their mean rank."""
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(x: List[float], y: List[float]) -> Optional[float]:
    return pearson(_ranks(x), _ranks(y)) if len(x) >= 3 else None


def line_fit(x: List[float], y: List[float]) -> Optional[Dict[str, float]]:
    import torch

    if len(x) < 2:
        return None
    a = torch.tensor([[v, 1.0] for v in x], dtype=torch.float64)
    sol = torch.linalg.lstsq(a, torch.tensor(y, dtype=torch.float64).unsqueeze(1)).solution
    return {"slope": float(sol[0, 0]), "intercept": float(sol[1, 0])}


def cost_models(cfg: Any, args: argparse.Namespace) -> Dict[str, Any]:
    """The cost models of this encoder's shape: analytic FLOPs and (if given) calibrated."""
    from ultra_hstu_plugin.bench.scaling import lprime_of
    from ultra_hstu_plugin.sampling.calibration import calibrated
    from ultra_hstu_plugin.sampling.cost import AttentionCostModel

    n_upper = cfg.num_truncated_layers
    flops = AttentionCostModel.from_flops(
        dim=args.dim,
        n_lower=cfg.num_full_layers,
        n_upper=n_upper,
        truncate_to=lprime_of(cfg, args) + args.targets if n_upper else None,
        attention="sla" if args.k1 > 0 else "full",
        sla_local=args.k1 + 1 if args.k1 > 0 else 0,
        sla_global=args.k2 if args.k1 > 0 else 0,
        fixed_tokens=args.targets,
        projection_widths=[4 * args.heads * args.head_dim, args.heads * args.head_dim],
    )
    models = {"flops": flops}
    if args.cost_calibration:
        models["calibrated"] = calibrated(flops, args.cost_calibration)
    return models


def draw_batches(args: argparse.Namespace, cost_model: Any) -> List[Dict[str, Any]]:
    """``--batches`` batches, each as its none / SL / LBSL kept lengths."""
    import torch

    from ultra_hstu_plugin.bench.lbsl import synthetic_lengths
    from ultra_hstu_plugin.sampling import choose_kept_lengths, stochastic_length

    pool = synthetic_lengths(200_000, args.seed).clamp(max=args.max_len)
    g = torch.Generator().manual_seed(args.seed + 1)
    draws = pool[torch.randint(len(pool), (args.batches, args.batch), generator=g)]
    sl = stochastic_length(draws, args.alpha, args.max_len, g)
    target = float(cost_model(sl).sum(-1).mean())  # the warm-up target: mean SL batch cost
    lbsl = choose_kept_lengths(draws, target, cost_model, min(args.floor, args.max_len))
    return [
        {"none": draws[i], "sl": sl[i], "lbsl": lbsl[i], "lbsl_target": target}
        for i in range(args.batches)
    ]


def make_batch(kept: Any, args: argparse.Namespace, device: str) -> Any:
    import torch

    from ultra_hstu_plugin.bench.scaling import EncoderInputs

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    lengths = (kept.to(torch.int64) + args.targets).to(device)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64, device=device)
    offsets[1:] = lengths.cumsum(0)
    n = int(offsets[-1])
    g = torch.Generator(device=device).manual_seed(n)
    x = torch.randn(n, args.dim, device=device, dtype=dtype, generator=g)
    return EncoderInputs(
        x=x,
        lengths=lengths,
        offsets=offsets,
        max_seq_len=int(lengths.max()),
        num_targets=torch.full_like(lengths, args.targets),
        grad=torch.randn(x.shape, device=device, dtype=dtype, generator=g),
    )


def summarise(rows: List[Dict[str, Any]], models: List[str], ranks: int) -> Dict[str, Any]:
    ok = [r for r in rows if r.get("status") == "ok"]
    out: Dict[str, Any] = {"measured": len(ok), "correlation": {}, "policies": {}}
    for m in models:
        for scope in ("all", *POLICIES):
            use = [r for r in ok if scope == "all" or r["policy"] == scope]
            x = [r[f"cost_{m}"] for r in use]
            y = [r["ms"] for r in use]
            out["correlation"][f"{m}/{scope}"] = {
                "n": len(use),
                "pearson": pearson(x, y),
                "spearman": spearman(x, y),
                "fit": line_fit(x, y) if scope == "all" else None,
            }
    for p in POLICIES:
        use = [r for r in ok if r["policy"] == p]
        if not use:
            continue
        ms = [r["ms"] for r in use]
        groups = [ms[i : i + ranks] for i in range(0, len(ms) - ranks + 1, ranks)]
        out["policies"][p] = {
            "batches": len(use),
            "tokens": sum(r["tokens"] for r in use) / len(use),
            "kept_fraction": sum(r["tokens"] for r in use)
            / max(1, sum(r["tokens_unsampled"] for r in use)),
            "ms_mean": sum(ms) / len(ms),
            "ms_max": max(ms),
            "measured_imbalance": (
                sum(max(g) / (sum(g) / len(g)) for g in groups) / len(groups) if groups else None
            ),
            "steps_of_ranks": len(groups),
        }
    return out


def _f(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def markdown(result: Dict[str, Any]) -> str:
    s, a = result["summary"], result["settings"]
    lines = [
        "# LBSL: measured train-step time vs the cost model",
        "",
        f"device: {result['environment'].get('device')}; commit: "
        f"{result['environment'].get('git_commit')}; command: `ultra-hstu bench lbsl "
        f"{' '.join(result['argv'])}`",
        "",
        f"encoder: {a['config']} (D={a['dim']}, {a['heads']} heads of {a['head_dim']}, "
        f"k1={a['k1']}, k2={a['k2']}); batches of {a['batch']} users, history up to "
        f"{a['max_len']} (long-tailed synthetic), {a['targets']} candidates each; SL "
        f"alpha={a['alpha']}, LBSL floor={a['floor']} and target = mean SL batch cost; train "
        f"step = fwd + bwd, median of {a['reps']} timed calls after an untimed one.",
        "",
        f"measured: {s['measured']} batches in {result['seconds']:.0f} s; untimed first "
        f"calls (autotuning included): {result['warmup_s']:.1f} s in all"
        + (f"; stopped by --time-budget {a['time_budget']} s" if result.get("cut_off") else ""),
        "",
        "| cost model | batches | Pearson | Spearman |",
        "|---|---|---|---|",
    ]
    for key, c in s["correlation"].items():
        lines.append(f"| {key} | {c['n']} | {_f(c['pearson'])} | {_f(c['spearman'])} |")
    for key, c in s["correlation"].items():
        if c.get("fit"):
            lines.append(
                f"\nfit ({key}): ms = {c['fit']['slope']:.4g} x estimate + "
                f"{c['fit']['intercept']:.3g}"
            )
    lines += [
        "",
        f"Per policy (measured imbalance: groups of {a['ranks']} consecutive batches read as "
        "the ranks of one step, mean over groups of max/mean measured ms):",
        "",
        "| policy | batches | tokens / batch | kept | mean ms | max ms | measured max/mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for p, v in s["policies"].items():
        lines.append(
            f"| {p} | {v['batches']} | {v['tokens']:.0f} | {v['kept_fraction']:.3f} | "
            f"{v['ms_mean']:.2f} | {v['ms_max']:.2f} | {_f(v['measured_imbalance'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.gr_path:
        sys.path.insert(0, os.path.abspath(args.gr_path))
    from ultra_hstu_plugin.host.stubs import stub_torchrec_if_missing

    notes = [n for n in (stub_torchrec_if_missing(),) if n]
    import dataclasses

    import torch

    from ultra_hstu_plugin.bench import scaling
    from ultra_hstu_plugin.bench.common import (
        RowWriter,
        ensure_kernels_importable,
        environment,
        time_step,
    )

    ensure_kernels_importable()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("ultra-hstu bench lbsl --step-time: error: no CUDA GPU", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    if device == "cpu" and args.preset == "gpu" and args.device != "cpu":
        print(
            "ultra-hstu bench lbsl --step-time: error: no CUDA GPU for --preset gpu; use "
            "--preset smoke (or --device cpu to insist)",
            file=sys.stderr,
        )
        return 2
    cfg = scaling.CONFIGS[args.config]
    if cfg.gr:
        print("--step-time: --config must be an ULTRA-HSTU configuration", file=sys.stderr)
        return 2
    if args.layers:
        cfg = dataclasses.replace(cfg, num_full_layers=args.layers, num_truncated_layers=0)
    args.lprime_scale = 1.0
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"lbsl{args.tag}"
    models = cost_models(cfg, args)
    trim_model = models.get("calibrated", models["flops"])
    batches = draw_batches(args, trim_model)
    t_start = time.perf_counter()
    encoder = scaling.build_encoder(cfg, args, args.max_len + args.targets, False, device)
    writer = RowWriter(args.out, stem)
    try:
        env = environment()
    except ImportError:  # no triton (CPU machine): the commit and torch still matter
        from ultra_hstu_plugin.bench.common import git_commit

        env = {"device": "cpu", "torch": torch.__version__, "git_commit": git_commit()}
    result: Dict[str, Any] = {
        "argv": argv,
        "environment": env,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "cost_models": {k: repr(v) for k, v in models.items()},
        "trim_cost_model": "calibrated" if "calibrated" in models else "flops",
        "notes": notes,
    }

    def write(cut_off: bool = False) -> None:
        result.update(
            rows=writer.rows,
            summary=summarise(writer.rows, list(models), args.ranks),
            seconds=time.perf_counter() - t_start,
            warmup_s=sum(r.get("warmup_s", 0.0) for r in writer.rows),
            cut_off=cut_off,
        )
        (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
        (args.out / f"{stem}.md").write_text(markdown(result))

    cut_off = False
    for i, b in enumerate(batches):
        if args.time_budget and time.perf_counter() - t_start > args.time_budget:
            cut_off = True
            break
        for policy in POLICIES:
            kept = b[policy]
            row: Dict[str, Any] = {
                "batch": i,
                "policy": policy,
                "tokens": int(kept.sum()),
                "tokens_unsampled": int(b["none"].sum()),
                "max_kept": int(kept.max()),
                "target_cost": b["lbsl_target"] if policy == "lbsl" else None,
                **{f"cost_{m}": float(cm(kept).sum()) for m, cm in models.items()},
            }
            step = None
            try:
                step = scaling.make_step(encoder, make_batch(kept, args, device), "train")
                t = time_step(step, device, args.reps)
                row.update(status="ok", **t)
            except scaling._oom_errors():
                row["status"] = "out of memory"
            del step
            if device == "cuda":
                torch.cuda.empty_cache()
            writer.add(row)
        write()
    writer.close()
    write(cut_off)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
