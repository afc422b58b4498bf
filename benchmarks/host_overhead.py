# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Host cost per call of the pieces of a layer, and GR's Triton addmm against cuBLAS.

A truncated layer's GPU work is a fraction of a millisecond, so its step time is what the
host spends issuing it.  This measures, on the GPU machine, the host microseconds per call
(GPU kept busy so the host never waits) of each op a layer issues, and GPU time and host
time of the two projections' GEMMs through GR's Triton ``addmm`` and through ``torch.addmm``.
  PYTHONPATH=$PWD:$PWD/.gr python benchmarks/host_overhead.py --out $OUT
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    args = p.parse_args()
    from ultra_hstu_plugin.host.stubs import stub_torchrec_if_missing

    stub_torchrec_if_missing()
    import torch
    from triton.testing import do_bench

    from ultra_hstu_plugin.host import HammerKernel, STULayerConfig, gr_addmm, layer_norm
    from ultra_hstu_plugin.kernels.sla_attention import SLAMaskSpec, sla_attention
    from ultra_hstu_plugin.modules.ultra_stu import UltraHSTULayer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []

    def host_us(fn, n=200):
        fn()
        torch.cuda.synchronize()
        torch.cuda._sleep(int(2e9))  # ~1 s of GPU spinning: the host never waits on it
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        us = (time.perf_counter() - t0) * 1e6 / n
        torch.cuda.synchronize()
        return round(us, 1)

    def add(row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    dt = torch.bfloat16
    for M, K, N in [(65536, 512, 2048), (65536, 1536, 512), (4352, 512, 2048), (4352, 1536, 512),
                    (1088, 512, 2048), (1088, 1536, 512)]:  # fmt: skip
        x = torch.randn(M, K, device="cuda", dtype=dt)
        w = torch.randn(K, N, device="cuda", dtype=dt) / K**0.5
        b = torch.randn(N, device="cuda", dtype=dt)
        ref = torch.addmm(b, x, w)
        for name, fn in (
            ("gr_triton_addmm", lambda b=b, x=x, w=w: gr_addmm(b, x, w, HammerKernel.TRITON)),
            ("torch_addmm", lambda b=b, x=x, w=w: torch.addmm(b, x, w)),
        ):
            got = fn()
            err = float((got.float() - ref.float()).norm() / ref.float().norm())
            gpu = do_bench(fn, warmup=25, rep=100, return_mode="median")
            add({"op": name, "M": M, "K": K, "N": N, "gpu_ms": round(gpu, 4),
                 "host_us": host_us(fn), "rel_err_vs_cublas": err,
                 "tflops": round(2 * M * K * N / gpu / 1e9, 1)})  # fmt: skip

    # host cost of one call of each piece, tiny shapes (GPU time ~ nothing)
    T, H, D = 256, 4, 128
    q = torch.randn(T, H, D, device="cuda", dtype=dt, requires_grad=True)
    k = torch.randn(T, H, D, device="cuda", dtype=dt, requires_grad=True)
    v = torch.randn(T, H, D, device="cuda", dtype=dt, requires_grad=True)
    offs = torch.tensor([0, 128, 256], device="cuda")
    nt = torch.tensor([16, 16], device="cuda")
    spec = SLAMaskSpec(k1=0)

    def sla_fwd():
        with torch.no_grad():
            return sla_attention(q, k, v, offs, 128, 0.1, spec, nt, backend="triton")

    def sla_fwd_bwd():
        sla_attention(q, k, v, offs, 128, 0.1, spec, nt, backend="triton").sum().backward()

    x = torch.randn(T, 512, device="cuda", dtype=dt)
    wln = torch.ones(512, device="cuda", dtype=dt)
    bln = torch.zeros(512, device="cuda", dtype=dt)
    cfg = STULayerConfig(
        embedding_dim=512, num_heads=4, hidden_dim=128, attention_dim=128,
        recompute_normed_x=False, recompute_uvqk=False, recompute_y=False,
    )  # fmt: skip
    layer = UltraHSTULayer(cfg).cuda().to(dt)
    layer.set_hammer_kernel(HammerKernel.TRITON)
    lens = torch.tensor([128, 128], device="cuda")

    def layer_fwd():
        with torch.no_grad():
            return layer(x=x, x_lengths=lens, x_offsets=offs, max_seq_len=128, num_targets=nt)

    xg = x.clone().requires_grad_()

    def layer_fwd_bwd():
        layer(
            x=xg, x_lengths=lens, x_offsets=offs, max_seq_len=128, num_targets=nt
        ).sum().backward()

    for name, fn in (
        ("torch.mm tiny", lambda: torch.mm(x, x.t())),
        ("gr layer_norm (triton)", lambda: layer_norm(x, wln, bln, 1e-6, HammerKernel.TRITON)),
        ("sla_attention fwd, no grad", sla_fwd),
        ("sla_attention fwd+bwd", sla_fwd_bwd),
        ("UltraHSTULayer fwd, no grad", layer_fwd),
        ("UltraHSTULayer fwd+bwd (no recompute)", layer_fwd_bwd),
    ):
        add({"op": name, "host_us": host_us(fn, n=10)})  # few calls: the launch queue never fills
    (out / "host_overhead.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
