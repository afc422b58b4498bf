# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Triton forward kernel for delta-query SLA attention (KV-cached inference).

Layout and semantics: :mod:`.delta_reference`.  One program owns (user, head, block of new
rows) and walks that user's kv rows (kept cache, then new rows) in ``BLOCK_N`` tiles,
evaluating the full kernel's element-wise mask (``_sla_visible``, the same formula as
``sla_mask``) on the rows' and columns' positions in the full sequence.  A bounded cache
holds only keys the new rows can see (prefix + last k1), so there is no tile skipping
beyond the causal end: a block of non-contextual rows stops at its last row's own column.

Forward only (inference).  Tiles are fixed (no autotuning).  The split layout's kernel
splits the cached keys over extra programs when users x heads x row blocks would leave the
GPU idle (one user scoring 256 candidates with 4 heads is 16 programs), flash-decoding
style: :func:`num_cache_splits` chooses, ``$ULTRA_HSTU_DELTA_SPLITS`` forces a count.
"""

from __future__ import annotations

import functools
import os
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ultra_hstu_plugin.kernels.ops import triton_interpreting
from ultra_hstu_plugin.kernels.sla_attention.delta_op import bounded_cache, cache_prefix_len
from ultra_hstu_plugin.kernels.sla_attention.mask import SLAMaskSpec
from ultra_hstu_plugin.kernels.sla_attention.triton_kernels import (
    _common_args,
    _sla_visible,
    _tanh,
    _unit_stride,
)

# Untuned GPU tiles (no GPU has run this kernel yet); small tiles in the interpreter.
_GPU_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}
_INTERPRET_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 16}


@triton.jit
def _clamped_range(offsets, off_b, TOTAL):
    start = tl.load(offsets + off_b).to(tl.int64)
    end = tl.load(offsets + off_b + 1).to(tl.int64)
    start = tl.minimum(tl.maximum(start, 0), TOTAL)
    end = tl.minimum(tl.maximum(end, start), TOTAL)
    return start, (end - start).to(tl.int32)


@triton.jit
def _delta_sla_fwd_kernel(
    Q,
    K,
    V,
    Out,
    q_offsets,
    kv_offsets,
    cache_lengths,
    kept_ends,
    num_targets,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_ot,
    stride_oh,
    alpha,
    scale,
    H,
    K1,
    PREFIX,
    CTX,
    TAIL,
    CACHE_PREFIX,
    TOTAL_Q,
    TOTAL_KV,
    D: tl.constexpr,
    DV: tl.constexpr,
    HAS_TARGETS: tl.constexpr,
    HAS_CTX: tl.constexpr,
    HAS_TAIL: tl.constexpr,
    HISTORY_MODE: tl.constexpr,
    PRECISION: tl.constexpr,
    FAST_MATH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    off_bh = tl.program_id(0)
    off_b = off_bh // H
    off_h = off_bh % H
    q_start, M = _clamped_range(q_offsets, off_b, TOTAL_Q)
    kv_start, NKV = _clamped_range(kv_offsets, off_b, TOTAL_KV)
    m0 = tl.program_id(1) * BLOCK_M
    if m0 >= M:
        return
    n_cache = tl.load(cache_lengths + off_b).to(tl.int32)
    kept_end = tl.load(kept_ends + off_b).to(tl.int32)
    R = tl.maximum(NKV - M, 0)  # kept cached rows
    L = n_cache + M  # the full sequence
    if HAS_TARGETS:
        NN = tl.minimum(tl.maximum(L - tl.load(num_targets + off_b).to(tl.int32), 0), L)
    else:
        NN = L
    shift = kept_end - R
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    offs_dv = tl.arange(0, DV)
    idx_m = m0 + offs_m
    rows = n_cache + idx_m
    Q_ptr = Q + q_start * stride_qt + off_h * stride_qh
    K_ptr = K + kv_start * stride_kt + off_h * stride_kh
    V_ptr = V + kv_start * stride_vt + off_h * stride_vh
    q = tl.load(Q_ptr + idx_m[:, None] * stride_qt + offs_d[None, :], mask=idx_m[:, None] < M,
                other=0.0)  # fmt: skip
    # Non-contextual new rows are causal: nothing past the block's last row is visible.
    end = tl.where(n_cache >= CTX, tl.minimum(NKV, R + m0 + BLOCK_M), NKV)
    half_alpha = alpha * 0.5
    acc = tl.zeros([BLOCK_M, DV], dtype=tl.float32)
    for n0 in range(0, end, BLOCK_N):
        idx_n = n0 + offs_n
        cached_pos = tl.where(idx_n < CACHE_PREFIX, idx_n, idx_n + shift)
        cols = tl.where(idx_n < R, cached_pos, n_cache + idx_n - R)
        in_kv = idx_n[:, None] < NKV
        k = tl.load(K_ptr + idx_n[:, None] * stride_kt + offs_d[None, :], mask=in_kv, other=0.0)
        v = tl.load(V_ptr + idx_n[:, None] * stride_vt + offs_dv[None, :], mask=in_kv, other=0.0)
        h = tl.dot(q, tl.trans(k), input_precision=PRECISION) * half_alpha
        p = h + h * _tanh(h, FAST_MATH)
        vis = _sla_visible(
            rows[:, None], cols[None, :], NN, K1, PREFIX, CTX, TAIL,
            HAS_TARGETS, HAS_CTX, HAS_TAIL, HISTORY_MODE,
        )  # fmt: skip
        p = tl.where(vis & (idx_n[None, :] < NKV), p, 0.0)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
    acc = acc * scale
    O_ptr = Out + q_start * stride_ot + off_h * stride_oh
    tl.store(
        O_ptr + idx_m[:, None] * stride_ot + offs_dv[None, :],
        acc.to(Out.dtype.element_ty),
        mask=idx_m[:, None] < M,
    )


_DELTA_FLAGS = ("D", "DV", "HAS_TARGETS", "HAS_CTX", "HAS_TAIL", "HISTORY_MODE", "PRECISION",
                "FAST_MATH")  # fmt: skip


def _prepare_launch(
    q: torch.Tensor,
    v: torch.Tensor,
    q_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    num_targets: Optional[torch.Tensor],
    max_seq_len: int,
    max_delta_len: int,
    alpha: float,
    spec: SLAMaskSpec,
    config: Optional[dict],
    out: Optional[torch.Tensor],
) -> Tuple[torch.Tensor, Optional[tuple]]:
    """What both delta launchers share: the output buffer, and (grid, per-user target counts,
    mask scalars, constexpr flags, tile config), or ``None`` when there is nothing to launch."""
    total, H, _ = q.shape
    if out is None:
        out = torch.empty(total, H, v.shape[2], dtype=q.dtype, device=q.device)
    B = q_offsets.numel() - 1
    if total == 0 or B == 0 or max_delta_len == 0:
        return out, None
    scalars, flags = _common_args(q, v, q_offsets, num_targets, max_seq_len, alpha, spec)
    flags = {key: flags[key] for key in _DELTA_FLAGS}
    if config is None:
        config = _INTERPRET_CONFIG if triton_interpreting() else _GPU_CONFIG
    nt = num_targets if num_targets is not None else cache_lengths
    grid = (B * H, triton.cdiv(max_delta_len, config["BLOCK_M"]))
    return out, (grid, nt, tuple(scalars[:7]), flags, config)


def delta_sla_attention_triton_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_offsets: torch.Tensor,
    kv_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    kept_ends: torch.Tensor,
    max_seq_len: int,
    max_delta_len: int,
    alpha: float,
    spec: SLAMaskSpec,
    num_targets: Optional[torch.Tensor] = None,
    cache_prefix: int = 0,
    config: Optional[dict] = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Launcher (inputs assumed validated, see ``delta_sla_attention``).  ``config`` pins
    ``BLOCK_M``/``BLOCK_N``; ``out`` lets tests pass a NaN-poisoned buffer."""
    if q.dtype == torch.bfloat16 and triton_interpreting():
        # the interpreter multiplies bf16 tiles wrongly (see triton_kernels._interpreter_bf16)
        res = delta_sla_attention_triton_fwd(
            q.float(), k.float(), v.float(), q_offsets, kv_offsets, cache_lengths, kept_ends,
            max_seq_len, max_delta_len, alpha, spec, num_targets, cache_prefix, config,
        )  # fmt: skip
        return res.to(q.dtype) if out is None else out.copy_(res)
    q, k, v = _unit_stride(q), _unit_stride(k), _unit_stride(v)
    out, launch = _prepare_launch(
        q, v, q_offsets, cache_lengths, num_targets, max_seq_len, max_delta_len, alpha, spec,
        config, out,
    )  # fmt: skip
    if launch is None:
        return out
    grid, nt, (alpha_, scale, H_, k1, prefix, ctx, tail), flags, config = launch
    total = q.shape[0]
    _delta_sla_fwd_kernel[grid](
        q, k, v, out, q_offsets, kv_offsets, cache_lengths, kept_ends, nt,
        *q.stride()[:2], *k.stride()[:2], *v.stride()[:2], *out.stride()[:2],
        alpha_, scale, H_, k1, prefix, ctx, tail, cache_prefix, total, k.shape[0],
        **flags, **config,
    )  # fmt: skip
    return out


@triton.jit
def _delta_tile(
    acc, q, K_ptr, V_ptr, idx_n, n_valid, cols, rows, stride_kt, stride_vt, offs_d, offs_dv,
    half_alpha, NN, K1, PREFIX, CTX, TAIL, HAS_TARGETS: tl.constexpr, HAS_CTX: tl.constexpr,
    HAS_TAIL: tl.constexpr, HISTORY_MODE: tl.constexpr, PRECISION: tl.constexpr,
    FAST_MATH: tl.constexpr,
):  # fmt: skip
    """One ``BLOCK_N`` tile of keys (``idx_n < n_valid`` of them real, at positions ``cols``)."""
    in_kv = idx_n[:, None] < n_valid
    k = tl.load(K_ptr + idx_n[:, None] * stride_kt + offs_d[None, :], mask=in_kv, other=0.0)
    v = tl.load(V_ptr + idx_n[:, None] * stride_vt + offs_dv[None, :], mask=in_kv, other=0.0)
    h = tl.dot(q, tl.trans(k), input_precision=PRECISION) * half_alpha
    p = h + h * _tanh(h, FAST_MATH)
    vis = _sla_visible(
        rows[:, None], cols[None, :], NN, K1, PREFIX, CTX, TAIL,
        HAS_TARGETS, HAS_CTX, HAS_TAIL, HISTORY_MODE,
    )  # fmt: skip
    p = tl.where(vis & (idx_n[None, :] < n_valid), p, 0.0)
    return tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)


@triton.jit
def _delta_sla_split_fwd_kernel(
    Q, K, V, KC, VC, Out, q_offsets, cache_offsets, cache_lengths, kept_ends, num_targets,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_kct, stride_kch,
    stride_vct, stride_vch, stride_ot, stride_oh, alpha, scale, H, K1, PREFIX, CTX, TAIL,
    CACHE_PREFIX, TOTAL_Q, TOTAL_CACHE, W, stride_ws, CHUNK,
    D: tl.constexpr, DV: tl.constexpr, HAS_TARGETS: tl.constexpr, HAS_CTX: tl.constexpr,
    HAS_TAIL: tl.constexpr, HISTORY_MODE: tl.constexpr, PRECISION: tl.constexpr,
    FAST_MATH: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
):  # fmt: skip
    """The split layout: keys from the cache (``KC``/``VC`` by ``cache_offsets``), then from
    the new rows (``K``/``V`` by ``q_offsets``), each walked in its own loop.

    Split-K over the cache (``NUM_SPLITS > 1``, flash-decoding's idea): program axis 2 picks
    ``CHUNK`` cached keys; the last split also walks the new rows.  HSTU's attention is a
    plain sum (no softmax to rescale), so each split's partial output goes to the fp32
    workspace ``W[split]`` and :func:`_sum_splits_kernel` adds them."""
    split = tl.program_id(2)
    off_bh = tl.program_id(0)
    off_b = off_bh // H
    off_h = off_bh % H
    q_start, M = _clamped_range(q_offsets, off_b, TOTAL_Q)
    c_start, R = _clamped_range(cache_offsets, off_b, TOTAL_CACHE)
    m0 = tl.program_id(1) * BLOCK_M
    if m0 >= M:
        return
    n_cache = tl.load(cache_lengths + off_b).to(tl.int32)
    kept_end = tl.load(kept_ends + off_b).to(tl.int32)
    L = n_cache + M
    if HAS_TARGETS:
        NN = tl.minimum(tl.maximum(L - tl.load(num_targets + off_b).to(tl.int32), 0), L)
    else:
        NN = L
    shift = kept_end - R
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    offs_dv = tl.arange(0, DV)
    idx_m = m0 + offs_m
    rows = n_cache + idx_m
    q = tl.load(Q + q_start * stride_qt + off_h * stride_qh + idx_m[:, None] * stride_qt
                + offs_d[None, :], mask=idx_m[:, None] < M, other=0.0)  # fmt: skip
    half_alpha = alpha * 0.5
    acc = tl.zeros([BLOCK_M, DV], dtype=tl.float32)
    KC_ptr = KC + c_start * stride_kct + off_h * stride_kch
    VC_ptr = VC + c_start * stride_vct + off_h * stride_vch
    lo = split * CHUNK
    # the last split runs to the user's end: CHUNK comes from a host-side bound, and a cache
    # longer than it (never made by SLAKVCache) is slower, not wrong
    hi = tl.where(split == NUM_SPLITS - 1, R, tl.minimum(R, lo + CHUNK))
    for n0 in range(lo, hi, BLOCK_N):
        idx_n = n0 + offs_n
        cols = tl.where(idx_n < CACHE_PREFIX, idx_n, idx_n + shift)
        acc = _delta_tile(
            acc, q, KC_ptr, VC_ptr, idx_n, R, cols, rows, stride_kct, stride_vct, offs_d,
            offs_dv, half_alpha, NN, K1, PREFIX, CTX, TAIL, HAS_TARGETS, HAS_CTX, HAS_TAIL,
            HISTORY_MODE, PRECISION, FAST_MATH,
        )  # fmt: skip
    # Non-contextual new rows are causal: no new row past the block's last row is visible.
    end = tl.where(n_cache >= CTX, tl.minimum(M, m0 + BLOCK_M), M)
    end = tl.where(split == NUM_SPLITS - 1, end, 0)  # the new rows: the last split's
    K_ptr = K + q_start * stride_kt + off_h * stride_kh
    V_ptr = V + q_start * stride_vt + off_h * stride_vh
    for n0 in range(0, end, BLOCK_N):
        idx_n = n0 + offs_n
        acc = _delta_tile(
            acc, q, K_ptr, V_ptr, idx_n, M, n_cache + idx_n, rows, stride_kt, stride_vt, offs_d,
            offs_dv, half_alpha, NN, K1, PREFIX, CTX, TAIL, HAS_TARGETS, HAS_CTX, HAS_TAIL,
            HISTORY_MODE, PRECISION, FAST_MATH,
        )  # fmt: skip
    acc = acc * scale
    if NUM_SPLITS == 1:
        O_ptr = Out + q_start * stride_ot + off_h * stride_oh
        tl.store(
            O_ptr + idx_m[:, None] * stride_ot + offs_dv[None, :],
            acc.to(Out.dtype.element_ty),
            mask=idx_m[:, None] < M,
        )
    else:  # W[split] is [TOTAL_Q, H, DV], contiguous
        W_ptr = W + split * stride_ws + (q_start * H + off_h) * DV
        tl.store(W_ptr + idx_m[:, None] * (H * DV) + offs_dv[None, :], acc, mask=idx_m[:, None] < M)


@triton.jit
def _sum_splits_kernel(W, Out, N, NUM_SPLITS: tl.constexpr, BLOCK: tl.constexpr):
    """``Out[i] = sum_s W[s, i]`` over the flat ``[TOTAL_Q * H * DV]`` output."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    keep = offs < N
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for s in tl.static_range(NUM_SPLITS):
        acc += tl.load(W + s * N + offs, mask=keep, other=0.0)
    tl.store(Out + offs, acc.to(Out.dtype.element_ty), mask=keep)


_MAX_SPLITS = 16
_SUM_BLOCK = 1024


@functools.cache
def _multiprocessors(device_index: Optional[int]) -> int:
    if triton_interpreting():
        return 4  # small, so that the interpreter tests take the split path too
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def num_cache_splits(ctas: int, cached_rows: int, block_n: int, device: torch.device) -> int:
    """How many splits of the cache keys fill the GPU: about two programs per SM, each
    split at least two ``block_n`` tiles long.  ``ctas`` programs without splitting (users x
    heads x row blocks); ``cached_rows`` bounds one user's kept cache.  Host-only, so a cached
    call stays free of syncs (and capturable in a CUDA graph)."""
    by_work = max(1, triton.cdiv(cached_rows, 2 * block_n))
    by_fill = max(1, 2 * _multiprocessors(device.index) // max(1, ctas))
    return min(by_work, by_fill, _MAX_SPLITS)


SPLITS_ENV = "ULTRA_HSTU_DELTA_SPLITS"  # A/B switch for benchmarks: "1" = no split-K


def forced_cache_splits() -> Optional[int]:
    """The split count that ``$ULTRA_HSTU_DELTA_SPLITS`` forces (unset or empty: the launcher
    chooses); a value that is not an integer in [1, 16] is an error, not ignored."""
    raw = os.environ.get(SPLITS_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= _MAX_SPLITS:
        raise ValueError(f"{SPLITS_ENV}={raw!r}: expected an integer in [1, {_MAX_SPLITS}]")
    return int(raw)


def cache_split_plan(
    programs: int,
    cache_rows: int,
    max_seq_len: int,
    spec: SLAMaskSpec,
    block_n: int,
    device: torch.device,
    splits: Optional[int] = None,
) -> Tuple[int, int]:
    """(splits, cached keys a split) of the split-layout launch: ``splits`` if given, else
    ``$ULTRA_HSTU_DELTA_SPLITS``, else :func:`num_cache_splits`.  ``programs`` is users x
    heads x row blocks, ``cache_rows`` the cache tensor's rows (all users)."""
    # one user's kept cache is at most the whole cache tensor, the sequence bound and, for a
    # bounded (SLA) cache, the prefix + window it keeps (several users: not their sum)
    rows = min(cache_rows, max_seq_len)
    if bounded_cache(spec):
        rows = min(rows, cache_prefix_len(spec) + spec.k1)
    rows = max(1, rows)
    splits = splits or forced_cache_splits() or num_cache_splits(programs, rows, block_n, device)
    return splits, triton.cdiv(triton.cdiv(rows, splits), block_n) * block_n


def delta_sla_attention_split_triton_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    q_offsets: torch.Tensor,
    cache_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    kept_ends: torch.Tensor,
    max_seq_len: int,
    max_delta_len: int,
    alpha: float,
    spec: SLAMaskSpec,
    num_targets: Optional[torch.Tensor] = None,
    cache_prefix: int = 0,
    config: Optional[dict] = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Launcher of the split layout (inputs assumed validated, see
    ``delta_sla_attention_split``); ``config`` and ``out`` as in
    :func:`delta_sla_attention_triton_fwd`."""
    if q.dtype == torch.bfloat16 and triton_interpreting():
        res = delta_sla_attention_split_triton_fwd(
            q.float(), k.float(), v.float(), k_cache.float(), v_cache.float(), q_offsets,
            cache_offsets, cache_lengths, kept_ends, max_seq_len, max_delta_len, alpha, spec,
            num_targets, cache_prefix, config,
        )  # fmt: skip
        return res.to(q.dtype) if out is None else out.copy_(res)
    q, k, v = _unit_stride(q), _unit_stride(k), _unit_stride(v)
    k_cache, v_cache = _unit_stride(k_cache), _unit_stride(v_cache)
    out, launch = _prepare_launch(
        q, v, q_offsets, cache_lengths, num_targets, max_seq_len, max_delta_len, alpha, spec,
        config, out,
    )  # fmt: skip
    if launch is None:
        return out
    grid, nt, (alpha_, scale, H_, k1, prefix, ctx, tail), flags, config = launch
    config = dict(config)
    splits, chunk = cache_split_plan(
        grid[0] * grid[1], k_cache.shape[0], max_seq_len, spec, config["BLOCK_N"], q.device,
        config.pop("num_splits", None),
    )  # fmt: skip
    total = q.shape[0]
    if splits > 1:
        work = torch.empty(splits, total, H_, v.shape[2], dtype=torch.float32, device=q.device)
    else:
        work = out  # unused
    _delta_sla_split_fwd_kernel[(*grid, splits)](
        q, k, v, k_cache, v_cache, out, q_offsets, cache_offsets, cache_lengths, kept_ends, nt,
        *q.stride()[:2], *k.stride()[:2], *v.stride()[:2], *k_cache.stride()[:2],
        *v_cache.stride()[:2], *out.stride()[:2],
        alpha_, scale, H_, k1, prefix, ctx, tail, cache_prefix, total, k_cache.shape[0],
        work, work.stride(0), chunk, **flags, **config, NUM_SPLITS=splits,
    )  # fmt: skip
    if splits > 1:
        flat = (
            out
            if out.is_contiguous()
            else torch.empty_like(out, memory_format=torch.contiguous_format)
        )
        n = flat.numel()
        _sum_splits_kernel[(triton.cdiv(n, _SUM_BLOCK),)](
            work, flat, n, NUM_SPLITS=splits, BLOCK=_SUM_BLOCK
        )
        if flat is not out:
            out.copy_(flat)
    return out
