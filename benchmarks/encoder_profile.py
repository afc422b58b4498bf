# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Where an encoder's time goes on the GPU: wall time, GPU kernel time and the top kernels
of one inference forward (eager and CUDA-graphed) and one train step, per configuration.

The measuring half of issue 10's "measure first" (``ultra-hstu bench scaling`` is the
side-by-side benchmark).  Usage on the GPU machine, from the repository root:
  PYTHONPATH=$PWD:$PWD/.gr python benchmarks/encoder_profile.py --out $OUT [--configs ...]
Cached scoring (issue 14: where a cached layer's ~33 us go):
  ... encoder_profile.py --out $OUT --configs sla18 --batches 1 --no-train --cached 64 256
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

CONFIGS = {
    # name: (N1, N2, L', fp8)
    "sla18": (18, 0, 0, False),
    "sla6_trunc12_L2048": (6, 12, 2048, False),
    "sla3_trunc15_L1024": (3, 15, 1024, False),
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--configs", nargs="*", default=list(CONFIGS))
    p.add_argument("--seq-len", type=int, default=16384)
    p.add_argument("--batches", type=int, nargs="*", default=[4, 1])
    p.add_argument("--no-train", action="store_true")
    p.add_argument(
        "--cached",
        type=int,
        nargs="*",
        default=[],
        help="B = 1 only: also profile cached scoring of these candidate counts against the "
        "history's KV cache (bench inference's fill_cache / cached_scorer)",
    )
    args = p.parse_args()
    from ultra_hstu_plugin.host.stubs import stub_torchrec_if_missing

    stub_torchrec_if_missing()
    import torch
    from triton.testing import do_bench

    from ultra_hstu_plugin.host import HammerKernel, STULayerConfig
    from ultra_hstu_plugin.modules.cuda_graphs import GraphedEncoder
    from ultra_hstu_plugin.modules.encoder import build_ultra_hstu_encoder
    from ultra_hstu_plugin.modules.encoder_config import UltraHSTUEncoderConfig

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = open(out / "encoder_profile.jsonl", "w")
    L = args.seq_len
    cfg = STULayerConfig(
        embedding_dim=512,
        num_heads=4,
        hidden_dim=128,
        attention_dim=128,
        output_dropout_ratio=0.1,
        target_aware=True,
    )

    def gpu_time_and_table(fn, n=3):
        acts = [torch.profiler.ProfilerActivity.CUDA, torch.profiler.ProfilerActivity.CPU]
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=acts) as prof:
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            torch.cuda.synchronize()
            wall = (time.perf_counter() - t0) * 1e3 / n
        ev = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
        gpu = sum(e.self_device_time_total for e in ev) / 1e3 / n
        top = sorted(ev, key=lambda e: -e.self_device_time_total)[:12]
        table = [
            (e.key[:70], round(e.self_device_time_total / 1e3 / n, 3), e.count // n) for e in top
        ]
        host = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
        return wall, gpu, table, host

    def profile_cached(model, row, M):
        """One user's cached scoring of M candidates: wall (do_bench, eager launches), GPU
        kernel time and the top kernels (the profiler's device time: launches excluded)."""
        from ultra_hstu_plugin.bench.inference import cached_scorer, fill_cache

        history = torch.randn(L, 512, device="cuda", dtype=torch.bfloat16)
        candidates = torch.randn(M, 512, device="cuda", dtype=torch.bfloat16)
        fill_cache(model, history, M, M)
        score = cached_scorer(model, M, "cuda")

        def call():
            return score(candidates)

        call()
        torch.cuda.synchronize()
        row[f"cached{M}_ms"] = round(do_bench(call, warmup=20, rep=200, return_mode="median"), 3)
        wall, gpu, table, host = gpu_time_and_table(call)
        row.update(
            {f"cached{M}_prof_wall_ms": round(wall, 3), f"cached{M}_gpu_ms": round(gpu, 3),
             f"cached{M}_top": table}
        )  # fmt: skip
        print(f"== cached M={M} host ==\n{host}", flush=True)

    def measure(name, B):
        n1, n2, lp, fp8 = CONFIGS[name]
        enc = UltraHSTUEncoderConfig(
            num_full_layers=n1, num_truncated_layers=n2, truncated_seq_len=lp, k1=1024, k2=128,
            fp8=fp8,
        )  # fmt: skip
        torch.manual_seed(0)
        model = build_ultra_hstu_encoder(enc, cfg, is_inference=False, max_seq_len=L)
        model = model.cuda().to(torch.bfloat16)
        model.set_hammer_kernel(HammerKernel.TRITON)
        lengths = torch.full((B,), L, device="cuda", dtype=torch.int64)
        offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
        nt = torch.full((B,), 64, device="cuda", dtype=torch.int64)
        x = torch.randn(B * L, 512, device="cuda", dtype=torch.bfloat16)
        kw = dict(x_lengths=lengths, x_offsets=offsets, max_seq_len=L, num_targets=nt)
        row = {"config": name, "B": B, "L": L}
        model.eval()

        def inf():
            with torch.no_grad():
                return model(x=x, **kw)

        t0 = time.time()
        ref = inf()
        torch.cuda.synchronize()
        row["warmup_inf_s"] = round(time.time() - t0, 1)
        row["inf_ms"] = round(do_bench(inf, warmup=20, rep=200, return_mode="median"), 3)
        wall, gpu, table, host = gpu_time_and_table(inf)
        row.update(inf_prof_wall_ms=round(wall, 3), inf_gpu_ms=round(gpu, 3), inf_top=table)
        print(f"== {name} B={B} inference host ==\n{host}", flush=True)
        graphed = GraphedEncoder(model)

        def ginf():
            with torch.no_grad():
                return graphed(x=x, **kw)

        t0 = time.time()
        got = ginf()
        torch.cuda.synchronize()
        row["capture_s"] = round(time.time() - t0, 1)
        row["graph_rel_err"] = float((got.float() - ref.float()).norm() / ref.float().norm())
        row["graph_inf_ms"] = round(do_bench(ginf, warmup=20, rep=200, return_mode="median"), 3)
        graphed.reset()
        if B == 1:
            for M in args.cached:
                profile_cached(model, row, M)
        if not args.no_train and B > 1:
            model.train()
            grad = torch.randn_like(x)

            def step():
                xi = x.detach().requires_grad_()
                model(x=xi, **kw).backward(grad)

            t0 = time.time()
            step()
            torch.cuda.synchronize()
            row["warmup_train_s"] = round(time.time() - t0, 1)
            row["train_ms"] = round(do_bench(step, warmup=10, rep=150, return_mode="median"), 3)
            wall, gpu, table, host = gpu_time_and_table(step, n=2)
            row.update(
                train_prof_wall_ms=round(wall, 3), train_gpu_ms=round(gpu, 3), train_top=table
            )
            print(f"== {name} B={B} train host ==\n{host}", flush=True)
        rows.write(json.dumps(row) + "\n")
        rows.flush()
        print(json.dumps(row), flush=True)

    for name in args.configs:
        for B in args.batches:
            measure(name, B)
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
