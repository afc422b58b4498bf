# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Public API of the FP8 rowwise GEMM with fused 2D/1D bias.

    x_fp8, x_scale = quantize_rowwise(x)              # activations, one scale a row
    x_fp8, x_scale = layer_norm_quantize_rowwise(x, ln_w, ln_b, eps)   # LayerNorm fused in
    w_fp8, w_scale = quantize_weight(w)               # weights [N, K], one scale an output channel
    y = fp8_addmm(x_fp8, x_scale, w_fp8, w_scale, bias2d=residual, bias1d=b)   # bf16 [M, N]

The ops are ``torch.library`` custom ops (``ultra_hstu::fp8_addmm``,
``ultra_hstu::quantize_rowwise``, ``ultra_hstu::layer_norm_quantize_rowwise``) with fake
implementations, so they trace under torch.compile.
Inputs are checked before any launch; errors name the offending tensor and value.
"""

from typing import Optional

import torch

from ultra_hstu_plugin.kernels.fp8_gemm.reference import (
    FP8_DTYPE,
    fp8_addmm_reference,
    layer_norm_quantize_rowwise_reference,
    quantize_rowwise_reference,
    quantize_weight_in_out_reference,
)
from ultra_hstu_plugin.kernels.fp8_gemm.variants import VARIANTS
from ultra_hstu_plugin.kernels.ops import (
    BACKENDS,
    check_backend,
    cuda_capability,
    custom_op,
    fp8_supported,
)

__all__ = [
    "BACKENDS",
    "VARIANTS",
    "cuda_capability",
    "fp8_addmm",
    "fp8_supported",
    "layer_norm_quantize_rowwise",
    "quantize_rowwise",
    "quantize_weight",
    "quantize_weight_in_out",
]

_BIAS_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
_INPUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _triton_module():
    # Imported lazily: the pytorch backend must work where triton cannot be imported.
    from ultra_hstu_plugin.kernels.fp8_gemm import triton_kernels

    return triton_kernels


def _check_backend(op: str, backend: str, device: Optional[torch.device] = None) -> None:
    check_backend(op, backend, device, needs_fp8=True)


def _check_addmm_inputs(
    x_fp8: torch.Tensor,
    x_scale: torch.Tensor,
    w_fp8: torch.Tensor,
    w_scale: torch.Tensor,
    bias2d: Optional[torch.Tensor],
    bias1d: Optional[torch.Tensor],
) -> None:
    for name, t in (("x_fp8", x_fp8), ("w_fp8", w_fp8)):
        if t.dtype != FP8_DTYPE:
            raise TypeError(f"{name} must be {FP8_DTYPE}, got {t.dtype}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (row-major), got strides {t.stride()}")
    M, K = x_fp8.shape
    N, Kw = w_fp8.shape
    if Kw != K:
        raise ValueError(f"x_fp8 is [M, K] = {tuple(x_fp8.shape)} but w_fp8 [N, K] has K={Kw}")
    if K % 16 != 0:
        raise ValueError(f"K={K} is not a multiple of 16 (required by the FP8 tensor-core GEMM)")
    for name, t, n in (("x_scale", x_scale, M), ("w_scale", w_scale, N)):
        if t.dtype != torch.float32:
            raise TypeError(f"{name} must be torch.float32, got {t.dtype}")
        if tuple(t.shape) != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {tuple(t.shape)}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous, got strides {t.stride()}")
    for name, t, shape in (("bias2d", bias2d, (M, N)), ("bias1d", bias1d, (N,))):
        if t is None:
            continue
        if t.dtype not in _BIAS_DTYPES:
            raise TypeError(f"{name} must have a dtype in {_BIAS_DTYPES}, got {t.dtype}")
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous, got strides {t.stride()}")
    named = [("x_fp8", x_fp8), ("x_scale", x_scale), ("w_fp8", w_fp8), ("w_scale", w_scale)]
    named += [(n, t) for n, t in (("bias2d", bias2d), ("bias1d", bias1d)) if t is not None]
    devices = {t.device for _, t in named}
    if len(devices) > 1:
        where = ", ".join(f"{n} on {t.device}" for n, t in named)
        raise ValueError(f"all tensors must be on one device, got {where}")


def _fp8_addmm_fake(x_fp8, x_scale, w_fp8, w_scale, bias2d, bias1d, backend, variant):
    _check_backend("fp8_addmm", backend)
    _check_addmm_inputs(x_fp8, x_scale, w_fp8, w_scale, bias2d, bias1d)
    return x_fp8.new_empty((x_fp8.shape[0], w_fp8.shape[0]), dtype=torch.bfloat16)


@custom_op("fp8_addmm", fake=_fp8_addmm_fake)
def _fp8_addmm(
    x_fp8: torch.Tensor,
    x_scale: torch.Tensor,
    w_fp8: torch.Tensor,
    w_scale: torch.Tensor,
    bias2d: Optional[torch.Tensor],
    bias1d: Optional[torch.Tensor],
    backend: str,
    variant: str,
) -> torch.Tensor:
    _check_backend("fp8_addmm", backend)
    _check_addmm_inputs(x_fp8, x_scale, w_fp8, w_scale, bias2d, bias1d)
    if variant not in VARIANTS:
        raise ValueError(f"fp8_addmm: variant must be one of {VARIANTS}, got {variant!r}")
    if backend == "pytorch":
        return fp8_addmm_reference(x_fp8, x_scale, w_fp8, w_scale, bias2d, bias1d)
    _check_backend("fp8_addmm", backend, x_fp8.device)
    return _triton_module().fp8_addmm_triton(
        x_fp8, x_scale, w_fp8, w_scale, bias2d, bias1d, variant=variant
    )


def fp8_addmm(
    x_fp8: torch.Tensor,
    x_scale: torch.Tensor,
    w_fp8: torch.Tensor,
    w_scale: torch.Tensor,
    bias2d: Optional[torch.Tensor] = None,
    bias1d: Optional[torch.Tensor] = None,
    backend: str = "triton",
    variant: str = "auto",
) -> torch.Tensor:
    """``bias2d + (x_scale[:, None] * (x_fp8 @ w_fp8^T) * w_scale[None, :]) + bias1d`` in bf16.

    ``x_fp8 [M, K]`` and ``w_fp8 [N, K]`` are e4m3 (``K % 16 == 0``), ``x_scale [M]`` and
    ``w_scale [N]`` fp32, ``bias2d [M, N]`` and ``bias1d [N]`` optional (bf16, fp16 or fp32,
    contiguous).  Accumulates in fp32.  ``backend="pytorch"`` runs the reference on any device.
    ``variant`` picks the Triton kernel: ``"auto"`` (the table in ``variants.py``, the same on
    every rank), ``"pointer"`` or ``"tma"``.
    """
    return _fp8_addmm(x_fp8, x_scale, w_fp8, w_scale, bias2d, bias1d, backend, variant)


def _check_quantize_input(x: torch.Tensor) -> None:
    if x.dtype not in _INPUT_DTYPES:
        raise TypeError(f"x must have a dtype in {_INPUT_DTYPES}, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [M, K], got shape {tuple(x.shape)}")


def _quantize_rowwise_fake(x, backend):
    _check_backend("quantize_rowwise", backend)
    _check_quantize_input(x)
    return (
        x.new_empty(x.shape, dtype=FP8_DTYPE),
        x.new_empty((x.shape[0],), dtype=torch.float32),
    )


@custom_op("quantize_rowwise", fake=_quantize_rowwise_fake)
def _quantize_rowwise(x: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    _check_backend("quantize_rowwise", backend)
    _check_quantize_input(x)
    if backend == "pytorch":
        return quantize_rowwise_reference(x)
    _check_backend("quantize_rowwise", backend, x.device)
    return _triton_module().quantize_rowwise_triton(x.contiguous())


def quantize_rowwise(x: torch.Tensor, backend: str = "triton") -> tuple[torch.Tensor, torch.Tensor]:
    """``x [M, K]`` -> ``(x_fp8 [M, K] e4m3, scale [M] fp32)``, ``scale = max(amax, eps) / 448``.

    All-zero rows get a positive scale and zeros; values are clamped to +-448 (no inf/NaN).
    """
    return _quantize_rowwise(x, backend)


def _check_layer_norm_inputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
    _check_quantize_input(x)
    K = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias)):
        if tuple(t.shape) != (K,):
            raise ValueError(f"LayerNorm {name} must have shape ({K},), got {tuple(t.shape)}")
        if t.dtype not in _INPUT_DTYPES:
            raise TypeError(f"LayerNorm {name} must have a dtype in {_INPUT_DTYPES}, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"LayerNorm {name} is on {t.device} but x is on {x.device}")


def _layer_norm_quantize_fake(x, weight, bias, eps, backend):
    _check_backend("layer_norm_quantize_rowwise", backend)
    _check_layer_norm_inputs(x, weight, bias)
    return (
        x.new_empty(x.shape, dtype=FP8_DTYPE),
        x.new_empty((x.shape[0],), dtype=torch.float32),
    )


@custom_op("layer_norm_quantize_rowwise", fake=_layer_norm_quantize_fake)
def _layer_norm_quantize(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_backend("layer_norm_quantize_rowwise", backend)
    _check_layer_norm_inputs(x, weight, bias)
    triton_mod = _triton_module() if backend == "triton" else None
    if triton_mod is None or x.shape[1] > triton_mod.MAX_REGISTER_ROW:
        # Rows too long for one program's registers: the reference is LayerNorm + quantise.
        return layer_norm_quantize_rowwise_reference(x, weight, bias, eps)
    _check_backend("layer_norm_quantize_rowwise", backend, x.device)
    return triton_mod.layer_norm_quantize_rowwise_triton(
        x.contiguous(), weight.contiguous(), bias.contiguous(), eps
    )


def layer_norm_quantize_rowwise(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float = 1e-6,
    backend: str = "triton",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``quantize_rowwise(LayerNorm(x) * weight + bias)`` in one kernel (LayerNorm over ``K``).

    The LayerNorm is computed in fp32 and quantised from fp32 (never rounded to ``x``'s
    dtype in between); rows longer than 16384 take the unfused PyTorch path.
    """
    return _layer_norm_quantize(x, weight, bias, eps, backend)


def quantize_weight_in_out(
    w: torch.Tensor, backend: str = "triton"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A projection weight in GR's ``[in, out]`` layout -> ``(w_fp8 [out, in], w_scale [out],
    w_bf16 [in, out])``: rounded to bf16, quantised per output channel and transposed for the
    GEMM in one kernel (instead of a cast, a transposing copy and the quantiser).  ``w`` may be
    a view (an ``nn.Linear`` weight transposed).  ``w_bf16`` is what a bf16 backward multiplies
    by; it is ``w`` itself when ``w`` is bf16.  Not a
    custom op: weights are parameters, outside any traced activation graph's hot path."""
    _check_backend("quantize_weight_in_out", backend)
    _check_quantize_input(w)
    w = w.detach()
    if backend == "pytorch":
        return quantize_weight_in_out_reference(w)
    _check_backend("quantize_weight_in_out", backend, w.device)
    return _triton_module().quantize_weight_in_out_triton(w)


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel quantisation of ``w [N, K]`` (PyTorch; weights change once a step)."""
    _check_quantize_input(w)
    return quantize_rowwise_reference(w.detach())
