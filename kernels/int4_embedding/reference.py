# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""PyTorch reference for INT4 rowwise embedding rows (fbgemm's fused N-bit row format).

One row of a table with ``dim`` columns (``dim % 4 == 0``) is ``row_bytes`` uint8:

    scale_bias_last=True  (fbgemm's FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf):
        [dim/2 bytes of codes][fp16 scale][fp16 bias][zero padding up to row_bytes]
    scale_bias_last=False (fbgemm's inference TBE, i.e. torchrec's quantized tables):
        [fp16 scale][fp16 bias][dim/2 bytes of codes][zero padding up to row_bytes]

Codes are 4-bit, two a byte, element ``2k`` in the *low* nibble of byte ``k`` and ``2k + 1``
in the high one (checked against fbgemm's CPU op in the tests).  fp16 values are little
endian.  A row decodes as ``bias + scale * code``; ``code * scale`` is exact in fp32 (a 4-bit
integer times an 11-bit significand), so the only rounding is the add, and fma or not gives
the same bits.

:func:`quantize_int4_rowwise_reference` reproduces fbgemm's quantiser bit for bit on fp32 and
fp16 input, so tables can be built where fbgemm is not installed (our GPU machine).
"""

from __future__ import annotations

import torch

SCALE_BIAS_BYTES = 4  # fp16 scale + fp16 bias
INT4_LEVELS = 15  # codes 0..15
FP16_MAX = 65504.0
OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def int4_row_bytes(dim: int, row_alignment: int = 1) -> int:
    """Bytes of one row: ``dim / 2`` of codes + 4 of scale/bias, rounded up to ``row_alignment``."""
    raw = dim // 2 + SCALE_BIAS_BYTES
    return (raw + row_alignment - 1) // row_alignment * row_alignment


def codes_offset(scale_bias_last: bool) -> int:
    """Byte offset of the packed codes inside a row."""
    return 0 if scale_bias_last else SCALE_BIAS_BYTES


def scale_bias_offset(dim: int, scale_bias_last: bool) -> int:
    """Byte offset of the fp16 scale (the bias follows it) inside a row."""
    return dim // 2 if scale_bias_last else 0


def quantize_int4_rowwise_reference(
    weight: torch.Tensor, row_alignment: int = 1, scale_bias_last: bool = True
) -> torch.Tensor:
    """``weight [rows, dim]`` (fp32/fp16/bf16) -> uint8 ``[rows, int4_row_bytes(dim, align)]``.

    Same arithmetic as fbgemm's ``FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(weight, 4)``
    (its reference and AVX2 paths agree): the row minimum is rounded to fp16 first (it is
    stored as the bias, so the codes are computed against the stored value), ``scale = (max -
    min16) / 15`` rounded to fp16, ``code = clamp(round_half_even((x - min16) * (1 / scale)),
    0, 15)``.  Constant rows get ``scale = 1``.  Rows whose minimum or scale exceeds fp16's
    range are not meaningful (fbgemm stores inf there; so does this).
    """
    rows, dim = weight.shape
    x = weight.float()  # fp16/bf16 -> fp32 is exact, as fbgemm's half input path
    if rows == 0:
        return torch.zeros(
            (0, int4_row_bytes(dim, row_alignment)), dtype=torch.uint8, device=weight.device
        )
    mn = x.amin(dim=1)
    mx = x.amax(dim=1)
    bias16 = mn.half()
    mn = bias16.float()
    rng = mx - mn
    one = torch.ones_like(rng)
    # Tensor / tensor everywhere: PyTorch's CUDA division by a Python scalar multiplies by the
    # reciprocal, which is not correctly rounded; fbgemm divides in IEEE fp32.
    scale = torch.where(rng == 0, one, rng / torch.full_like(rng, float(INT4_LEVELS)))
    scale = scale.half().float()
    scale = torch.where(scale == 0, one, scale)  # range below fp16's smallest step
    inv = one / scale
    bad = torch.isinf(inv)  # scale a subnormal too small to invert: fbgemm falls back to 1
    scale = torch.where(bad, one, scale)
    inv = torch.where(bad, one, inv)
    # (x - min) * inv in two fp32 roundings, as fbgemm (no fma); torch.round is half-to-even
    # like lrintf / _mm256_round_ps in the default rounding mode.
    codes = torch.round((x - mn[:, None]) * inv[:, None]).clamp_(0, INT4_LEVELS).to(torch.uint8)
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    sb = torch.stack([scale.half(), bias16], dim=1).contiguous().view(torch.uint8)  # [rows, 4]
    out = torch.zeros(
        (rows, int4_row_bytes(dim, row_alignment)), dtype=torch.uint8, device=weight.device
    )
    c0 = codes_offset(scale_bias_last)
    s0 = scale_bias_offset(dim, scale_bias_last)
    out[:, c0 : c0 + dim // 2] = packed
    out[:, s0 : s0 + SCALE_BIAS_BYTES] = sb
    return out


def split_int4_rows(
    rows_uint8: torch.Tensor, dim: int, scale_bias_last: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(codes [rows, dim] uint8 0..15, scale [rows] fp32, bias [rows] fp32)`` of packed rows."""
    c0 = codes_offset(scale_bias_last)
    s0 = scale_bias_offset(dim, scale_bias_last)
    packed = rows_uint8[:, c0 : c0 + dim // 2]
    # low nibble = even element, high nibble = odd element
    codes = torch.stack([packed & 0xF, packed >> 4], dim=2).reshape(rows_uint8.shape[0], dim)
    sb = rows_uint8[:, s0 : s0 + SCALE_BIAS_BYTES].contiguous().view(torch.float16).float()
    return codes, sb[:, 0], sb[:, 1]


def dequantize_int4_rows_reference(
    rows_uint8: torch.Tensor,
    dim: int,
    out_dtype: torch.dtype = torch.float32,
    scale_bias_last: bool = True,
) -> torch.Tensor:
    """Decode packed rows ``[rows, row_bytes]`` -> ``[rows, dim]``: ``bias + scale * code`` in
    fp32, then one rounding to ``out_dtype`` (what fbgemm's dequantiser returns)."""
    codes, scale, bias = split_int4_rows(rows_uint8, dim, scale_bias_last)
    return (codes.float() * scale[:, None] + bias[:, None]).to(out_dtype)


def int4_lookup_reference(
    table: torch.Tensor,
    ids: torch.Tensor,
    dim: int,
    out_dtype: torch.dtype = torch.float32,
    scale_bias_last: bool = True,
) -> torch.Tensor:
    """``table[ids]`` decoded: ``[n, dim]`` in ``out_dtype`` (gather, then dequantise)."""
    return dequantize_int4_rows_reference(table[ids.long()], dim, out_dtype, scale_bias_last)
