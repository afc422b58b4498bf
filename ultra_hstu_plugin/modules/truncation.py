# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Attention truncation: the upper layers see only the last L' history tokens of a sequence.

Which tokens are kept is GR's ``L2STU`` rule, unchanged: per sequence the contextual
tokens (at the front), then the last ``truncated_seq_len`` history tokens and the
candidates (at the end); the earlier history passes through untouched.  What differs is
how, and it is why this module exists (measured in ``benchmarks/results/scaling*.md``):

* ``L2STU`` reads the batch's max prefix and kept lengths on the host with two
  synchronisations, splits the sequence into two jagged tensors and concatenates them
  back (fbgemm's ``asynchronous_complete_cumsum`` and GR's jagged split/concat kernels).
* here one :class:`TruncationPlan` per batch holds the kept rows' indices into ``x``;
  the kept rows are gathered with one ``index_select`` and written back with one
  ``index_copy`` (out of place, so autograd routes each row's gradient to where it came
  from).  Two host values (total kept rows, longest kept sequence) are read in one
  transfer, once per batch; no fbgemm op is needed, on any device.

The plan can also be built ahead (:func:`truncation_plan`) and handed in, so that a caller
that captures the encoder in a CUDA graph computes it outside the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ultra_hstu_plugin.host import STU
from ultra_hstu_plugin.kernels.jagged import jagged_index


@dataclass(frozen=True)
class TruncationPlan:
    """Which rows of a jagged ``x`` the upper layers see, as the jagged batch they form.

    rows: ``[total]`` int64 indices into ``x``, sequence by sequence, in order.
    lengths / offsets: ``[B]`` / ``[B + 1]`` of the kept jagged batch.
    max_len: its longest sequence; total: ``rows.numel()``.
    """

    rows: torch.Tensor
    lengths: torch.Tensor
    offsets: torch.Tensor
    max_len: int
    total: int


def truncation_plan(
    x_lengths: torch.Tensor,
    x_offsets: torch.Tensor,
    num_targets: Optional[torch.Tensor],
    truncated_seq_len: int,
    contextual_seq_len: int = 0,
) -> TruncationPlan:
    """GR's ``L2STU`` rule: keep ``contextual + last (truncated_seq_len + targets)`` tokens.

    Reads two integers on the host (one synchronisation on a GPU): the kept batch's total
    rows and longest sequence, which size the gather and the upper layers' kernels.
    """
    lengths = x_lengths.to(torch.int64)
    targets = torch.zeros_like(lengths) if num_targets is None else num_targets.to(torch.int64)
    # history tokens before the last L': dropped from the upper layers' view
    dropped = torch.clamp(lengths - truncated_seq_len - targets - contextual_seq_len, min=0)
    kept = lengths - dropped
    offsets = torch.zeros(kept.numel() + 1, dtype=torch.int64, device=kept.device)
    torch.cumsum(kept, 0, out=offsets[1:])
    if kept.numel() == 0:
        total, max_len = 0, 0
    else:
        total, max_len = (int(v) for v in torch.stack([offsets[-1], kept.max()]).tolist())
    seq, pos = jagged_index(kept, total)
    # contextual tokens keep their place; the rest skip the dropped history
    skip = torch.where(pos >= contextual_seq_len, dropped[seq], 0)
    rows = x_offsets.to(torch.int64)[seq] + pos + skip
    return TruncationPlan(rows=rows, lengths=kept, offsets=offsets, max_len=max_len, total=total)


class TruncatedSTU(STU):
    """Runs ``stu`` (GR's STU interface) on the kept tokens only; the rest pass through.

    A drop-in for GR's ``L2STU(stu, max_l2_len, is_inference, contextual_seq_len)`` with the
    same outputs (``integration_tests/test_truncation.py`` checks it against ``L2STU``).
    ``plan`` in :meth:`forward` takes a precomputed :class:`TruncationPlan` for this batch.
    """

    def __init__(
        self,
        stu: STU,
        truncated_seq_len: int,
        is_inference: bool,
        contextual_seq_len: int = 0,
    ) -> None:
        super().__init__(is_inference=is_inference)
        if truncated_seq_len <= 0:
            raise ValueError(f"truncated_seq_len must be > 0, got {truncated_seq_len}")
        self.upper = stu  # the upper (truncated) stack
        self.truncated_seq_len = truncated_seq_len
        self.contextual_seq_len = contextual_seq_len

    def extra_repr(self) -> str:
        return f"truncated_seq_len={self.truncated_seq_len}, contextual={self.contextual_seq_len}"

    def plan(
        self, x_lengths: torch.Tensor, x_offsets: torch.Tensor, num_targets: Optional[torch.Tensor]
    ) -> TruncationPlan:
        """This module's :func:`truncation_plan` for a batch."""
        return truncation_plan(
            x_lengths, x_offsets, num_targets, self.truncated_seq_len, self.contextual_seq_len
        )

    def forward(
        self,
        x: torch.Tensor,
        x_lengths: torch.Tensor,
        x_offsets: torch.Tensor,
        max_seq_len: int,
        num_targets: torch.Tensor,
        max_kv_caching_len: int = 0,
        kv_caching_lengths: Optional[torch.Tensor] = None,
        plan: Optional[TruncationPlan] = None,
    ) -> torch.Tensor:
        if kv_caching_lengths is not None or max_kv_caching_len != 0:
            raise NotImplementedError("TruncatedSTU does not support KV caching yet")
        if plan is None:
            plan = self.plan(x_lengths, x_offsets, num_targets)
        kept = self.upper(
            x=x.index_select(0, plan.rows),
            x_lengths=plan.lengths,
            x_offsets=plan.offsets,
            max_seq_len=plan.max_len,
            num_targets=num_targets,
        )
        return x.index_copy(0, plan.rows, kept)

    def cached_forward(
        self,
        delta_x: torch.Tensor,
        num_targets: torch.Tensor,
        max_kv_caching_len: int = 0,
        kv_caching_lengths: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        raise NotImplementedError("TruncatedSTU does not support KV-cached inference yet")
