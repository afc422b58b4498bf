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
        # For appends (see cached_forward): the upper stack's inputs at the cached kept rows
        # (jagged, per user contextual + at most L' history rows), the users' cached lengths
        # below this module, and the max_kv_caching_len of the last fill / append.
        self._kept_x: Optional[torch.Tensor] = None
        self._kept_lengths: Optional[torch.Tensor] = None
        self._cached_lengths: Optional[torch.Tensor] = None
        self._max_kv: int = 0
        self._kept_total: int = 0

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
        upper_x = x.index_select(0, plan.rows)
        if kv_caching_lengths is not None:
            self._remember_kept(upper_x, plan.offsets, upper_kv["kv_caching_lengths"])
            self._cached_lengths = kv_caching_lengths.to(torch.int64).cpu()
            self._max_kv = max_kv_caching_len
        kept = self.upper(
            x=upper_x,
            x_lengths=plan.lengths,
            x_offsets=plan.offsets,
            max_seq_len=max_len,
            num_targets=num_targets,
            **upper_kv,
        )
        return x.index_copy(0, plan.rows, kept)

    def _remember_kept(
        self, upper_x: torch.Tensor, offsets: torch.Tensor, kept: torch.Tensor
    ) -> None:
        """Keep the first ``kept[b]`` rows of each user's segment of ``upper_x``."""
        kept = kept.to(device=upper_x.device, dtype=torch.int64)
        seq, pos = jagged_index(kept, self._kept_total)  # total read by _fill_plan
        self._kept_x = upper_x.index_select(0, offsets.to(upper_x.device)[seq] + pos)
        self._kept_lengths = kept.cpu()

    def cached_forward(
        self,
        delta_x: torch.Tensor,
        num_targets: torch.Tensor,
        max_kv_caching_len: int = 0,
        kv_caching_lengths: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """GR's ``cached_forward`` for the upper stack.

        Scoring (no ``kv_caching_lengths``): every new row must be a candidate (candidates are
        always kept, so they are the upper layers' new rows too) and runs against the upper
        layers' caches.  Appending events (``kv_caching_lengths`` = cached + new rows, every
        new row a history event): the kept window of the last L' history tokens slides, and
        every upper layer's output at a kept row depends on which rows are kept, so no cache
        update in O(new rows) can equal a recompute.  The upper stack is recomputed instead,
        over its new window only (contextual + the last L' history rows, from the inputs kept
        at the fill: O(L') per user, never O(L)), which refills its caches; the rows below
        stay cached as before.  Exact wherever the lower layers' appends are (not for
        contextual rows, whose lower outputs see the whole history, as in GR)."""
        B = self._kv_users
        if B is None:
            raise KVCacheError(
                "TruncatedSTU.cached_forward called with no KV cache: run forward(..., "
                "kv_caching_lengths=...) first"
            )
        if B == 0 or delta_x.shape[0] % B:
            raise KVCacheError(
                f"delta_x has {delta_x.shape[0]} rows for the {B} cached users: cached_forward "
                "takes the same number of new rows per user"
            )
        delta = delta_x.shape[0] // B
        if kv_caching_lengths is not None:
            return self._append(delta_x, delta, num_targets, max_kv_caching_len, kv_caching_lengths)
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

    def _append(
        self,
        delta_x: torch.Tensor,
        delta: int,
        num_targets: Optional[torch.Tensor],
        max_kv_caching_len: int,
        kv_caching_lengths: torch.Tensor,
    ) -> torch.Tensor:
        """New history rows: the upper stack recomputed over each user's slid window (see
        :meth:`cached_forward`).  Reads the users' lengths on the host (an append is not a
        graph-captured scoring call)."""
        assert self._kept_x is not None and self._kept_lengths is not None
        assert self._cached_lengths is not None
        B, c, Lp = self._kv_users, self.contextual_seq_len, self.truncated_seq_len
        n = self._cached_lengths
        want = kv_caching_lengths.to(torch.int64).cpu()
        if want.numel() != B:
            raise KVCacheError(f"kv_caching_lengths must be [B={B}], got {tuple(want.shape)}")
        if num_targets is not None and bool((num_targets != 0).any()):
            b = int(torch.nonzero(num_targets.cpu() != 0)[0, 0])
            raise NotImplementedError(
                f"user {b}: num_targets={int(num_targets[b])} in an append: a truncated "
                "stack appends history events only; score candidates in a separate call"
            )
        bad = torch.nonzero(want != n + delta)
        if bad.numel():
            b = int(bad[0, 0])
            raise NotImplementedError(
                f"user {b}: kv_caching_lengths={int(want[b])}, but a truncated stack caches "
                f"every appended row ({int(n[b])} cached + {delta} new = {int(n[b]) + delta})"
            )
        short = torch.nonzero(n < c)
        if short.numel():
            b = int(short[0, 0])
            raise NotImplementedError(
                f"user {b}: {int(n[b])} cached rows < {c} contextual rows: appending into the "
                "contextual prefix is not supported; recompute the user"
            )
        kl = self._kept_lengths  # per user: c + h_kept (<= c + L')
        hist = kl - c + delta  # history rows in the old window plus the new ones
        keep = torch.clamp(hist, max=Lp)  # the slid window keeps the last L' of them
        wl = c + keep  # window lengths
        # rows of [kept_x ; delta_x] that form each window: the contextual rows, then the last
        # `keep` of the user's history (old kept history, then its new rows), in order
        dev = delta_x.device
        k_off = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(kl, 0)])
        seq, pos = jagged_index(wl, int(wl.sum()))
        j = hist[seq] - keep[seq] + pos - c  # index into the user's history (pos >= c)
        old_rows = kl[seq] - c  # history rows kept from before
        hist_row = torch.where(
            j < old_rows, k_off[seq] + c + j, int(k_off[-1]) + seq * delta + j - old_rows
        )
        idx = torch.where(pos < c, k_off[seq] + pos, hist_row).to(dev)
        window = torch.cat([self._kept_x, delta_x.to(self._kept_x.dtype)]).index_select(0, idx)
        w_off = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(wl, 0)])
        longest = int((n + delta).max())
        # The normaliser the layers below use for this call is their cache's declared length
        # plus the new rows; the upper layers see the same headroom over their longest window,
        # and declare it for later calls as _fill_plan does.
        max_len = int(wl.max()) + max(self._max_kv + delta - longest, 0)
        upper_max_kv = 0
        if max_kv_caching_len:
            upper_max_kv = int(wl.max()) + max(max_kv_caching_len - longest, 0)
        out = self.upper(
            x=window,
            x_lengths=wl.to(dev),
            x_offsets=w_off.to(dev),
            max_seq_len=max_len,
            num_targets=torch.zeros(B, dtype=torch.int64, device=dev),
            max_kv_caching_len=upper_max_kv,
            kv_caching_lengths=wl.to(dev),
        )
        self._kept_x, self._kept_lengths = window, wl
        self._cached_lengths, self._max_kv = n + delta, max_kv_caching_len
        # each user's new rows are the last `delta` of its window (delta <= L' here) or,
        # when more rows were appended than L' keeps, only the kept ones have upper outputs:
        # the rest pass through, as in forward
        new_seq = torch.arange(B).repeat_interleave(delta)
        i = torch.arange(B * delta) - new_seq * delta  # the new row's index within its user
        p = kl[new_seq] + i - (hist - keep)[new_seq]  # its position in the window
        seen = p >= c  # rows the slid window keeps (the rest were appended beyond L')
        result = delta_x.clone()
        result[seen.to(dev)] = out.index_select(0, (w_off[new_seq] + p)[seen].to(dev))
        return result

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
        longest, longest_cached, longest_upper, self._kept_total = 0, 0, 0, 0
        if lengths.numel():  # one host transfer (the kept total sizes _remember_kept's gather)
            longest, longest_cached, longest_upper, self._kept_total = (
                int(v)
                for v in torch.stack(
                    [lengths.max(), n.max(), upper_n.max(), upper_n.sum()]
                ).tolist()
            )
        headroom = max(max_seq_len - longest, 0)
        upper_max_kv = 0
        if max_kv_caching_len:
            upper_max_kv = longest_upper + max(max_kv_caching_len - longest_cached, 0)
        self._kv_users = lengths.numel()
        return plan.max_len + headroom, dict(
            max_kv_caching_len=upper_max_kv, kv_caching_lengths=upper_n
        )
