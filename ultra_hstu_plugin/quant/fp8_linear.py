# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``FP8Linear``: ``residual + x @ W^T + b`` through the FP8 rowwise GEMM where the GPU has FP8.

Drop-in for ``nn.Linear`` (parameters ``weight [out, in]`` and ``bias [out]``, so state dicts
interchange).  The master weight stays in its own dtype (bf16 or fp32); each forward quantises
``x`` rowwise and ``W`` per output channel to e4m3 and fuses the residual as the GEMM's 2D bias.
Elsewhere (CPU, GPUs before sm89, ``in_features % 16 != 0``) it runs the plain dtype path and
says so once per process.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ultra_hstu_plugin.kernels.fp8_gemm import (
    fp8_addmm,
    fp8_supported,
    quantize_rowwise,
    quantize_weight_in_out,
)

logger = logging.getLogger(__name__)
_fallback_logged = False


def _log_fallback_once(reason: str) -> None:
    global _fallback_logged
    if not _fallback_logged:
        _fallback_logged = True
        logger.warning("FP8Linear: %s; using the plain dtype path (logged once).", reason)


class FP8LinearFunction(torch.autograd.Function):
    """Forward in FP8 (rowwise scales), backward in bf16.

    The backward uses torch matmuls on bf16 copies of ``x`` and ``W`` kept from the forward:
    e4m3 gradients would need per-tensor scaling with delayed (history-based) amax to be safe
    (gradients have a far wider dynamic range than activations), and a bf16 backward is what
    the issue accepts.
    """

    @staticmethod
    def forward(
        ctx,
        x2d: torch.Tensor,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor],
        residual2d: Optional[torch.Tensor],
        backend: str,
    ) -> torch.Tensor:
        x_bf16 = x2d.to(torch.bfloat16).contiguous()
        x_fp8, x_scale = quantize_rowwise(x_bf16, backend=backend)
        # weight [out, in] seen as [in, out]: quantised from its bf16 rounding, which is what
        # the backward multiplies by too (w_t_bf16 [in, out]).
        w_fp8, w_scale, w_t_bf16 = quantize_weight_in_out(weight.t(), backend=backend)
        if residual2d is not None:
            residual2d = residual2d.contiguous()
        b = bias.detach().contiguous() if bias is not None else None
        y = fp8_addmm(x_fp8, x_scale, w_fp8, w_scale, residual2d, b, backend=backend)
        ctx.save_for_backward(x_bf16, w_t_bf16)
        ctx.dtypes = (
            x2d.dtype,
            weight.dtype,
            bias.dtype if bias is not None else None,
            residual2d.dtype if residual2d is not None else None,
        )
        return y

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x_bf16, w_t_bf16 = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype, r_dtype = ctx.dtypes
        g = grad_out.to(torch.bfloat16)
        grad_x = grad_w = grad_b = grad_r = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ w_t_bf16.t()).to(x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = (g.t() @ x_bf16).to(w_dtype)
        if ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(0, dtype=torch.float32).to(b_dtype)
        if ctx.needs_input_grad[3]:
            grad_r = grad_out.to(r_dtype)
        return grad_x, grad_w, grad_b, grad_r, None


class FP8Linear(nn.Module):
    """``y = residual + x @ weight^T + bias`` with an FP8 GEMM where supported.

    Args:
        in_features: size of the last dimension of ``x``.
        out_features: size of the last dimension of ``y``.
        bias: whether to learn an additive bias.
        device, dtype: of the master parameters (as ``nn.Linear``).

    On the FP8 path the output is computed in bf16 and returned in ``x``'s dtype.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **kw))
        self.bias = nn.Parameter(torch.empty(out_features, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's initialisation, so swapping one for the other changes nothing.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def _fp8_path_ok(self, x: torch.Tensor) -> bool:
        if not fp8_supported(x.device):
            _log_fallback_once(f"no FP8 kernel on {x.device} (needs CUDA sm89+)")
            return False
        if self.in_features % 16 != 0:
            _log_fallback_once(f"in_features={self.in_features} is not a multiple of 16")
            return False
        return True

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not self._fp8_path_ok(x):
            w = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
            b = self.bias
            if b is not None and b.dtype != x.dtype:
                b = b.to(x.dtype)
            y = F.linear(x, w, b)
            return y if residual is None else residual + y
        lead = x.shape[:-1]
        x2d = x.reshape(-1, self.in_features)
        r2d = residual.reshape(-1, self.out_features) if residual is not None else None
        y = FP8LinearFunction.apply(x2d, self.weight, self.bias, r2d, "triton")
        return y.to(x.dtype).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )
