# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Split-K for the cached (delta) SLA attention kernel: one kernel, before vs after.

One user (B = 1), the bounded cache of an ``ultra_sla18`` layer at L = 16384 (prefix k2 = 128
+ window k1 = 1024 = 1152 kept keys), 4 heads of 128, bf16, M new rows (candidates).  The
split-layout kernel runs with ``num_splits = 1`` (the kernel before split-K: B x H x M/64
programs) and with the launcher's choice; both are checked against the PyTorch reference
(fp32) and timed with ``triton.testing.do_bench`` (median, after its warm-up), as a CUDA-graph
replay (the GPU time; the graphed encoder's case) and eagerly (Python launches included).

    python benchmarks/delta_split_k.py --out DIR      # GPU; --smoke runs toy sizes on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def case(L: int, M: int, H: int, D: int, k1: int, k2: int, device: str, dtype: torch.dtype):
    from ultra_hstu_plugin.kernels.sla_attention import SLAMaskSpec

    spec = SLAMaskSpec(k1=k1, k2=k2)
    kept = min(L, k2 + k1)
    g = torch.Generator().manual_seed(M)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g) * 0.5).to(device=device, dtype=dtype)

    i64 = dict(dtype=torch.int64, device=device)
    args = (
        rnd(M, H, D), rnd(M, H, D), rnd(M, H, D), rnd(kept, H, D), rnd(kept, H, D),
        torch.tensor([0, M], **i64), torch.tensor([0, kept], **i64), torch.tensor([L], **i64),
        torch.tensor([L], **i64), L + M, M, 1.0 / D**0.5, spec, torch.tensor([M], **i64), k2,
    )  # fmt: skip
    return args


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--smoke", action="store_true", help="toy sizes on CPU (interpreter)")
    a = p.parse_args()
    smoke = a.smoke or not torch.cuda.is_available()
    if smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    device = "cpu" if smoke else "cuda"
    # imported after TRITON_INTERPRET is set: triton reads it when a kernel is decorated
    from ultra_hstu_plugin.bench.inference import GraphedCall
    from ultra_hstu_plugin.kernels.sla_attention.delta_reference import (
        delta_sla_attention_split_reference,
    )
    from ultra_hstu_plugin.kernels.sla_attention.delta_triton import (
        cache_split_plan,
        delta_sla_attention_split_triton_fwd,
    )

    dtype = torch.float32 if smoke else torch.bfloat16
    L, H, D, k1, k2 = (256, 2, 16, 64, 8) if smoke else (16384, 4, 128, 1024, 128)
    candidates = (16, 48) if smoke else (64, 256, 1024)
    name = "cpu (interpreter)" if smoke else torch.cuda.get_device_name()
    rows = []
    for M in candidates:
        args = case(L, M, H, D, k1, k2, device, dtype)
        fp32 = tuple(x.float() if torch.is_tensor(x) and x.is_floating_point() else x for x in args)
        want = delta_sla_attention_split_reference(*fp32[:9], fp32[9], *fp32[11:])
        row = {"L": L, "M": M, "heads": H, "head_dim": D, "kept_keys": args[3].shape[0]}
        cfg = {"BLOCK_M": 16, "BLOCK_N": 16} if smoke else {"BLOCK_M": 64, "BLOCK_N": 64}
        row["auto_splits"], _ = cache_split_plan(
            H * -(-M // cfg["BLOCK_M"]), row["kept_keys"], L + M, args[12], cfg["BLOCK_N"],
            torch.device(device),
        )  # fmt: skip
        for label, splits in (("before", 1), ("after", None)):
            c = dict(cfg, num_splits=splits) if splits else dict(cfg)
            if not smoke:
                c.update(num_warps=4, num_stages=2)
            poisoned = torch.full((M, H, D), float("nan"), dtype=dtype, device=device)

            def call(q=args[0], c=c, poisoned=poisoned, args=args):
                return delta_sla_attention_split_triton_fwd(
                    q, *args[1:], config=dict(c), out=poisoned
                )

            got = call().float()
            err = float((got - want).abs().max() / want.abs().max())
            row[f"{label}_rel_err"] = err
            if smoke:
                row[f"{label}_us"] = row[f"{label}_us_eager"] = None
            else:
                import triton.testing

                # eager: a Python launch (~40 us at these sizes) hides the kernel; the replay
                # of a CUDA graph of the call is the GPU time, as in the graphed encoder
                row[f"{label}_us_eager"] = round(1000 * triton.testing.do_bench(call), 2)
                # the replay alone: GraphedCall's input copy and output clone stay untimed
                graph = GraphedCall(call, args[0]).graph
                row[f"{label}_us"] = round(1000 * triton.testing.do_bench(graph.replay), 2)
        if row["before_us"]:
            row["speedup"] = round(row["before_us"] / row["after_us"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "delta_split_k.json").write_text(json.dumps({"device": name, "rows": rows}, indent=1))
    print(f"\n{name}; us: CUDA-graph replays")
    print("| M | kept keys | splits | before us | after us | speed-up | rel err after |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['M']} | {r['kept_keys']} | {r['auto_splits']} | {r['before_us']} | "
            f"{r['after_us']} | {r.get('speedup')} | {r['after_rel_err']:.1e} |"
        )
    bad = [r for r in rows if max(r["before_rel_err"], r["after_rel_err"]) > 2e-2]
    if bad:
        raise SystemExit(f"parity failed: {bad}")


if __name__ == "__main__":
    main()
