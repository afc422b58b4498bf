# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The single dispatch point from GR's ``HammerKernel`` to an SLA attention backend."""

from __future__ import annotations

from typing import Optional

import torch

from ultra_hstu_plugin.host import HammerKernel
from ultra_hstu_plugin.kernels.sla_attention import sla_attention as sla_attention_op
from ultra_hstu_plugin.kernels.sla_mask import SLAMaskSpec

# HammerKernel -> backend name understood by ultra_hstu_plugin.kernels.sla_attention.
_BACKENDS = {HammerKernel.PYTORCH: "pytorch", HammerKernel.TRITON: "triton"}


def attention_backend(kernel: HammerKernel) -> str:
    """Backend for a GR kernel choice; other kernels fail with the supported ones."""
    if kernel not in _BACKENDS:
        supported = ", ".join(k.name for k in _BACKENDS)
        raise ValueError(
            f"ULTRA-HSTU SLA attention has no {kernel.name} backend (supported: {supported}). "
            "Call model.set_hammer_kernel(HammerKernel.PYTORCH) or HammerKernel.TRITON."
        )
    return _BACKENDS[kernel]


def sla_attention(
    kernel: HammerKernel,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    alpha: float,
    spec: SLAMaskSpec,
    num_targets: Optional[torch.Tensor],
) -> torch.Tensor:
    """Jagged SLA attention through the backend that ``kernel`` selects."""
    backend = attention_backend(kernel)
    if backend == "triton" and q.device.type != "cuda":
        raise ValueError(
            f"HammerKernel.TRITON needs CUDA tensors, got {q.device}; on CPU call "
            "model.set_hammer_kernel(HammerKernel.PYTORCH)."
        )
    return sla_attention_op(
        q, k, v, seq_offsets, max_seq_len, alpha, spec, num_targets=num_targets, backend=backend
    )
