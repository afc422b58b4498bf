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
from ultra_hstu_plugin.modules.kv_cache import KVCacheError


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
        self._kv_users: Optional[int] = None  # users of the cache (None: no cache yet)

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
        if plan is None:
            plan = self.plan(x_lengths, x_offsets, num_targets)
        upper_kv: dict = {}
        max_len = plan.max_len
        if kv_caching_lengths is not None:
            max_len, upper_kv = self._fill_plan(
                plan, x_lengths, max_seq_len, max_kv_caching_len, kv_caching_lengths
            )
        kept = self.upper(
            x=x.index_select(0, plan.rows),
            x_lengths=plan.lengths,
            x_offsets=plan.offsets,
            max_seq_len=max_len,
            num_targets=num_targets,
            **upper_kv,
        )
        return x.index_copy(0, plan.rows, kept)

    def cached_forward(
        self,
        delta_x: torch.Tensor,
        num_targets: torch.Tensor,
        max_kv_caching_len: int = 0,
        kv_caching_lengths: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """GR's ``cached_forward`` for the upper stack: every new row must be a candidate
        (candidates are always kept, so they are the upper layers' new rows too) and the cache
        is not appended to.  Appending events is not implemented: the kept window of the last
        L' history tokens slides, which changes the upper layers' positions, prefix and
        normalisation; recompute the user instead."""
        B = self._kv_users
        if B is None:
            raise KVCacheError(
                "TruncatedSTU.cached_forward called with no KV cache: run forward(..., "
                "kv_caching_lengths=...) first"
            )
        if kv_caching_lengths is not None:
            raise NotImplementedError(
                "TruncatedSTU.cached_forward with kv_caching_lengths (appending rows to the upper "
                "layers' cache) is not implemented: the kept last-L' window slides, changing the "
                "upper layers' positions and prefix; score candidates only, or recompute"
            )
        if B == 0 or delta_x.shape[0] % B:
            raise KVCacheError(
                f"delta_x has {delta_x.shape[0]} rows for the {B} cached users: cached_forward "
                "takes the same number of new rows per user"
            )
        delta = delta_x.shape[0] // B
        # An O(B) check on the host, so on CUDA it is skipped like the layers' O(B) checks:
        # reading num_targets there would synchronise every call and make the call
        # impossible to capture in a CUDA graph (ultra-hstu bench inference replays it).
        targets = torch.zeros(B, dtype=torch.int64) if num_targets is None else num_targets
        short = torch.nonzero(targets < delta) if targets.device.type == "cpu" else targets[:0]
        if short.numel():
            b = int(short[0, 0])
            raise NotImplementedError(
                f"user {b}: num_targets={int(targets[b])} < {delta} new rows: new history rows "
                "in a truncated stack's cached call are not implemented (the kept last-L' "
                "window would slide); only candidates can be scored against the cache"
            )
        return self.upper.cached_forward(delta_x=delta_x, num_targets=num_targets)

    def _fill_plan(
        self,
        plan: TruncationPlan,
        x_lengths: torch.Tensor,
        max_seq_len: int,
        max_kv_caching_len: int,
        kv_caching_lengths: torch.Tensor,
    ) -> tuple[int, dict]:
        """Upper-stack arguments of a cache-filling forward.

        The upper layers cache the kept rows among each user's first
        ``kv_caching_lengths[b]`` (at most contextual + L' + cached candidates).  The headroom
        the caller declares beyond the longest sequence (``max_seq_len`` over the longest
        ``x_lengths``, as GR's cached calls normalise by ``max_kv_caching_len + new rows``)
        carries over to the upper layers' ``max_seq_len``, so that their HSTU normaliser is the
        one a full recompute with the new rows would use."""
        lengths = x_lengths.to(torch.int64)
        n = kv_caching_lengths.to(device=lengths.device, dtype=torch.int64)
        dropped = lengths - plan.lengths
        c = self.contextual_seq_len
        # kept positions are [0, c) and [c + dropped, L): those before n[b]
        upper_n = torch.where(n <= c, n, torch.clamp(n - dropped, min=c))
        longest, longest_cached, longest_upper = 0, 0, 0
        if lengths.numel():  # one host transfer
            longest, longest_cached, longest_upper = (
                int(v) for v in torch.stack([lengths.max(), n.max(), upper_n.max()]).tolist()
            )
        headroom = max(max_seq_len - longest, 0)
        upper_max_kv = 0
        if max_kv_caching_len:
            upper_max_kv = longest_upper + max(max_kv_caching_len - longest_cached, 0)
        self._kv_users = lengths.numel()
        return plan.max_len + headroom, dict(
            max_kv_caching_len=upper_max_kv, kv_caching_lengths=upper_n
        )
