# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""PyTorch reference for jagged HSTU attention under the SLA mask.

``out = (silu(alpha * Q K^T) / max_seq_len * M) V`` per sequence and head, with ``M``
from :func:`sla_mask`.  Dense and padded on purpose: obviously right, differentiable,
used by the tests, as the CPU backend, and as the fallback where no kernel applies.
It needs no fbgemm op, so it runs on any device.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ultra_hstu_plugin.kernels.jagged import jagged_index
from ultra_hstu_plugin.kernels.sla_attention.mask import SLAMaskSpec, sla_mask


def sla_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    alpha: float,
    spec: SLAMaskSpec,
    num_targets: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """q, k ``[sum L, H, D]``, v ``[sum L, H, Dv]`` -> ``[sum L, H, Dv]`` in q's dtype."""
    total, H, D = q.shape
    Dv = v.shape[2]
    B = seq_offsets.numel() - 1
    N = max_seq_len
    batch, position = jagged_index(seq_offsets[1:] - seq_offsets[:-1], total)

    def pad(x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(B, N, x.shape[1], x.shape[2])
        out[batch, position] = x
        return out.transpose(1, 2)  # [B, H, N, *]

    pq, pk, pv = pad(q), pad(k), pad(v)
    scores = F.silu(torch.einsum("bhxd,bhyd->bhxy", pq, pk) * alpha) / N
    lengths = seq_offsets[1:] - seq_offsets[:-1]
    mask = sla_mask(lengths, N, spec, num_targets)
    scores = scores * mask.unsqueeze(1).to(scores.dtype)
    out = torch.einsum("bhxy,bhyv->bhxv", scores, pv)  # [B, H, N, Dv]
    return out.transpose(1, 2)[batch, position].reshape(total, H, Dv)
