# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Triton kernels for jagged HSTU attention under the SLA mask: forward and backward.

``out = silu(alpha * Q K^T) / N * M @ V`` with ``M`` from :mod:`.mask` (the contract).
Each program owns one (sequence, head, block) and visits only the tiles that can hold a
visible pair; the cost is therefore ~``(k1 + k2) * L`` instead of ``L^2``.

How a block of rows ``[m0, m1)`` picks its key tiles (positions are per sequence,
``NN = L - num_targets`` is where candidates start)::

    [0, prefix)                 global prefix (k2, contextual tokens included)
    [window start, main end)    min(m0, NN) - k1 .. min(m1, NN); from 0 for "full" rows
                                (k1 = 0, contextual, history-mode candidates, tail rows);
                                contextual rows look ahead up to NN
    [max(m0, main end), m1)     the diagonal of candidate rows (they see themselves)

Inside the middle range the tiles that are certainly fully visible (strictly below the
diagonal, inside the window, plain history rows) run without any mask arithmetic; every
other visited tile evaluates the exact element-wise mask (the same formula as
``sla_mask``), so skipping is only ever an optimisation, never a semantic choice.  The
backward key-block pass walks the mirror image (rows that can see a key block).

Backward: two kernels, no atomics.  ``dk/dv`` are accumulated per key block while
walking the row blocks that see it; ``dq`` per row block while walking the key tiles,
like the forward.  That recomputes ``QK^T`` and ``dO V^T`` once more (7 instead of 5
matmuls per tile) but keeps the gradients deterministic, needs no fp32 ``dq`` buffer
and conversion pass, and makes both kernels safe to autotune (re-running a config
rewrites its outputs instead of accumulating into them).

silu never needs the padding mask: keys/queries loaded as zero give ``silu(0) = 0``,
and ``dS = dP * silu'`` with ``dP = dO V^T = 0`` for a zero value row.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from ultra_hstu_plugin.kernels.ops import autotune, triton_interpreting
from ultra_hstu_plugin.kernels.sla_attention.mask import SLAMaskSpec

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128, 256)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# --------------------------------------------------------------------------------------
# Element-wise pieces
# --------------------------------------------------------------------------------------


@triton.jit
def _sla_visible(
    rows,
    cols,
    NN,
    K1,
    PREFIX,
    CTX,
    TAIL,
    HAS_TARGETS: tl.constexpr,
    HAS_CTX: tl.constexpr,
    HAS_TAIL: tl.constexpr,
    HISTORY_MODE: tl.constexpr,
):
    """``sla_mask`` for broadcastable row / column positions (same formula, same ids).

    Positions at or past the sequence end need no mask: their q / k / v / dout rows
    are loaded as zeros, and silu(0) = 0, dP = 0 there.
    """
    if not HAS_CTX and not HAS_TARGETS:
        # ids are positions: a cheaper form of the same rule (tiles near the diagonal
        # and the window edge run this on every element).
        d = rows - cols
        seen = (d <= K1) | (K1 == 0) | (cols < PREFIX)
        if HAS_TAIL:
            seen = seen | (rows >= NN - TAIL)
        return (d >= 0) & seen
    if HAS_CTX:
        max_id = NN - CTX + 1
        row_id = tl.minimum(tl.maximum(rows - CTX + 1, 0), max_id)
        col_id = tl.minimum(tl.maximum(cols - CTX + 1, 0), max_id)
    else:
        max_id = NN
        row_id = tl.minimum(rows, NN)
        col_id = tl.minimum(cols, NN)
    d = row_id - col_id
    seen = (d <= K1) | (K1 == 0) | (cols < PREFIX)
    if HAS_TAIL:
        seen = seen | (row_id >= max_id - TAIL)
    diag = rows == cols
    visible = diag | ((d > 0) & seen)
    if HAS_CTX:
        # Contextual rows (id 0) summarise the user: every key of id < max_id (contextual
        # + history), and themselves (their diagonal also when candidates overlap them).
        visible = tl.where(row_id == 0, (col_id < max_id) | diag, visible)
    if HISTORY_MODE:
        visible = tl.where(rows >= NN, (cols < NN) | diag, visible)
    return visible


@triton.jit
def _tanh(x, FAST_MATH: tl.constexpr):
    if FAST_MATH:
        # One MUFU op; silu via tanh needs one transcendental per score instead of two
        # (exp and a reciprocal), and the SFU is the forward's bottleneck next to wgmma.
        return tl.inline_asm_elementwise(
            "tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1
        )
    else:
        # Interpreter- and fp32-friendly; saturates correctly at +-inf.
        return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _nth_tile(i, s0, c0, s1, c1, s2, c2, s3, BLOCK: tl.constexpr):
    """Start of the i-th tile of four ranges starting at s0..s3, with c0..c2 tiles in the
    first three: one loop walks all masked tiles, which keeps the kernels (and their
    compile time) small."""
    start = s3 + (i - c0 - c1 - c2) * BLOCK
    start = tl.where(i < c0 + c1 + c2, s2 + (i - c0 - c1) * BLOCK, start)
    start = tl.where(i < c0 + c1, s1 + (i - c0) * BLOCK, start)
    return tl.where(i < c0, s0 + i * BLOCK, start)


# --------------------------------------------------------------------------------------
# Which tiles to visit
# --------------------------------------------------------------------------------------


@triton.jit
def _row_block_key_tiles(
    m0,
    L,
    NN,
    K1,
    PREFIX,
    CTX,
    TAIL,
    HAS_TAIL: tl.constexpr,
    HISTORY_MODE: tl.constexpr,
    CTX_IN_WINDOW: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Key tiles for rows ``[m0, m0 + BLOCK_M)``.

    Masked tiles: ``[pre_u, s1_end)``, ``[s2_start, u_lo)``, ``[u_hi, s2_end)``,
    ``[s3_start, m1)``; unmasked (certainly fully visible): ``[0, pre_u)`` (prefix keys
    below every row) and ``[u_lo, u_hi)``; all disjoint.  Returns the masked ranges as
    ``_nth_tile`` takes them and their tile count, then the unmasked ones likewise.
    """
    m1 = tl.minimum(m0 + BLOCK_M, L)
    full = (K1 == 0) | (m0 < CTX)
    if HISTORY_MODE:
        full = full | (m1 > NN)
    if HAS_TAIL:
        full = full | (m1 - 1 >= NN - TAIL)
    win = tl.where(full, 0, tl.maximum(tl.minimum(m0, NN) - K1, 0))
    if CTX_IN_WINDOW:
        # Contextual keys all have id 0: a row whose window reaches them sees all of them.
        win = tl.where(win < CTX, 0, win)
    hi = tl.where(m0 < CTX, NN, tl.minimum(m1, NN))
    pre = tl.minimum(tl.minimum(PREFIX, win), hi)
    s1_end = (pre + BLOCK_N - 1) // BLOCK_N * BLOCK_N
    s2_start = tl.maximum(win // BLOCK_N * BLOCK_N, s1_end)
    s2_end = tl.maximum((hi + BLOCK_N - 1) // BLOCK_N * BLOCK_N, s2_start)
    s3_start = tl.maximum(tl.maximum(m0, hi) // BLOCK_N * BLOCK_N, s2_end)
    # Fully visible tiles: plain history rows, keys strictly below every row and inside
    # every row's window (d <= r - j for history rows, so positions bound the ids).
    plain = (m0 >= CTX) & (m0 + BLOCK_M <= NN)
    # ``full`` may hold for only some rows (the tail starts mid-block); the unmasked
    # range needs every row to see all earlier keys.
    all_full = K1 == 0
    if HAS_TAIL:
        all_full = all_full | (m0 >= NN - TAIL)
    w_lo = tl.maximum(m0 + BLOCK_M - 1 - K1, 0)
    u_lo = tl.where(all_full, s2_start, (w_lo + BLOCK_N - 1) // BLOCK_N * BLOCK_N)
    u_hi = m0 // BLOCK_N * BLOCK_N
    u_lo = tl.where(plain, u_lo, s2_start)
    u_hi = tl.where(plain, u_hi, s2_start)
    u_lo = tl.minimum(tl.maximum(u_lo, s2_start), s2_end)
    u_hi = tl.minimum(tl.maximum(u_hi, u_lo), s2_end)
    # Prefix tiles wholly below the block and inside the prefix need no mask either.
    pre_u = tl.minimum(PREFIX // BLOCK_N * BLOCK_N, m0 // BLOCK_N * BLOCK_N)
    pre_u = tl.where(plain, tl.minimum(pre_u, s1_end), 0)
    c1 = (s1_end - pre_u) // BLOCK_N
    c2 = (u_lo - s2_start) // BLOCK_N
    c3 = (s2_end - u_hi) // BLOCK_N
    c4 = (tl.maximum(m1 - s3_start, 0) + BLOCK_N - 1) // BLOCK_N
    cu = pre_u // BLOCK_N
    n_masked = c1 + c2 + c3 + c4
    n_unmasked = cu + (u_hi - u_lo) // BLOCK_N
    return pre_u, c1, s2_start, c2, u_hi, c3, s3_start, n_masked, cu, u_lo, n_unmasked


@triton.jit
def _key_block_row_tiles(
    n0,
    L,
    NN,
    K1,
    PREFIX,
    CTX,
    TAIL,
    HAS_TAIL: tl.constexpr,
    HISTORY_MODE: tl.constexpr,
    CTX_IN_WINDOW: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Row tiles that can see keys ``[n0, n0 + BLOCK_N)`` (mirror of the above).

    Masked: ``[0, a_end)`` (contextual rows), ``[b_start, u_lo)``, ``[u_hi, b_end)``,
    ``[c_start, L)`` (candidate / tail rows); unmasked ``[u_lo, u_hi)``.
    """
    n1 = tl.minimum(n0 + BLOCK_N, L)
    # The last key position whose id the window is measured from (contextual keys share id 0
    # with the last contextual token when they are not in the prefix).
    n1_id = n1
    if CTX_IN_WINDOW:
        n1_id = tl.where(n0 < CTX, tl.maximum(n1, tl.minimum(CTX, L)), n1)
    a_end = tl.where(n0 < NN, (tl.minimum(CTX, L) + BLOCK_M - 1) // BLOCK_M * BLOCK_M, 0)
    # Prefix keys (and every key when k1 = 0) are seen by all later rows.
    wide = (K1 == 0) | (n0 < PREFIX)
    main_end = tl.where(wide, L, tl.minimum(n1_id + K1, L))
    b_start = tl.maximum(n0 // BLOCK_M * BLOCK_M, a_end)
    b_end = tl.maximum((main_end + BLOCK_M - 1) // BLOCK_M * BLOCK_M, b_start)
    tail_start = L
    if HAS_TAIL:
        tail_start = tl.maximum(NN - TAIL, 0)
    if HISTORY_MODE:
        cand = n0 < NN
    else:
        cand = (n0 < NN) & (n1_id - 1 >= NN - K1)
    tail_start = tl.where(cand, tl.minimum(tail_start, NN), tail_start)
    c_start = tl.maximum(tail_start // BLOCK_M * BLOCK_M, b_end)
    u_lo = tl.maximum(
        (n0 + BLOCK_N + BLOCK_M - 1) // BLOCK_M * BLOCK_M,
        (CTX + BLOCK_M - 1) // BLOCK_M * BLOCK_M,
    )
    u_hi = NN // BLOCK_M * BLOCK_M
    # Unmasked only where every key of the block is in every row's window or prefix
    # (``wide`` alone is not enough: a block can straddle the end of the prefix).
    all_seen = (K1 == 0) | (n0 + BLOCK_N <= PREFIX)
    u_hi = tl.where(all_seen, u_hi, tl.minimum(u_hi, (n0 + K1 + 1) // BLOCK_M * BLOCK_M))
    u_lo = tl.minimum(tl.maximum(u_lo, b_start), b_end)
    u_hi = tl.minimum(tl.maximum(u_hi, u_lo), b_end)
    c1 = a_end // BLOCK_M
    c2 = (u_lo - b_start) // BLOCK_M
    c3 = (b_end - u_hi) // BLOCK_M
    c4 = (tl.maximum(L - c_start, 0) + BLOCK_M - 1) // BLOCK_M
    return c1, b_start, c2, u_hi, c3, c_start, c1 + c2 + c3 + c4, u_lo, u_hi


@triton.jit
def _sequence(seq_offsets, num_targets, off_b, TOTAL, MAX_LEN, HAS_TARGETS: tl.constexpr):
    """(start, length, NN) of a sequence.  Offsets are clamped to ``[0, TOTAL]`` and the
    length to ``MAX_LEN``, NN to ``[0, L]``: malformed offsets or targets (decreasing,
    negative, past the end) give wrong numbers but never a read or write outside the
    tensors (the launcher checks batches on the CPU; kernels cannot afford to)."""
    seq_start = tl.load(seq_offsets + off_b).to(tl.int64)
    seq_end = tl.load(seq_offsets + off_b + 1).to(tl.int64)
    seq_start = tl.minimum(tl.maximum(seq_start, 0), TOTAL)
    seq_end = tl.minimum(tl.maximum(seq_end, seq_start), TOTAL)
    L = tl.minimum(seq_end - seq_start, MAX_LEN).to(tl.int32)
    if HAS_TARGETS:
        NN = L - tl.load(num_targets + off_b).to(tl.int32)
        NN = tl.minimum(tl.maximum(NN, 0), L)
    else:
        NN = L
    return seq_start, L, NN


# --------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------


@triton.jit
def _fwd_tile(
    acc,
    q,
    K_ptr,
    V_ptr,
    stride_kt,
    stride_vt,
    n0,
    rows,
    offs_n,
    offs_d,
    offs_dv,
    half_alpha,
    L,
    NN,
    K1,
    PREFIX,
    CTX,
    TAIL,
    HAS_TARGETS: tl.constexpr,
    HAS_CTX: tl.constexpr,
    HAS_TAIL: tl.constexpr,
    HISTORY_MODE: tl.constexpr,
    MASKED: tl.constexpr,
    PRECISION: tl.constexpr,
    FAST_MATH: tl.constexpr,
):
    cols = n0 + offs_n
    k_ptrs = K_ptr + cols[:, None] * stride_kt + offs_d[None, :]
    v_ptrs = V_ptr + cols[:, None] * stride_vt + offs_dv[None, :]
    if MASKED:
        k = tl.load(k_ptrs, mask=cols[:, None] < L, other=0.0)
        v = tl.load(v_ptrs, mask=cols[:, None] < L, other=0.0)
    else:
        k = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    # silu(x) = x / 2 * (1 + tanh(x / 2)); h = x / 2 = alpha / 2 * q.k
    h = tl.dot(q, tl.trans(k), input_precision=PRECISION) * half_alpha
    p = h + h * _tanh(h, FAST_MATH)
    if MASKED:
        vis = _sla_visible(
            rows[:, None], cols[None, :], NN, K1, PREFIX, CTX, TAIL,
            HAS_TARGETS, HAS_CTX, HAS_TAIL, HISTORY_MODE,
        )  # fmt: skip
        p = tl.where(vis, p, 0.0)
    return tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)


@triton.jit
def _sla_fwd_kernel(
    Q,
    K,
    V,
    Out,
    seq_offsets,
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
    TOTAL,  # rows of q/k/v: offsets are clamped to it
    MAX_LEN,  # max_seq_len: sequence lengths are clamped to it
    AUTOTUNE_N,  # bucketed max_seq_len: only an autotuning key
    AUTOTUNE_W,  # bucketed window k1 (0 = full causal): only an autotuning key
    D: tl.constexpr,
    DV: tl.constexpr,
    HAS_TARGETS: tl.constexpr,
    HAS_CTX: tl.constexpr,
    HAS_TAIL: tl.constexpr,
    HISTORY_MODE: tl.constexpr,
    CTX_IN_WINDOW: tl.constexpr,
    PRECISION: tl.constexpr,
    FAST_MATH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    off_bh = tl.program_id(0)
    # Longest row blocks (latest rows: most keys under causal/full masks) launch first.
    pid_m = tl.num_programs(1) - 1 - tl.program_id(1)
    off_b = off_bh // H
    off_h = off_bh % H
    seq_start, L, NN = _sequence(seq_offsets, num_targets, off_b, TOTAL, MAX_LEN, HAS_TARGETS)
    m0 = pid_m * BLOCK_M
    if m0 >= L:
        return
    s0, c0, s1, c1, s2, c2, s3, n_masked, cu, u_lo, n_unmasked = _row_block_key_tiles(
        m0, L, NN, K1, PREFIX, CTX, TAIL, HAS_TAIL, HISTORY_MODE, CTX_IN_WINDOW, BLOCK_M, BLOCK_N
    )
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    offs_dv = tl.arange(0, DV)
    rows = m0 + offs_m
    Q_ptr = Q + seq_start * stride_qt + off_h * stride_qh
    K_ptr = K + seq_start * stride_kt + off_h * stride_kh
    V_ptr = V + seq_start * stride_vt + off_h * stride_vh
    q_ptrs = Q_ptr + rows[:, None] * stride_qt + offs_d[None, :]
    q = tl.load(q_ptrs, mask=rows[:, None] < L, other=0.0)
    half_alpha = alpha * 0.5
    acc = tl.zeros([BLOCK_M, DV], dtype=tl.float32)
    for j in range(0, n_unmasked):
        n0 = tl.where(j < cu, j * BLOCK_N, u_lo + (j - cu) * BLOCK_N)
        acc = _fwd_tile(
            acc, q, K_ptr, V_ptr, stride_kt, stride_vt, n0, rows, offs_n, offs_d, offs_dv,
            half_alpha, L, NN, K1, PREFIX, CTX, TAIL, HAS_TARGETS, HAS_CTX, HAS_TAIL,
            HISTORY_MODE, False, PRECISION, FAST_MATH,
        )  # fmt: skip
    for i in range(0, n_masked):
        n0 = _nth_tile(i, s0, c0, s1, c1, s2, c2, s3, BLOCK_N)
        acc = _fwd_tile(
            acc, q, K_ptr, V_ptr, stride_kt, stride_vt, n0, rows, offs_n, offs_d, offs_dv,
            half_alpha, L, NN, K1, PREFIX, CTX, TAIL, HAS_TARGETS, HAS_CTX, HAS_TAIL,
            HISTORY_MODE, True, PRECISION, FAST_MATH,
        )  # fmt: skip
    acc = acc * scale  # the 1/N of HSTU, applied once per row instead of per pair
    O_ptr = Out + seq_start * stride_ot + off_h * stride_oh
    tl.store(
        O_ptr + rows[:, None] * stride_ot + offs_dv[None, :],
        acc.to(Out.dtype.element_ty),
        mask=rows[:, None] < L,
    )


# --------------------------------------------------------------------------------------
# Backward: dk, dv per key block
# --------------------------------------------------------------------------------------


@triton.jit
def _silu_grad_parts(h, FAST_MATH: tl.constexpr):
    """With h = x / 2: silu(x) = h (1 + t) and silu'(x) = (1 + t) / 2 * (1 + h (1 - t)),
    t = tanh(h)."""
    t = _tanh(h, FAST_MATH)
    one_plus_t = 1.0 + t
    p = h * one_plus_t
    dsilu = 0.5 * one_plus_t * (1.0 + h * (1.0 - t))
    return p, dsilu


@triton.jit
def _dkdv_tile(
    dk,
    dv,
    k,
    v,
    Q_ptr,
    DO_ptr,
    stride_qt,
    stride_dot,
    m0,
    cols,
    offs_m,
    offs_d,
    offs_dv,
    half_alpha,
    L,
    NN,
    K1,
    PREFIX,
    CTX,
    TAIL,
    HAS_TARGETS: tl.constexpr,
    HAS_CTX: tl.constexpr,
    HAS_TAIL: tl.constexpr,
    HISTORY_MODE: tl.constexpr,
    MASKED: tl.constexpr,
    PRECISION: tl.constexpr,
    FAST_MATH: tl.constexpr,
):
    rows = m0 + offs_m
    q_ptrs = Q_ptr + rows[:, None] * stride_qt + offs_d[None, :]
    do_ptrs = DO_ptr + rows[:, None] * stride_dot + offs_dv[None, :]
    if MASKED:
        q = tl.load(q_ptrs, mask=rows[:, None] < L, other=0.0)
        do = tl.load(do_ptrs, mask=rows[:, None] < L, other=0.0)
    else:
        q = tl.load(q_ptrs)
        do = tl.load(do_ptrs)
    # Transposed tiles ([keys, rows]) so that dk, dv accumulate without transposes.
    h = tl.dot(k, tl.trans(q), input_precision=PRECISION) * half_alpha
    p, dsilu = _silu_grad_parts(h, FAST_MATH)
    dp = tl.dot(v, tl.trans(do), input_precision=PRECISION)
    ds = dp * dsilu
    if MASKED:
        vis = _sla_visible(
            rows[None, :], cols[:, None], NN, K1, PREFIX, CTX, TAIL,
            HAS_TARGETS, HAS_CTX, HAS_TAIL, HISTORY_MODE,
        )  # fmt: skip
        p = tl.where(vis, p, 0.0)
        ds = tl.where(vis, ds, 0.0)
    dv = tl.dot(p.to(do.dtype), do, dv, input_precision=PRECISION)
    dk = tl.dot(ds.to(q.dtype), q, dk, input_precision=PRECISION)
    return dk, dv


@triton.jit
def _sla_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    DK,
    DVg,
    seq_offsets,
    num_targets,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_dot,
    stride_doh,
    stride_dkt,
    stride_dkh,
    stride_dvt,
    stride_dvh,
    alpha,
    scale,
    H,
    K1,
    PREFIX,
    CTX,
    TAIL,
    TOTAL,  # rows of q/k/v: offsets are clamped to it
    MAX_LEN,  # max_seq_len: sequence lengths are clamped to it
    AUTOTUNE_N,
    AUTOTUNE_W,
    D: tl.constexpr,
    DV: tl.constexpr,
    HAS_TARGETS: tl.constexpr,
    HAS_CTX: tl.constexpr,
    HAS_TAIL: tl.constexpr,
    HISTORY_MODE: tl.constexpr,
    CTX_IN_WINDOW: tl.constexpr,
    PRECISION: tl.constexpr,
    FAST_MATH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    off_bh = tl.program_id(0)
    # Early key blocks (prefix; everything under causal) are seen by most rows: launch
    # them first so the long programs do not form the tail of the grid.
    pid_n = tl.program_id(1)
    off_b = off_bh // H
    off_h = off_bh % H
    seq_start, L, NN = _sequence(seq_offsets, num_targets, off_b, TOTAL, MAX_LEN, HAS_TARGETS)
    n0 = pid_n * BLOCK_N
    if n0 >= L:
        return
    c0, s1, c1, s2, c2, s3, n_masked, u_lo, u_hi = _key_block_row_tiles(
        n0, L, NN, K1, PREFIX, CTX, TAIL, HAS_TAIL, HISTORY_MODE, CTX_IN_WINDOW, BLOCK_M, BLOCK_N
    )
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    offs_dv = tl.arange(0, DV)
    cols = n0 + offs_n
    Q_ptr = Q + seq_start * stride_qt + off_h * stride_qh
    DO_ptr = DO + seq_start * stride_dot + off_h * stride_doh
    K_ptr = K + seq_start * stride_kt + off_h * stride_kh
    V_ptr = V + seq_start * stride_vt + off_h * stride_vh
    k_ptrs = K_ptr + cols[:, None] * stride_kt + offs_d[None, :]
    v_ptrs = V_ptr + cols[:, None] * stride_vt + offs_dv[None, :]
    k = tl.load(k_ptrs, mask=cols[:, None] < L, other=0.0)
    v = tl.load(v_ptrs, mask=cols[:, None] < L, other=0.0)
    half_alpha = alpha * 0.5
    dk = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, DV], dtype=tl.float32)
    for m0 in range(u_lo, u_hi, BLOCK_M):
        dk, dv = _dkdv_tile(
            dk, dv, k, v, Q_ptr, DO_ptr, stride_qt, stride_dot, m0, cols, offs_m, offs_d,
            offs_dv, half_alpha, L, NN, K1, PREFIX, CTX, TAIL, HAS_TARGETS, HAS_CTX, HAS_TAIL,
            HISTORY_MODE, False, PRECISION, FAST_MATH,
        )  # fmt: skip
    for i in range(0, n_masked):
        m0 = _nth_tile(i, 0, c0, s1, c1, s2, c2, s3, BLOCK_M)
        dk, dv = _dkdv_tile(
            dk, dv, k, v, Q_ptr, DO_ptr, stride_qt, stride_dot, m0, cols, offs_m, offs_d,
            offs_dv, half_alpha, L, NN, K1, PREFIX, CTX, TAIL, HAS_TARGETS, HAS_CTX, HAS_TAIL,
            HISTORY_MODE, True, PRECISION, FAST_MATH,
        )  # fmt: skip
    dk = dk * (alpha * scale)
    dv = dv * scale
    DK_ptr = DK + seq_start * stride_dkt + off_h * stride_dkh
    DV_ptr = DVg + seq_start * stride_dvt + off_h * stride_dvh
    tl.store(
        DK_ptr + cols[:, None] * stride_dkt + offs_d[None, :],
        dk.to(DK.dtype.element_ty),
        mask=cols[:, None] < L,
    )
    tl.store(
        DV_ptr + cols[:, None] * stride_dvt + offs_dv[None, :],
        dv.to(DVg.dtype.element_ty),
        mask=cols[:, None] < L,
    )


# --------------------------------------------------------------------------------------
# Backward: dq per row block
# --------------------------------------------------------------------------------------


@triton.jit
def _dq_tile(
    dq,
    q,
    do,
    K_ptr,
    V_ptr,
    stride_kt,
    stride_vt,
    n0,
    rows,
    offs_n,
    offs_d,
    offs_dv,
    half_alpha,
    L,
    NN,
    K1,
    PREFIX,
    CTX,
    TAIL,
    HAS_TARGETS: tl.constexpr,
    HAS_CTX: tl.constexpr,
    HAS_TAIL: tl.constexpr,
    HISTORY_MODE: tl.constexpr,
    MASKED: tl.constexpr,
    PRECISION: tl.constexpr,
    FAST_MATH: tl.constexpr,
):
    cols = n0 + offs_n
    k_ptrs = K_ptr + cols[:, None] * stride_kt + offs_d[None, :]
    v_ptrs = V_ptr + cols[:, None] * stride_vt + offs_dv[None, :]
    if MASKED:
        k = tl.load(k_ptrs, mask=cols[:, None] < L, other=0.0)
        v = tl.load(v_ptrs, mask=cols[:, None] < L, other=0.0)
    else:
        k = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    h = tl.dot(q, tl.trans(k), input_precision=PRECISION) * half_alpha
    _, dsilu = _silu_grad_parts(h, FAST_MATH)
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
    ds = dp * dsilu
    if MASKED:
        vis = _sla_visible(
            rows[:, None], cols[None, :], NN, K1, PREFIX, CTX, TAIL,
            HAS_TARGETS, HAS_CTX, HAS_TAIL, HISTORY_MODE,
        )  # fmt: skip
        ds = tl.where(vis, ds, 0.0)
    return tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)


@triton.jit
def _sla_bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    DQ,
    seq_offsets,
    num_targets,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_dot,
    stride_doh,
    stride_dqt,
    stride_dqh,
    alpha,
    scale,
    H,
    K1,
    PREFIX,
    CTX,
    TAIL,
    TOTAL,  # rows of q/k/v: offsets are clamped to it
    MAX_LEN,  # max_seq_len: sequence lengths are clamped to it
    AUTOTUNE_N,
    AUTOTUNE_W,
    D: tl.constexpr,
    DV: tl.constexpr,
    HAS_TARGETS: tl.constexpr,
    HAS_CTX: tl.constexpr,
    HAS_TAIL: tl.constexpr,
    HISTORY_MODE: tl.constexpr,
    CTX_IN_WINDOW: tl.constexpr,
    PRECISION: tl.constexpr,
    FAST_MATH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    off_bh = tl.program_id(0)
    pid_m = tl.num_programs(1) - 1 - tl.program_id(1)
    off_b = off_bh // H
    off_h = off_bh % H
    seq_start, L, NN = _sequence(seq_offsets, num_targets, off_b, TOTAL, MAX_LEN, HAS_TARGETS)
    m0 = pid_m * BLOCK_M
    if m0 >= L:
        return
    s0, c0, s1, c1, s2, c2, s3, n_masked, cu, u_lo, n_unmasked = _row_block_key_tiles(
        m0, L, NN, K1, PREFIX, CTX, TAIL, HAS_TAIL, HISTORY_MODE, CTX_IN_WINDOW, BLOCK_M, BLOCK_N
    )
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    offs_dv = tl.arange(0, DV)
    rows = m0 + offs_m
    Q_ptr = Q + seq_start * stride_qt + off_h * stride_qh
    DO_ptr = DO + seq_start * stride_dot + off_h * stride_doh
    K_ptr = K + seq_start * stride_kt + off_h * stride_kh
    V_ptr = V + seq_start * stride_vt + off_h * stride_vh
    q_ptrs = Q_ptr + rows[:, None] * stride_qt + offs_d[None, :]
    do_ptrs = DO_ptr + rows[:, None] * stride_dot + offs_dv[None, :]
    q = tl.load(q_ptrs, mask=rows[:, None] < L, other=0.0)
    do = tl.load(do_ptrs, mask=rows[:, None] < L, other=0.0)
    half_alpha = alpha * 0.5
    dq = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    for j in range(0, n_unmasked):
        n0 = tl.where(j < cu, j * BLOCK_N, u_lo + (j - cu) * BLOCK_N)
        dq = _dq_tile(
            dq, q, do, K_ptr, V_ptr, stride_kt, stride_vt, n0, rows, offs_n, offs_d, offs_dv,
            half_alpha, L, NN, K1, PREFIX, CTX, TAIL, HAS_TARGETS, HAS_CTX, HAS_TAIL,
            HISTORY_MODE, False, PRECISION, FAST_MATH,
        )  # fmt: skip
    for i in range(0, n_masked):
        n0 = _nth_tile(i, s0, c0, s1, c1, s2, c2, s3, BLOCK_N)
        dq = _dq_tile(
            dq, q, do, K_ptr, V_ptr, stride_kt, stride_vt, n0, rows, offs_n, offs_d, offs_dv,
            half_alpha, L, NN, K1, PREFIX, CTX, TAIL, HAS_TARGETS, HAS_CTX, HAS_TAIL,
            HISTORY_MODE, True, PRECISION, FAST_MATH,
        )  # fmt: skip
    dq = dq * (alpha * scale)
    DQ_ptr = DQ + seq_start * stride_dqt + off_h * stride_dqh
    tl.store(
        DQ_ptr + rows[:, None] * stride_dqt + offs_d[None, :],
        dq.to(DQ.dtype.element_ty),
        mask=rows[:, None] < L,
    )


# --------------------------------------------------------------------------------------
# Autotuning: a handful of configs, pruned by shape, keyed on the bucketed length
# --------------------------------------------------------------------------------------

# The window is in the key: a windowed and a full-causal call at the same length have
# very different work per row block and want different tiles.
# PRECISION too: an exact fp32 dot and a TF32 one want different tiles.
_TUNE_KEY = ["AUTOTUNE_N", "AUTOTUNE_W", "D", "DV", "PRECISION"]


def _cfg(block_m: int, block_n: int, warps: int, stages: int) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=warps, num_stages=stages
    )


# (BLOCK_M, BLOCK_N): rows x keys per tile.  Small lists so a new bucket tunes in seconds.
# On an H100 (bf16, D = 128) the first tuning of all three takes ~40 s (compiles
# included); later length buckets reuse the binaries and tune in ~2 s.
_FWD_CONFIGS = [
    _cfg(128, 64, 4, 3),
    _cfg(128, 64, 8, 3),
    _cfg(128, 128, 8, 2),
    _cfg(64, 64, 4, 3),
    _cfg(64, 64, 4, 4),
    _cfg(64, 128, 4, 3),
    _cfg(128, 32, 4, 4),
    _cfg(64, 32, 4, 3),
]
# dk/dv: BLOCK_N keys per program, BLOCK_M rows per step.
_DKDV_CONFIGS = [
    _cfg(64, 64, 4, 3),
    _cfg(64, 64, 4, 4),
    _cfg(64, 128, 8, 2),
    _cfg(32, 128, 8, 3),
    _cfg(32, 128, 4, 4),
    _cfg(32, 64, 4, 3),
    _cfg(32, 64, 4, 4),
    _cfg(64, 64, 8, 2),
]
_DQ_CONFIGS = [
    _cfg(64, 64, 4, 3),
    _cfg(64, 64, 4, 4),
    _cfg(128, 64, 8, 2),
    _cfg(128, 32, 8, 3),
    _cfg(128, 32, 4, 4),
    _cfg(64, 32, 4, 3),
    _cfg(64, 32, 4, 4),
]


def _prune(configs: list, named_args: dict, **kwargs) -> list:
    """Drop tiles much larger than the (bucketed) sequence and huge fp32 / D=256 tiles."""
    args = {**named_args, **kwargs}  # constexprs arrive as kwargs
    n = args["AUTOTUNE_N"]
    big_dim = max(args["D"], args["DV"]) >= 256 or args["Q"].dtype == torch.float32
    kept = []
    for c in configs:
        bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        if max(bm, bn) > max(n, 32) and n < 128:
            continue
        if big_dim and bm * bn > 64 * 64:
            continue
        kept.append(c)
    return kept or configs[-1:]


def _tuned(kernel, configs):
    return autotune(
        configs=configs, key=_TUNE_KEY, prune_configs_by={"early_config_prune": _prune}
    )(kernel)


# The autotuned kernels (public: the benchmark reports the configs they chose).
fwd_tuned = _tuned(_sla_fwd_kernel, _FWD_CONFIGS)
dkdv_tuned = _tuned(_sla_bwd_dkdv_kernel, _DKDV_CONFIGS)
dq_tuned = _tuned(_sla_bwd_dq_kernel, _DQ_CONFIGS)


# The interpreter cannot time configs; small tiles keep it quick and still exercise
# multi-tile paths on short test sequences.
_INTERPRET_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 16}


# --------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------


def _interpreter_bf16(q: torch.Tensor) -> bool:
    """Triton's interpreter (3.9) multiplies bf16 tiles wrongly (numpy has no bf16):
    there, bf16 inputs run in fp32 and the results are rounded back."""
    return q.dtype == torch.bfloat16 and triton_interpreting()


@functools.cache
def _bucket(n: int) -> int:
    return triton.next_power_of_2(max(n, 16))


def dot_precision(q: torch.Tensor) -> str:
    """``tl.dot``'s input precision for ``q``'s dtype, by GR's convention: fp32 products are
    TF32 where ``torch.backends.cuda.matmul.allow_tf32`` is set (GR's Triton kernels pass that
    flag as ``ALLOW_TF32``), else exact fp32 ("ieee"), which is what the parity tests compare
    with the reference.  16-bit inputs ignore it (their products are exact in fp32 anyway).

    Why it matters on the GPU: an "ieee" fp32 dot has no tensor-core path, so it runs on FMA
    units and its tiles compile slowly (benchmarks/results/tf32_sla_h200.md)."""
    if q.dtype != torch.float32:
        return "tf32"
    tf32 = q.is_cuda and torch.backends.cuda.matmul.allow_tf32 and not triton_interpreting()
    return "tf32" if tf32 else "ieee"


def _common_args(
    q: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    num_targets: Optional[torch.Tensor],
    max_seq_len: int,
    alpha: float,
    spec: SLAMaskSpec,
) -> tuple[list, dict]:
    """Scalars shared by the three kernels, and their constexpr flags."""
    scalars = [
        float(alpha),
        1.0 / max(max_seq_len, 1),
        q.shape[1],
        spec.k1,
        spec.prefix_len,
        spec.contextual_seq_len,
        spec.full_attn_tail,
        q.shape[0],
        max_seq_len,
        _bucket(max_seq_len),
        _bucket(spec.k1) if 0 < spec.k1 < max_seq_len else 0,
    ]
    flags = {
        "D": q.shape[2],
        "DV": v.shape[2],
        "HAS_TARGETS": num_targets is not None,
        "HAS_CTX": spec.contextual_seq_len > 0,
        "HAS_TAIL": spec.full_attn_tail > 0,
        "HISTORY_MODE": spec.target_mode == "history",
        # GR's contextual convention: contextual keys are reached through the window.
        "CTX_IN_WINDOW": spec.contextual_seq_len > 0 and not spec.contextual_in_prefix,
        "PRECISION": dot_precision(q),
        # tanh.approx (PTX) for 16-bit inputs on NVIDIA: its ~2^-11 error is below bf16's.
        "FAST_MATH": q.dtype != torch.float32
        and not triton_interpreting()
        and torch.version.hip is None,
    }
    return scalars, flags


def _launch(tuned, raw, grid, args: list, flags: dict, config: Optional[dict]) -> None:
    if config is None and triton_interpreting():
        config = _INTERPRET_CONFIG
    if config is None:
        tuned[grid](*args, **flags)
    else:
        extra = {k: v for k, v in config.items() if k in ("num_warps", "num_stages")}
        blocks = {k: v for k, v in config.items() if k in ("BLOCK_M", "BLOCK_N")}
        raw[grid](*args, **flags, **blocks, **extra)


def _unit_stride(t: torch.Tensor) -> torch.Tensor:
    """``t`` as the kernels read it: any row and head strides, unit stride within a head.

    q, k and v arrive as column slices of the layer's fused uvqk projection; copying them
    contiguous cost three extra passes over q/k/v per layer (~1 ms of an 18-layer
    encoder's 5.5 ms inference forward on an H200, ``benchmarks/results/scaling*.md``).
    """
    return t if t.stride(-1) == 1 else t.contiguous()


def sla_attention_triton_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    alpha: float,
    spec: SLAMaskSpec,
    num_targets: Optional[torch.Tensor] = None,
    config: Optional[dict] = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Forward launcher.  Inputs are assumed validated (see ``sla_attention``).

    ``config`` (``BLOCK_M``, ``BLOCK_N``, optional ``num_warps``/``num_stages``) skips
    autotuning; tests use it to sweep tile shapes.  ``out`` (contiguous) lets tests pass
    a NaN-poisoned buffer to prove every row is written.
    """
    if _interpreter_bf16(q):
        res = sla_attention_triton_fwd(
            q.float(),
            k.float(),
            v.float(),
            seq_offsets,
            max_seq_len,
            alpha,
            spec,
            num_targets,
            config,
        )
        return res.to(q.dtype) if out is None else out.copy_(res)
    q, k, v = _unit_stride(q), _unit_stride(k), _unit_stride(v)
    total, H, _ = q.shape
    if out is None:
        out = torch.empty(total, H, v.shape[2], dtype=q.dtype, device=q.device)
    B = seq_offsets.numel() - 1
    if total == 0 or B == 0 or max_seq_len == 0:
        return out
    scalars, flags = _common_args(q, v, seq_offsets, num_targets, max_seq_len, alpha, spec)
    nt = num_targets if num_targets is not None else seq_offsets

    def grid(meta):
        return (B * H, triton.cdiv(max_seq_len, meta["BLOCK_M"]))

    args = [q, k, v, out, seq_offsets, nt, *q.stride()[:2], *k.stride()[:2], *v.stride()[:2]]
    args += [*out.stride()[:2], *scalars]
    _launch(fwd_tuned, _sla_fwd_kernel, grid, args, flags, config)
    return out


def sla_attention_triton_bwd(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    alpha: float,
    spec: SLAMaskSpec,
    num_targets: Optional[torch.Tensor] = None,
    config: Optional[dict] = None,
    grads: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward launcher: ``(dq, dk, dv)`` in the inputs' dtype (``grads``: buffers)."""
    if _interpreter_bf16(q):
        res = sla_attention_triton_bwd(
            dout.float(), q.float(), k.float(), v.float(), seq_offsets, max_seq_len, alpha, spec,
            num_targets, config,
        )  # fmt: skip
        if grads is None:
            return tuple(g.to(q.dtype) for g in res)
        return tuple(buf.copy_(g) for buf, g in zip(grads, res))
    q, k, v, dout = _unit_stride(q), _unit_stride(k), _unit_stride(v), _unit_stride(dout)
    if grads is None:
        grads = (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v))
    dq, dk, dv = grads
    total, H, _ = q.shape
    B = seq_offsets.numel() - 1
    if total == 0 or B == 0 or max_seq_len == 0:
        return dq, dk, dv
    scalars, flags = _common_args(q, v, seq_offsets, num_targets, max_seq_len, alpha, spec)
    nt = num_targets if num_targets is not None else seq_offsets
    strides = [*q.stride()[:2], *k.stride()[:2], *v.stride()[:2], *dout.stride()[:2]]

    def grid_n(meta):
        return (B * H, triton.cdiv(max_seq_len, meta["BLOCK_N"]))

    def grid_m(meta):
        return (B * H, triton.cdiv(max_seq_len, meta["BLOCK_M"]))

    args = [q, k, v, dout, dk, dv, seq_offsets, nt, *strides, *dk.stride()[:2], *dv.stride()[:2]]
    _launch(dkdv_tuned, _sla_bwd_dkdv_kernel, grid_n, args + scalars, flags, config)
    args = [q, k, v, dout, dq, seq_offsets, nt, *strides, *dq.stride()[:2]]
    _launch(dq_tuned, _sla_bwd_dq_kernel, grid_m, args + scalars, flags, config)
    return dq, dk, dv
