# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""What the autotuning bound costs in steady state: attention fwd+bwd under each bound.

``RunSettings.autotune_max_configs`` trades the first step's compile time for a kernel that
may miss its best tile.  This times, side by side in one process, our SLA attention and GR's
``triton_hstu_mha`` (full causal) forward + backward at one shape under each bound (1, 4,
none), and how long the warm-up (compile + tuning) took.  Needs torch, triton and GR's
Triton attention only (no fbgemm / torchrec).  Each row goes to OUT/autotune_bound_cost.jsonl
as it is measured; a markdown table is printed last.

    python benchmarks/autotune_bound_cost.py --out DIR [--batch 32 --length 4096 --heads 2
        --dim 64 --dtype float32 --k1 64 --k2 64 --bounds 1,4,none --tf32 off,on
        --impls ours_sla,gr_full_causal]

``--tf32 off,on`` repeats every row with ``torch.backends.cuda.matmul.allow_tf32`` off (exact
fp32 products) and on (TF32): both kernels read that flag (fp32 inputs only).

``--smoke`` runs toy sizes (on CPU with ``TRITON_INTERPRET=1``) to test the script itself.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Callable, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ultra_hstu_plugin.bench.common import ensure_kernels_importable, time_step  # noqa: E402


def _bound(value: str) -> Optional[int]:
    return None if value.lower() == "none" else int(value)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--k1", type=int, default=64)
    p.add_argument("--k2", type=int, default=64)
    p.add_argument("--bounds", default="1,4,none", help="comma list; none = every config")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--tf32", default="off", help="comma list of off/on: allow_tf32 per pass")
    p.add_argument("--impls", default="ours_sla,gr_full_causal", help="comma list")
    p.add_argument("--smoke", action="store_true", help="toy sizes, to test the script")
    args = p.parse_args(argv)
    if args.smoke:
        args.batch, args.length, args.heads, args.dim, args.k1, args.k2, args.reps = (
            2,
            32,
            1,
            16,
            8,
            4,
            1,
        )
    ensure_kernels_importable()
    import generative_recommenders.ops.triton.triton_hstu_attention as gr_attention

    import ultra_hstu_plugin.kernels.sla_attention.triton_kernels as sla_kernels
    from ultra_hstu_plugin.kernels.autotune_budget import find_autotuners, limit_configs
    from ultra_hstu_plugin.kernels.sla_attention import sla_attention
    from ultra_hstu_plugin.kernels.sla_attention.mask import SLAMaskSpec

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    B, L, H, D = args.batch, args.length, args.heads, args.dim
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v, dout = (
        torch.randn((B * L, H, D), device=device, dtype=dtype, generator=g) for _ in range(4)
    )
    offsets = torch.arange(0, B * L + 1, L, device=device, dtype=torch.int64)
    alpha = 1.0 / math.sqrt(D)
    spec = SLAMaskSpec(k1=args.k1, k2=args.k2)
    impls = {
        "ours_sla": (
            sla_kernels,
            lambda a, b, c: sla_attention(a, b, c, offsets, L, alpha, spec, backend="triton"),
        ),
        "gr_full_causal": (
            gr_attention,
            lambda a, b, c: gr_attention.triton_hstu_mha(
                L, alpha, a, b, c, offsets, num_targets=None, max_attn_len=0
            ),
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    sink = (args.out / "autotune_bound_cost.jsonl").open("a")
    meta = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "shape": {"B": B, "L": L, "H": H, "D": D, "dtype": args.dtype},
        "k1": args.k1,
        "k2": args.k2,
        "command": "python benchmarks/autotune_bound_cost.py " + " ".join(argv or sys.argv[1:]),
    }
    unknown = set(args.impls.split(",")) - set(impls)
    if unknown or set(args.tf32.split(",")) - {"off", "on"}:
        p.error(f"--impls from {sorted(impls)} (unknown: {sorted(unknown)}); --tf32 from off,on")
    passes = [
        (tf32, name, *impls[name])
        for tf32 in [t == "on" for t in args.tf32.split(",")]
        for name in args.impls.split(",")
    ]
    rows = []
    for tf32, name, module, forward in passes:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        tuners = find_autotuners([module])
        for bound in [_bound(b) for b in args.bounds.split(",")]:
            kept = limit_configs(tuners, bound)
            for _, tuner in tuners:
                tuner.cache.clear()  # tune again under this bound (compiled binaries stay cached)
            leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]

            def step(forward: Callable = forward, leaves: list = leaves) -> object:
                return torch.autograd.grad(forward(*leaves), leaves, dout)

            row = {
                **meta,
                "impl": name,
                "allow_tf32": tf32,
                "max_configs": bound,
                "configs_kept": sum(r.kept for r in kept),
                "configs_declared": sum(r.configs for r in kept),
            }
            try:
                timed = time_step(step, device, args.reps)
                row["warmup_s"] = round(timed["warmup_s"], 2)
                row["fwd_bwd_ms"] = round(timed["ms"], 3)
            except Exception as e:  # noqa: BLE001 - recorded, and the next row runs
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            rows.append(row)
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            print(f"{name} tf32={tf32} bound={bound}: {row.get('fwd_bwd_ms', row.get('error'))} ms")
        limit_configs(tuners, None)
    print(
        f"\n{meta['device']}, B={B} L={L} H={H} D={D} {args.dtype}, SLA k1={args.k1} k2={args.k2}"
    )
    print(
        "| kernel | allow_tf32 | max configs | configs kept / declared | warm-up s | fwd+bwd ms "
        "| vs unbounded |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ref = [
            x
            for x in rows
            if (x["impl"], x["allow_tf32"], x["max_configs"]) == (r["impl"], r["allow_tf32"], None)
        ]
        ok = ref and "fwd_bwd_ms" in r and "fwd_bwd_ms" in ref[0]
        ratio = f"{r['fwd_bwd_ms'] / ref[0]['fwd_bwd_ms']:.2f}x" if ok else "-"
        print(
            f"| {r['impl']} | {r['allow_tf32']} | {r['max_configs']} | {r['configs_kept']} / "
            f"{r['configs_declared']} | {r.get('warmup_s', '-')} | "
            f"{r.get('fwd_bwd_ms', r.get('error'))} | {ratio} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
