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

from ultra_hstu_plugin.kernels.fp8_gemm.autograd import FP8LinearFunction
from ultra_hstu_plugin.kernels.ops import fp8_supported

logger = logging.getLogger(__name__)
_fallback_logged = False


def _log_fallback_once(reason: str) -> None:
    global _fallback_logged
    if not _fallback_logged:
        _fallback_logged = True
        logger.warning("FP8Linear: %s; using the plain dtype path (logged once).", reason)


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
        y = FP8LinearFunction.apply(x2d, self.weight, self.bias, r2d, "triton", "auto")
        return y.to(x.dtype).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )
