# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Index arithmetic on the jagged ``[sum L, ...]`` layout, shared by kernels and modules."""

from __future__ import annotations

import torch


def jagged_index(lengths: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequence index, position within its sequence) of every one of the ``total`` rows."""
    lengths = lengths.to(torch.int64)
    batch = torch.repeat_interleave(
        torch.arange(lengths.numel(), device=lengths.device), lengths, output_size=total
    )
    starts = torch.cumsum(lengths, 0) - lengths
    return batch, torch.arange(total, device=lengths.device) - starts[batch]
