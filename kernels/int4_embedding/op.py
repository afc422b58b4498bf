# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Public API of the INT4 rowwise embedding lookup (fbgemm's fused INT4 row format), no fbgemm.

    table = quantize_int4_rowwise(weight)                  # uint8 [rows, dim/2 + 4], as fbgemm
    emb = int4_lookup(table, ids, dim, torch.bfloat16)     # [n, dim], Triton on CUDA

Rows are ``[codes][fp16 scale][fp16 bias][padding]`` (``scale_bias_last=True``, fbgemm's
``FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf``) or ``[fp16 scale][fp16 bias][codes]
[padding]`` (``scale_bias_last=False``: the rows of fbgemm's inference TBE, so torchrec's
quantized tables); see ``reference.py``.  The lookup is a ``torch.library``
custom op (``ultra_hstu::int4_embedding_lookup``) with a fake implementation, so it traces
under torch.compile.  Inputs are checked before any launch; errors name the tensor and value.

Ids outside ``[0, rows)``: ``check_ids=None`` (default) checks them on CPU, where it costs one
pass over the ids, and raises ``IndexError``.  On CUDA the default does *not* check, because
reading the result back costs a device-to-host sync a call; the kernel then reads nothing for
such an id and returns a row of NaN (``backend="pytorch"`` raises or device-asserts, as
indexing does).  ``check_ids=True`` checks on any device (syncs on CUDA).
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from ultra_hstu_plugin.kernels.int4_embedding.reference import (
    OUT_DTYPES,
    int4_lookup_reference,
    int4_row_bytes,
    quantize_int4_rowwise_reference,
)
from ultra_hstu_plugin.kernels.ops import BACKENDS, check_backend, custom_op, triton_supported

__all__ = [
    "BACKENDS",
    "OUT_DTYPES",
    "int4_lookup",
    "int4_row_bytes",
    "int4_triton_supported",
    "quantize_int4_rowwise",
]

_ID_DTYPES = (torch.int32, torch.int64)
_WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def int4_triton_supported(device: Union[torch.device, str, None]) -> bool:
    """Whether the Triton lookup can run on ``device``: any CUDA GPU triton supports (it needs
    no tensor cores), or the CPU under ``TRITON_INTERPRET=1`` (tests)."""
    return triton_supported(device)


def _triton_module():
    # Imported lazily: the pytorch backend must work where triton cannot be imported.
    from ultra_hstu_plugin.kernels.int4_embedding import triton_kernels

    return triton_kernels


def _check_dim(dim: int) -> None:
    # (SymInt: under torch.compile with dynamic shapes the fake implementation gets one.)
    if isinstance(dim, bool) or not isinstance(dim, (int, torch.SymInt)):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if dim <= 0 or dim % 4:
        # fbgemm's INT4 rows need dim * 4 bits to end on a 2-byte boundary before the fp16
        # scale/bias (and torchrec refuses other dims for INT4 too).
        raise ValueError(f"dim={dim} must be a positive multiple of 4 for INT4 rows")


def _check_lookup_inputs(
    table: torch.Tensor, ids: torch.Tensor, dim: int, out_dtype: torch.dtype
) -> None:
    _check_dim(dim)
    if table.dtype != torch.uint8:
        raise TypeError(f"table must be torch.uint8 (packed INT4 rows), got {table.dtype}")
    if table.dim() != 2:
        raise ValueError(f"table must be 2-D [rows, row_bytes], got shape {tuple(table.shape)}")
    if not table.is_contiguous():
        raise ValueError(f"table must be contiguous (row-major), got strides {table.stride()}")
    need = int4_row_bytes(dim)
    if table.shape[1] < need:
        raise ValueError(
            f"table has row_bytes={table.shape[1]} but dim={dim} needs at least {need} "
            f"({dim // 2} bytes of codes + 4 of fp16 scale/bias)"
        )
    if ids.dtype not in _ID_DTYPES:
        raise TypeError(f"ids must have a dtype in {_ID_DTYPES}, got {ids.dtype}")
    if ids.dim() != 1:
        raise ValueError(f"ids must be 1-D [n], got shape {tuple(ids.shape)}")
    if out_dtype not in OUT_DTYPES:
        raise TypeError(f"out_dtype must be one of {OUT_DTYPES}, got {out_dtype}")
    if ids.device != table.device:
        raise ValueError(f"ids are on {ids.device} but table is on {table.device}")


def _check_id_range(table: torch.Tensor, ids: torch.Tensor) -> None:
    if ids.numel() == 0:
        return
    rows = table.shape[0]
    lo, hi = int(ids.min()), int(ids.max())  # one sync on CUDA; why it is opt-in there
    if lo < 0 or hi >= rows:
        bad = lo if lo < 0 else hi
        raise IndexError(f"ids must be in [0, {rows}) (the table's rows), got id {bad}")


def _int4_lookup_fake(table, ids, dim, out_dtype, scale_bias_last, backend, check_ids):
    check_backend("int4_lookup", backend)
    _check_lookup_inputs(table, ids, dim, out_dtype)  # the id range needs values: not here
    return table.new_empty((ids.shape[0], dim), dtype=out_dtype)


@custom_op("int4_embedding_lookup", fake=_int4_lookup_fake)
def _int4_lookup(
    table: torch.Tensor,
    ids: torch.Tensor,
    dim: int,
    out_dtype: torch.dtype,
    scale_bias_last: bool,
    backend: str,
    check_ids: bool,
) -> torch.Tensor:
    check_backend("int4_lookup", backend)
    _check_lookup_inputs(table, ids, dim, out_dtype)
    if check_ids:
        _check_id_range(table, ids)
    if backend == "pytorch":
        return int4_lookup_reference(table, ids, dim, out_dtype, scale_bias_last)
    check_backend("int4_lookup", backend, table.device)
    return _triton_module().int4_lookup_triton(
        table, ids.contiguous(), dim, out_dtype, scale_bias_last
    )


def int4_lookup(
    table: torch.Tensor,
    ids: torch.Tensor,
    dim: int,
    out_dtype: torch.dtype = torch.float32,
    *,
    scale_bias_last: bool = True,
    backend: str = "triton",
    check_ids: Optional[bool] = None,
) -> torch.Tensor:
    """Rows ``ids`` of an INT4 table, dequantised: ``[n, dim]`` in ``out_dtype``.

    ``table`` is uint8 ``[rows, row_bytes]`` (contiguous, ``row_bytes >= dim / 2 + 4``, any
    padding after that ignored), ``ids`` int32/int64 ``[n]`` (repeats allowed), ``dim % 4 ==
    0``, ``out_dtype`` fp32, fp16 or bf16.  Each value is ``bias + scale * code`` computed in
    fp32 and rounded once to ``out_dtype``: bit-identical to fbgemm's dequantiser and to
    ``backend="pytorch"``.  Id checks: see the module docstring (``check_ids=None`` checks on
    CPU only).
    """
    if check_ids is None:
        check_ids = table.device.type == "cpu"
    return _int4_lookup(table, ids, dim, out_dtype, scale_bias_last, backend, check_ids)


def quantize_int4_rowwise(
    weight: torch.Tensor, row_alignment: int = 1, scale_bias_last: bool = True
) -> torch.Tensor:
    """``weight [rows, dim]`` -> uint8 INT4 rows ``[rows, int4_row_bytes(dim, row_alignment)]``.

    Pure PyTorch, any device.  With the defaults the bytes equal fbgemm's
    ``FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(weight, 4)`` for fp32 and fp16 weights, with
    one exception: in a row whose minimum is zero and which holds both +0.0 and -0.0, the sign
    of the stored zero bias follows fbgemm's SIMD reduction order, which is not reproduced;
    both signs decode to the same values.  ``row_alignment=16`` pads rows as torchrec does for
    CUDA; ``scale_bias_last=False`` gives the TBE's scale/bias-first rows.  bf16 weights are
    widened to fp32 exactly (fbgemm takes no bf16).
    """
    if weight.dtype not in _WEIGHT_DTYPES:
        raise TypeError(f"weight must have a dtype in {_WEIGHT_DTYPES}, got {weight.dtype}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [rows, dim], got shape {tuple(weight.shape)}")
    _check_dim(weight.shape[1])
    if isinstance(row_alignment, bool) or not isinstance(row_alignment, int) or row_alignment < 1:
        raise ValueError(f"row_alignment must be a positive int, got {row_alignment!r}")
    return quantize_int4_rowwise_reference(weight.detach(), row_alignment, scale_bias_last)
