# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu bench scaling``: whole encoders over sequence length, GR's HSTU vs ULTRA-HSTU.

    python -m ultra_hstu_plugin.bench.scaling --out DIR [--gr-path PATH] [--time-budget S]

Configurations (the row keys; ``--configs`` picks a subset):

* ``gr_hstu``: GR's own stack, ``STUStack`` of 10 ``STULayer``, full causal;
* ``ultra_sla18``: 18 ULTRA-HSTU layers under the SLA mask (k1 = 1024, k2 = 128);
* ``ultra_sla6_trunc12_L2048``: 6 SLA layers + 12 truncated layers on L' = 2048;
* ``ultra_sla3_trunc15_L1024``: 3 + 15 on L' = 1024;
* ``ultra_sla3_trunc15_L1024_fp8``: the same with FP8 projections.

Shapes: ``--tokens`` (65536) per batch, B = tokens / L, every sequence L long with
``--targets`` (64) candidates, L in ``--lengths``; plus a single-user row (B = 1,
inference only) at each L.  D = 512, 4 heads, head dims 128 (GR's layer defaults with
recomputation), bf16 and HammerKernel.TRITON on GPU (fp32 / PYTORCH on CPU).

Per (config, L, batch kind): train step (fwd + backward of a random output gradient, train
mode), inference forward (eval mode, ``no_grad``, encoder built with ``is_inference=True``),
peak memory of one call, the first call's seconds (Triton autotuning; separately for train
and inference, untimed), analytic forward FLOPs (``bench/encoder_flops.py``), useful TFLOP/s
(train = 3x forward) and the ratios to ``gr_hstu`` at the same L in the same run.

Rows go to ``DIR/scaling<tag>.jsonl`` as measured; ``scaling<tag>.json``, ``.md`` and the
``_time.png`` / ``_flops.png`` plots (when matplotlib imports) are written at the end.
``--report-only A.jsonl B.jsonl ...`` re-renders them from rows of one or more runs (each
device call may measure part of the grid).  A configuration that runs out of memory, that
the encoder rejects (e.g. L' >= L) or that fails is recorded with its reason, and the run
goes on.  Runs with torch + triton and a GR checkout (``--gr-path``), no torchrec/fbgemm.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ultra_hstu_plugin.bench.common import add_autotune_option
from ultra_hstu_plugin.bench.encoder_flops import LayerDims, StackShape, encoder_flops


@dataclass(frozen=True)
class Config:
    """One encoder of the grid.  ``lprime`` is the nominal L' (scaled by ``--lprime-scale``)."""

    name: str
    description: str
    gr: bool = False
    num_full_layers: int = 0
    num_truncated_layers: int = 0
    lprime: int = 0
    fp8: bool = False


CONFIGS: Dict[str, Config] = {
    c.name: c
    for c in (
        Config("gr_hstu", "GR's STUStack of 10 STULayer, full causal", gr=True, num_full_layers=10),
        Config("ultra_sla18", "18 ULTRA-HSTU layers, SLA(k1, k2)", num_full_layers=18),
        Config(
            "ultra_sla6_trunc12_L2048",
            "6 SLA layers + 12 truncated layers (full causal) on L'=2048",
            num_full_layers=6,
            num_truncated_layers=12,
            lprime=2048,
        ),
        Config(
            "ultra_sla3_trunc15_L1024",
            "3 SLA layers + 15 truncated layers (full causal) on L'=1024",
            num_full_layers=3,
            num_truncated_layers=15,
            lprime=1024,
        ),
        Config(
            "ultra_sla3_trunc15_L1024_fp8",
            "ultra_sla3_trunc15_L1024 with FP8 uvqk / output projections",
            num_full_layers=3,
            num_truncated_layers=15,
            lprime=1024,
            fp8=True,
        ),
    )
}
BASELINE = "gr_hstu"
# How a step runs the encoder: "eager" (module calls) or "graphs" (replayed from a CUDA
# graph: modules/cuda_graphs.GraphedEncoder for the inference forward, GraphedTrainStep for
# forward + backward).  GR's dropout kernels take their seed from the host, so a captured
# train step replays one dropout mask: the same GPU work as eager (what is timed here), not
# a training recipe with dropout (the notes say so).
EXECUTORS = ("eager", "graphs")
BATCH_KINDS = ("batch", "single")  # B = tokens / L (train + inference); B = 1 (inference)
# Modes measured per batch kind; "inference_graphs" needs CUDA (skipped, not failed, on CPU).
MODES = {
    "batch": ("train", "train_graphs", "inference", "inference_graphs"),
    "single": ("inference", "inference_graphs"),
}
GPU_ONLY_MODES = ("train_graphs", "inference_graphs")
# The targets, evaluated at --target-length from rows of the same run.
TRAIN_SPEEDUP_MIN = 3.0
INFERENCE_SPEEDUP_MIN = 8.0
WALL_PER_FLOP_MIN = 0.75
SINGLE_USER_MS_MAX = 10.0
# Toy sizes that run the whole flow on CPU in seconds (the integration test).  L' scales
# to 64 and 32, so ultra_sla6_trunc12_L2048 at L = 64 is rejected (L' >= L).
SMOKE = {
    "lengths": [64, 128],
    "tokens": 256,
    "targets": 4,
    "dim": 32,
    "heads": 2,
    "head_dim": 16,
    "k1": 16,
    "k2": 4,
    "lprime_scale": 1 / 32,
    "target_length": 128,
    "rep_ms": 20.0,
    "cpu_reps": 1,
}
NOTES = [
    "FLOPs: the paper's Table-2 count (bench/encoder_flops.py): uvqk and output GEMMs + "
    "QK^T and AV over the unmasked (row, key) pairs of each layer's mask; candidates' "
    "mutual masking, norms and activations not counted; train = 3x forward.",
    "GR's is_inference only picks the default HammerKernel (TRITON_CC); the kernel is set "
    "explicitly here, and inference encoders are built with is_inference=True anyway.",
    "peak GiB: torch.cuda.max_memory_allocated over one call after the first (weights, "
    "inputs and, for train, gradients included).",
]


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """This benchmark's options (``ultra-hstu bench scaling --help``)."""
    p = argparse.ArgumentParser(
        prog="ultra-hstu bench scaling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out", type=Path, default=Path("benchmarks/results"), help="directory for scaling<tag>.*"
    )
    p.add_argument("--tag", default="", help="suffix of the output files (scaling<tag>.*)")
    p.add_argument("--gr-path", default=None, help="GR checkout root (if not installed)")
    p.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cuda", "cpu"],
        help="auto: CUDA if there is a GPU, else CPU (small shapes only); cuda without a "
        "GPU exits 2",
    )
    p.add_argument(
        "--configs",
        nargs="+",
        default=list(CONFIGS),
        choices=list(CONFIGS),
        metavar="CONFIG",
        help="configurations to measure (default all): " + ", ".join(CONFIGS),
    )
    p.add_argument(
        "--lengths",
        nargs="+",
        type=int,
        default=[16384, 8192, 4096, 2048],
        help="sequence lengths L, measured in this order (longest first: the targets' L)",
    )
    p.add_argument(
        "--batch-kinds",
        nargs="+",
        default=list(BATCH_KINDS),
        choices=list(BATCH_KINDS),
        help="batch: B = tokens / L, train + inference; single: B = 1, inference latency",
    )
    p.add_argument("--tokens", type=int, default=65536, help="tokens per batch: B = tokens / L")
    p.add_argument("--targets", type=int, default=64, help="candidates per sequence")
    p.add_argument("--dim", type=int, default=512, help="embedding dim D")
    p.add_argument("--heads", type=int, default=4, help="attention heads")
    p.add_argument("--head-dim", type=int, default=128, help="per-head hidden and attention dim")
    p.add_argument("--k1", type=int, default=1024, help="SLA window of the ULTRA layers")
    p.add_argument("--k2", type=int, default=128, help="SLA global prefix of the ULTRA layers")
    p.add_argument(
        "--lprime-scale",
        type=float,
        default=1.0,
        help="multiplies each config's L' (2048, 1024); for small test shapes",
    )
    p.add_argument(
        "--modes",
        nargs="+",
        default=None,
        choices=sorted({m for modes in MODES.values() for m in modes}),
        help="measure only these modes (default: all of each batch kind's)",
    )
    p.add_argument(
        "--no-graphs",
        action="store_true",
        help="skip the CUDA-graph inference rows (inference_graphs: GraphedEncoder replay)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=0.0,
        help="seconds; no new measurement starts after this (0 = no limit)",
    )
    p.add_argument(
        "--target-length",
        type=int,
        default=16384,
        help="L at which the issue's targets are evaluated",
    )
    p.add_argument("--warmup-ms", type=float, default=25.0, help="do_bench warm-up (GPU)")
    p.add_argument(
        "--rep-ms", type=float, default=100.0, help="do_bench repetition time (GPU; >= 5 calls)"
    )
    p.add_argument("--cpu-reps", type=int, default=3, help="timed calls per measurement on CPU")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="toy sizes (L 64 and 128, D 32, 2 heads of 16, k1 16, k2 4, L' / 32) to test "
        "the script on CPU; explicit options still win",
    )
    p.add_argument(
        "--report-only",
        nargs="+",
        type=Path,
        default=None,
        metavar="JSONL",
        help="measure nothing: re-render scaling<tag>.json/.md/.png in --out from these rows",
    )
    add_autotune_option(p)
    return p


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = build_parser()
    if parser.parse_known_args(argv)[0].smoke:
        parser.set_defaults(**SMOKE)
    args = parser.parse_args(argv)
    for name in ("tokens", "dim", "heads", "head_dim", "cpu_reps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.lengths) < 1 or args.targets < 0:
        parser.error("--lengths must be >= 1 and --targets >= 0")
    return args


# --------------------------------------------------------------------------------------
# Shapes and FLOPs
# --------------------------------------------------------------------------------------


def lprime_of(cfg: Config, args: argparse.Namespace) -> int:
    return max(1, round(cfg.lprime * args.lprime_scale)) if cfg.num_truncated_layers else 0


def stack_shape(cfg: Config, args: argparse.Namespace) -> StackShape:
    if cfg.gr:
        return StackShape(num_full_layers=cfg.num_full_layers)
    return StackShape(
        num_full_layers=cfg.num_full_layers,
        k1=args.k1,
        k2=args.k2,
        num_truncated_layers=cfg.num_truncated_layers,
        truncated_seq_len=lprime_of(cfg, args),
    )


def layer_dims(args: argparse.Namespace) -> LayerDims:
    return LayerDims(args.dim, args.heads, args.head_dim, args.head_dim)


def batch_size(kind: str, L: int, args: argparse.Namespace) -> int:
    return 1 if kind == "single" else max(1, args.tokens // L)


def flops_fields(cfg: Config, L: int, B: int, args: argparse.Namespace) -> Dict[str, Any]:
    dims = layer_dims(args)
    f = encoder_flops(stack_shape(cfg, args), L, B, dims, num_targets=args.targets)
    gr = encoder_flops(stack_shape(CONFIGS[BASELINE], args), L, B, dims, num_targets=args.targets)
    return {
        "fwd_flops": f["total"],
        "fwd_flops_gemm": f["gemm"],
        "fwd_flops_attention": f["attention"],
        "gr_fwd_flops": gr["total"],
        "flop_ratio_vs_gr": gr["total"] / f["total"],
    }


def rejection(cfg: Config, L: int, args: argparse.Namespace) -> Optional[str]:
    """Why the encoder refuses this (config, L), or None (checked before anything is built)."""
    if cfg.gr:
        return None
    try:
        encoder_config(cfg, args).validate(L)
    except ValueError as e:
        return str(e)
    return None


def encoder_config(cfg: Config, args: argparse.Namespace) -> Any:
    """The ``UltraHSTUEncoderConfig`` of an ULTRA config."""
    from ultra_hstu_plugin.modules.encoder_config import UltraHSTUEncoderConfig

    return UltraHSTUEncoderConfig(
        num_full_layers=cfg.num_full_layers,
        num_truncated_layers=cfg.num_truncated_layers,
        truncated_seq_len=lprime_of(cfg, args),
        k1=args.k1,
        k2=args.k2,
        fp8=cfg.fp8,
    )


# --------------------------------------------------------------------------------------
# Building and running encoders
# --------------------------------------------------------------------------------------


def build_encoder(
    cfg: Config, args: argparse.Namespace, L: int, is_inference: bool, device: str
) -> Any:
    """The encoder of ``cfg`` on ``device`` (bf16 + TRITON on CUDA, fp32 + PYTORCH on CPU)."""
    import torch

    from ultra_hstu_plugin.host import (
        HammerKernel,
        HammerModule,
        STULayer,
        STULayerConfig,
        STUStack,
    )
    from ultra_hstu_plugin.modules.encoder import build_ultra_hstu_encoder

    layer_config = STULayerConfig(
        embedding_dim=args.dim,
        num_heads=args.heads,
        hidden_dim=args.head_dim,
        attention_dim=args.head_dim,
        output_dropout_ratio=0.1,
        target_aware=True,
        causal=True,
        contextual_seq_len=0,
    )
    torch.manual_seed(0)
    if cfg.gr:
        encoder = STUStack(
            stu_list=[
                STULayer(layer_config, is_inference=is_inference)
                for _ in range(cfg.num_full_layers)
            ],
            is_inference=is_inference,
        )
    else:
        encoder = build_ultra_hstu_encoder(
            encoder_config(cfg, args),
            layer_config,
            is_inference,
            max_seq_len=L,
        )
    kernel = HammerKernel.TRITON if device == "cuda" else HammerKernel.PYTORCH
    encoder = encoder.to(device=device, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    encoder.set_hammer_kernel(kernel)  # GR's: sets it on every HammerModule below too
    stale = [
        type(m).__name__
        for m in encoder.modules()
        if isinstance(m, HammerModule) and m.hammer_kernel() != kernel
    ]
    if stale:
        raise RuntimeError(f"set_hammer_kernel({kernel.name}) did not reach {stale}")
    return encoder


@dataclass
class EncoderInputs:
    """One batch of B full-length sequences of L tokens, ``num_targets`` candidates each."""

    x: Any
    lengths: Any
    offsets: Any
    max_seq_len: int
    num_targets: Any
    grad: Any  # d(loss)/d(output) of the train step


def make_inputs(B: int, L: int, args: argparse.Namespace, device: str) -> EncoderInputs:
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    g = torch.Generator(device=device).manual_seed(B * 100003 + L)
    lengths = torch.full((B,), L, dtype=torch.int64, device=device)
    offsets = torch.zeros(B + 1, dtype=torch.int64, device=device)
    offsets[1:] = lengths.cumsum(0)
    x = torch.randn(B * L, args.dim, device=device, dtype=dtype, generator=g)
    return EncoderInputs(
        x=x,
        lengths=lengths,
        offsets=offsets,
        max_seq_len=L,
        num_targets=torch.full((B,), min(args.targets, L), dtype=torch.int64, device=device),
        grad=torch.randn(x.shape, device=device, dtype=dtype, generator=g),
    )


def make_step(
    encoder: Any, inputs: EncoderInputs, mode: str, executor: str = "eager"
) -> Callable[[], Any]:
    """A zero-argument callable that runs one ``mode`` step ("train": forward + backward in
    train mode; "inference": eval-mode forward under ``no_grad``).  The one place that runs
    the encoder, so another executor (CUDA graphs) slots in here."""
    import torch

    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; known: {', '.join(EXECUTORS)}")
    if mode not in ("train", "inference"):
        raise ValueError(f"unknown mode {mode!r}: train or inference")
    encoder.train(mode == "train")
    kwargs = dict(
        x_lengths=inputs.lengths,
        x_offsets=inputs.offsets,
        max_seq_len=inputs.max_seq_len,
        num_targets=inputs.num_targets,
    )
    if mode == "inference":
        run = encoder
        if executor == "graphs":
            from ultra_hstu_plugin.modules.cuda_graphs import GraphedEncoder

            run = GraphedEncoder(encoder)  # the first call captures (after an eager warm-up)

        def inference() -> Any:
            with torch.no_grad():
                return run(x=inputs.x, **kwargs)

        return inference

    if executor == "graphs":
        from ultra_hstu_plugin.modules.cuda_graphs import GraphedTrainStep

        graphed: List[Any] = []  # built on the first call, so that warm-up times its capture

        def train_graphed() -> None:
            if not graphed:
                graphed.append(
                    GraphedTrainStep(encoder, inputs.x, **kwargs, fixed_dropout_mask=True)
                )
            graphed[0].step(inputs.x, inputs.grad)

        return train_graphed

    x = inputs.x.detach().requires_grad_(True)  # the embeddings below need their gradient
    params = list(encoder.parameters())

    def train() -> None:
        for p in params:  # zero_grad(set_to_none=True): backward writes fresh gradients
            p.grad = None
        x.grad = None
        encoder(x=x, **kwargs).backward(inputs.grad)

    return train


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def time_step(step: Callable[[], Any], device: str, args: argparse.Namespace) -> Dict[str, Any]:
    """First call (untimed: autotuning), peak memory of one call, then the median time."""
    import torch

    t0 = time.perf_counter()
    step()
    _sync(device)
    out: Dict[str, Any] = {"warmup_s": round(time.perf_counter() - t0, 3)}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        step()
        _sync(device)
        estimate_ms = (time.perf_counter() - t0) * 1e3
        # (do_bench's own L2-flush buffer would count in the peak: read it before)
        out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        import triton.testing

        # at least 5 timed calls, however long a step is
        ms = triton.testing.do_bench(
            step,
            warmup=max(args.warmup_ms, estimate_ms),
            rep=max(args.rep_ms, 5 * estimate_ms),
            return_mode="median",
        )
    else:
        times = []
        for _ in range(args.cpu_reps):
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
        ms = sorted(times)[len(times) // 2]
    out["ms"] = round(float(ms), 4)
    return out


def _oom_errors() -> Tuple[type, ...]:
    import torch

    return (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)


def measure(
    cfg: Config, args: argparse.Namespace, L: int, B: int, mode: str, device: str
) -> Dict[str, Any]:
    """One (config, L, B, mode) measurement: ``status`` "ok" with ``ms`` / ``warmup_s`` /
    ``peak_gib``, or the reason it has none.  Memory is freed whatever happened."""

    executor = "graphs" if mode.endswith("_graphs") else "eager"
    base_mode = mode.removesuffix("_graphs")

    def run() -> Dict[str, Any]:
        try:
            encoder = build_encoder(cfg, args, L, base_mode != "train", device)
        except ValueError as e:  # the encoder refuses this shape
            return {"status": f"rejected: {e}"}
        step = make_step(encoder, make_inputs(B, L, args, device), base_mode, executor)
        return {"status": "ok", **time_step(step, device, args)}

    oom = False
    try:
        result = run()
    except _oom_errors():
        oom = True  # handled below, once the traceback (and the tensors it holds) is gone
    except Exception as e:  # recorded, and the grid goes on
        traceback.print_exc()
        result = {"status": f"error: {type(e).__name__}: {e}"[:500]}
    if oom:
        result = {"status": f"out of memory at L={L}"}
    if device == "cuda":  # (on CPU nothing waits for the memory, and a full collect is slow)
        import torch

        gc.collect()  # tensors in reference cycles (autograd graphs of a failed step)
        torch.cuda.empty_cache()
    return result


# --------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------


def resolve_device(requested: str, args: argparse.Namespace) -> Tuple[Optional[str], str]:
    """(device, message): device None means exit 2 with the message."""
    import torch

    if torch.cuda.is_available() and requested in ("auto", "cuda"):
        return "cuda", ""
    if requested == "cuda":
        return None, (
            "ultra-hstu bench scaling: error: --device cuda, but no CUDA GPU is visible "
            "(torch.cuda.is_available() is False). Run it on a GPU machine, or pass "
            "--device cpu with small shapes (e.g. --smoke) to test the script."
        )
    if requested == "auto" and max(args.lengths) > 2048:
        return None, (
            "ultra-hstu bench scaling: error: no CUDA GPU is visible, and L up to "
            f"{max(args.lengths)} is far too big for the CPU (PyTorch kernels, dense masks). "
            "Run it on a GPU machine, or pass --smoke (or --device cpu to insist)."
        )
    why = "as asked" if requested == "cpu" else "no CUDA GPU"
    return "cpu", (
        f"{why}: running on CPU (fp32, HammerKernel.PYTORCH, one thread): tests the script only"
    )


def _row_status(results: Dict[str, Dict[str, Any]]) -> str:
    bad = [r["status"] for r in results.values() if r["status"] != "ok"]
    return bad[0] if bad else "ok"


def run_grid(args: argparse.Namespace, argv: List[str], device: str, notes: List[str]) -> list:
    from ultra_hstu_plugin.bench.common import RowWriter, environment

    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    stem = f"scaling{args.tag}"
    writer = RowWriter(args.out, stem)
    started = time.monotonic()
    deadline = started + args.time_budget if args.time_budget > 0 else None
    configs = [CONFIGS[name] for name in CONFIGS if name in args.configs]  # baseline first
    writer.add(
        {
            "kind": "meta",
            "run_id": run_id,
            **environment(),
            "command": "python -m ultra_hstu_plugin.bench.scaling " + " ".join(argv),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "device_kind": device,
            "dtype": "bfloat16" if device == "cuda" else "float32",
            "hammer_kernel": "TRITON" if device == "cuda" else "PYTORCH",
            "executor": "eager" + ("" if args.no_graphs or device != "cuda" else " + graphs"),
            "timing": (
                "triton.testing.do_bench median (warmup >= "
                f"{args.warmup_ms:g} ms, rep >= {args.rep_ms:g} ms and >= 5 calls)"
                if device == "cuda"
                else f"median of {args.cpu_reps} perf_counter-timed call(s)"
            ),
            "shapes": {
                "lengths": args.lengths,
                "tokens": args.tokens,
                "num_targets": args.targets,
                "dim": args.dim,
                "heads": args.heads,
                "head_dim": args.head_dim,
                "k1": args.k1,
                "k2": args.k2,
                "lprime": {c.name: lprime_of(c, args) for c in configs if c.num_truncated_layers},
                "dropout": 0.1,
            },
            "configs": {c.name: c.description for c in configs},
            "time_budget_s": args.time_budget,
            "notes": notes,
        }
    )
    not_started = 0
    for L in args.lengths:
        for cfg in configs:
            reason = rejection(cfg, L, args)
            for kind in args.batch_kinds:
                B = batch_size(kind, L, args)
                row: Dict[str, Any] = {
                    "kind": "measurement",
                    "run_id": run_id,
                    "config": cfg.name,
                    "L": L,
                    "batch_kind": kind,
                    "B": B,
                    "tokens": B * L,
                    "num_targets": args.targets,
                    "layers": cfg.num_full_layers + cfg.num_truncated_layers,
                    "num_full_layers": cfg.num_full_layers,
                    "num_truncated_layers": cfg.num_truncated_layers,
                    "lprime": lprime_of(cfg, args),
                    "k1": 0 if cfg.gr else args.k1,
                    "k2": 0 if cfg.gr else args.k2,
                    "fp8": cfg.fp8,
                }
                if reason is not None:
                    writer.add({**row, "status": f"rejected: {reason}"})
                    continue
                row.update(flops_fields(cfg, L, B, args))
                results = {}
                for mode in MODES[kind]:
                    if mode in GPU_ONLY_MODES and (device != "cuda" or args.no_graphs):
                        continue  # not measured: no status, so the row is not "failed"
                    if args.modes is not None and mode not in args.modes:
                        continue
                    if deadline is not None and time.monotonic() > deadline:
                        results[mode] = {"status": "skipped: time budget"}
                        not_started += 1
                        continue
                    results[mode] = measure(cfg, args, L, B, mode, device)
                for mode, res in results.items():
                    row[f"status_{mode}"] = res["status"]
                    for key in ("ms", "warmup_s", "peak_gib"):
                        if key in res:
                            row[f"{mode}_{key}"] = res[key]
                writer.add({**row, "status": _row_status(results)})
    writer.add(
        {
            "kind": "end",
            "run_id": run_id,
            "elapsed_s": round(time.monotonic() - started, 1),
            "time_budget_s": args.time_budget,
            "budget_reached": not_started > 0,
            "not_started": not_started,
        }
    )
    writer.close()
    return writer.rows


# --------------------------------------------------------------------------------------
# Report: ratios, targets, markdown, plots (from rows only, so --report-only reproduces it)
# --------------------------------------------------------------------------------------


def load_rows(paths: List[Path]) -> list:
    rows = []
    for path in paths:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:  # a cut-off run's last line
                        print(f"{path}:{n}: skipped an unreadable row ({e})", file=sys.stderr)
    return rows


def _ok_modes(r: dict) -> int:
    return sum(r.get(f"status_{m}") == "ok" for m in MODES.get(r.get("batch_kind"), ()))


def _config_order(name: str) -> int:
    names = list(CONFIGS)
    return names.index(name) if name in names else len(names)


def analyse(rows: list, target_length: int) -> Tuple[list, list]:
    """(table rows with ratios to gr_hstu, targets).  One row per (config, L, batch kind):
    the one with most modes measured, the later on ties; ratios use gr_hstu of the same run,
    else of another run on the same device (``ratio_basis`` says which)."""
    metas = {r["run_id"]: r for r in rows if r.get("kind") == "meta"}
    measured = [r for r in rows if r.get("kind") == "measurement"]
    chosen: Dict[tuple, dict] = {}
    for r in measured:
        key = (r["config"], r["L"], r["batch_kind"])
        if key not in chosen or _ok_modes(r) >= _ok_modes(chosen[key]):
            chosen[key] = r

    def device_of(r: dict) -> Optional[str]:
        return metas.get(r.get("run_id"), {}).get("device")

    def baseline_for(r: dict) -> Tuple[Optional[dict], Optional[str]]:
        same = [
            g
            for g in measured
            if g["config"] == BASELINE
            and (g["L"], g["batch_kind"], g["run_id"]) == (r["L"], r["batch_kind"], r["run_id"])
        ]
        if same:
            return max(same, key=_ok_modes), "same run"
        g = chosen.get((BASELINE, r["L"], r["batch_kind"]))
        if g is not None and device_of(g) == device_of(r):
            return g, f"other run ({g['run_id']})"
        return None, None

    table = []
    for key in sorted(chosen, key=lambda k: (_config_order(k[0]), k[0], k[1], k[2])):
        r = dict(chosen[key])
        g, basis = baseline_for(r) if r["config"] != BASELINE else (r, "same run")
        for mode in MODES[r["batch_kind"]]:
            ms, flops = r.get(f"{mode}_ms"), r.get("fwd_flops")
            if ms and flops:
                train = mode.startswith("train")
                r[f"{mode}_tflops"] = (3 if train else 1) * flops / (ms * 1e-3) / 1e12
            gms = g.get(f"{mode}_ms") if g else None
            if ms and gms:
                r[f"{mode}_speedup_vs_gr"] = gms / ms
                r[f"{mode}_wall_per_flop"] = (gms / ms) / r["flop_ratio_vs_gr"]
        # the faster of eager and graphs, against gr_hstu's faster one
        for base in ("train", "inference"):
            best = [v for v in (r.get(f"{m}_ms") for m in (base, f"{base}_graphs")) if v]
            if best:
                r[f"best_{base}_ms"] = min(best)
            g_best = [g.get(f"{m}_ms") for m in (base, f"{base}_graphs")] if g else []
            g_best = [v for v in g_best if v]
            if best and g_best:
                r[f"best_{base}_speedup_vs_gr"] = min(g_best) / min(best)
                r[f"best_{base}_wall_per_flop"] = (min(g_best) / min(best)) / r["flop_ratio_vs_gr"]
        r["ratio_basis"] = basis
        table.append(r)
    return table, targets(table, target_length)


def targets(table: list, L: int) -> list:
    """The issue's targets at length ``L``; ``met`` None where the rows to judge are missing."""

    def at(kind: str) -> list:
        return [
            r for r in table if r["L"] == L and r["batch_kind"] == kind and r["config"] != BASELINE
        ]

    def best(rows: list, key: str, lowest: bool = False) -> Optional[dict]:
        have = [r for r in rows if r.get(key) is not None]
        if not have:
            return None
        return (min if lowest else max)(have, key=lambda r: r[key])

    def check(name: str, r: Optional[dict], key: str, limit: float, less: bool = False) -> dict:
        value = r.get(key) if r else None
        met = None if value is None else (value <= limit if less else value >= limit)
        return {
            "target": name,
            "config": r["config"] if r else None,
            "value": value,
            "limit": limit,
            "met": met,
            "basis": r.get("ratio_basis") if r and not key.endswith("_ms") else None,
        }

    out = [
        check(
            f"best ULTRA train step >= {TRAIN_SPEEDUP_MIN:g}x faster than gr_hstu "
            "(each side's faster of eager and graphs)",
            best(at("batch"), "best_train_speedup_vs_gr"),
            "best_train_speedup_vs_gr",
            TRAIN_SPEEDUP_MIN,
        ),
        check(
            f"best ULTRA inference forward >= {INFERENCE_SPEEDUP_MIN:g}x faster than gr_hstu "
            "(each side's faster of eager and graphs)",
            best(at("batch"), "best_inference_speedup_vs_gr"),
            "best_inference_speedup_vs_gr",
            INFERENCE_SPEEDUP_MIN,
        ),
    ]
    for r in at("batch"):
        for mode in MODES["batch"]:
            if f"status_{mode}" not in r:  # not measured in this run (graphs on CPU)
                continue
            out.append(
                check(
                    f"{r['config']} {mode}: wall-clock ratio >= {WALL_PER_FLOP_MIN:g} x FLOP ratio",
                    r,
                    f"{mode}_wall_per_flop",
                    WALL_PER_FLOP_MIN,
                )
            )
    out.append(
        check(
            f"best ULTRA B=1 inference <= {SINGLE_USER_MS_MAX:g} ms",
            best(at("single"), "best_inference_ms", lowest=True),
            "best_inference_ms",
            SINGLE_USER_MS_MAX,
            less=True,
        )
    )
    return out


def _f(v: Any, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if v is None else format(v, spec) + suffix


def _cell(r: dict, mode: str, key: str, spec: str = ".2f", suffix: str = "") -> str:
    """A mode's number, or why it has none (short: the full reasons are listed below)."""
    status = r.get(f"status_{mode}", r.get("status", "-"))
    if status != "ok":
        return status.split(":")[0] if status.startswith(("rejected", "error")) else status
    return _f(r.get(f"{mode}_{key}"), spec, suffix)


def markdown(rows: list, table: list, checks: list, target_length: int, plots: str) -> str:
    metas = [r for r in rows if r.get("kind") == "meta"]
    ends = {r["run_id"]: r for r in rows if r.get("kind") == "end"}
    lines = ["# Encoder scaling: GR's HSTU stack vs ULTRA-HSTU stacks", ""]
    lines += ["Runs (device, versions, commit, command):", ""]
    for m in metas:
        lines.append(
            f"- `{m['run_id']}`: {m['device']} ({m.get('device_kind')}, {m.get('dtype')}, "
            f"HammerKernel.{m.get('hammer_kernel')}, executor {m.get('executor')}); torch "
            f"{m['torch']}, triton {m['triton']}; commit {m['git_commit']}; "
            f"command `{m['command']}`"
        )
    if len(metas) > 1:
        lines += [
            "",
            "Rows merged from these runs: each (config, L, batch kind) shows the run that "
            "measured most of it (the later on ties); `run_id` in the json names it.",
        ]
    shape_lines: Dict[str, List[str]] = {}  # one line per distinct shape, with its runs
    configs: Dict[str, str] = {}
    for m in metas:
        s = {k: v for k, v in m["shapes"].items() if k not in ("lengths", "lprime")}
        line = (
            f"{s['tokens']} tokens per batch (B = tokens / L; single user: B = 1), every "
            f"sequence L long with {s['num_targets']} candidates; D={s['dim']}, {s['heads']} "
            f"heads, head dims {s['head_dim']}, dropout {s['dropout']}; SLA k1={s['k1']}, "
            f"k2={s['k2']}. Timing: {m['timing']}."
        )
        shape_lines.setdefault(line, []).append(m["run_id"])
        lprime = m["shapes"].get("lprime", {})
        for name, desc in m["configs"].items():
            scaled = name in lprime and name in CONFIGS and lprime[name] != CONFIGS[name].lprime
            configs.setdefault(name, desc + (f" (L' = {lprime[name]} here)" if scaled else ""))
    for line, runs in shape_lines.items():
        where = "" if len(shape_lines) == 1 else " (" + ", ".join(f"`{r}`" for r in runs) + ")"
        lines += ["", f"Shapes{where}: {line}"]
    lines += ["", "Configs:", "", *[f"- `{name}`: {desc}" for name, desc in configs.items()]]
    lines += [
        "",
        "Train step = forward + backward of a random output gradient (train mode); inference "
        "= eval-mode forward under no_grad.  speed-up = gr_hstu ms / config ms (same L, same "
        "batch kind); FLOP ratio = gr_hstu FLOPs / config FLOPs; wall/FLOP = speed-up / FLOP "
        "ratio (1: FLOP savings turn into time one for one).  Ratios marked `*` use gr_hstu "
        "rows of another run on the same device.",
        "",
        f"## Targets (L = {target_length})",
        "",
        "| target | config | value | limit | met | basis |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in checks:
        met = "not measured" if t["met"] is None else ("yes" if t["met"] else "NO")
        lines.append(
            f"| {t['target']} | {t['config'] or '-'} | {_f(t['value'], '.3f')} | "
            f"{t['limit']:g} | {met} | {t['basis'] or '-'} |"
        )

    def mark(r: dict) -> str:
        return "*" if (r.get("ratio_basis") or "").startswith("other") else ""

    batch = [r for r in table if r["batch_kind"] == "batch"]
    single = [r for r in table if r["batch_kind"] == "single"]
    if batch:
        lines += [
            "",
            "## Batch: B = tokens / L (train step and inference forward)",
            "",
            "| config | L | B | train ms | train ms, graphs | inference ms | inf ms, graphs | "
            "peak GiB train / inf | fwd TFLOP | FLOP ratio | train TFLOP/s | inf TFLOP/s | "
            "train speed-up | train speed-up, graphs | inf speed-up | inf speed-up, graphs | "
            "wall/FLOP train | wall/FLOP train, graphs | wall/FLOP inf |",
            "| --- " * 19 + "|",
        ]
        for r in batch:
            flops = r.get("fwd_flops")
            lines.append(
                f"| {r['config']} | {r['L']} | {r['B']} | {_cell(r, 'train', 'ms')} | "
                f"{_cell(r, 'train_graphs', 'ms')} | {_cell(r, 'inference', 'ms')} | {_cell(r, 'inference_graphs', 'ms')} | "
                f"{_f(r.get('train_peak_gib'))} / "
                f"{_f(r.get('inference_peak_gib'))} | {_f(flops and flops / 1e12, '.4g')} | "
                f"{_f(r.get('flop_ratio_vs_gr'), '.2f', 'x')} | {_f(r.get('train_tflops'), '.3g')} | "
                f"{_f(r.get('inference_tflops'), '.3g')} | "
                f"{_f(r.get('train_speedup_vs_gr'), '.2f', 'x' + mark(r))} | "
                f"{_f(r.get('train_graphs_speedup_vs_gr'), '.2f', 'x' + mark(r))} | "
                f"{_f(r.get('inference_speedup_vs_gr'), '.2f', 'x' + mark(r))} | "
                f"{_f(r.get('inference_graphs_speedup_vs_gr'), '.2f', 'x' + mark(r))} | "
                f"{_f(r.get('train_wall_per_flop'))} | "
                f"{_f(r.get('train_graphs_wall_per_flop'))} | "
                f"{_f(r.get('inference_wall_per_flop'))} |"
            )
    if single:
        lines += [
            "",
            "## Single user: B = 1 (inference forward latency)",
            "",
            "| config | L | inference ms | inf ms, graphs | peak GiB | fwd TFLOP | FLOP ratio | "
            "TFLOP/s | speed-up | speed-up, graphs | wall/FLOP |",
            "| --- " * 11 + "|",
        ]
        for r in single:
            flops = r.get("fwd_flops")
            lines.append(
                f"| {r['config']} | {r['L']} | {_cell(r, 'inference', 'ms', '.3f')} | "
                f"{_cell(r, 'inference_graphs', 'ms', '.3f')} | "
                f"{_f(r.get('inference_peak_gib'))} | {_f(flops and flops / 1e12, '.4g')} | "
                f"{_f(r.get('flop_ratio_vs_gr'), '.2f', 'x')} | "
                f"{_f(r.get('inference_tflops'), '.3g')} | "
                f"{_f(r.get('inference_speedup_vs_gr'), '.2f', 'x' + mark(r))} | "
                f"{_f(r.get('inference_graphs_speedup_vs_gr'), '.2f', 'x' + mark(r))} | "
                f"{_f(r.get('inference_wall_per_flop'))} |"
            )
    missing = [r for r in table if r["status"] != "ok"]
    if missing:
        lines += [
            "",
            "## Not measured (rejected, out of memory, failed or past the time budget)",
            "",
            "| config | L | batch kind | status |",
            "| --- | --- | --- | --- |",
        ]
        for r in missing:
            per_mode = [
                f"{m}: {r[f'status_{m}']}" for m in MODES[r["batch_kind"]] if f"status_{m}" in r
            ]
            detail = "; ".join(per_mode) or r["status"]
            lines.append(f"| {r['config']} | {r['L']} | {r['batch_kind']} | {detail} |")
    lines += [
        "",
        "## Warm-up: first call, seconds (Triton autotuning included; untimed)",
        "",
        "| config | L | batch kind | train | train, graphs (warm-up + capture) | inference | "
        "inference, graphs (warm-up + capture) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table:
        if r["status"].startswith("rejected"):
            continue
        lines.append(
            f"| {r['config']} | {r['L']} | {r['batch_kind']} | {_f(r.get('train_warmup_s'), '.1f')} | "
            f"{_f(r.get('train_graphs_warmup_s'), '.1f')} | "
            f"{_f(r.get('inference_warmup_s'), '.1f')} | "
            f"{_f(r.get('inference_graphs_warmup_s'), '.1f')} |"
        )
    lines += ["", "## Time budget", ""]
    for m in metas:
        end = ends.get(m["run_id"])
        budget = m.get("time_budget_s") or 0
        if end is None:
            lines.append(f"- `{m['run_id']}`: no end record (the run was cut off?)")
        elif end["budget_reached"]:
            lines.append(
                f"- `{m['run_id']}`: time budget of {budget:g} s reached; {end['not_started']} "
                f"measurements not started (run took {end['elapsed_s']:g} s)"
            )
        else:
            limit = f"within the time budget of {budget:g} s" if budget else "no time budget"
            lines.append(
                f"- `{m['run_id']}`: every measurement started ({limit}; {end['elapsed_s']:g} s)"
            )
    notes = list(dict.fromkeys(n for m in metas for n in m.get("notes", [])))
    lines += ["", "## Notes", "", *[f"- {n}" for n in notes + NOTES], f"- plots: {plots}"]
    return "\n".join(lines) + "\n"


def _pyplot() -> Any:
    """matplotlib's pyplot (headless), or None where matplotlib does not import."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot(table: list, out_dir: Path, stem: str, plt: Any) -> List[str]:
    """``<stem>_time.png`` and ``<stem>_flops.png`` (log-log, one line per config)."""
    names = sorted({r["config"] for r in table}, key=_config_order)
    written = []
    panels = [
        ("batch", "best_train", "train step (faster of eager, graphs), B = tokens / L"),
        ("batch", "inference", "inference, B = tokens / L"),
        ("single", "inference", "inference, B = 1"),
    ]
    for what, ylabel in (("time", "ms"), ("flops", "forward TFLOP")):
        if what == "time":
            keys = [(kind, f"{mode}_ms", title) for kind, mode, title in panels]
        else:
            keys = [
                ("batch", "fwd_flops", "forward FLOPs, B = tokens / L"),
                ("single", "fwd_flops", "forward FLOPs, B = 1"),
            ]
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
        for ax, (kind, key, title) in zip(axes[0], keys):
            for name in names:
                pts = sorted(
                    (r["L"], r[key] / (1e12 if what == "flops" else 1))
                    for r in table
                    if r["config"] == name and r["batch_kind"] == kind and r.get(key)
                )
                if pts:
                    style = "--" if CONFIGS.get(name, Config("", "")).fp8 else "-"
                    ax.plot(*zip(*pts), style, marker="o", label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("L")
            ax.set_ylabel(ylabel)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{stem}_{what}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path.name)
    return written


def render(rows: list, out_dir: Path, stem: str, target_length: int) -> str:
    """Write ``<stem>.json``, ``<stem>.md`` and the plots from ``rows``; returns the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table, checks = analyse(rows, target_length)
    plt = _pyplot()
    if plt is None:
        plots = "not written: matplotlib is not importable here"
    else:
        plots = ", ".join(plot(table, out_dir, stem, plt)) if table else "none (no rows)"
    md = markdown(rows, table, checks, target_length, plots)
    result = {
        "meta": [r for r in rows if r.get("kind") == "meta"],
        "end": [r for r in rows if r.get("kind") == "end"],
        "target_length": target_length,
        "targets": checks,
        "rows": table,
        "notes": NOTES,
    }
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"{stem}.md").write_text(md)
    return md


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    stem = f"scaling{args.tag}"
    if args.report_only:
        missing = [str(p) for p in args.report_only if not p.is_file()]
        if missing:
            print(
                f"ultra-hstu bench scaling: error: no such file: {', '.join(missing)}",
                file=sys.stderr,
            )
            return 2
        print(render(load_rows(args.report_only), args.out, stem, args.target_length))
        return 0
    if args.gr_path:
        sys.path.insert(0, os.path.abspath(args.gr_path))
    # before GR's layer code is imported (host.stubs imports nothing of GR)
    from ultra_hstu_plugin.host.stubs import stub_torchrec_if_missing

    notes = [n for n in (stub_torchrec_if_missing(),) if n]
    device, message = resolve_device(args.device, args)
    if device is None:
        print(message, file=sys.stderr)
        return 2
    if message:
        print(message, file=sys.stderr)
        notes.append(message)
    from ultra_hstu_plugin.bench.common import (
        apply_autotune_option,
        ensure_kernels_importable,
        finish_autotune_option,
    )

    ensure_kernels_importable()
    apply_autotune_option(args, notes, device)
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    threads = torch.get_num_threads()
    if device == "cpu":  # toy shapes: more threads only add barrier waits (and vary wildly)
        torch.set_num_threads(1)
    try:
        rows = run_grid(args, argv, device, notes)
    finally:
        torch.set_num_threads(threads)
    finish_autotune_option(args)
    print(render(rows, args.out, stem, args.target_length))
    return 0


if __name__ == "__main__":
    sys.exit(main())
