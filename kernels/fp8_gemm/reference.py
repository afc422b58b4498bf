# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""PyTorch reference for the FP8 rowwise GEMM and the rowwise quantiser.

Obviously right and device-agnostic: dequantise to fp32, matmul (in fp64), add the biases, cast to
bf16.  Used by the tests, as the ``backend="pytorch"`` path, and to quantise weights.
"""

from __future__ import annotations

from typing import Optional

import torch

FP8_DTYPE = torch.float8_e4m3fn
FP8_E4M3_MAX = 448.0
# Same clamp as the Triton quantiser: an all-zero row gets a tiny positive scale, so it
# quantises to zeros and contributes exactly 0 (never 0/0 = NaN).
AMAX_EPS = 1e-12


def quantize_rowwise_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [M, K]`` -> ``(x_fp8 [M, K] e4m3, scale [M] fp32)`` with ``x ~ x_fp8 * scale[:, None]``.

    ``scale = max(amax, eps) / 448``; values are clamped to +-448 before the cast because e4m3fn
    has no inf (an out-of-range cast gives NaN).  Also used for weights ``[N, K]``, where rows
    are output channels.
    """
    return _quantize_rows_fp32(x.float())


def _quantize_rows_fp32(xf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    amax = xf.abs().amax(dim=1) if xf.shape[1] > 0 else xf.new_zeros(xf.shape[0])
    amax = amax.clamp_min(AMAX_EPS)
    fp8_max = torch.full_like(amax, FP8_E4M3_MAX)
    # Tensor / tensor: PyTorch's CUDA division by a Python scalar multiplies by its reciprocal,
    # which is not correctly rounded and would disagree with the kernel in the last bit.
    scale = amax / fp8_max
    # Elements are multiplied by the row's reciprocal scale, not divided by the scale: one
    # correctly rounded division a row instead of one an element (the kernel does the same,
    # so both agree bit for bit).  q * scale differs from x by at most e4m3's rounding.
    inv_scale = fp8_max / amax
    q = (xf * inv_scale[:, None]).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(FP8_DTYPE)
    return q, scale


def layer_norm_quantize_rowwise_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``LayerNorm(x) * weight + bias`` over the last dim, in fp32, quantised rowwise.

    The fused kernel's reference: the normalised rows are quantised straight from fp32, without
    the round trip through x's dtype that a separate LayerNorm would write to memory."""
    xf = x.float()
    mean = xf.mean(dim=1, keepdim=True)
    centred = xf - mean
    var = (centred * centred).mean(dim=1, keepdim=True)
    normed = centred * torch.rsqrt(var + eps) * weight.float() + bias.float()
    return _quantize_rows_fp32(normed)


def quantize_weight_in_out_reference(
    w: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GR's ``[in, out]`` projection weight -> ``(w_fp8 [out, in], scale [out], w_bf16 [in, out])``:
    the weight rounded to bf16 (what the bf16 backward multiplies by), then quantised per
    output channel from that bf16 copy."""
    w_bf16 = w.to(torch.bfloat16)
    q, scale = quantize_rowwise_reference(w_bf16.t())
    return q.contiguous(), scale, w_bf16


def dequantize_rowwise_reference(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`quantize_rowwise_reference` up to rounding, in fp32."""
    return q.float() * scale[:, None]


def fp8_addmm_reference(
    x_fp8: torch.Tensor,
    x_scale: torch.Tensor,
    w_fp8: torch.Tensor,
    w_scale: torch.Tensor,
    bias2d: Optional[torch.Tensor] = None,
    bias1d: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``bias2d + (x_scale * (x_fp8 @ w_fp8^T) * w_scale) + bias1d`` -> bf16 ``[M, N]``."""
    x = dequantize_rowwise_reference(x_fp8, x_scale)
    w = dequantize_rowwise_reference(w_fp8, w_scale)
    # The product in fp64: exact for these operands up to the final rounding, and immune to
    # TF32 (which CUDA may use for fp32 matmuls and which adds error of the order being tested).
    y = torch.matmul(x.double(), w.double().t()).float()
    if bias1d is not None:
        y = y + bias1d.float()
    if bias2d is not None:
        y = y + bias2d.float()
    return y.to(torch.bfloat16)
