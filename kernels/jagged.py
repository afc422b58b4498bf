# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The jagged ``[sum L, ...]`` layout: index arithmetic and the offsets check, shared by every
kernel wrapper and module.

Cheap checks (shapes, dtypes, devices) always run.  The O(B) offsets check reads the
offsets on the host, which synchronises a GPU stream, so on CUDA it runs only when
``full`` is asked for (debug mode); on CPU it always runs since it costs nothing there.
"""

from __future__ import annotations

from typing import Optional

import torch


def jagged_index(lengths: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequence index, position within its sequence) of every one of the ``total`` rows."""
    lengths = lengths.to(torch.int64)
    batch = torch.repeat_interleave(
        torch.arange(lengths.numel(), device=lengths.device), lengths, output_size=total
    )
    starts = torch.cumsum(lengths, 0) - lengths
    return batch, torch.arange(total, device=lengths.device) - starts[batch]


def check_jagged_offsets(
    seq_offsets: torch.Tensor,
    total_tokens: int,
    max_seq_len: int,
    *,
    full: bool = False,
    num_targets: Optional[torch.Tensor] = None,
) -> None:
    """Validate ``[B + 1]`` offsets describing a jagged ``[total_tokens, ...]`` tensor."""
    if seq_offsets.dim() != 1 or seq_offsets.numel() < 1:
        raise ValueError(
            f"seq_offsets must be a 1-D tensor of B + 1 offsets, got shape {tuple(seq_offsets.shape)}"
        )
    if seq_offsets.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"seq_offsets must be int32 or int64, got {seq_offsets.dtype}")
    if max_seq_len < 0:
        raise ValueError(f"max_seq_len must be >= 0, got {max_seq_len}")
    if num_targets is not None and num_targets.numel() != seq_offsets.numel() - 1:
        raise ValueError(
            f"num_targets has {num_targets.numel()} entries but seq_offsets describes "
            f"{seq_offsets.numel() - 1} sequences"
        )
    if not (full or seq_offsets.device.type == "cpu"):
        return
    offsets = seq_offsets.detach().to("cpu", torch.int64)
    if int(offsets[0]) != 0:
        raise ValueError(f"seq_offsets must start at 0, got {int(offsets[0])}")
    if int(offsets[-1]) != total_tokens:
        raise ValueError(
            f"seq_offsets ends at {int(offsets[-1])} but the jagged tensor has {total_tokens} rows"
        )
    lengths = offsets[1:] - offsets[:-1]
    if bool((lengths < 0).any()):
        bad = int(torch.nonzero(lengths < 0)[0, 0])
        raise ValueError(f"seq_offsets must be non-decreasing; it decreases at index {bad + 1}")
    if lengths.numel() > 0 and int(lengths.max()) > max_seq_len:
        bad = int(torch.argmax(lengths))
        raise ValueError(
            f"sequence {bad} has length {int(lengths[bad])}, above max_seq_len={max_seq_len}"
        )
    if num_targets is not None:
        nt = num_targets.detach().to("cpu", torch.int64)
        if bool((nt < 0).any()) or bool((nt > lengths).any()):
            bad = int(torch.nonzero((nt < 0) | (nt > lengths))[0, 0])
            raise ValueError(
                f"num_targets[{bad}]={int(nt[bad])} is outside [0, length={int(lengths[bad])}]"
            )
