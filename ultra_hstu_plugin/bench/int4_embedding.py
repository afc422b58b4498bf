# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Benchmark: embedding table bytes and lookup latency, fp16 vs INT4 (and fp32, INT8).

    python -m ultra_hstu_plugin.bench.int4_embedding --out DIR [--quick]

Every variant is torchrec's quantized ``EmbeddingCollection`` (fbgemm's int-n-bit TBE, the
inference kernel) built by :func:`quantize_embedding_collection` from one float table, so
the kernels and the Python around them are the same and only the row format differs; the
float torchrec ``EmbeddingCollection`` (the training module) is timed as a reference.
Lookups are unpooled (sequence features, as GR's ``EmbeddingCollection``) with uniformly
random ids, i.e. mostly cache misses, as for large tables.  INT4 lookups are checked
against the float table (within the rowwise step) before anything is timed.

The GPU column runs only where torch sees a GPU *and* fbgemm has CUDA kernels for the
int-n-bit lookup (the CPU-only ``fbgemm-gpu-cpu`` wheel has none); otherwise the JSON
records why it did not run.  Writes ``DIR/embedding.json`` and ``DIR/embedding.md``.

Triton GPU section (``--gpu-only`` runs it alone; it also runs after the CPU table wherever
torch sees a GPU): torch and triton only, no torchrec or fbgemm.  For the same (rows, dim,
ids) cases, plus each (rows, dim) at a large id batch, it builds the fp16 table and the INT4
rows (``quantize_int4_rowwise``: fbgemm's bytes without fbgemm) from one fp32 table and times
fp16 ``F.embedding`` against our Triton INT4 lookup (bf16 and fp16 output; rows unpadded and
padded to 16 bytes) and the PyTorch INT4 reference, with ``triton.testing.do_bench`` medians
(L2 flushed before each call).  The lookup is checked against the reference (bit for bit) and
the fp32 table (within the rowwise step) before anything is timed.  Rows go to
``DIR/int4_embedding_gpu.jsonl`` as they are measured and ``DIR/int4_embedding_gpu.md`` is rewritten after
each; ``DIR/int4_embedding_gpu.json`` at the end.

    python -m ultra_hstu_plugin.bench.int4_embedding --out DIR --gpu-only [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from ultra_hstu_plugin.bench.common import RowWriter, environment, git_commit

# (rows, dim, ids per lookup): a large item table at two widths, and the ML-100k smoke width.
CASES = [(1_000_000, 64, 8192), (500_000, 128, 8192), (100_000, 32, 8192)]
QUICK_CASES = [(100_000, 64, 4096), (50_000, 128, 4096)]
VARIANTS = {"fp32": None, "fp16": 16, "int8": 8, "int4": 4}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_status() -> Dict[str, Any]:
    """Whether the GPU column can run: a CUDA device and fbgemm CUDA kernels for the lookup."""
    if not torch.cuda.is_available():
        return {"run": False, "reason": "torch sees no CUDA device"}
    op = "fbgemm::int_nbit_split_embedding_codegen_lookup_function"
    try:
        has_cuda_kernel = torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")
    except RuntimeError:
        has_cuda_kernel = False
    if not has_cuda_kernel:
        return {"run": False, "reason": f"fbgemm has no CUDA kernel for {op} (CPU-only fbgemm)"}
    return {"run": True, "device": torch.cuda.get_device_name()}


def _interleaved_ms(
    fns: Dict[str, Callable[[], object]], sync: Callable[[], None], reps: int
) -> Dict[str, Dict[str, float]]:
    """Median/p10/p90 ms of each function, timed round-robin.

    On a small shared CPU machine the background load drifts during a run; timing the
    variants in turn (one call each per round) exposes them all to the same drift, so
    their ratios stay meaningful even when the absolute numbers move.
    """
    for _ in range(max(3, reps // 10)):  # warm-up: allocator, OpenMP pool, caches
        for fn in fns.values():
            fn()
    sync()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append((time.perf_counter() - t0) * 1e3)
    out = {}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=10)
        out[name] = {"ms": statistics.median(ts), "p10_ms": q[0], "p90_ms": q[-1]}
        if "fp16" in times and "/" not in name:
            # per-round ratio: both calls saw the same background load
            ratios = [a / b for a, b in zip(times["fp16"], ts)]
            out[name]["speedup_vs_fp16"] = statistics.median(ratios)
    return out


def _make_case(rows: int, dim: int, n_ids: int, device: torch.device, seed: int = 0):
    from ultra_hstu_plugin.host.torchrec import (
        EmbeddingCollection,
        EmbeddingConfig,
        KeyedJaggedTensor,
    )

    ec = EmbeddingCollection(
        tables=[
            EmbeddingConfig(name="t", num_embeddings=rows, embedding_dim=dim, feature_names=["f"])
        ],
        device=device,
    )
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        w = ec.embeddings["t"].weight
        w.uniform_(-(rows**-0.5), rows**-0.5, generator=gen)  # torchrec's default init range
    batch = 32  # users per request; the ids are their concatenated sequences
    ids = torch.randint(0, rows, (n_ids,), generator=gen, device=device)
    lengths = torch.full((batch,), n_ids // batch, dtype=torch.int64, device=device)
    lengths[-1] += n_ids - int(lengths.sum())
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["f"], values=ids, lengths=lengths)
    return ec, kjt


@torch.no_grad()
def _check_int4(ec, qec, kjt) -> Dict[str, Any]:
    ref = ec(kjt)["f"].values()
    got = qec(kjt)["f"].values()
    w = ec.embeddings["t"].weight.detach()[kjt["f"].values()]
    step = (w.max(dim=1).values - w.min(dim=1).values) / 15
    ratio = float(((got - ref).abs().max(dim=1).values / step.clamp_min(1e-30)).max())
    return {"max_err_over_step": ratio, "ok": ratio <= 0.51}


def _kernel_only(module: torch.nn.Module, kjt: Any) -> Callable[[], object]:
    """The lookup without the collection's KJT bookkeeping: fbgemm's TBE, or F.embedding."""
    from ultra_hstu_plugin.host import torchrec as trec

    ids = kjt.values()
    if isinstance(module, trec.QuantEmbeddingCollection):  # one fbgemm TBE per data type
        tbe = trec.tbe_modules(module)[0]
        offsets = kjt.offsets()  # one feature: the KJT's offsets are the TBE's
        return lambda: tbe(indices=ids, offsets=offsets)
    weight = module.embeddings["t"].weight
    return lambda: torch.nn.functional.embedding(ids, weight)


def measure_case(
    rows: int, dim: int, n_ids: int, device: torch.device, reps: int
) -> List[Dict[str, Any]]:
    from ultra_hstu_plugin.quant import int4_embeddings as q

    ec, kjt = _make_case(rows, dim, n_ids, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fp16_bytes = q.fp16_table_bytes(ec)
    out = []
    modules = {}
    for name, bits in VARIANTS.items():
        modules[name] = ec if bits is None else q.quantize_embedding_collection(ec, bits=bits)
    check = _check_int4(ec, modules["int4"], kjt)
    if not check["ok"]:
        raise SystemExit(f"INT4 lookup outside the rowwise step at rows={rows} dim={dim}: {check}")
    with torch.no_grad():
        fns = {name: (lambda m=m: m(kjt)) for name, m in modules.items()}
        fns |= {f"{name}/kernel": _kernel_only(m, kjt) for name, m in modules.items()}
        times = _interleaved_ms(fns, sync, reps)
        for name, module in modules.items():
            nbytes = q.table_bytes(module)
            t = times[name]
            row = {
                "device": device.type,
                "rows": rows,
                "dim": dim,
                "ids_per_lookup": n_ids,
                "variant": name,
                "table_bytes": nbytes,
                "bytes_per_row": nbytes / rows,
                "fp16_bytes_over_this": fp16_bytes / nbytes,
                **t,
                "kernel_ms": times[f"{name}/kernel"]["ms"],
                "ids_per_s_millions": n_ids / t["ms"] / 1e3,
            }
            if name == "int4":
                row.update(check)
            out.append(row)
            print(json.dumps(row), flush=True)
    return out


def run(out_dir: Path, quick: bool, reps: int, argv: List[str]) -> Dict[str, Any]:
    from ultra_hstu_plugin.host import torchrec as trec

    out_dir.mkdir(parents=True, exist_ok=True)
    gpu = gpu_status()
    meta = {
        "cpu": _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "torch": torch.__version__,
        **trec.versions(),  # fbgemm_gpu, torchrec
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "command": "python -m ultra_hstu_plugin.bench.int4_embedding " + " ".join(argv),
        "timing": f"median of {reps} EmbeddingCollection.forward calls per variant, "
        "variants interleaved round-robin (after warm-up)",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(json.dumps(meta), flush=True)
    cases = QUICK_CASES if quick else CASES
    rows: List[Dict[str, Any]] = []
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if gpu["run"] else [])
    for device in devices:
        for n, d, ids in cases:
            rows += measure_case(n, d, ids, device, reps)
    meta["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {"meta": meta, "rows": rows}
    (out_dir / "int4_embedding.json").write_text(json.dumps(result, indent=1))
    (out_dir / "int4_embedding.md").write_text(_markdown(meta, rows))
    return result


def _markdown(meta: Dict[str, Any], rows: List[Dict[str, Any]]) -> str:
    gpu = meta["gpu"]
    lines = [
        "# Embedding tables: fp16 vs INT4 (rowwise), torchrec quant EmbeddingCollection",
        "",
        *(f"- {k}: {v}" for k, v in meta.items() if k != "gpu"),
        "- GPU column: "
        + (f"ran on {gpu['device']}" if gpu["run"] else f"not run ({gpu['reason']})"),
        "",
        "Bytes are the stored rows (codes + fp16 scale/bias + row padding) of one table;",
        "latency is one unpooled lookup of `ids` uniformly random ids (32 jagged sequences).",
        "`vs fp16` is the median over rounds of (fp16 time / this time) within the same round,",
        "which cancels most of the background load of a shared machine.",
        "",
        "`kernel ms` is the lookup alone: fbgemm's TBE forward (quantized variants) or",
        "`F.embedding` (fp32), without the collection's KeyedJaggedTensor bookkeeping.",
        "",
        "| device | rows | dim | ids | variant | MiB | bytes/row | fp16/this | ms (p10-p90) "
        "| kernel ms | M ids/s | vs fp16 | INT4 err/step |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        err = f"{r['max_err_over_step']:.3f}" if "max_err_over_step" in r else ""
        lines.append(
            f"| {r['device']} | {r['rows']} | {r['dim']} | {r['ids_per_lookup']} | "
            f"{r['variant']} | {r['table_bytes'] / 2**20:.1f} | {r['bytes_per_row']:.0f} | "
            f"{r['fp16_bytes_over_this']:.2f}x | {r['ms']:.3f} ({r['p10_ms']:.3f}-"
            f"{r['p90_ms']:.3f}) | {r['kernel_ms']:.3f} | {r['ids_per_s_millions']:.1f} | "
            f"{r['speedup_vs_fp16']:.2f}x | {err} |"
        )
    return "\n".join(lines) + "\n"


# --- Triton GPU section: torch + triton only (the GPU machine has no torchrec/fbgemm) ------

# Inference batches of 8K ids take a few microseconds on a GPU, where launch overhead counts;
# a large batch per (rows, dim) shows the bandwidth-bound regime.
GPU_LARGE_IDS = 262_144


def gpu_cases(quick: bool) -> List[tuple]:
    base = QUICK_CASES if quick else CASES
    return base + [(rows, dim, GPU_LARGE_IDS) for rows, dim, _ in base]


def _do_bench(fn: Callable[[], object], warmup: int, rep: int) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def _graph_ms(fn: Callable[[], object]) -> Any:
    """GPU time alone (CUDA-graph replays): do_bench's events also catch host time a call,
    which at 8K ids is as long as the lookup.  No L2 flush between replays."""
    import triton.testing

    try:
        fn()
        torch.cuda.synchronize()
        return float(triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median"))
    except Exception as e:  # a secondary number: record why, go on
        return f"{type(e).__name__}: {str(e)[:120]}"


@torch.no_grad()
def _gpu_check(w, ids, dim: int, tables: Dict[int, torch.Tensor]) -> Dict[str, Any]:
    """Triton lookup == PyTorch reference bit for bit; within the rowwise step of fp32."""
    from ultra_hstu_plugin.kernels.int4_embedding import int4_lookup
    from ultra_hstu_plugin.kernels.int4_embedding.reference import int4_lookup_reference

    exact = {}
    for align, table in tables.items():
        for dt in (torch.bfloat16, torch.float16, torch.float32):
            got = int4_lookup(table, ids, dim, dt)
            ref = int4_lookup_reference(table, ids, dim, dt)
            exact[f"align{align}_{str(dt).removeprefix('torch.')}"] = bool(torch.equal(got, ref))
    got = int4_lookup(tables[1], ids, dim, torch.float32)
    x = w[ids]
    step = (x.amax(dim=1) - x.amin(dim=1)) / 15
    ratio = float(((got - x).abs().amax(dim=1) / step.clamp_min(1e-30)).max())
    return {
        "kind": "check",
        "exact_vs_reference": exact,
        "max_err_over_step": ratio,
        "ok": all(exact.values()) and ratio <= 0.51,
    }


@torch.no_grad()
def measure_gpu_case(
    rows: int, dim: int, n_ids: int, writer: RowWriter, warmup: int, rep: int
) -> None:
    """Check, then time, fp16 F.embedding vs the Triton INT4 lookup on one (rows, dim, ids)."""
    from ultra_hstu_plugin.kernels import int4_embedding as k4
    from ultra_hstu_plugin.kernels.int4_embedding import triton_kernels as kern

    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    w = torch.empty(rows, dim, device=dev)
    w.uniform_(-(rows**-0.5), rows**-0.5, generator=gen)  # as the CPU table (torchrec's init)
    ids = torch.randint(0, rows, (n_ids,), generator=gen, device=dev)
    w16, w32 = w.half(), w
    # Unpadded rows (dim/2 + 4 bytes, what the CPU table stores) and rows padded to 16 bytes
    # (torchrec's CUDA alignment), which lets the kernel load a row's codes in one vector.
    tables = {1: k4.quantize_int4_rowwise(w), 16: k4.quantize_int4_rowwise(w, row_alignment=16)}
    case = {"rows": rows, "dim": dim, "ids_per_lookup": n_ids}
    check = {**case, **_gpu_check(w, ids, dim, tables)}
    writer.add(check)
    if not check["ok"]:
        raise SystemExit(f"Triton INT4 lookup check failed at rows={rows} dim={dim}: {check}")

    bf16, fp16 = torch.bfloat16, torch.float16
    out = torch.empty((n_ids, dim), dtype=bf16, device=dev)
    variants: Dict[str, tuple] = {
        # name: (fn, table, output element bytes)
        "fp16 F.embedding": (lambda: torch.nn.functional.embedding(ids, w16), w16, 2),
        "fp32 F.embedding": (lambda: torch.nn.functional.embedding(ids, w32), w32, 4),
        "int4 triton bf16": (lambda: k4.int4_lookup(tables[1], ids, dim, bf16), tables[1], 2),
        "int4 triton fp16": (lambda: k4.int4_lookup(tables[1], ids, dim, fp16), tables[1], 2),
        "int4 triton bf16 align16": (
            lambda: k4.int4_lookup(tables[16], ids, dim, bf16),
            tables[16],
            2,
        ),
        # the launcher alone into a preallocated output: the API's checks and allocation cost
        "int4 triton bf16 kernel-only": (
            lambda: kern.int4_lookup_triton(tables[1], ids, dim, bf16, out=out),
            tables[1],
            2,
        ),
        "int4 pytorch-ref bf16": (
            lambda: k4.int4_lookup(tables[1], ids, dim, bf16, backend="pytorch"),
            tables[1],
            2,
        ),
    }
    times = {}
    for name, (fn, _, _) in variants.items():
        fn()
        torch.cuda.synchronize()
        times[name] = _do_bench(fn, warmup, rep)
    graph = {n: _graph_ms(variants[n][0]) for n in ("fp16 F.embedding", "int4 triton bf16")}
    fp16_bytes = rows * dim * 2
    base = times["fp16 F.embedding"]
    for name, (_, table, out_bytes) in variants.items():
        nbytes = table.numel() * table.element_size()
        row_bytes = nbytes / rows
        ms = times[name]
        row = {
            **case,
            "kind": "time",
            "variant": name,
            "table_bytes": nbytes,
            "bytes_per_row": row_bytes,
            "fp16_bytes_over_this": fp16_bytes / nbytes,
            "ms": ms,
            "ids_per_s_millions": n_ids / ms / 1e3,
            # rows read + output written (ids and L2 reuse of repeated rows ignored)
            "gbytes_per_s": n_ids * (row_bytes + dim * out_bytes) / ms / 1e6,
            "speedup_vs_fp16": base / ms,
        }
        if name in graph:
            row["cuda_graph_ms"] = graph[name]
        writer.add(row)


def run_gpu(out_dir: Path, quick: bool, warmup: int, rep: int, argv: List[str]) -> Dict[str, Any]:
    """The Triton GPU section alone: needs a CUDA device, torch and triton."""

    if not torch.cuda.is_available():
        raise SystemExit("the Triton GPU section needs a CUDA device; torch sees none")
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        **environment(),
        "command": "python -m ultra_hstu_plugin.bench.int4_embedding " + " ".join(argv),
        "timing": f"triton.testing.do_bench median (L2 flushed before each call), "
        f"warmup={warmup} ms, rep={rep} ms",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(json.dumps(meta), flush=True)
    writer = RowWriter(out_dir, "int4_embedding_gpu")
    try:
        for rows, dim, n_ids in gpu_cases(quick):
            measure_gpu_case(rows, dim, n_ids, writer, warmup, rep)
            torch.cuda.empty_cache()  # the case's tables are gone; give their memory back
            (out_dir / "int4_embedding_gpu.md").write_text(_gpu_markdown(meta, writer.rows))
    finally:
        writer.close()
        (out_dir / "int4_embedding_gpu.md").write_text(_gpu_markdown(meta, writer.rows))
    result = {"meta": meta, "rows": writer.rows}
    (out_dir / "int4_embedding_gpu.json").write_text(json.dumps(result, indent=1))
    return result


def _gpu_markdown(meta: Dict[str, Any], rows: List[Dict[str, Any]]) -> str:
    lines = [
        "# Embedding lookups on the GPU: fp16 F.embedding vs Triton INT4 (rowwise), no fbgemm",
        "",
        *(f"- {k}: {v}" for k, v in meta.items()),
        "",
        "INT4 rows are fbgemm's fused layout (codes, fp16 scale, fp16 bias), built by",
        "`quantize_int4_rowwise` (bit-identical to fbgemm's quantiser); `align16` pads rows to",
        "16 bytes.  Ids are uniformly random (mostly cache misses).  `GB/s` counts the rows read",
        "and the output written.  `kernel-only` is the Triton launcher into a preallocated",
        "output, without the API's checks; `CUDA-graph ms` is GPU time alone (no host time, no",
        "L2 flush).",
        "",
        "## Correctness (before timing)",
        "",
        "| rows | dim | ids | ok | bit-exact vs reference | max err / step |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["kind"] == "check":
            exact = all(r["exact_vs_reference"].values())
            lines.append(
                f"| {r['rows']} | {r['dim']} | {r['ids_per_lookup']} | {r['ok']} | {exact} | "
                f"{r['max_err_over_step']:.3f} |"
            )
    lines += [
        "",
        "## Timings (median ms)",
        "",
        "| rows | dim | ids | variant | MiB | bytes/row | fp16/this | ms | M ids/s | GB/s "
        "| vs fp16 | CUDA-graph ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["kind"] != "time":
            continue
        g = r.get("cuda_graph_ms", "")
        g = f"{g:.4f}" if isinstance(g, float) else g
        lines.append(
            f"| {r['rows']} | {r['dim']} | {r['ids_per_lookup']} | {r['variant']} | "
            f"{r['table_bytes'] / 2**20:.1f} | {r['bytes_per_row']:.0f} | "
            f"{r['fp16_bytes_over_this']:.2f}x | {r['ms']:.4f} | {r['ids_per_s_millions']:.0f} | "
            f"{r['gbytes_per_s']:.0f} | {r['speedup_vs_fp16']:.2f}x | {g} |"
        )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """This benchmark's options (``ultra-hstu bench int4_embedding --help``)."""
    p = argparse.ArgumentParser(
        prog="ultra-hstu bench int4_embedding", description=__doc__.splitlines()[0]
    )
    p.add_argument("--out", type=Path, required=True, help="directory for embedding.json/md")
    p.add_argument("--quick", action="store_true", help="small tables (smoke run)")
    p.add_argument("--reps", type=int, default=200, help="timed lookups per variant")
    p.add_argument(
        "--gpu-only",
        action="store_true",
        help="only the Triton GPU section (torch + triton; no torchrec/fbgemm needed): "
        "int4_embedding_gpu.jsonl/json/md",
    )
    p.add_argument("--gpu-warmup", type=int, default=25, help="do_bench warm-up (ms), GPU section")
    p.add_argument("--gpu-rep", type=int, default=100, help="do_bench repetition (ms), GPU section")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    if not a.gpu_only:
        try:
            import ultra_hstu_plugin.host.torchrec  # noqa: F401 - torchrec and fbgemm_gpu
        except ImportError as e:
            raise SystemExit(
                f"the CPU table needs torchrec and fbgemm ({e}); "
                "--gpu-only runs the Triton GPU section without them"
            ) from e
        run(a.out, a.quick, a.reps, argv)
    if a.gpu_only or torch.cuda.is_available():
        run_gpu(a.out, a.quick, a.gpu_warmup, a.gpu_rep, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
