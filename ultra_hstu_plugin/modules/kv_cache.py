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

from dataclasses import dataclass
from typing import Optional

import torch

from ultra_hstu_plugin.kernels.jagged import jagged_index
from ultra_hstu_plugin.kernels.sla_attention import SLAMaskSpec, bounded_cache, cache_prefix_len
from ultra_hstu_plugin.kernels.sla_attention.delta_reference import delta_positions


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
    _check_lengths("kv_caching_lengths", n.cpu(), 0, lengths.cpu(), "none", "its sequence length")
    targets = torch.zeros_like(lengths) if num_targets is None else num_targets.to(torch.int64)
    kept_ends = torch.minimum(n, lengths - targets).clamp(min=0)
    user, pos = jagged_index(lengths, k.shape[0])
    rows = torch.nonzero(_keep(pos, kept_ends[user], template.spec)).flatten()
    return _new(
        template, k[rows], v[rows], user[rows], n, kept_ends, _max_len(n, max_kv_caching_len)
    )


def _new(template, k, v, user, n, kept_ends, max_len) -> SLAKVCache:
    kept = torch.bincount(user, minlength=n.numel()) if user.numel() else torch.zeros_like(n)
    return SLAKVCache(
        spec=template.spec, num_heads=template.num_heads, attention_dim=template.attention_dim,
        hidden_dim=template.hidden_dim, k=k.detach(), v=v.detach(), offsets=_offsets(kept),
        lengths=n, kept_ends=kept_ends, max_len=max_len, host_lengths=n.cpu(),
    )  # fmt: skip


def with_new_rows(
    cache: SLAKVCache, k_new: torch.Tensor, v_new: torch.Tensor, delta: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per user, kept cache rows then its ``delta`` new rows: ``(k, v, kv_offsets)``."""
    B = cache.batch_size
    kept = cache.offsets[1:] - cache.offsets[:-1]
    kv_lengths = kept + delta
    kv_offsets = _offsets(kv_lengths)
    total = int(cache.k.shape[0]) + B * delta
    user, i = jagged_index(kv_lengths, total)
    from_cache = i < kept[user]
    src = torch.where(
        from_cache, cache.offsets[user] + i, cache.k.shape[0] + user * delta + (i - kept[user])
    )
    k = torch.cat([cache.k, k_new.to(cache.k.dtype)]).index_select(0, src)
    v = torch.cat([cache.v, v_new.to(cache.v.dtype)]).index_select(0, src)
    return k, v, kv_offsets


def append_rows(
    cache: SLAKVCache,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_offsets: torch.Tensor,
    delta: int,
    num_targets: Optional[torch.Tensor],
    max_kv_caching_len: int,
    kv_caching_lengths: torch.Tensor,
) -> SLAKVCache:
    """The cache after a cached call with ``kv_caching_lengths``: the first
    ``kv_caching_lengths[b]`` rows of cache + new rows are cached (kept ones stored)."""
    B = cache.batch_size
    if kv_caching_lengths.dim() != 1 or kv_caching_lengths.numel() != B:
        raise KVCacheError(
            f"kv_caching_lengths must be [B={B}], got {tuple(kv_caching_lengths.shape)}"
        )
    n_new = kv_caching_lengths.to(device=cache.lengths.device, dtype=torch.int64)
    _check_lengths(
        "kv_caching_lengths", n_new.cpu(), cache.lengths.cpu(), (cache.lengths + delta).cpu(),
        "rows already cached", "cached + new rows",
    )  # fmt: skip
    full = cache.lengths + delta
    targets = (
        torch.zeros_like(full) if num_targets is None else num_targets.to(full.device, torch.int64)
    )
    kept_ends = torch.minimum(n_new, full - targets).clamp(min=0)
    q_offsets = torch.arange(B + 1, device=full.device, dtype=torch.int64) * delta
    user, pos = delta_positions(
        q_offsets, kv_offsets, cache.lengths, cache.kept_ends, cache.cache_prefix, k.shape[0]
    )
    rows = torch.nonzero(_keep(pos, kept_ends[user], cache.spec)).flatten()
    return _new(
        cache, k[rows], v[rows], user[rows], n_new, kept_ends, _max_len(n_new, max_kv_caching_len)
    )
