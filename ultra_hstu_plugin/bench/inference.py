# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu bench inference``: scoring one user's candidates, full recompute vs KV cache.

    ultra-hstu bench inference --preset gpu --out DIR [--gr-path PATH] [--time-budget S]

A request is one user (B = 1) with ``L`` history tokens and ``M`` candidates (issue 14:
L in {4096, 16384}, M in {64, 256, 1024}).  Per configuration (``--configs``; the encoders
of ``bench/scaling.py``, built by its builders: GR's ``STUStack`` of 10 ``STULayer`` full
causal as the peer, ULTRA-HSTU stacks of SLA and truncated layers) and request:

* ``full``: the whole sequence (L history + M candidates) through the encoder, the
  candidates' rows kept;
* ``cached``: the history through the encoder once with ``kv_caching_lengths`` (untimed;
  GR's interface: every layer keeps its cache, ours the SLA-bounded one of
  ``modules/kv_cache.py``, GR's its full one), then only the M candidates through
  ``cached_forward``.  ``--micro-batch m`` adds M-FALCON-style variants: M / m calls of m
  candidates against the same cache (the cache is filled with ``max_kv_caching_len = L +
  M - m``, so every call normalises by L + M as the full recompute does).

Executors: ``eager`` (module calls) and ``graphs`` (CUDA only: the full forward through
``modules/cuda_graphs.GraphedEncoder``, the cached call captured in a CUDA graph here after
a check, under ``torch.cuda.set_sync_debug_mode("error")``, that it never synchronises; a
call that does is recorded as not capturable, with the reason).

Before anything is timed, every cached variant's scores are compared with the full
recompute's candidate rows of the same encoder and request (max abs error, and relative to
the largest reference value); the row records both and whether they are within the dtype's
tolerance.  Cache bytes per user are measured from the cache tensors (keys + values of every
layer) and written next to the formula (SLA layer: ``min(L, max(k2, c) + k1)`` rows,
truncated layer ``min(L, c + L')``, GR's layer ``L``, each ``num_heads * (attention_dim +
hidden_dim) * itemsize`` bytes a row).  GR's cache fill and concat call fbgemm ops
(``asynchronous_complete_cumsum``, ``jagged_to_padded_dense``); where the device has none,
GR's cached rows are recorded unavailable with the reason.

Rows go to ``DIR/inference<tag>.jsonl`` as measured (a cut-off run keeps them);
``inference<tag>.json`` and ``.md`` (tables, then the issue's targets) are written at the
end; ``--report-only A.jsonl ...`` re-renders them from rows.  Timing: CUDA events around
each call, median of the repeats, warm-up calls (Triton autotuning) excluded and reported.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ultra_hstu_plugin.bench import scaling
from ultra_hstu_plugin.bench.common import add_autotune_option

DEFAULT_CONFIGS = ["gr_hstu", "ultra_sla18", "ultra_sla3_trunc15_L1024"]
BASELINE = scaling.BASELINE  # GR's HSTU: the peer
GR_LAYERS = scaling.CONFIGS[BASELINE].num_full_layers
EXECUTORS = ("eager", "graphs")
MODES = ("full", "cached")
# The targets, at --target-length and --target-candidates.
CACHED_SPEEDUP_MIN = 20.0
# Relative error (max |cached - full| / max |full|) within which cached scores count as equal
# to the full recompute.  fp32 (CPU): the kernels differ only in summation order.  bf16: both
# paths round every layer's activations to bf16 (8 bits of mantissa) at different points, and
# the difference travels through up to 18 residual layers.
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2}
PRESETS: Dict[str, Dict[str, Any]] = {
    # One H200 in about 3 minutes, autotuning included (GR's attention autotunes for ~30 s
    # at L = 16384 on a cold machine); the time budget stops new measurements before that.
    "gpu": {
        "device": "cuda",
        "lengths": [16384, 4096],
        "candidates": [256, 64, 1024],
        "micro_batch": [128, 256],
        "rep_ms": 60.0,
        "warmup_ms": 10.0,
        "time_budget": 170.0,
    },
    # Toy sizes that run the whole flow on CPU in seconds (the integration test).  L' scales
    # to 32 (ultra_sla3_trunc15_L1024).
    "cpu-smoke": {
        "device": "cpu",
        "lengths": [96, 48],
        "candidates": [8, 4],
        "micro_batch": [2],
        "dim": 32,
        "heads": 2,
        "head_dim": 16,
        "k1": 16,
        "k2": 4,
        "lprime_scale": 1 / 32,
        "target_length": 96,
        "target_candidates": 8,
        "cpu_reps": 2,
    },
}
NOTES = [
    "full = the whole sequence (history + candidates) through the encoder; cached = the "
    "candidates only through cached_forward against the history's KV cache (filled once, "
    "untimed).  m = candidates per cached call (M-FALCON-style micro-batches; m = M is one "
    "call).",
    "ms on a GPU: CUDA events around each call (host launch gaps included when the host is the "
    "bottleneck), median of the repeats; no L2 flush between calls (back-to-back requests); "
    "graphs rows include copying the inputs into the graph's buffers and the output out.",
    "speed-up vs own full = the config's best full recompute (eager or graphs) / its best "
    "verified cached variant; vs GR cached = gr_hstu's best verified cached variant / it.",
    "cache bytes per user: keys + values of every layer, measured from the cache tensors "
    "(three int64 of bookkeeping per user and layer not counted); GR's cache keeps all L "
    "history rows per layer.",
]


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """This benchmark's options (``ultra-hstu bench inference --help``)."""
    p = argparse.ArgumentParser(
        prog="ultra-hstu bench inference",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results"),
        help="directory for inference<tag>.*",
    )
    p.add_argument("--tag", default="", help="suffix of the output files (inference<tag>.*)")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="gpu: the issue's grid on one GPU in ~3 minutes (time budget 170 s); cpu-smoke: "
        "toy sizes on CPU (the CI test); explicit options still win",
    )
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
        default=DEFAULT_CONFIGS,
        choices=list(scaling.CONFIGS),
        metavar="CONFIG",
        help="encoders (bench scaling's): "
        + ", ".join(scaling.CONFIGS)
        + "; default "
        + " ".join(DEFAULT_CONFIGS),
    )
    p.add_argument(
        "--lengths",
        nargs="+",
        type=int,
        default=[16384, 4096],
        help="history lengths L of the user, measured in this order",
    )
    p.add_argument(
        "--candidates",
        nargs="+",
        type=int,
        default=[256, 64, 1024],
        help="candidates M scored per request, measured in this order",
    )
    p.add_argument(
        "--micro-batch",
        nargs="*",
        type=int,
        default=[],
        help="candidates per cached call, m (M-FALCON-style): for each M, every m < M that "
        "divides M adds a variant of M / m calls (m = M, one call, is always measured)",
    )
    p.add_argument(
        "--executors",
        nargs="+",
        default=list(EXECUTORS),
        choices=list(EXECUTORS),
        help="eager: module calls; graphs: replayed from CUDA graphs (CUDA only)",
    )
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
        "--time-budget",
        type=float,
        default=0.0,
        help="seconds; no new measurement starts after this (0 = no limit)",
    )
    p.add_argument(
        "--target-length", type=int, default=16384, help="L at which the targets are evaluated"
    )
    p.add_argument(
        "--target-candidates",
        type=int,
        default=256,
        help="M at which the speed targets are evaluated",
    )
    p.add_argument(
        "--warmup-ms", type=float, default=25.0, help="warm-up calls (GPU), after the first"
    )
    p.add_argument(
        "--rep-ms", type=float, default=100.0, help="timed calls fill about this long (GPU)"
    )
    p.add_argument("--min-reps", type=int, default=5, help="timed calls at least (GPU)")
    p.add_argument("--max-reps", type=int, default=200, help="timed calls at most (GPU)")
    p.add_argument("--cpu-reps", type=int, default=3, help="timed calls per measurement on CPU")
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="relative error allowed between cached and full scores (default: 1e-4 fp32, "
        "5e-2 bf16)",
    )
    p.add_argument(
        "--report-only",
        nargs="+",
        type=Path,
        default=None,
        metavar="JSONL",
        help="measure nothing: re-render inference<tag>.json/.md in --out from these rows",
    )
    add_autotune_option(p)
    return p


def parse_args(argv: List[str]) -> argparse.Namespace:
    """Options, with the preset's defaults under explicit ones; bad values exit 2."""
    parser = build_parser()
    preset = parser.parse_known_args(argv)[0].preset
    if preset:
        parser.set_defaults(**PRESETS[preset])
    args = parser.parse_args(argv)
    for name in ("dim", "heads", "head_dim", "cpu_reps", "min_reps", "max_reps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name, values in (
        ("lengths", args.lengths),
        ("candidates", args.candidates),
        ("micro-batch", args.micro_batch),
    ):
        bad = [v for v in values if v < 1]
        if bad:
            parser.error(f"--{name} must be >= 1, got {bad[0]}")
    if args.min_reps > args.max_reps:
        parser.error(f"--min-reps {args.min_reps} > --max-reps {args.max_reps}")
    if args.tolerance is not None and args.tolerance <= 0:
        parser.error(f"--tolerance must be > 0, got {args.tolerance}")
    return args


# --------------------------------------------------------------------------------------
# Requests, calls, verification
# --------------------------------------------------------------------------------------


def micro_batches(M: int, sizes: List[int]) -> Tuple[List[int], List[int]]:
    """(m values measured for M: M itself, then the micro-batch sizes below M that divide it;
    sizes below M that do not divide it, recorded as rejected)."""
    below = sorted({m for m in sizes if m < M}, reverse=True)
    return [M] + [m for m in below if M % m == 0], [m for m in below if M % m]


def _dtype(device: str) -> Any:
    import torch

    return torch.bfloat16 if device == "cuda" else torch.float32


def make_request(L: int, M: int, dim: int, device: str) -> Tuple[Any, Any]:
    """(history ``[L, dim]``, candidates ``[M, dim]``), random and seeded by (L, M)."""
    import torch

    g = torch.Generator(device=device).manual_seed(L * 100003 + M)
    x = torch.randn(L + M, dim, device=device, dtype=_dtype(device), generator=g)
    return x[:L].contiguous(), x[L:].contiguous()


def _lengths(device: str, *values: int) -> Any:
    import torch

    return torch.tensor(values, dtype=torch.int64, device=device)


def full_call(encoder: Any, history: Any, candidates: Any, executor: str) -> Callable[[], Any]:
    """One full recompute (history + candidates), returning the candidates' rows."""
    import torch

    L, M, device = history.shape[0], candidates.shape[0], history.device.type
    x = torch.cat([history, candidates])
    kwargs = dict(
        x_lengths=_lengths(device, L + M),
        x_offsets=_lengths(device, 0, L + M),
        max_seq_len=L + M,
        num_targets=_lengths(device, M),
    )
    run = encoder
    if executor == "graphs":
        from ultra_hstu_plugin.modules.cuda_graphs import GraphedEncoder

        run = GraphedEncoder(encoder)  # the first call captures (after an eager warm-up)

    def call() -> Any:
        with torch.no_grad():
            return run(x=x, **kwargs)[L:]

    return call


def fill_cache(encoder: Any, history: Any, M: int, m: int) -> None:
    """The history through the encoder with ``kv_caching_lengths`` (every layer keeps its
    cache).  GR's cached call normalises by ``max_kv_caching_len + new rows``: with
    ``L + M - m`` every call of m candidates normalises by L + M, as the full recompute."""
    import torch

    L, device = history.shape[0], history.device.type
    with torch.no_grad():
        encoder(
            x=history,
            x_lengths=_lengths(device, L),
            x_offsets=_lengths(device, 0, L),
            max_seq_len=L + M,
            num_targets=_lengths(device, 0),
            max_kv_caching_len=L + M - m,
            kv_caching_lengths=_lengths(device, L),
        )


def cached_scorer(encoder: Any, m: int, device: str) -> Callable[[Any], Any]:
    """Scores candidates ``[M, dim]`` against the cache, m per ``cached_forward`` call."""
    import torch

    num_targets = _lengths(device, m)

    def score(candidates: Any) -> Any:
        with torch.no_grad():
            outs = [
                encoder.cached_forward(delta_x=candidates[i : i + m], num_targets=num_targets)
                for i in range(0, candidates.shape[0], m)
            ]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    return score


class NotCapturable(RuntimeError):
    """The call synchronises with the host, which a CUDA graph capture forbids."""


class GraphedCall:
    """``fn(x)`` replayed from a CUDA graph captured for ``x``'s shape.  The capture follows
    an eager warm-up (autotuning) and a run under ``set_sync_debug_mode("error")``: a call
    that synchronises would fail the capture halfway (or be wrong), so it is refused first."""

    def __init__(self, fn: Callable[[Any], Any], example: Any) -> None:
        import torch

        self.static = example.clone()
        fn(self.static)  # autotuning and lazy initialisation, outside the checks
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            fn(self.static)
        except RuntimeError as e:
            raise NotCapturable(str(e).splitlines()[0][:300]) from e
        finally:
            torch.cuda.set_sync_debug_mode("default")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn(self.static)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(self.static)

    def __call__(self, x: Any) -> Any:
        self.static.copy_(x)
        self.graph.replay()
        return self.output.clone()  # the next replay overwrites the graph's output


def compare(got: Any, want: Any, tolerance: float) -> Dict[str, Any]:
    """Max abs error of cached scores against the full recompute's, and relative to the
    largest reference value; ``verified`` when the relative error is within ``tolerance``."""
    import torch

    if got.shape != want.shape:
        return {
            "verified": False,
            "verify_note": f"shape {tuple(got.shape)} vs {tuple(want.shape)}",
        }
    diff = (got.float() - want.float()).abs().max().item()
    scale = want.float().abs().max().item()
    rel = diff / scale if scale > 0 else diff
    finite = bool(torch.isfinite(got).all().item())
    return {
        "max_abs_err": diff,
        "rel_err": rel,
        "tolerance": tolerance,
        "verified": finite and rel <= tolerance,
    }


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def time_call(call: Callable[[], Any], device: str, args: argparse.Namespace) -> Tuple[Any, dict]:
    """(the first call's output, timing): the first call untimed (autotuning, capture), more
    warm-up on a GPU, then the median of CUDA-event-timed calls (perf_counter on CPU)."""
    import torch

    t0 = time.perf_counter()
    out = call()
    _sync(device)
    info: Dict[str, Any] = {"warmup_s": round(time.perf_counter() - t0, 3)}
    if device == "cuda":
        t0 = time.perf_counter()
        call()
        _sync(device)
        estimate_ms = max((time.perf_counter() - t0) * 1e3, 1e-3)
        for _ in range(int(args.warmup_ms / estimate_ms)):
            call()
        reps = int(min(max(args.rep_ms / estimate_ms, args.min_reps), args.max_reps))
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(reps)
        ]
        for start, end in events:
            start.record()
            call()
            end.record()
        torch.cuda.synchronize()
        times = [start.elapsed_time(end) for start, end in events]
    else:
        times = []
        for _ in range(args.cpu_reps):
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    info.update(ms=round(float(times[len(times) // 2]), 4), reps=len(times))
    return out, info


# --------------------------------------------------------------------------------------
# Cache bytes
# --------------------------------------------------------------------------------------


def layer_kinds(encoder: Any) -> List[Tuple[str, Any]]:
    """Every attention layer of the encoder in order, as ("sla" | "truncated" | "full", it):
    truncated = inside a truncation's upper stack, full = GR's full-causal layer."""
    from ultra_hstu_plugin.host import STULayer
    from ultra_hstu_plugin.modules.truncation import TruncatedSTU
    from ultra_hstu_plugin.modules.ultra_stu import UltraHSTULayer

    upper = {
        id(layer)
        for t in encoder.modules()
        if isinstance(t, TruncatedSTU)
        for layer in t.upper.modules()
    }
    out = []
    for layer in encoder.modules():
        if isinstance(layer, UltraHSTULayer):
            out.append(("truncated" if id(layer) in upper else "sla", layer))
        elif isinstance(layer, STULayer):
            out.append(("full", layer))
    return out


def measured_cache_bytes(encoder: Any) -> Dict[str, Any]:
    """Keys + values the encoder's layers cache for the one user, read from the tensors."""
    from ultra_hstu_plugin.modules.ultra_stu import UltraHSTULayer

    per_kind: Dict[str, List[int]] = {}
    for kind, layer in layer_kinds(encoder):
        if isinstance(layer, UltraHSTULayer):
            n = int(layer.kv_cache_bytes_per_user().sum())
        else:  # GR's STULayer: its k_cache / v_cache, [rows, H * dim]
            n = sum(t.numel() * t.element_size() for t in (layer.k_cache, layer.v_cache))
        per_kind.setdefault(kind, []).append(n)
    return {"total": sum(sum(v) for v in per_kind.values()), "per_layer": per_kind}


def formula_cache_bytes(
    cfg: scaling.Config, args: argparse.Namespace, L: int, itemsize: int, contextual: int = 0
) -> Dict[str, Any]:
    """The cache the formula predicts for one user with L history tokens (module docstring)."""
    row = args.heads * 2 * args.head_dim * itemsize  # keys (attention dim) + values (hidden)
    if cfg.gr:
        per_kind = {"full": [L * row] * cfg.num_full_layers}
    else:
        sla_rows = min(L, max(args.k2, contextual) + args.k1) if args.k1 else L
        per_kind = {"sla": [sla_rows * row] * cfg.num_full_layers}
        if cfg.num_truncated_layers:
            trunc_rows = min(L, contextual + scaling.lprime_of(cfg, args))
            per_kind["truncated"] = [trunc_rows * row] * cfg.num_truncated_layers
    return {
        "total": sum(sum(v) for v in per_kind.values()),
        "per_layer": per_kind,
        "gr_layer": L * row,  # one GR full-causal layer's cache at the same dims
    }


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
            "ultra-hstu bench inference: error: --device cuda, but no CUDA GPU is visible "
            "(torch.cuda.is_available() is False). Run it on a GPU machine, or pass "
            "--preset cpu-smoke to test the script on CPU."
        )
    if requested == "auto" and max(args.lengths) > 2048:
        return None, (
            "ultra-hstu bench inference: error: no CUDA GPU is visible, and L up to "
            f"{max(args.lengths)} is far too big for the CPU (PyTorch kernels, dense masks). "
            "Run it on a GPU machine, or pass --preset cpu-smoke (or --device cpu to insist)."
        )
    why = "as asked" if requested == "cpu" else "no CUDA GPU"
    return (
        "cpu",
        f"{why}: running on CPU (fp32, HammerKernel.PYTORCH, one thread): tests the script only",
    )


def _oom_errors() -> Tuple[type, ...]:
    import torch

    return (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)


def _guarded(work: Callable[[], Dict[str, Any]], device: str, what: str) -> Dict[str, Any]:
    """``work()``'s fields, or the status of why it has none; memory freed either way."""
    oom = False
    try:
        result = work()
    except _oom_errors():
        oom = True  # handled below, once the traceback (and the tensors it holds) is gone
    except NotCapturable as e:
        result = {"status": f"not capturable: synchronises with the host ({e})"}
    except Exception as e:  # noqa: BLE001 - recorded, and the grid goes on
        traceback.print_exc()
        result = {"status": f"error: {type(e).__name__}: {e}"[:500]}
    if oom:
        result = {"status": f"out of memory ({what})"}
    if device == "cuda":
        import torch

        gc.collect()
        torch.cuda.empty_cache()
    return result


class Grid:
    """Runs the (L, M, config, mode, executor, m) measurements, writing each row at once."""

    def __init__(self, args: argparse.Namespace, device: str, writer: Any, run_id: str) -> None:
        self.args, self.device, self.writer, self.run_id = args, device, writer, run_id
        started = time.monotonic()
        self.started = started
        self.deadline = started + args.time_budget if args.time_budget > 0 else None
        self.not_started = 0
        self.encoders: Dict[str, Any] = {}
        from ultra_hstu_plugin.host import gr_kv_cache_unavailable

        self.gr_cache_reason = gr_kv_cache_unavailable(device)
        self.tolerance = args.tolerance or TOLERANCE[str(_dtype(device)).split(".")[-1]]
        self.executors = [e for e in args.executors if e == "eager" or device == "cuda"]

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def encoder(self, cfg: scaling.Config) -> Any:
        if cfg.name not in self.encoders:  # one encoder per config (seeded weights), reused
            L = max(L for L in self.args.lengths if scaling.rejection(cfg, L, self.args) is None)
            self.encoders[cfg.name] = scaling.build_encoder(
                cfg, self.args, L, is_inference=True, device=self.device
            ).eval()
        return self.encoders[cfg.name]

    def add(self, row: Dict[str, Any], result: Dict[str, Any]) -> None:
        row = {**row, **result}
        if row.get("status") == "ok" and row.get("ms"):
            row["candidates_per_s"] = row["M"] / (row["ms"] * 1e-3)
        self.writer.add(row)

    def run(self) -> None:
        configs = [c for name, c in scaling.CONFIGS.items() if name in self.args.configs]
        for L in self.args.lengths:
            for M in self.args.candidates:
                for cfg in configs:
                    self.request(cfg, L, M)

    def request(self, cfg: scaling.Config, L: int, M: int) -> None:
        args, device = self.args, self.device
        base = {
            "kind": "measurement",
            "run_id": self.run_id,
            "config": cfg.name,
            "L": L,
            "M": M,
            "layers": cfg.num_full_layers + cfg.num_truncated_layers,
            "num_full_layers": cfg.num_full_layers,
            "num_truncated_layers": cfg.num_truncated_layers,
            "lprime": scaling.lprime_of(cfg, args),
            "k1": 0 if cfg.gr else args.k1,
            "k2": 0 if cfg.gr else args.k2,
            "fp8": cfg.fp8,
        }
        sizes, rejected = micro_batches(M, args.micro_batch)
        plan = [("full", e, M) for e in self.executors]
        plan += [("cached", e, m) for m in sizes for e in self.executors]
        reason = scaling.rejection(cfg, L, args)
        for m in rejected:
            self.add(
                {**base, "mode": "cached", "executor": "eager", "micro_batch": m, "calls": None},
                {"status": f"rejected: micro-batch {m} does not divide M={M}"},
            )
        if reason is not None:
            for mode, executor, m in plan:
                row = {**base, "mode": mode, "executor": executor, "micro_batch": m}
                self.add(row, {"status": f"rejected: {reason}"})
            return
        encoder = self.encoder(cfg)
        history, candidates = make_request(L, M, args.dim, device)
        reference: Dict[str, Any] = {}

        def want() -> Any:  # the full recompute's candidate rows, once per request
            if "out" not in reference:
                reference["out"] = full_call(encoder, history, candidates, "eager")()
            return reference["out"]

        filled: Dict[str, int] = {}
        for mode, executor, m in plan:
            row = {
                **base,
                "mode": mode,
                "executor": executor,
                "micro_batch": m,
                "calls": M // m,
            }
            if self.out_of_time():
                self.not_started += 1
                self.add(row, {"status": "skipped: time budget"})
                continue
            if mode == "cached" and cfg.gr and self.gr_cache_reason:
                self.add(row, {"status": f"unavailable: {self.gr_cache_reason}"})
                continue
            if mode == "full":
                work = self._full(encoder, history, candidates, executor, reference)
            else:
                work = self._cached(cfg, encoder, history, candidates, executor, m, want, filled)
            self.add(row, _guarded(work, device, f"L={L}, M={M}"))
        reference.clear()
        for layer in encoder.modules():  # free the caches before the next request
            if hasattr(layer, "reset_kv_cache"):
                layer.reset_kv_cache()

    def _full(self, encoder, history, candidates, executor, reference) -> Callable[[], dict]:
        def work() -> Dict[str, Any]:
            out, timing = time_call(
                full_call(encoder, history, candidates, executor), self.device, self.args
            )
            if executor == "eager":
                reference["out"] = out  # the reference the cached variants are checked against
            return {"status": "ok", **timing}

        return work

    def _cached(
        self, cfg, encoder, history, candidates, executor, m, want, filled
    ) -> Callable[[], dict]:
        device, args = self.device, self.args
        M, L = candidates.shape[0], history.shape[0]

        def work() -> Dict[str, Any]:
            fields: Dict[str, Any] = {}
            if filled.get("m") != m:  # the normaliser is set at fill time: one fill per m
                t0 = time.perf_counter()
                fill_cache(encoder, history, M, m)
                _sync(device)
                filled["m"] = m
                fields["fill_s"] = round(time.perf_counter() - t0, 3)
            measured = measured_cache_bytes(encoder)
            formula = formula_cache_bytes(cfg, args, L, history.element_size())
            fields.update(
                cache_bytes_per_user=measured["total"],
                cache_bytes_per_layer=measured["per_layer"],
                cache_bytes_formula=formula["total"],
                cache_bytes_formula_per_layer=formula["per_layer"],
                gr_layer_cache_bytes_formula=formula["gr_layer"],
                cache_bytes_match=measured["per_layer"] == formula["per_layer"],
            )
            score = cached_scorer(encoder, m, device)
            if executor == "graphs":
                graphed = GraphedCall(score, candidates)

                def call() -> Any:
                    return graphed(candidates)
            else:

                def call() -> Any:
                    return score(candidates)

            out, timing = time_call(call, device, args)
            fields.update(compare(out, want(), self.tolerance))
            return {"status": "ok", **fields, **timing}

        return work


def run_grid(args: argparse.Namespace, argv: List[str], device: str, notes: List[str]) -> list:
    """Measures everything asked (rows written as they come); returns the rows."""
    from ultra_hstu_plugin.bench.common import RowWriter, environment

    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    writer = RowWriter(args.out, f"inference{args.tag}")
    grid = Grid(args, device, writer, run_id)
    configs = [c for name, c in scaling.CONFIGS.items() if name in args.configs]
    if grid.gr_cache_reason and any(c.gr for c in configs):
        notes = [*notes, f"gr_hstu cached rows unavailable: {grid.gr_cache_reason}"]
    if device == "cpu" and any(c.gr for c in configs):
        notes = [
            *notes,
            "gr_hstu cached on CPU: GR's PyTorch cached attention output is made contiguous "
            "before GR's .view (B = 1 otherwise raises; host.contiguous_gr_cached_attention)",
        ]
    writer.add(
        {
            "kind": "meta",
            "run_id": run_id,
            **environment(),
            "command": "ultra-hstu bench inference " + " ".join(argv),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "device_kind": device,
            "dtype": str(_dtype(device)).split(".")[-1],
            "hammer_kernel": "TRITON" if device == "cuda" else "PYTORCH",
            "executors": grid.executors,
            "timing": (
                f"CUDA events, median of {args.min_reps}-{args.max_reps} calls filling "
                f">= {args.rep_ms:g} ms, after the first call and >= {args.warmup_ms:g} ms of "
                "warm-up"
                if device == "cuda"
                else f"median of {args.cpu_reps} perf_counter-timed call(s)"
            ),
            "tolerance": grid.tolerance,
            "shapes": {
                "lengths": args.lengths,
                "candidates": args.candidates,
                "micro_batch": args.micro_batch,
                "dim": args.dim,
                "heads": args.heads,
                "head_dim": args.head_dim,
                "k1": args.k1,
                "k2": args.k2,
                "contextual": 0,
                "lprime": {
                    c.name: scaling.lprime_of(c, args) for c in configs if c.num_truncated_layers
                },
            },
            "configs": {c.name: c.description for c in configs},
            "gr_cache": grid.gr_cache_reason or "available",
            "time_budget_s": args.time_budget,
            "notes": notes,
        }
    )
    import contextlib

    from ultra_hstu_plugin.host import contiguous_gr_cached_attention

    # GR's PyTorch cached attention with B = 1 hands cached_forward a tensor it cannot
    # .view (host/gr.py says why); on CPU the peer runs through the fix, on CUDA (Triton) as is
    fix = contiguous_gr_cached_attention() if device == "cpu" else contextlib.nullcontext()
    try:
        with fix:
            grid.run()
    finally:
        writer.add(
            {
                "kind": "end",
                "run_id": run_id,
                "elapsed_s": round(time.monotonic() - grid.started, 1),
                "time_budget_s": args.time_budget,
                "budget_reached": grid.not_started > 0,
                "not_started": grid.not_started,
            }
        )
        writer.close()
    return writer.rows


# --------------------------------------------------------------------------------------
# Report: summary, targets, markdown (from rows only, so --report-only reproduces it)
# --------------------------------------------------------------------------------------


def load_rows(paths: List[Path]) -> list:
    return scaling.load_rows(paths)


def _config_order(name: str) -> int:
    names = list(scaling.CONFIGS)
    return names.index(name) if name in names else len(names)


def _ok(r: dict) -> bool:
    return r.get("status") == "ok" and bool(r.get("ms"))


def _variant_key(r: dict) -> tuple:
    return (r["config"], r["L"], r["M"], r["mode"], r["executor"], r["micro_batch"])


def analyse(rows: list, target_length: int, target_candidates: int) -> Tuple[list, list, list]:
    """(variant rows, one summary row per (config, L, M), targets).  A variant measured in
    several runs shows its latest measured row; ratios use rows of the same run where the
    run has them, else of another run on the same device (``basis`` says which)."""
    metas = {r["run_id"]: r for r in rows if r.get("kind") == "meta"}
    variants: Dict[tuple, dict] = {}
    for r in rows:
        if r.get("kind") != "measurement":
            continue
        key = _variant_key(r)
        if key not in variants or _ok(r) or not _ok(variants[key]):
            variants[key] = r
    table = sorted(
        variants.values(),
        key=lambda r: (
            -r["L"], r["M"], _config_order(r["config"]), r["mode"] != "full",
            r["executor"], -r["micro_batch"],
        ),
    )  # fmt: skip

    def device_of(r: dict) -> Optional[str]:
        return metas.get(r.get("run_id"), {}).get("device")

    def best(config: str, L: int, M: int, mode: str, run_id: str, device: Optional[str]):
        """(fastest usable row, basis): a cached row must also be verified."""
        have = [
            r
            for r in table
            if (r["config"], r["L"], r["M"], r["mode"]) == (config, L, M, mode)
            and _ok(r)
            and (mode == "full" or r.get("verified"))
        ]
        same = [r for r in have if r["run_id"] == run_id]
        if same:
            return min(same, key=lambda r: r["ms"]), "same run"
        other = [r for r in have if device_of(r) == device]
        if other:
            r = min(other, key=lambda r: r["ms"])
            return r, f"other run ({r['run_id']})"
        return None, None

    summary = []
    for config, L, M in sorted(
        {(r["config"], r["L"], r["M"]) for r in table},
        key=lambda k: (-k[1], k[2], _config_order(k[0])),
    ):
        group = [r for r in table if (r["config"], r["L"], r["M"]) == (config, L, M)]
        run_id = max(group, key=lambda r: (_ok(r), r["run_id"]))["run_id"]
        dev = device_of(group[0])
        s: Dict[str, Any] = {"config": config, "L": L, "M": M, "run_id": run_id}
        for r in group:
            if r["mode"] == "full" and _ok(r):
                s[f"full_{r['executor']}_ms"] = r["ms"]
            if r["mode"] == "cached" and r["micro_batch"] == M and _ok(r):
                s[f"cached_{r['executor']}_ms"] = r["ms"]
        full, full_basis = best(config, L, M, "full", run_id, dev)
        cached, _ = best(config, L, M, "cached", run_id, dev)
        cache_rows = [r for r in group if r.get("cache_bytes_per_user") is not None]
        if cache_rows:
            c = cache_rows[0]
            s.update(
                cache_bytes_per_user=c["cache_bytes_per_user"],
                cache_bytes_formula=c["cache_bytes_formula"],
                cache_bytes_match=all(r["cache_bytes_match"] for r in cache_rows),
                gr_cache_bytes_formula=c["gr_layer_cache_bytes_formula"] * GR_LAYERS,
                sla_layer_cache_bytes=max(c["cache_bytes_per_layer"].get("sla", [0]) or [0]),
                gr_layer_cache_bytes=c["gr_layer_cache_bytes_formula"],
            )
        errs = [r["rel_err"] for r in group if r.get("rel_err") is not None]
        if errs:
            s["max_rel_err"] = max(errs)
            s["all_verified"] = all(
                r.get("verified") for r in group if r["mode"] == "cached" and _ok(r)
            )
        if full:
            s["full_best_ms"] = full["ms"]
            s["full_best_executor"] = full["executor"]
        if cached:
            s.update(
                cached_best_ms=cached["ms"],
                cached_best_executor=cached["executor"],
                cached_best_micro_batch=cached["micro_batch"],
                cached_best_candidates_per_s=M / (cached["ms"] * 1e-3),
                micro_batching_helped=cached["micro_batch"] < M,
            )
        if full and cached:
            s["speedup_vs_own_full"] = full["ms"] / cached["ms"]
            s["speedup_basis"] = full_basis
        if cached and config != BASELINE:
            g, g_basis = best(BASELINE, L, M, "cached", run_id, dev)
            if g is not None:
                s["speedup_vs_gr_cached"] = g["ms"] / cached["ms"]
                s["gr_cached_basis"] = g_basis
        if config != BASELINE:  # GR's cache measured (same run) where it ran
            gr_rows = [
                r
                for r in table
                if (r["config"], r["L"], r["M"]) == (BASELINE, L, M)
                and r.get("cache_bytes_per_user") is not None
            ]
            if gr_rows and "cache_bytes_per_user" in s:
                s["gr_cache_bytes_measured"] = gr_rows[0]["cache_bytes_per_user"]
        summary.append(s)
    return table, summary, targets(summary, rows, target_length, target_candidates)


def targets(summary: list, rows: list, L: int, M: int) -> list:
    """The issue's targets per ULTRA config at (L, M); ``met`` None where rows are missing."""
    metas = [r for r in rows if r.get("kind") == "meta"]
    k1 = next((m["shapes"]["k1"] for m in metas), 0)
    k2 = next((m["shapes"]["k2"] for m in metas), 0)
    c = next((m["shapes"].get("contextual", 0) for m in metas), 0)
    bound = (k1 + k2 + c) / L
    gr_status = {
        r["status"]
        for r in rows
        if r.get("kind") == "measurement"
        and (r["config"], r["L"], r["M"], r["mode"]) == (BASELINE, L, M, "cached")
        and r.get("status") != "ok"
    }
    out = []
    for s in summary:
        if s["config"] == BASELINE or s["L"] != L:
            continue
        if s["M"] == M:
            v = s.get("speedup_vs_own_full")
            out.append({
                "target": f"cached scoring of {M} candidates >= {CACHED_SPEEDUP_MIN:g}x faster "
                "than the config's full recompute",
                "config": s["config"], "value": v, "limit": CACHED_SPEEDUP_MIN,
                "met": None if v is None else v >= CACHED_SPEEDUP_MIN,
                "basis": s.get("speedup_basis"),
            })  # fmt: skip
            v = s.get("speedup_vs_gr_cached")
            why = None if v is not None or not gr_status else sorted(gr_status)[0][:160]
            out.append({
                "target": f"cached scoring of {M} candidates faster than gr_hstu with its KV "
                "cache (ratio > 1)",
                "config": s["config"], "value": v, "limit": 1.0,
                "met": None if v is None else v > 1.0,
                "basis": s.get("gr_cached_basis") or why,
            })  # fmt: skip
    seen = set()
    for s in summary:  # cache bytes do not depend on M: one check per config at L
        if s["config"] == BASELINE or s["L"] != L or s["config"] in seen:
            continue
        if "sla_layer_cache_bytes" not in s:
            continue
        seen.add(s["config"])
        v = s["sla_layer_cache_bytes"] / s["gr_layer_cache_bytes"]
        out.append({
            "target": "cache bytes per user of an SLA layer <= (k1 + k2 + contextual) / L of "
            f"GR's full cache (= {bound:.4g})",
            "config": s["config"], "value": v, "limit": bound,
            "met": v <= bound and bool(s.get("cache_bytes_match")),
            "basis": "measured vs GR's L rows per layer"
            + ("" if s.get("cache_bytes_match") else "; measured != formula"),
        })  # fmt: skip
    return out


def _f(v: Any, spec: str = ".3f", suffix: str = "") -> str:
    return "-" if v is None else format(v, spec) + suffix


def _status(r: dict) -> str:
    st = r.get("status", "-")
    return st if st == "ok" else st.split(":")[0]


def _mib(v: Optional[float]) -> str:
    return "-" if v is None else f"{v / 2**20:.3f}"


def markdown(rows: list, table: list, summary: list, checks: list, L: int, M: int) -> str:
    metas = [r for r in rows if r.get("kind") == "meta"]
    ends = {r["run_id"]: r for r in rows if r.get("kind") == "end"}
    lines = ["# KV-cached inference: one user, full recompute vs cached scoring", ""]
    lines += ["Runs (device, versions, commit, command):", ""]
    for m in metas:
        lines.append(
            f"- `{m['run_id']}`: {m['device']} ({m['device_kind']}, {m['dtype']}, "
            f"HammerKernel.{m['hammer_kernel']}, executors {' + '.join(m['executors'])}); torch "
            f"{m['torch']}, triton {m['triton']}; commit {m['git_commit']}; command "
            f"`{m['command']}`; GR's KV cache: {m['gr_cache']}"
        )
    for m in metas:
        s = m["shapes"]
        lprime = ", ".join(f"{k}: L' = {v}" for k, v in s["lprime"].items())
        lines += [
            "",
            f"Shapes (`{m['run_id']}`): B = 1, L in {s['lengths']}, M in {s['candidates']}, "
            f"micro-batches {s['micro_batch'] or 'none'}; D={s['dim']}, {s['heads']} heads, "
            f"head dims {s['head_dim']}; SLA k1={s['k1']}, k2={s['k2']}, contextual "
            f"{s['contextual']}" + (f"; {lprime}" if lprime else "") + f". Timing: "
            f"{m['timing']}. Cached scores equal full recompute within relative error "
            f"{m['tolerance']:g}.",
        ]
    configs: Dict[str, str] = {}
    for m in metas:
        for name, desc in m["configs"].items():
            configs.setdefault(name, desc)
    lines += ["", "Configs:", "", *[f"- `{n}`: {d}" for n, d in configs.items()]]
    lines += [
        "",
        f"## Targets (L = {L}, M = {M})",
        "",
        "| target | config | value | limit | met | basis |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in checks:
        met = "not measured" if t["met"] is None else ("yes" if t["met"] else "NO")
        lines.append(
            f"| {t['target']} | {t['config']} | {_f(t['value'], '.4g')} | {t['limit']:.4g} | "
            f"{met} | {t['basis'] or '-'} |"
        )
    lines += [
        "",
        "## Per request: best of each (ms; cached = one call of M unless the best column says m)",
        "",
        "| config | L | M | full eager | full graphs | cached eager | cached graphs | best cached "
        "(executor, m) | candidates/s | vs own full | vs GR cached | max rel err | cache MiB "
        "/ user | formula MiB | GR cache MiB |",
        "| --- " * 15 + "|",
    ]
    for s in summary:
        best = (
            f"{_f(s.get('cached_best_ms'))} ({s['cached_best_executor']}, "
            f"{s['cached_best_micro_batch']})"
            if "cached_best_ms" in s
            else "-"
        )
        gr_mib = s.get("gr_cache_bytes_measured", s.get("gr_cache_bytes_formula"))
        lines.append(
            f"| {s['config']} | {s['L']} | {s['M']} | {_f(s.get('full_eager_ms'))} | "
            f"{_f(s.get('full_graphs_ms'))} | {_f(s.get('cached_eager_ms'))} | "
            f"{_f(s.get('cached_graphs_ms'))} | {best} | "
            f"{_f(s.get('cached_best_candidates_per_s'), '.4g')} | "
            f"{_f(s.get('speedup_vs_own_full'), '.2f', 'x')} | "
            f"{_f(s.get('speedup_vs_gr_cached'), '.2f', 'x')} | {_f(s.get('max_rel_err'), '.2e')} | "
            f"{_mib(s.get('cache_bytes_per_user'))} | {_mib(s.get('cache_bytes_formula'))} | "
            f"{_mib(gr_mib) if s['config'] != BASELINE else '-'} |"
        )
    lines += [
        "",
        "## Every variant",
        "",
        "| config | L | M | mode | executor | m | calls | status | ms | candidates/s | "
        "max abs err | rel err | verified | fill s | warm-up s |",
        "| --- " * 15 + "|",
    ]
    for r in table:
        verified = "-" if "verified" not in r else ("yes" if r["verified"] else "NO")
        lines.append(
            f"| {r['config']} | {r['L']} | {r['M']} | {r['mode']} | {r['executor']} | "
            f"{r['micro_batch']} | {r.get('calls') or '-'} | {_status(r)} | {_f(r.get('ms'))} | "
            f"{_f(r.get('candidates_per_s'), '.4g')} | {_f(r.get('max_abs_err'), '.2e')} | "
            f"{_f(r.get('rel_err'), '.2e')} | {verified} | {_f(r.get('fill_s'), '.2f')} | "
            f"{_f(r.get('warmup_s'), '.2f')} |"
        )
    missing = [r for r in table if r.get("status") != "ok"]
    if missing:
        lines += [
            "",
            "## Not measured (rejected, unavailable, not capturable, failed or past the time "
            "budget)",
            "",
            "| config | L | M | mode | executor | m | status |",
            "| --- " * 7 + "|",
        ]
        for r in missing:
            lines.append(
                f"| {r['config']} | {r['L']} | {r['M']} | {r['mode']} | {r['executor']} | "
                f"{r['micro_batch']} | {r['status']} |"
            )
    lines += [
        "",
        "## Cache bytes per user (keys + values, every layer; measured vs formula)",
        "",
        "| config | L | measured MiB | formula MiB | equal | per SLA layer | per truncated "
        "layer | per GR layer (L rows) | SLA layer / GR layer | (k1 + k2 + c) / L |",
        "| --- " * 10 + "|",
    ]
    done = set()
    for r in table:
        if r.get("cache_bytes_per_user") is None or (r["config"], r["L"]) in done:
            continue
        done.add((r["config"], r["L"]))
        per = r["cache_bytes_per_layer"]
        gr_layer = r["gr_layer_cache_bytes_formula"]
        sla = max(per.get("sla", [0]) or [0])
        meta = next((m for m in metas if m["run_id"] == r["run_id"]), metas[0] if metas else {})
        sh = meta.get("shapes", {})
        bound = (sh.get("k1", 0) + sh.get("k2", 0) + sh.get("contextual", 0)) / r["L"]
        lines.append(
            f"| {r['config']} | {r['L']} | {_mib(r['cache_bytes_per_user'])} | "
            f"{_mib(r['cache_bytes_formula'])} | {'yes' if r['cache_bytes_match'] else 'NO'} | "
            f"{_mib(sla) if 'sla' in per else '-'} | "
            f"{_mib(max(per['truncated'])) if per.get('truncated') else '-'} | "
            f"{_mib(max(per['full'])) if per.get('full') else _mib(gr_layer)} | "
            f"{_f(sla / gr_layer, '.4f') if 'sla' in per else '-'} | "
            f"{_f(bound, '.4f') if 'sla' in per else '-'} |"
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
    lines += ["", "## Notes", "", *[f"- {n}" for n in notes + NOTES]]
    return "\n".join(lines) + "\n"


def render(rows: list, out_dir: Path, stem: str, target_length: int, target_candidates: int) -> str:
    """Write ``<stem>.json`` and ``<stem>.md`` from ``rows``; returns the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table, summary, checks = analyse(rows, target_length, target_candidates)
    md = markdown(rows, table, summary, checks, target_length, target_candidates)
    result = {
        "meta": [r for r in rows if r.get("kind") == "meta"],
        "end": [r for r in rows if r.get("kind") == "end"],
        "target_length": target_length,
        "target_candidates": target_candidates,
        "targets": checks,
        "summary": summary,
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
    stem = f"inference{args.tag}"
    if args.report_only:
        missing = [str(p) for p in args.report_only if not p.is_file()]
        if missing:
            print(
                f"ultra-hstu bench inference: error: no such file: {', '.join(missing)}",
                file=sys.stderr,
            )
            return 2
        rows = load_rows(args.report_only)
        print(render(rows, args.out, stem, args.target_length, args.target_candidates))
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
    if device == "cpu":  # toy shapes: more threads only add barrier waits
        torch.set_num_threads(1)
    try:
        rows = run_grid(args, argv, device, notes)
    finally:
        torch.set_num_threads(threads)
    finish_autotune_option(args)
    print(render(rows, args.out, stem, args.target_length, args.target_candidates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
