# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The SLA-bounded KV cache of one ULTRA-HSTU layer (incremental inference, issue 14).

GR's semantics, which :class:`~ultra_hstu_plugin.modules.ultra_stu.UltraHSTULayer` mirrors:
a full ``forward(..., kv_caching_lengths=n)`` caches the keys/values of the first ``n[b]``
rows of user b (typically the history); ``cached_forward(delta_x, num_targets)`` runs only
the new rows (uniformly ``delta_x.shape[0] / B`` per user: candidates, or appended events)
against the cache, ``num_targets`` counting candidates of the *full* sequence (cache + new),
and with ``kv_caching_lengths`` also appends the first new rows to the cache.

What is kept.  Under SLA a row sees the global prefix and the last ``k1`` earlier rows
(besides itself), and the window only moves forward, so no *later* row can see a cached row
outside ``[0, P)`` or the last ``k1`` cached history rows, with ``P = max(k2,
contextual_seq_len)``.  Cached candidates (GR's test caches some) are never visible to later
rows (candidates see no other candidate) and are dropped in every mode.  So, per user, with
``e`` the cached rows that are not candidates::

    kept rows   = min(e, P + k1)   window mode, k1 > 0, full_attn_tail = 0
                = e                otherwise (k1 = 0 full causal, target_mode="history",
                                   full_attn_tail > 0: later rows can see every row; as GR)
    cache bytes = kept rows * num_heads * (attention_dim + hidden_dim) * itemsize

per layer (keys ``[kept, H, attention_dim]``, values ``[kept, H, hidden_dim]``), plus three
int64 per user of bookkeeping (:attr:`SLAKVCache.offsets`, ``lengths``, ``kept_ends``).

Layout: compacted and jagged, like GR's own cache: user b's kept rows in position order,
the prefix then the last window rows, ``[offsets[b], offsets[b+1])``.  Chosen over a ring
because (1) the attention kernel reads one contiguous run of keys per user and recovers
positions with one affine map (``i`` in the prefix, ``i + kept_end - kept`` after it,
:mod:`ultra_hstu_plugin.kernels.sla_attention.delta_reference`), no modular index; (2) it
is exactly ``kept`` rows per user, where a ring preallocates ``P + k1`` slots for every user,
however short; (3) it stays GR's jagged cache layout.  The cost: an append rewrites the
user's kept rows (``O(P + k1 + new)``, bounded, never ``O(L)``), where a ring writes only the
new rows; GR's own cache re-splits the whole ``O(L)`` K/V on every update.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from ultra_hstu_plugin.kernels.jagged import jagged_index
from ultra_hstu_plugin.kernels.sla_attention import SLAMaskSpec, bounded_cache, cache_prefix_len
from ultra_hstu_plugin.kernels.sla_attention.delta_op import _check_values
from ultra_hstu_plugin.kernels.sla_attention.delta_reference import (
    delta_positions,
    split_dense_plan,
)


class KVCacheError(ValueError):
    """A cached call the cache cannot serve (none, another configuration, bad lengths)."""


def kept_cache_rows(history_rows: torch.Tensor, spec: SLAMaskSpec) -> torch.Tensor:
    """Rows a user's cache keeps (the module docstring's formula) for ``history_rows``
    cached non-candidate rows."""
    if bounded_cache(spec):
        return torch.clamp(history_rows, max=cache_prefix_len(spec) + spec.k1)
    return history_rows


def cache_bytes_per_user(
    history_rows: torch.Tensor, spec: SLAMaskSpec, num_heads: int, attention_dim: int,
    hidden_dim: int, itemsize: int,
) -> torch.Tensor:  # fmt: skip
    """Bytes of keys + values one layer caches per user (bookkeeping excluded)."""
    return kept_cache_rows(history_rows, spec) * num_heads * (attention_dim + hidden_dim) * itemsize


def _keep(positions: torch.Tensor, kept_end: torch.Tensor, spec: SLAMaskSpec) -> torch.Tensor:
    """Which rows (at ``positions``, with their user's ``kept_end``) the cache keeps."""
    keep = positions < kept_end
    if bounded_cache(spec):
        keep = keep & ((positions < cache_prefix_len(spec)) | (positions >= kept_end - spec.k1))
    return keep


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths.to(torch.int64), 0, out=out[1:])
    return out


@dataclass(eq=False)
class CacheIndex:
    """The bookkeeping of one batch's caches, shared by every layer whose cache holds the
    same rows (all layers of a stack: they are filled from the same lengths), with its
    host copies (read once, when the cache is built, which reads them anyway).

    ``layouts`` memoises the :class:`DeltaLayout` of each ``(delta, spec)`` and ``appends``
    the next index (and the rows it keeps) of each append, so that a cached call computes
    them for its first layer and every other layer reuses them.
    """

    offsets: torch.Tensor
    lengths: torch.Tensor
    kept_ends: torch.Tensor
    max_len: int
    host_lengths: List[int]
    host_kept_ends: List[int]
    host_kept: List[int]
    layouts: Dict[tuple, DeltaLayout] = field(default_factory=dict)
    appends: Dict[tuple, tuple] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return len(self.host_lengths)

    @staticmethod
    def build(
        kept: torch.Tensor, lengths: torch.Tensor, kept_ends: torch.Tensor, max_len: int
    ) -> CacheIndex:
        """From ``[B]`` kept rows, cached rows and kept ends (one host transfer)."""
        host = torch.stack([kept, lengths, kept_ends]).cpu() if kept.numel() else None
        kept_h, n_h, e_h = host.tolist() if host is not None else ([], [], [])
        return CacheIndex(
            offsets=_offsets(kept), lengths=lengths, kept_ends=kept_ends, max_len=max_len,
            host_lengths=n_h, host_kept_ends=e_h, host_kept=kept_h,
        )  # fmt: skip


@dataclass(frozen=True)
class DeltaLayout:
    """Everything a cached call of ``delta`` new rows per user needs besides the keys:
    computed (and its O(B) bookkeeping validated) once per cache and ``delta``, by the first
    layer, then shared by every layer (:meth:`SLAKVCache.delta_layout`).

    q_offsets ``[B + 1]``: the new rows (``delta`` per user); cache_offsets, cache_lengths,
    kept_ends: the cache's (:class:`SLAKVCache`); max_seq_len: the cached call's HSTU
    normaliser (GR's ``max_kv_caching_len + delta``); cache_prefix: the rows a bounded cache
    keeps whole.  Building it reads nothing on the device (the host copies are the index's),
    so a cached call stays free of synchronisation (and capturable in a CUDA graph).
    """

    delta: int
    spec: SLAMaskSpec
    q_offsets: torch.Tensor
    cache_offsets: torch.Tensor
    cache_lengths: torch.Tensor
    kept_ends: torch.Tensor
    max_seq_len: int
    cache_prefix: int
    index: CacheIndex
    _targets_checked: list = field(default_factory=list, compare=False, repr=False)
    _plans: dict = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def build(index: CacheIndex, delta: int, spec: SLAMaskSpec) -> DeltaLayout:
        c = spec.contextual_seq_len
        for b, n in enumerate(index.host_lengths):
            if n < max(1, c):
                raise KVCacheError(
                    f"user {b} has no usable KV cache: kv_caching_lengths={n}, needs >= "
                    f"{max(1, c)} (every contextual token cached; contextual rows see the "
                    "whole history, so they cannot be new rows)"
                )
        B = index.batch_size
        device = index.lengths.device
        layout = DeltaLayout(
            delta=delta, spec=spec,
            q_offsets=torch.arange(B + 1, device=device, dtype=torch.int64) * delta,
            cache_offsets=index.offsets, cache_lengths=index.lengths, kept_ends=index.kept_ends,
            max_seq_len=index.max_len + delta, cache_prefix=cache_prefix_len(spec), index=index,
        )  # fmt: skip
        layout._check(None)
        return layout

    def _check(self, num_targets: Optional[torch.Tensor]) -> None:
        i = self.index
        _check_values(
            torch.full((i.batch_size,), self.delta, dtype=torch.int64),
            torch.tensor(i.host_kept, dtype=torch.int64),
            torch.tensor(i.host_lengths, dtype=torch.int64),
            torch.tensor(i.host_kept_ends, dtype=torch.int64),
            num_targets, self.max_seq_len, self.delta, self.spec, self.cache_prefix,
        )  # fmt: skip

    def check_targets(self, num_targets: Optional[torch.Tensor], full: bool) -> Optional[tuple]:
        """The O(B) checks of ``num_targets`` against the cache (``full``: on the host; on
        CUDA only in debug mode).  One host read a layer; the checks run once per value.
        Returns the host values (None when not read)."""
        if num_targets is None or not full:
            return None
        if num_targets.dim() != 1 or num_targets.numel() != self.index.batch_size:
            raise KVCacheError(
                f"num_targets must be [B={self.index.batch_size}] for the cached users, got "
                f"{tuple(num_targets.shape)}"
            )
        values = tuple(num_targets.tolist())
        if values not in self._targets_checked:
            self._check(torch.tensor(values, dtype=torch.int64))
            self._targets_checked[:] = [values]
        return values

    def dense_plan(
        self, num_targets: Optional[torch.Tensor], host_targets: Optional[tuple], dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The eager CPU path's :func:`split_dense_plan` (padded cache rows, scaled mask) for
        these candidates (``host_targets``: :meth:`check_targets`' values), memoised: built by
        the first layer of a call, reused by the others and by later calls."""
        key = (host_targets, dtype)
        plan = self._plans.get(key)
        if plan is None:
            plan = split_dense_plan(
                self.cache_offsets, self.cache_lengths, self.kept_ends, self.delta,
                max(self.index.host_kept, default=0), self.max_seq_len, self.spec, num_targets,
                self.cache_prefix, dtype,
            )  # fmt: skip
            if len(self._plans) > 8:
                self._plans.clear()
            self._plans[key] = plan
        return plan


@dataclass(frozen=True)
class SLAKVCache:
    """One layer's cache for a batch of users.

    k ``[sum kept, H, attention_dim]``, v ``[sum kept, H, hidden_dim]``: kept rows, jagged by
    ``offsets`` ``[B + 1]``; ``lengths`` ``[B]``: rows cached per user (kept or not: the new
    rows' first position); ``kept_ends`` ``[B]``: cached non-candidate rows; ``max_len``:
    GR's ``max_kv_caching_len`` (``cached_forward`` normalises by ``max_len + new rows``).
    ``spec``, ``num_heads``, ``attention_dim``, ``hidden_dim``: what built it.
    ``host_lengths``: ``lengths`` on the host (read when the cache is built, which reads them
    anyway), so that a cached call's checks need no device read: on CUDA that read would
    synchronise every call and make the call impossible to capture in a CUDA graph.
    """

    spec: SLAMaskSpec
    num_heads: int
    attention_dim: int
    hidden_dim: int
    k: torch.Tensor
    v: torch.Tensor
    offsets: torch.Tensor
    lengths: torch.Tensor
    kept_ends: torch.Tensor
    max_len: int
    host_lengths: Optional[torch.Tensor] = None
    index: Optional[CacheIndex] = None

    @property
    def batch_size(self) -> int:
        return self.lengths.numel()

    @property
    def cache_prefix(self) -> int:
        return cache_prefix_len(self.spec)

    def bytes_per_user(self) -> torch.Tensor:
        """``[B]`` bytes of keys + values per user (as allocated)."""
        rows = self.offsets[1:] - self.offsets[:-1]
        per_row = (
            self.k[0].numel() * self.k.element_size() + self.v[0].numel() * self.v.element_size()
        )
        return rows * (per_row if self.k.shape[0] else 0)

    def configuration(self) -> tuple:
        return (self.spec, self.num_heads, self.attention_dim, self.hidden_dim)

    def cache_index(self) -> CacheIndex:
        """The bookkeeping shared with the other layers' caches (built here, with one host
        read, for a cache made by hand)."""
        if self.index is None:
            kept = (self.offsets[1:] - self.offsets[:-1]).to(torch.int64)
            index = CacheIndex.build(kept, self.lengths, self.kept_ends, self.max_len)
            index.offsets = self.offsets
            object.__setattr__(self, "index", index)
        return self.index

    def delta_layout(self, delta: int, spec: Optional[SLAMaskSpec] = None) -> DeltaLayout:
        """The :class:`DeltaLayout` of a cached call with ``delta`` new rows per user (built
        by the first layer that asks, then shared by the others)."""
        spec = self.spec if spec is None else spec
        index = self.cache_index()
        layout = index.layouts.get((delta, spec))
        if layout is None:
            layout = index.layouts[(delta, spec)] = DeltaLayout.build(index, delta, spec)
        return layout


def _check_lengths(name, lengths, low, high, low_name, high_name) -> None:
    bad = torch.nonzero((lengths < low) | (lengths > high))
    if bad.numel():
        b = int(bad[0, 0])
        lo = int(low[b]) if isinstance(low, torch.Tensor) else low
        hi = int(high[b]) if isinstance(high, torch.Tensor) else high
        raise KVCacheError(
            f"user {b}: {name}={int(lengths[b])} is outside [{lo} ({low_name}), {hi} ({high_name})]"
        )


def _max_len(lengths: torch.Tensor, max_kv_caching_len: int) -> int:
    longest = int(lengths.max()) if lengths.numel() else 0
    if max_kv_caching_len == 0:
        return longest  # GR: the longest cached user
    if longest > max_kv_caching_len:
        b = int(torch.argmax(lengths))
        raise KVCacheError(
            f"user {b}: kv_caching_lengths={longest} overflows max_kv_caching_len="
            f"{max_kv_caching_len}"
        )
    return max_kv_caching_len


# The last fill's shared bookkeeping: the layers of a stack are filled one after the other from
# the same lengths, so every layer after the first reuses the first one's index (and rows).
# Keyed by host values (read by the fill's checks anyway), never by tensor identity alone.
_LAST_FILL: List[tuple] = []


def _keep_params(spec: SLAMaskSpec) -> tuple:
    return (True, cache_prefix_len(spec), spec.k1) if bounded_cache(spec) else (False,)


def fill_cache(
    template: SLAKVCache,
    k: torch.Tensor,
    v: torch.Tensor,
    x_offsets: torch.Tensor,
    num_targets: Optional[torch.Tensor],
    max_kv_caching_len: int,
    kv_caching_lengths: torch.Tensor,
) -> SLAKVCache:
    """The cache of a full forward: the kept rows among the first ``kv_caching_lengths``."""
    lengths = (x_offsets[1:] - x_offsets[:-1]).to(torch.int64)
    if kv_caching_lengths.dim() != 1 or kv_caching_lengths.numel() != lengths.numel():
        raise KVCacheError(
            f"kv_caching_lengths must be [B={lengths.numel()}], got {tuple(kv_caching_lengths.shape)}"
        )
    n = kv_caching_lengths.to(device=lengths.device, dtype=torch.int64)
    host = torch.stack([n, lengths] + ([] if num_targets is None else [num_targets.to(n)])).cpu()
    _check_lengths("kv_caching_lengths", host[0], 0, host[1], "none", "its sequence length")
    key = (
        str(k.device), k.shape[0], tuple(host.flatten().tolist()), num_targets is None,
        _keep_params(template.spec), max_kv_caching_len,
    )  # fmt: skip
    if _LAST_FILL and _LAST_FILL[0][0] == key:
        _, index, rows = _LAST_FILL[0]
    else:
        targets = torch.zeros_like(lengths) if num_targets is None else num_targets.to(n)
        kept_ends = torch.minimum(n, lengths - targets).clamp(min=0)
        user, pos = jagged_index(lengths, k.shape[0])
        rows = torch.nonzero(_keep(pos, kept_ends[user], template.spec)).flatten()
        index = _index(user[rows], n, kept_ends, _max_len(host[0], max_kv_caching_len))
        _LAST_FILL[:] = [(key, index, rows)]
    return _new(template, k.index_select(0, rows), v.index_select(0, rows), index)


def _index(
    user: torch.Tensor, n: torch.Tensor, kept_ends: torch.Tensor, max_len: int
) -> CacheIndex:
    kept = torch.bincount(user, minlength=n.numel()) if user.numel() else torch.zeros_like(n)
    return CacheIndex.build(kept, n, kept_ends, max_len)


def _new(template: SLAKVCache, k: torch.Tensor, v: torch.Tensor, index: CacheIndex) -> SLAKVCache:
    return SLAKVCache(
        spec=template.spec, num_heads=template.num_heads, attention_dim=template.attention_dim,
        hidden_dim=template.hidden_dim, k=k.detach(), v=v.detach(), offsets=index.offsets,
        lengths=index.lengths, kept_ends=index.kept_ends, max_len=index.max_len,
        host_lengths=torch.tensor(index.host_lengths, dtype=torch.int64), index=index,
    )  # fmt: skip


def append_rows(
    cache: SLAKVCache,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    layout: DeltaLayout,
    num_targets: Optional[torch.Tensor],
    max_kv_caching_len: int,
    kv_caching_lengths: torch.Tensor,
) -> SLAKVCache:
    """The cache after a cached call with ``kv_caching_lengths``: the first
    ``kv_caching_lengths[b]`` rows of cache + new rows are cached (kept ones stored).

    Which rows those are (and the next :class:`CacheIndex`) is worked out once per call, by
    the first layer, and memoised on the index for the others (keyed by the host values,
    which the checks read anyway); each layer then gathers its own rows with one
    ``index_select`` of keys and one of values."""
    index = layout.index
    B, delta = index.batch_size, layout.delta
    if kv_caching_lengths.dim() != 1 or kv_caching_lengths.numel() != B:
        raise KVCacheError(
            f"kv_caching_lengths must be [B={B}], got {tuple(kv_caching_lengths.shape)}"
        )
    n_new = kv_caching_lengths.to(device=cache.lengths.device, dtype=torch.int64)
    host = torch.stack([n_new] + ([] if num_targets is None else [num_targets.to(n_new)])).cpu()
    old = torch.tensor(index.host_lengths, dtype=torch.int64)
    _check_lengths(
        "kv_caching_lengths", host[0], old, old + delta, "rows already cached", "cached + new rows",
    )  # fmt: skip
    key = (
        delta, tuple(host.flatten().tolist()), num_targets is None, _keep_params(cache.spec),
        max_kv_caching_len,
    )  # fmt: skip
    memo = index.appends.get(key)
    if memo is None:
        full = index.lengths + delta
        targets = torch.zeros_like(full) if num_targets is None else num_targets.to(n_new)
        kept_ends = torch.minimum(n_new, full - targets).clamp(min=0)
        kept = index.offsets[1:] - index.offsets[:-1]
        kv_offsets = _offsets(kept + delta)
        total = int(cache.k.shape[0]) + B * delta
        user, pos = delta_positions(
            layout.q_offsets, kv_offsets, index.lengths, index.kept_ends, layout.cache_prefix,
            total,
        )  # fmt: skip
        # row r of user b's [cache | new] rows, as an index into cat([cache.k, k_new])
        i = torch.arange(total, device=user.device) - kv_offsets[user]
        src = torch.where(
            i < kept[user],
            index.offsets[user] + i,
            cache.k.shape[0] + user * delta + i - kept[user],
        )
        rows = torch.nonzero(_keep(pos, kept_ends[user], cache.spec)).flatten()
        memo = index.appends[key] = (
            _index(user[rows], n_new, kept_ends, _max_len(host[0], max_kv_caching_len)),
            src[rows],
        )
    new_index, src = memo
    k = torch.cat([cache.k, k_new.to(cache.k.dtype)]).index_select(0, src)
    v = torch.cat([cache.v, v_new.to(cache.v.dtype)]).index_select(0, src)
    return _new(cache, k, v, new_index)
