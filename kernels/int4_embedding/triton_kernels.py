# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Triton kernel: gather rows of an INT4 rowwise table (fbgemm's fused row format) and
dequantise them, ``out[i] = bias[ids[i]] + scale[ids[i]] * codes[ids[i]]``.

Row layout and arithmetic are those of ``reference.py``.  One program decodes
``BLOCK_N`` ids: it loads each row's packed codes as ``dim / 2`` contiguous bytes (one
vectorised load a row where the row start is 16-byte aligned, which triton infers from
``row_bytes`` when it is a multiple of 16), splits the nibbles and interleaves them back
into element order, and writes ``[BLOCK_N, dim]`` in the output dtype.

Out-of-range ids: the kernel masks every load of a row whose id is outside ``[0, rows)``, so
it never reads outside the table, and writes NaN for that row.  The public API
(``op.py``) raises for such ids before launch where checking is cheap.

Callers validate inputs (see ``op.py``): the launcher assumes a contiguous uint8
table with ``row_bytes >= dim / 2 + 4``, ``dim % 4 == 0`` and 1-D integer ids.

Interpreter (``TRITON_INTERPRET=1``, CPU): the triton 3.9 interpreter's fp32 -> bf16 cast
truncates; ``ROUND_BF16`` works around it (see ``interpreter_casts.py``).  The GPU path never
takes that branch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ultra_hstu_plugin.kernels.int4_embedding.reference import codes_offset, scale_bias_offset
from ultra_hstu_plugin.kernels.interpreter_casts import casts_need_fixing, round_to_grid
from ultra_hstu_plugin.kernels.ops import triton_interpreting

# Output elements a program writes: enough bytes in flight per program on the GPU while
# leaving thousands of programs for the 8K-id batches of inference lookups.
ELEMS_PER_PROGRAM = 2048
MAX_BLOCK_N = 128


@triton.jit
def _fp16_at(ptr, mask):
    """The little-endian fp16 at byte ``ptr`` (any alignment), as fp32."""
    lo = tl.load(ptr, mask=mask, other=0).to(tl.uint16)
    hi = tl.load(ptr + 1, mask=mask, other=0).to(tl.uint16)
    return (lo | (hi << 8)).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _int4_lookup_kernel(
    table_ptr,
    ids_ptr,
    out_ptr,
    n_ids,
    num_rows,
    row_bytes,
    DIM: tl.constexpr,
    HALF_BLOCK: tl.constexpr,  # next power of two >= DIM / 2 (bytes of codes a row)
    BLOCK_N: tl.constexpr,
    CODES_OFFSET: tl.constexpr,
    SCALE_BIAS_OFFSET: tl.constexpr,
    ROUND_BF16: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_n = pid.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < n_ids
    ids = tl.load(ids_ptr + offs_n, mask=mask_n, other=0).to(tl.int64)
    # Rows of out-of-range ids are never read (see the module docstring); they become NaN.
    valid = mask_n & (ids >= 0) & (ids < num_rows)
    # int64 offsets: rows * row_bytes passes 2^31 at a few tens of millions of rows.
    row_ptr = table_ptr + tl.where(valid, ids, 0) * row_bytes

    sb_ptr = row_ptr + SCALE_BIAS_OFFSET
    scale = _fp16_at(sb_ptr, valid)
    bias = _fp16_at(sb_ptr + 2, valid)
    scale = tl.where(valid, scale, float("nan"))

    cols = tl.arange(0, HALF_BLOCK)
    byte_mask = valid[:, None] & (cols[None, :] < DIM // 2)
    packed = tl.load(row_ptr[:, None] + CODES_OFFSET + cols[None, :], mask=byte_mask, other=0)
    lo = (packed & 0xF).to(tl.float32)  # element 2k
    hi = (packed >> 4).to(tl.float32)  # element 2k + 1
    codes = tl.join(lo, hi).reshape(BLOCK_N, 2 * HALF_BLOCK)  # interleave: lo0 hi0 lo1 hi1 ...
    # code * scale is exact in fp32 (4-bit times 11-bit significand): one rounding, fma or not.
    vals = codes * scale[:, None] + bias[:, None]
    if ROUND_BF16:
        vals = round_to_grid(vals, 7, 1)  # bf16

    out_cols = tl.arange(0, 2 * HALF_BLOCK)
    out_mask = mask_n[:, None] & (out_cols[None, :] < DIM)
    out_ptrs = out_ptr + offs_n[:, None] * DIM + out_cols[None, :]
    tl.store(out_ptrs, vals.to(out_ptr.dtype.element_ty), mask=out_mask)


def block_sizes(dim: int) -> tuple[int, int]:
    """``(HALF_BLOCK, BLOCK_N)`` for ``dim``: whole rows a program, ~ELEMS_PER_PROGRAM outputs."""
    half_block = triton.next_power_of_2(max(dim // 2, 1))
    block_n = max(1, min(MAX_BLOCK_N, ELEMS_PER_PROGRAM // (2 * half_block)))
    return half_block, block_n


def int4_lookup_triton(
    table: torch.Tensor,
    ids: torch.Tensor,
    dim: int,
    out_dtype: torch.dtype,
    scale_bias_last: bool = True,
    out: torch.Tensor | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """Launch the lookup (inputs already validated): ``[n, dim]`` in ``out_dtype``.

    ``out`` (``[n, dim]``, contiguous, ``out_dtype``) lets tests pass a NaN-poisoned buffer;
    ``block_n`` (a power of two) pins the ids a program (benchmarks, tests)."""
    n = ids.shape[0]
    if out is None:
        out = torch.empty((n, dim), dtype=out_dtype, device=table.device)
    if n == 0:
        return out
    half_block, default_block_n = block_sizes(dim)
    bn = block_n or default_block_n
    round_bf16 = out_dtype == torch.bfloat16 and triton_interpreting() and casts_need_fixing()
    grid = (triton.cdiv(n, bn),)
    _int4_lookup_kernel[grid](
        table,
        ids,
        out,
        n,
        table.shape[0],
        table.shape[1],
        DIM=dim,
        HALF_BLOCK=half_block,
        BLOCK_N=bn,
        CODES_OFFSET=codes_offset(scale_bias_last),
        SCALE_BIAS_OFFSET=scale_bias_offset(dim, scale_bias_last),
        ROUND_BF16=round_bf16,
        num_warps=4,
    )
    return out
