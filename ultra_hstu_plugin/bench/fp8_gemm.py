# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Benchmark: FP8 rowwise GEMM with fused 2D bias vs bf16 ``torch.addmm`` vs ``torch._scaled_mm``.

    python -m ultra_hstu_plugin.bench.fp8_gemm --out DIR [--sweep]

Needs a CUDA GPU with FP8 (sm89+), torch and triton only (no gin/torchrec/fbgemm).  Each shape is
checked against the PyTorch reference before it is timed; every row goes to ``DIR/fp8_gemm.jsonl``
as soon as it is measured, then the whole run to ``DIR/fp8_gemm.json`` and ``DIR/fp8_gemm.md``.
``--sweep`` also times every tile config of the autotune list on its own.  Each run also writes
``DIR/fp8_gemm_variant_table.json``: the faster kernel at each timed shape, the table
``fp8_addmm(variant="auto")`` reads (``kernels/fp8_gemm/variants.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from ultra_hstu_plugin.bench.common import RowWriter, environment
from ultra_hstu_plugin.kernels.fp8_gemm.variants import shape_key

SHAPES = [(65536, 512, 2048), (65536, 1024, 4096), (16384, 2048, 8192)]
# --variant-table adds the ULTRA-HSTU layer's output projections at D = 512 and 1024 (the uvqk
# projections are the first two shapes above).
LAYER_SHAPES = [(65536, 1536, 512), (65536, 3072, 1024)]
# Targets from the issue (H100): bf16 GEMM and _scaled_mm at 65536x1024x4096, and our speedup
# with the 2D bias over bf16 addmm at the two large shapes.
TARGETS = {"bf16_mm_ms": 0.82, "scaled_mm_ms": 0.57, "speedup_vs_bf16_addmm": 1.6}


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _bench(fn: Callable[[], object], warmup: int, rep: int) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def _bench_graph(fn: Callable[[], object]) -> float:
    import triton.testing

    fn()  # autotune and compile outside the capture
    torch.cuda.synchronize()
    return float(triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median"))


def _host_us(fn: Callable[[], object], calls: int = 50) -> float:
    """Host time a call (launch + Python), with the GPU busy so no call waits on it."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / calls * 1e6


def _check_shape(M: int, K: int, N: int, x, w, bias2d, fp8) -> dict:
    """Correctness of our kernels (and _scaled_mm) on this shape, against the references."""
    from ultra_hstu_plugin.kernels.fp8_gemm.reference import (
        fp8_addmm_reference,
        quantize_rowwise_reference,
    )

    xq, sx = fp8.quantize_rowwise(x)
    xq_ref, sx_ref = quantize_rowwise_reference(x)
    wq, sw = fp8.quantize_weight(w)
    y = fp8.fp8_addmm(xq, sx, wq, sw, bias2d=bias2d)
    ref = fp8_addmm_reference(xq, sx, wq, sw, bias2d=bias2d)
    exact = torch.addmm(bias2d.double(), x.double(), w.double().t())  # unquantised product
    sm = torch._scaled_mm(
        xq, wq.t(), scale_a=sx[:, None], scale_b=sw[None, :], out_dtype=torch.bfloat16
    )
    row = {
        "kind": "check",
        "M": M,
        "K": K,
        "N": N,
        "quant_scale_equal": bool(torch.equal(sx, sx_ref)),
        "quant_fp8_mismatch_frac": float((xq.float() != xq_ref.float()).float().mean()),
        "ours_all_finite": bool(torch.isfinite(y).all()),
        "ours_rel_err_vs_dequant_ref": _rel_err(y, ref),
        "ours_rel_err_vs_fp32_unquantised": _rel_err(y, exact),
        "scaled_mm_plus_add_rel_err_vs_dequant_ref": _rel_err(sm + bias2d, ref),
    }
    # Dequantised reference: only fp32 summation order and one bf16 rounding differ.
    row["ok"] = (
        row["quant_scale_equal"]
        and row["quant_fp8_mismatch_frac"] < 1e-3
        and row["ours_all_finite"]
        and row["ours_rel_err_vs_dequant_ref"] < 5e-3
        and row["ours_rel_err_vs_fp32_unquantised"] < 5e-2
    )
    return row


def _edge_checks(fp8, kern, dev: torch.device) -> list[dict]:
    """Small odd cases on the GPU: ragged M/N, K=64, zero rows, huge rows, bias on/off.

    Run with two tile configs pinned, bias prefetched and not (autotuning every bias variant
    would compile the whole config list four times over)."""
    from ultra_hstu_plugin.kernels.fp8_gemm.reference import fp8_addmm_reference

    pinned = []
    for prefetch in (False, True):
        cfg = next((c for c in kern.GPU_CONFIGS if c.kwargs["PREFETCH_BIAS"] == prefetch), None)
        if cfg is not None:
            pinned.append(dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages))
    pinned = [("pointer", c) for c in pinned]
    pinned.append(("tma", {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128, "EPILOGUE_SUBTILE": True,
                           "num_warps": 8, "num_stages": 3}))  # fmt: skip
    rows = []
    for M, K, N in [(1000, 64, 200), (257, 2048, 136), (5, 1024, 4096)]:
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        x[0] = 0.0  # all-zero row: output must be exactly the bias
        x[1] *= 1e30  # huge row: must clamp, no inf
        w = torch.randn(N, K, device=dev, dtype=torch.bfloat16)
        xq, sx = fp8.quantize_rowwise(x)
        wq, sw = fp8.quantize_weight(w)
        for cfg, has2d, has1d in [
            (c, b2d, b1d) for c in pinned for b2d in (False, True) for b1d in (False, True)
        ]:
            variant, cfg = cfg
            b2 = torch.randn(M, N, device=dev, dtype=torch.bfloat16) if has2d else None
            b1 = torch.randn(N, device=dev) if has1d else None
            fp8.fp8_addmm(xq, sx, wq, sw, bias2d=b2, bias1d=b1, backend="pytorch")  # checks
            poison = torch.full((M, N), float("nan"), device=dev, dtype=torch.bfloat16)
            y = kern.fp8_addmm_triton(
                xq, sx, wq, sw, b2, b1, config=cfg, out=poison, variant=variant
            )
            ref = fp8_addmm_reference(xq, sx, wq, sw, bias2d=b2, bias1d=b1)
            zero_row = torch.zeros(N, device=dev)
            if b1 is not None:
                zero_row = zero_row + b1
            if b2 is not None:
                zero_row = zero_row + b2[0].float()
            r = {
                "kind": "edge_check",
                "M": M,
                "K": K,
                "N": N,
                "bias2d": has2d,
                "bias1d": has1d,
                "variant": variant,
                "config": str(cfg),
                "finite": bool(torch.isfinite(y).all()),
                "zero_row_is_bias": bool(torch.equal(y[0], zero_row.to(torch.bfloat16))),
                "rel_err_vs_dequant_ref": _rel_err(y[2:], ref[2:]),
                "huge_row_rel_err": _rel_err(y[1], ref[1]),
            }
            r["ok"] = (
                r["finite"]
                and r["zero_row_is_bias"]
                and r["rel_err_vs_dequant_ref"] < 5e-3
                and r["huge_row_rel_err"] < 5e-3
            )
            rows.append(r)
    return rows


def _measure_shape(
    M: int,
    K: int,
    N: int,
    fp8,
    kern,
    writer: RowWriter,
    sweep: bool,
    warmup: int,
    rep: int,
    dev: torch.device,
) -> None:
    """Check, then time, every implementation on one shape (and the tile sweep if asked)."""
    flops = 2.0 * M * N * K
    x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
    w = (torch.randn(N, K, device=dev) / K**0.5).to(torch.bfloat16)
    bias2d = torch.randn(M, N, device=dev, dtype=torch.bfloat16)
    check = _check_shape(M, K, N, x, w, bias2d, fp8)
    writer.add(check)

    xq, sx = fp8.quantize_rowwise(x)
    wq, sw = fp8.quantize_weight(w)
    wt = w.t()
    sa, sb = sx[:, None], sw[None, :]
    impls: dict[str, Callable[[], object]] = {
        "bf16_addmm_bias2d": lambda: torch.addmm(bias2d, x, wt),
        "bf16_mm_no_bias": lambda: torch.mm(x, wt),
        "scaled_mm_rowwise_plus_add": lambda: (
            torch._scaled_mm(xq, wq.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16) + bias2d
        ),
        "scaled_mm_rowwise_no_bias": lambda: torch._scaled_mm(
            xq, wq.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16
        ),
        "ours_fp8_gemm_bias2d": lambda: fp8.fp8_addmm(xq, sx, wq, sw, bias2d=bias2d),
        "ours_fp8_gemm_bias2d_pointer": lambda: kern.fp8_addmm_triton(
            xq, sx, wq, sw, bias2d, None, variant="pointer"
        ),
        "ours_fp8_gemm_bias2d_tma": lambda: kern.fp8_addmm_triton(
            xq, sx, wq, sw, bias2d, None, variant="tma"
        ),
        "ours_quantize_plus_fp8_gemm_bias2d": lambda: fp8.fp8_addmm(
            *fp8.quantize_rowwise(x), wq, sw, bias2d=bias2d
        ),
        "ours_quantize_only": lambda: fp8.quantize_rowwise(x),
    }
    times = {}
    for name, fn in impls.items():
        fn()
        torch.cuda.synchronize()
        times[name] = _bench(fn, warmup, rep)
    # GPU time alone (CUDA graph replays, no L2 flush; the operands are far larger than L2):
    # do_bench's events also catch host overhead a call beyond the ~0.1 ms of its L2 flush.
    graph_ms = {}
    for name in ("bf16_addmm_bias2d", "scaled_mm_rowwise_plus_add", "ours_fp8_gemm_bias2d"):
        try:
            graph_ms[name] = _bench_graph(impls[name])
        except Exception as e:  # graph capture is a secondary number: record, go on
            graph_ms[name] = f"{type(e).__name__}: {str(e)[:120]}"
    host_us = {n: _host_us(impls[n]) for n in ("bf16_addmm_bias2d", "ours_fp8_gemm_bias2d")}
    base = times["bf16_addmm_bias2d"]
    from ultra_hstu_plugin.kernels.fp8_gemm import tma_kernels as tma

    best = {
        "pointer": kern.autotuned_kernel().best_config,
        "tma": tma.autotuned_kernel().best_config,
    }
    from ultra_hstu_plugin.kernels.fp8_gemm.variants import choose_variant
    from ultra_hstu_plugin.kernels.ops import cuda_capability

    out_probe = torch.empty(M, N, dtype=torch.bfloat16, device=dev)
    chosen = choose_variant(
        M, N, K, cuda_capability(dev), tma.tma_supported(xq, wq, out_probe, bias2d)
    )
    for name, ms in times.items():
        row = {"kind": "time", "M": M, "K": K, "N": N, "impl": name, "ms": ms}
        if name != "ours_quantize_only":
            row["tflops"] = flops / ms / 1e9
            row["speedup_vs_bf16_addmm"] = base / ms
        if name in graph_ms:
            row["cuda_graph_ms"] = graph_ms[name]
        if name in host_us:
            row["host_us_per_call"] = host_us[name]
        if "fp8_gemm" in name:
            variant = name.rsplit("_", 1)[-1]
            if variant in best:
                row["config"] = str(best[variant])
            else:  # the auto choice: the variant table (or its default) for this shape
                row["auto_choice"] = chosen
            row["vs_scaled_mm_plus_add"] = times["scaled_mm_rowwise_plus_add"] / ms
        writer.add(row)
    if sweep:
        configs = [("pointer", c) for c in kern.GPU_CONFIGS]
        configs += [("tma", c) for c in tma.TMA_CONFIGS]
        for variant, cfg in configs:
            pinned = dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
            row = {"kind": "sweep", "M": M, "K": K, "N": N, "variant": variant}
            row["config"] = str(pinned)
            try:

                def fn(p=pinned, v=variant):
                    return kern.fp8_addmm_triton(xq, sx, wq, sw, bias2d, None, config=p, variant=v)

                y = fn()
                row["rel_err_vs_autotuned"] = _rel_err(y, fp8.fp8_addmm(xq, sx, wq, sw, bias2d))
                row["ms"] = _bench(fn, warmup, rep)
                row["tflops"] = flops / row["ms"] / 1e9
            except Exception as e:  # a config may not fit (shared memory, registers)
                row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            writer.add(row)


def host_overheads(fp8, kern, dev: torch.device) -> list[dict]:
    """Host microseconds a call of each piece of the FP8 path (GPU kept busy, so no call
    waits on it), at the layer bench's uvqk shape: where a launch-bound step spends its time."""
    from ultra_hstu_plugin.kernels.fp8_gemm import tma_kernels as tma

    M, K, N = 65536, 512, 2048
    x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
    w = torch.randn(N, K, device=dev, dtype=torch.bfloat16)
    b1 = torch.randn(N, device=dev)
    ln_w, ln_b = torch.ones(K, device=dev), torch.zeros(K, device=dev)
    xq, sx = fp8.quantize_rowwise(x)
    wq, sw = fp8.quantize_weight(w)
    out = torch.empty(M, N, device=dev, dtype=torch.bfloat16)
    pieces: dict[str, Callable[[], object]] = {
        "torch.addmm bf16 (1D bias)": lambda: torch.addmm(b1.bfloat16(), x, w.t()),
        "quantize_rowwise": lambda: fp8.quantize_rowwise(x),
        "layer_norm_quantize_rowwise": lambda: fp8.layer_norm_quantize_rowwise(x, ln_w, ln_b),
        "quantize_rowwise (weight)": lambda: fp8.quantize_rowwise(w),
        "fp8_addmm (public, auto)": lambda: fp8.fp8_addmm(xq, sx, wq, sw, bias1d=b1),
        "launcher, pointer kernel": lambda: kern.fp8_addmm_triton(
            xq, sx, wq, sw, None, b1, out=out, variant="pointer"
        ),
        "launcher, TMA kernel": lambda: kern.fp8_addmm_triton(
            xq, sx, wq, sw, None, b1, out=out, variant="tma"
        ),
        "TMA kernel alone (pinned config)": lambda: tma.fp8_addmm_tma(
            xq,
            sx,
            wq,
            sw,
            None,
            b1,
            out,
            config={
                "BLOCK_M": 128,
                "BLOCK_N": 256,
                "BLOCK_K": 128,
                "EPILOGUE_SUBTILE": True,
            },  # fmt: skip
        ),
    }
    rows = []
    for name, fn in pieces.items():
        fn()
        torch.cuda.synchronize()
        calls = 200
        torch.cuda._sleep(1_000_000_000)  # keep the GPU busy while the host issues the calls
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        us = (time.perf_counter() - t0) / calls * 1e6
        torch.cuda.synchronize()
        rows.append({"kind": "host", "piece": name, "host_us_per_call": round(us, 1)})
        print(rows[-1], flush=True)
    return rows


def run(out_dir: Path, sweep: bool, warmup: int, rep: int, shapes: list[tuple[int, int, int]]):

    from ultra_hstu_plugin.kernels import fp8_gemm as fp8
    from ultra_hstu_plugin.kernels.fp8_gemm import triton_kernels as kern

    dev = torch.device("cuda")
    if not fp8.fp8_supported(dev):
        raise SystemExit(f"needs a CUDA GPU with FP8 (sm89+); found {torch.cuda.get_device_name()}")
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = RowWriter(out_dir, "fp8_gemm")
    meta = {
        **environment(),
        "command": "python -m ultra_hstu_plugin.bench.fp8_gemm " + " ".join(sys.argv[1:]),
        "timing": f"triton.testing.do_bench median, warmup={warmup} ms, rep={rep} ms",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(json.dumps(meta), flush=True)
    torch.manual_seed(0)
    for row in host_overheads(fp8, kern, dev):
        writer.add(row)
    for row in _edge_checks(fp8, kern, dev) if shapes else []:
        writer.add(row)
    for M, K, N in shapes:
        _measure_shape(M, K, N, fp8, kern, writer, sweep, warmup, rep, dev)
        torch.cuda.empty_cache()
    writer.close()
    _write_summary(out_dir, meta, writer.rows)


def _write_summary(out_dir: Path, meta: dict, rows: list[dict]) -> None:
    (out_dir / "fp8_gemm.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        "# FP8 rowwise GEMM with fused 2D bias",
        "",
        *(f"- {k}: {v}" for k, v in meta.items()),
        "",
        "## Correctness (before timing)",
        "",
        "| M | K | N | ok | rel err vs dequant ref | vs fp32 unquantised | quant mismatch |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["kind"] == "check":
            lines.append(
                f"| {r['M']} | {r['K']} | {r['N']} | {r['ok']} | "
                f"{r['ours_rel_err_vs_dequant_ref']:.2e} | "
                f"{r['ours_rel_err_vs_fp32_unquantised']:.2e} | {r['quant_fp8_mismatch_frac']:.1e} |"
            )
    lines += [
        "",
        "## Timings (median ms)",
        "",
        "| M | K | N | impl | ms | TFLOP/s | speedup vs bf16 addmm | CUDA-graph ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["kind"] == "time":
            tf = f"{r['tflops']:.0f}" if "tflops" in r else "-"
            sp = f"{r['speedup_vs_bf16_addmm']:.2f}x" if "speedup_vs_bf16_addmm" in r else "-"
            g = r.get("cuda_graph_ms", "-")
            g = f"{g:.3f}" if isinstance(g, float) else g
            lines.append(
                f"| {r['M']} | {r['K']} | {r['N']} | {r['impl']} | {r['ms']:.3f} | {tf} | {sp} "
                f"| {g} |"
            )
    sweep = [r for r in rows if r["kind"] == "sweep"]
    if sweep:
        lines += ["", "## Tile sweep (ours, GEMM with 2D bias)", ""]
        lines += ["| M | K | N | kernel | config | ms |", "| --- | --- | --- | --- | --- | --- |"]
        for r in sweep:
            ms = f"{r['ms']:.3f}" if "ms" in r else r.get("error", "")
            lines.append(
                f"| {r['M']} | {r['K']} | {r['N']} | {r.get('variant', 'pointer')} "
                f"| {r['config']} | {ms} |"
            )
    host = [r for r in rows if r["kind"] == "host"]
    if host:
        lines += ["", "## Host time a call (GPU kept busy), M,K,N = 65536,512,2048", ""]
        lines += ["| piece | host µs a call |", "| --- | --- |"]
        lines += [f"| {r['piece']} | {r['host_us_per_call']} |" for r in host]
    choices = [r for r in rows if r.get("auto_choice")]
    if choices:
        lines += ["", "## Kernel `fp8_addmm(variant='auto')` runs (variant table)", ""]
        lines += ["| M | K | N | auto | faster here |", "| --- | --- | --- | --- | --- |"]
        faster = measured_variant_table(rows, meta)
        for r in choices:
            key = shape_key(r["M"], r["N"], r["K"])
            best = next(iter(faster["table"].values()), {}).get(key, "-")
            lines.append(f"| {r['M']} | {r['K']} | {r['N']} | {r['auto_choice']} | {best} |")
    (out_dir / "fp8_gemm.md").write_text("\n".join(lines) + "\n")
    table = measured_variant_table(rows, meta)
    (out_dir / "fp8_gemm_variant_table.json").write_text(json.dumps(table, indent=1) + "\n")


def measured_variant_table(rows: list[dict], meta: dict) -> dict:
    """``variants.py``'s table from this run: the faster of the two kernels at each timed shape
    (the GEMM with a 2D bias, as the layer's output projection runs it).  Copy the file to
    ``kernels/fp8_gemm/variant_table.json`` to make it the default on that device."""
    from ultra_hstu_plugin.kernels.fp8_gemm.variants import device_key

    ms: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if r["kind"] == "time" and r["impl"].startswith("ours_fp8_gemm_bias2d_"):
            variant = r["impl"].rsplit("_", 1)[-1]
            ms.setdefault((r["M"], r["K"], r["N"]), {})[variant] = r["ms"]
    shapes = {shape_key(M, N, K): min(t, key=t.get) for (M, K, N), t in ms.items() if len(t) == 2}
    cap = tuple(int(v) for v in (meta.get("capability") or "0.0").split("."))
    return {
        "made_by": meta.get("command"),
        "git_commit": meta.get("git_commit"),
        "device": meta.get("device"),
        "table": {device_key(cap): shapes},
    }


def build_parser() -> argparse.ArgumentParser:
    """This benchmark's options (``ultra-hstu bench fp8_gemm --help``)."""
    p = argparse.ArgumentParser(
        prog="ultra-hstu bench fp8_gemm", description=__doc__.splitlines()[0]
    )
    p.add_argument("--out", type=Path, required=True, help="directory for fp8_gemm.jsonl/json/md")
    p.add_argument("--sweep", action="store_true", help="also time each tile config alone")
    p.add_argument("--warmup", type=int, default=25, help="do_bench warm-up (ms)")
    p.add_argument("--rep", type=int, default=100, help="do_bench repetition time (ms)")
    p.add_argument("--host-only", action="store_true", help="only the host-overhead table")
    p.add_argument(
        "--shapes", type=str, default=None, help="M,K,N;M,K,N;... (default: the three issue shapes)"
    )
    p.add_argument(
        "--variant-table",
        action="store_true",
        help="also time the layer's output-projection shapes, so that fp8_gemm_variant_table.json "
        "covers every GEMM of the layer benchmark",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    shapes = SHAPES + (LAYER_SHAPES if a.variant_table else [])
    if a.shapes:
        shapes = [tuple(int(v) for v in s.split(",")) for s in a.shapes.split(";")]
    run(a.out, a.sweep, a.warmup, a.rep, [] if a.host_only else shapes)


if __name__ == "__main__":
    main()
