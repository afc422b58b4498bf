# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Triton kernels: FP8 (e4m3) rowwise-scaled GEMM with a fused 2D/1D bias, and rowwise quantisation.

``y = bias2d + (scale_x[:, None] * (x_fp8 @ w_fp8^T) * scale_w[None, :]) + bias1d`` in bf16,
accumulated in fp32.  ``w`` is ``[N, K]`` (nn.Linear layout): a ``[BLOCK_N, BLOCK_K]`` tile of it,
transposed, is K-major, which is the operand layout Hopper's fp8 wgmma wants.

Callers validate inputs (see ``op.py``); these launchers assume contiguous tensors,
``K % 16 == 0`` and scales of the right shape.

Interpreter (``TRITON_INTERPRET=1``, CPU): the kernels run unchanged; the triton 3.9 interpreter
executes the fp8 ``tl.dot``.  Should an interpreter lack it, a probe detects that once and the
kernel upcasts its tiles to fp32 before the dot (``EMULATE_FP8_DOT``), which gives the same
numbers (e4m3 values and their products are exact in fp32).  The GPU path is always a real fp8
``tl.dot``.  The 3.9 interpreter's narrowing casts round wrongly; ``FIX_INTERPRETER_CASTS``
works around them (see ``interpreter_casts.py``).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ultra_hstu_plugin.kernels.fp8_gemm.variants import VARIANTS, choose_variant
from ultra_hstu_plugin.kernels.interpreter_casts import casts_need_fixing, round_to_grid
from ultra_hstu_plugin.kernels.ops import autotune, cuda_capability, triton_interpreting

FP8_E4M3_MAX = 448.0
# amax is clamped to at least this before dividing by 448: an all-zero row gets a tiny positive
# scale, quantises to exact zeros and so contributes exactly 0 (y == bias), never 0/0 = NaN.
AMAX_EPS = 1e-12


# --------------------------------------------------------------------------------------------
# Rowwise quantisation
# --------------------------------------------------------------------------------------------


@triton.jit
def _quantize_tile(
    x,
    row_mask,
    scale_ptrs,
    AMAX_EPS_C: tl.constexpr,
    FP8_MAX: tl.constexpr,
    FIX_INTERPRETER_CASTS: tl.constexpr,
):
    """Quantise whole rows held in registers (fp32 ``[BLOCK_M, BLOCK_K]``, padding zeros):
    stores each row's scale, returns the clamped values ready for the cast to e4m3."""
    amax = tl.maximum(tl.max(tl.abs(x), axis=1), AMAX_EPS_C)
    # Two correctly rounded divisions a row (they match the PyTorch reference bit for bit),
    # then one multiply an element: a division an element (div_rn) is many instructions and
    # made the quantiser compute-bound.
    tl.store(scale_ptrs, tl.div_rn(amax, FP8_MAX), mask=row_mask)
    inv_scale = tl.div_rn(tl.full(amax.shape, FP8_MAX, tl.float32), amax)
    q = x * inv_scale[:, None]
    # Rounding can push |q| a hair past 448, and e4m3fn has no inf: a value past its range
    # becomes NaN, so clamp first.
    q = tl.minimum(tl.maximum(q, -FP8_MAX), FP8_MAX)
    if FIX_INTERPRETER_CASTS:
        q = round_to_grid(q, 3, 127 - 9)  # e4m3: 3 mantissa bits, subnormal step 2^-9
    return q


@triton.jit
def _row_block(M, K, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """This program's BLOCK_M whole rows (BLOCK_K >= K): indices, masks and element offsets."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    cols = tl.arange(0, BLOCK_K)
    col_mask = cols < K
    mask = row_mask[:, None] & col_mask[None, :]
    offs = rows.to(tl.int64)[:, None] * K + cols[None, :]
    return rows, row_mask, cols, col_mask, mask, offs


@triton.jit
def _quantize_rowwise_kernel(
    x_ptr,
    q_ptr,
    scale_ptr,
    M,
    K,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    AMAX_EPS_C: tl.constexpr,
    FP8_MAX: tl.constexpr,
    FIX_INTERPRETER_CASTS: tl.constexpr,
):
    # One program quantises BLOCK_M whole rows, held in registers (BLOCK_K >= K): one read, one
    # write, the bandwidth minimum.
    rows, row_mask, _, _, mask, offs = _row_block(M, K, BLOCK_M, BLOCK_K)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    q = _quantize_tile(x, row_mask, scale_ptr + rows, AMAX_EPS_C, FP8_MAX, FIX_INTERPRETER_CASTS)
    tl.store(q_ptr + offs, q.to(q_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _quantize_rowwise_looped_kernel(
    x_ptr,
    q_ptr,
    scale_ptr,
    M,
    K,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    AMAX_EPS_C: tl.constexpr,
    FP8_MAX: tl.constexpr,
    FIX_INTERPRETER_CASTS: tl.constexpr,
):
    # Rows too long for registers: pass 1 finds each row's amax, pass 2 scales and casts.
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    row_off = rows.to(tl.int64)[:, None] * K
    cols = tl.arange(0, BLOCK_K)

    amax = tl.zeros([BLOCK_M], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mask = row_mask[:, None] & ((k0 + cols)[None, :] < K)
        x = tl.load(x_ptr + row_off + k0 + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.max(tl.abs(x), axis=1))
    amax = tl.maximum(amax, AMAX_EPS_C)
    tl.store(scale_ptr + rows, tl.div_rn(amax, FP8_MAX), mask=row_mask)
    inv_scale = tl.div_rn(tl.full(amax.shape, FP8_MAX, tl.float32), amax)

    for k0 in range(0, K, BLOCK_K):
        mask = row_mask[:, None] & ((k0 + cols)[None, :] < K)
        x = tl.load(x_ptr + row_off + k0 + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        q = tl.minimum(tl.maximum(x * inv_scale[:, None], -FP8_MAX), FP8_MAX)
        if FIX_INTERPRETER_CASTS:
            q = round_to_grid(q, 3, 127 - 9)
        tl.store(q_ptr + row_off + k0 + cols[None, :], q.to(q_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _layer_norm_quantize_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    q_ptr,
    scale_ptr,
    M,
    K,
    eps,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    AMAX_EPS_C: tl.constexpr,
    FP8_MAX: tl.constexpr,
    FIX_INTERPRETER_CASTS: tl.constexpr,
):
    # LayerNorm and rowwise quantisation in one pass: the normalised rows never go to memory
    # in bf16 (a separate LayerNorm writes them, the quantiser reads them back).
    rows, row_mask, cols, col_mask, mask, offs = _row_block(M, K, BLOCK_M, BLOCK_K)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / K
    centred = tl.where(mask, x - mean[:, None], 0.0)
    var = tl.sum(centred * centred, axis=1) / K
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    # Padding columns stay exactly 0 (centred, w and b are 0 there), so they cannot raise amax.
    normed = centred * rstd[:, None] * w[None, :] + b[None, :]
    q = _quantize_tile(
        normed, row_mask, scale_ptr + rows, AMAX_EPS_C, FP8_MAX, FIX_INTERPRETER_CASTS
    )
    tl.store(q_ptr + offs, q.to(q_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _quantize_weight_in_out_kernel(
    w_ptr,
    q_ptr,
    scale_ptr,
    w_bf16_ptr,
    K,
    N,
    stride_k,
    stride_n,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    WRITE_BF16: tl.constexpr,
    AMAX_EPS_C: tl.constexpr,
    FP8_MAX: tl.constexpr,
    FIX_INTERPRETER_CASTS: tl.constexpr,
):
    # One program owns BLOCK_N output channels (columns of the [K, N] weight): pass 1 rounds
    # them to bf16 (writing that copy if asked) and finds each column's amax, pass 2 quantises
    # and stores them transposed, each channel's K values contiguous ([N, K], as the GEMM reads).
    # The weight may be a strided view (nn.Linear's [out, in] weight transposed); the bf16 copy
    # is written contiguous.
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    ks = tl.arange(0, BLOCK_K)
    amax = tl.zeros([BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        mask = ((k0 + ks)[:, None] < K) & col_mask[None, :]
        offs = (k0 + ks).to(tl.int64)[:, None] * stride_k + cols[None, :] * stride_n
        w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if FIX_INTERPRETER_CASTS:
            w = round_to_grid(w, 7, 1)
        w = w.to(tl.bfloat16)
        if WRITE_BF16:
            bf16_offs = (k0 + ks).to(tl.int64)[:, None] * N + cols[None, :]
            tl.store(w_bf16_ptr + bf16_offs, w, mask=mask)
        amax = tl.maximum(amax, tl.max(tl.abs(w.to(tl.float32)), axis=0))
    amax = tl.maximum(amax, AMAX_EPS_C)
    tl.store(scale_ptr + cols, tl.div_rn(amax, FP8_MAX), mask=col_mask)
    inv_scale = tl.div_rn(tl.full(amax.shape, FP8_MAX, tl.float32), amax)
    for k0 in range(0, K, BLOCK_K):
        mask = ((k0 + ks)[:, None] < K) & col_mask[None, :]
        offs = (k0 + ks).to(tl.int64)[:, None] * stride_k + cols[None, :] * stride_n
        w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if FIX_INTERPRETER_CASTS:
            w = round_to_grid(w, 7, 1)
        w = w.to(tl.bfloat16).to(tl.float32)
        q = tl.minimum(tl.maximum(w * inv_scale[None, :], -FP8_MAX), FP8_MAX)
        if FIX_INTERPRETER_CASTS:
            q = round_to_grid(q, 3, 127 - 9)
        q_offs = cols.to(tl.int64)[None, :] * K + (k0 + ks)[:, None]
        tl.store(q_ptr + q_offs, q.to(q_ptr.dtype.element_ty), mask=mask)


def quantize_weight_in_out_triton(
    w: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``w [K, N]`` (any strides) -> ``(w_fp8 [N, K], scale [N], w_bf16 [K, N])`` in one
    kernel; ``w_bf16`` is ``w`` itself when it is bf16 already."""
    K, N = w.shape
    q = torch.empty((N, K), dtype=torch.float8_e4m3fn, device=w.device)
    scale = torch.empty((N,), dtype=torch.float32, device=w.device)
    write_bf16 = w.dtype != torch.bfloat16
    w_bf16 = torch.empty((K, N), dtype=torch.bfloat16, device=w.device) if write_bf16 else w
    if K == 0 or N == 0:
        from ultra_hstu_plugin.kernels.fp8_gemm.reference import quantize_weight_in_out_reference

        return quantize_weight_in_out_reference(w)
    block_n = 16 if triton_interpreting() else 64
    _quantize_weight_in_out_kernel[(triton.cdiv(N, block_n),)](
        w,
        q,
        scale,
        w_bf16,
        K,
        N,
        w.stride(0),
        w.stride(1),
        BLOCK_K=32 if triton_interpreting() else 64,
        BLOCK_N=block_n,
        WRITE_BF16=write_bf16,
        AMAX_EPS_C=AMAX_EPS,
        FP8_MAX=FP8_E4M3_MAX,
        FIX_INTERPRETER_CASTS=_fix_interpreter_casts(),
        num_warps=4,
    )
    return q, scale, w_bf16


# Rows up to this many elements are held in registers by one program (a single read).
MAX_REGISTER_ROW = 16384
# Longer rows are walked in tiles of this many elements, twice (amax, then quantise).
LOOPED_BLOCK_K = 8192


def _row_tiling(K: int) -> tuple[int, int, int]:
    """``(BLOCK_M, BLOCK_K, num_warps)`` for the row kernels: ~8K elements a program (enough
    16-byte loads in flight, few registers a thread), whole rows when they fit."""
    block_k = triton.next_power_of_2(max(K, 1))
    if block_k > MAX_REGISTER_ROW:
        block_k = LOOPED_BLOCK_K
    block_m = max(1, min(64, 8192 // block_k))
    num_warps = 4 if block_m * block_k <= 4096 else (8 if block_m * block_k <= 8192 else 16)
    return block_m, block_k, num_warps


def quantize_rowwise_triton(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [M, K]`` (contiguous) -> ``(x_fp8 [M, K] e4m3, scale [M] fp32)``, ``x ~ x_fp8 * scale``."""
    M, K = x.shape
    q = torch.empty((M, K), dtype=torch.float8_e4m3fn, device=x.device)
    scale = torch.empty((M,), dtype=torch.float32, device=x.device)
    if M == 0:
        return q, scale
    block_m, block_k, num_warps = _row_tiling(K)
    kernel = _quantize_rowwise_kernel if block_k >= K else _quantize_rowwise_looped_kernel
    kernel[(triton.cdiv(M, block_m),)](
        x,
        q,
        scale,
        M,
        K,
        BLOCK_M=block_m,
        BLOCK_K=block_k,
        AMAX_EPS_C=AMAX_EPS,
        FP8_MAX=FP8_E4M3_MAX,
        FIX_INTERPRETER_CASTS=_fix_interpreter_casts(),
        num_warps=num_warps,
    )
    return q, scale


def layer_norm_quantize_rowwise_triton(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused ``LayerNorm(x) * weight + bias`` -> ``(fp8 [M, K], scale [M])``; ``K`` must be at
    most ``MAX_REGISTER_ROW`` (the caller checks)."""
    M, K = x.shape
    q = torch.empty((M, K), dtype=torch.float8_e4m3fn, device=x.device)
    scale = torch.empty((M,), dtype=torch.float32, device=x.device)
    if M == 0:
        return q, scale
    block_m, block_k, num_warps = _row_tiling(K)
    _layer_norm_quantize_kernel[(triton.cdiv(M, block_m),)](
        x,
        weight,
        bias,
        q,
        scale,
        M,
        K,
        eps,
        BLOCK_M=block_m,
        BLOCK_K=block_k,
        AMAX_EPS_C=AMAX_EPS,
        FP8_MAX=FP8_E4M3_MAX,
        FIX_INTERPRETER_CASTS=_fix_interpreter_casts(),
        num_warps=num_warps,
    )
    return q, scale


# --------------------------------------------------------------------------------------------
# GEMM
# --------------------------------------------------------------------------------------------


@triton.jit
def tile_coords(tile_id, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """Grouped ("swizzled") tile order: consecutive tiles walk GROUP_M row-tiles down one
    column of tiles before moving right, so the W tiles they share stay in L2."""
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = tile_id // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((tile_id % num_pid_in_group) % group_size_m)
    pid_n = (tile_id % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def _fp8_addmm_kernel(
    x_ptr,
    w_ptr,
    out_ptr,
    x_scale_ptr,
    w_scale_ptr,
    bias2d_ptr,
    bias1d_ptr,
    M,
    N,
    K,
    M_BUCKET,  # only an autotune key: configs are tuned per power-of-two bucket of M
    HAS_BIAS2D: tl.constexpr,
    HAS_BIAS1D: tl.constexpr,
    EMULATE_FP8_DOT: tl.constexpr,
    FIX_INTERPRETER_CASTS: tl.constexpr,
    EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    PREFETCH_BIAS: tl.constexpr,
):
    pid_m, pid_n = tile_coords(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    mask = mask_m[:, None] & mask_n[None, :]
    out_off = offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
    if HAS_BIAS2D and PREFETCH_BIAS:
        # The 2D bias is as many bytes as the output: issued before the main loop, its latency
        # hides behind the MMAs instead of stalling the epilogue (at the cost of registers).
        bias2d = tl.load(bias2d_ptr + out_off, mask=mask, other=0.0)

    # Loads wrap out-of-range rows/cols onto valid ones (modulo) instead of masking, so the main
    # loop carries no masks; the wrapped rows are never stored.  The launcher makes BLOCK_K
    # divide K whenever K % 32 == 0 (EVEN_K); fp8 MMAs need K tiles of at least 32, so for
    # other K (16, 48, ...) the K tail is masked with zeros.
    offs_k = tl.arange(0, BLOCK_K)
    rm = tl.max_contiguous(tl.multiple_of(offs_m % M, BLOCK_M), BLOCK_M)
    rn = tl.max_contiguous(tl.multiple_of(offs_n % N, BLOCK_N), BLOCK_N)
    x_ptrs = x_ptr + rm.to(tl.int64)[:, None] * K + offs_k[None, :]
    w_ptrs = w_ptr + rn.to(tl.int64)[:, None] * K + offs_k[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(x_ptrs)
            b = tl.load(w_ptrs)
        else:
            k_mask = offs_k[None, :] < K - k * BLOCK_K
            a = tl.load(x_ptrs, mask=k_mask, other=0.0)
            b = tl.load(w_ptrs, mask=k_mask, other=0.0)
        if EMULATE_FP8_DOT:
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32).T, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b.T, acc)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K

    # Epilogue: scales, then the biases (loaded here unless prefetched, so they take no
    # registers during the main loop).
    sx = tl.load(x_scale_ptr + offs_m, mask=mask_m, other=0.0)
    sw = tl.load(w_scale_ptr + offs_n, mask=mask_n, other=0.0)
    y = acc * sx[:, None] * sw[None, :]
    if HAS_BIAS1D:
        y += tl.load(bias1d_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS2D:
        if not PREFETCH_BIAS:
            bias2d = tl.load(bias2d_ptr + out_off, mask=mask, other=0.0)
        y += bias2d.to(tl.float32)
    if FIX_INTERPRETER_CASTS:
        y = round_to_grid(y, 7, 1)  # bf16: 7 mantissa bits
    tl.store(out_ptr + out_off, y.to(out_ptr.dtype.element_ty), mask=mask)


def _cfg(
    bm: int, bn: int, bk: int, warps: int, stages: int, prefetch: bool = False, group: int = 8
) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group, "PREFETCH_BIAS": prefetch},
        num_warps=warps,
        num_stages=stages,
    )


# Hopper-oriented tiles (H100 sweep, triton 3.6: benchmarks/results/gemm.md).  256x128 and
# 128x256 give the most reuse a tile; tiles using <= ~100 KB of shared memory (128x128x128 with
# 3 stages, 64x128) leave room for two programs an SM, so one's epilogue (2D-bias read, output
# write: as many bytes as the whole GEMM's operands) overlaps the other's main loop.
# Device-side TMA descriptors for the operands were tried and measured 5-15% slower than these
# pointer loads (which triton pipelines with cp.async), so they are not offered.  On the H100
# sweep 256x128 (8 warps, 3 stages) won the two large shapes and 128x128 (4 warps) the K=512
# one; prefetching the bias never won (it costs registers), it stays for other shapes/GPUs.
GPU_CONFIGS: list[triton.Config] = [
    _cfg(256, 128, 128, 8, 3),
    _cfg(256, 128, 128, 8, 3, prefetch=True),
    _cfg(128, 256, 128, 8, 3),
    _cfg(128, 256, 128, 8, 3, prefetch=True),
    _cfg(128, 128, 128, 8, 3),
    _cfg(128, 128, 128, 8, 3, prefetch=True),
    _cfg(128, 128, 128, 4, 3),
    _cfg(128, 128, 128, 8, 4, prefetch=True),
    _cfg(128, 128, 64, 8, 4),
    _cfg(64, 128, 128, 4, 4),
    _cfg(64, 128, 128, 4, 4, prefetch=True),
    _cfg(64, 256, 128, 4, 3),
]
# Small tiles for the CPU interpreter: its cost is per program and per tile element.
INTERPRETER_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 64, "GROUP_M": 4}


MIN_BLOCK_K = 32  # fp8 tensor-core MMAs take K in steps of 32


def _k_tile(block_k: int, K: int) -> int:
    """Largest power of two <= block_k dividing K, but at least MIN_BLOCK_K (then the kernel
    masks the K tail: EVEN_K is False)."""
    while block_k > MIN_BLOCK_K and K % block_k:
        block_k //= 2
    return block_k


def _prune_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    # Make every BLOCK_K divide K where it can (see _k_tile), then drop the duplicates.
    K = named_args["K"]
    seen, kept = set(), []
    for c in configs:
        kw = dict(c.kwargs, BLOCK_K=_k_tile(c.kwargs["BLOCK_K"], K))
        key = (tuple(sorted(kw.items())), c.num_warps, c.num_stages)
        if key not in seen:
            seen.add(key)
            kept.append(triton.Config(kw, num_warps=c.num_warps, num_stages=c.num_stages))
    return kept


def _fix_interpreter_casts() -> bool:
    return triton_interpreting() and casts_need_fixing()


_AUTOTUNED = None


def autotuned_kernel():
    """The autotuned GEMM (built once; a module global keeps the launch path cheap)."""
    global _AUTOTUNED
    if _AUTOTUNED is None:
        _AUTOTUNED = _make_autotuned(GPU_CONFIGS)
    return _AUTOTUNED


def _make_autotuned(configs: list[triton.Config]):
    return autotune(
        configs=list(configs),
        key=["M_BUCKET", "N", "K", "HAS_BIAS2D", "HAS_BIAS1D"],
        prune_configs_by={"early_config_prune": _prune_configs},
    )(_fp8_addmm_kernel)


@triton.jit
def _fp8_dot_probe_kernel(a_ptr, c_ptr):
    offs = tl.arange(0, 16)
    a = tl.load(a_ptr + offs[:, None] * 16 + offs[None, :])
    tl.store(c_ptr + offs[:, None] * 16 + offs[None, :], tl.dot(a, a.T))


@functools.cache
def interpreter_needs_fp8_emulation() -> bool:
    """Whether the CPU interpreter fails (or errs) on an fp8 dot; probed once per process."""
    a = torch.randn(16, 16).to(torch.float8_e4m3fn)
    c = torch.full((16, 16), float("nan"))
    try:
        _fp8_dot_probe_kernel[(1,)](a, c)
    except Exception:
        return True
    ref = a.float() @ a.float().T
    return not torch.allclose(c, ref, rtol=1e-5, atol=1e-5)


def fp8_addmm_triton(
    x_fp8: torch.Tensor,
    x_scale: torch.Tensor,
    w_fp8: torch.Tensor,
    w_scale: torch.Tensor,
    bias2d: torch.Tensor | None,
    bias1d: torch.Tensor | None,
    config: dict | None = None,
    out: torch.Tensor | None = None,
    variant: str = "auto",
) -> torch.Tensor:
    """Launch the GEMM (inputs already validated).  ``config`` pins one tile config (benchmarks);
    ``out`` (bf16 ``[M, N]``, contiguous) lets tests pass a NaN-poisoned buffer.

    ``variant``: ``"pointer"`` (one program a tile, ``_fp8_addmm_kernel``), ``"tma"`` (the
    persistent TMA kernel of ``tma_kernels``, Hopper+) or ``"auto"``: the table of
    ``variants.py`` for this shape and device (the pointer kernel where TMA does not apply).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    M, K = x_fp8.shape
    N = w_fp8.shape[0]
    if out is None:
        out = torch.empty((M, N), dtype=torch.bfloat16, device=x_fp8.device)
    if M == 0 or N == 0:
        return out
    operands = (x_fp8, x_scale, w_fp8, w_scale, bias2d, bias1d)
    if variant == "auto" and config is None and not triton_interpreting():
        if _auto_variant(operands, out) == "tma":  # the choice checked that TMA applies
            return _launch_tma(operands, out, None, checked=True)
        return _launch_pointer(operands, out, None)
    if variant == "tma":
        return _launch_tma(operands, out, config)
    # "pointer", or "auto" with a pinned (pointer-kernel) config or under the interpreter
    return _launch_pointer(operands, out, config)


def _launch_tma(
    operands: tuple, out: torch.Tensor, config: dict | None, checked: bool = False
) -> torch.Tensor:
    """``checked``: the auto choice already made sure the TMA kernel applies."""
    from ultra_hstu_plugin.kernels.fp8_gemm import tma_kernels as tma

    x_fp8, _, w_fp8, _, bias2d, _ = operands
    ok = tma.tma_layout_ok if triton_interpreting() else tma.tma_supported
    if not checked and not ok(x_fp8, w_fp8, out, bias2d):
        raise ValueError(
            "the TMA GEMM needs a Hopper or newer GPU and 16-byte-aligned tensors and rows "
            "(K % 16 == 0, N % 8 == 0 for a bf16 output and bias); use variant='pointer' or "
            "'auto'"
        )
    if triton_interpreting():
        # Small tiles and few programs: the interpreter's cost is per program and element.
        subtile = bool(config and config.get("EPILOGUE_SUBTILE"))
        cfg = dict(INTERPRETER_CONFIG, EPILOGUE_SUBTILE=subtile)
        fix = casts_need_fixing()
        return tma.fp8_addmm_tma(*operands, out, config=cfg, fix_interpreter_casts=fix, num_sms=3)
    return tma.fp8_addmm_tma(*operands, out, config=config)


def _auto_variant(operands: tuple, out: torch.Tensor) -> str:
    from ultra_hstu_plugin.kernels.fp8_gemm import tma_kernels as tma

    x_fp8, _, w_fp8, _, bias2d, _ = operands
    M, K = x_fp8.shape
    tma_applies = tma.tma_supported(x_fp8, w_fp8, out, bias2d)
    return choose_variant(M, w_fp8.shape[0], K, cuda_capability(x_fp8.device), tma_applies)


def _launch_pointer(operands: tuple, out: torch.Tensor, config: dict | None) -> torch.Tensor:
    x_fp8, x_scale, w_fp8, w_scale, bias2d, bias1d = operands
    M, K = x_fp8.shape
    N = w_fp8.shape[0]
    args = (
        x_fp8,
        w_fp8,
        out,
        x_scale,
        w_scale,
        bias2d if bias2d is not None else out,  # dummy pointer, never read
        bias1d if bias1d is not None else x_scale,
        M,
        N,
        K,
        triton.next_power_of_2(M),
    )
    flags = {
        "HAS_BIAS2D": bias2d is not None,
        "HAS_BIAS1D": bias1d is not None,
        "EVEN_K": K % MIN_BLOCK_K == 0,
    }

    def grid(meta: dict) -> tuple[int]:
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    if triton_interpreting():
        cfg = dict(INTERPRETER_CONFIG, PREFETCH_BIAS=bool(config and config.get("PREFETCH_BIAS")))
        cfg["BLOCK_K"] = _k_tile(cfg["BLOCK_K"], K)
        emulate = interpreter_needs_fp8_emulation()
        fix = casts_need_fixing()
        _fp8_addmm_kernel[grid](
            *args, **flags, EMULATE_FP8_DOT=emulate, FIX_INTERPRETER_CASTS=fix, **cfg
        )
    elif config is not None:
        cfg = dict(config)
        warps, stages = cfg.pop("num_warps", 8), cfg.pop("num_stages", 3)
        cfg["BLOCK_K"] = _k_tile(cfg["BLOCK_K"], K)
        _fp8_addmm_kernel[grid](
            *args,
            **flags,
            EMULATE_FP8_DOT=False,
            FIX_INTERPRETER_CASTS=False,
            **cfg,
            num_warps=warps,
            num_stages=stages,
        )
    else:
        autotuned_kernel()[grid](*args, **flags, EMULATE_FP8_DOT=False, FIX_INTERPRETER_CASTS=False)
    return out
