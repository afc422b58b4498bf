# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Delta-query SLA attention (KV-cached inference): the layout and the PyTorch reference.

Queries are the *new* rows of each user (candidates, or newly appended events); keys and
values are that user's *kept* cached rows followed by the new rows.  The mask is
:func:`~.mask.sla_visible` evaluated at the rows' and columns' positions in the user's
*full* (logical) sequence ``[cached rows | new rows]`` of length ``L_b = n_b + M_b``, so the
result equals the new rows of the full attention (``sla_attention_reference`` on the whole
sequence) whenever the dropped cached rows are invisible to the new rows.

Layout of user ``b`` (all jagged, ``[sum, H, dim]``)::

    q rows   q_offsets[b] .. q_offsets[b+1]     M_b new rows, positions n_b .. n_b + M_b - 1
    kv rows  kv_offsets[b] .. kv_offsets[b+1]   R_b kept cached rows, then the M_b new rows

    kept cached row i (i < R_b) has position   i                     if i < cache_prefix
                                               i + (e_b - R_b)       otherwise

with ``n_b = cache_lengths[b]`` (cached rows, kept or not: where the new rows start) and
``e_b = kept_ends[b] <= n_b`` (one past the last kept cached position; cached rows at
``[e_b, n_b)`` are cached candidates, which no later row can see, so the cache drops them).
A compacted cache therefore keeps positions ``[0, cache_prefix)`` and the last
``R_b - cache_prefix`` positions before ``e_b``; a full cache has ``R_b = e_b`` (no gap).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ultra_hstu_plugin.kernels.jagged import jagged_index
from ultra_hstu_plugin.kernels.sla_attention.mask import SLAMaskSpec, sla_visible


def kept_cache_positions(
    index: torch.Tensor, kept_rows: torch.Tensor, kept_ends: torch.Tensor, cache_prefix: int
) -> torch.Tensor:
    """Positions of kept cached rows ``index`` (< ``kept_rows``, broadcast with it)."""
    return torch.where(index < cache_prefix, index, index + (kept_ends - kept_rows))


def delta_positions(
    q_offsets: torch.Tensor,
    kv_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    kept_ends: torch.Tensor,
    cache_prefix: int,
    total_kv: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(user, position in the full sequence) of every kv row of the delta layout."""
    new_rows = (q_offsets[1:] - q_offsets[:-1]).to(torch.int64)
    kv_rows = (kv_offsets[1:] - kv_offsets[:-1]).to(torch.int64)
    user, i = jagged_index(kv_rows, total_kv)
    kept = (kv_rows - new_rows)[user]
    n = cache_lengths.to(torch.int64)[user]
    cached = kept_cache_positions(i, kept, kept_ends.to(torch.int64)[user], cache_prefix)
    return user, torch.where(i < kept, cached, n + (i - kept))


def delta_sla_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_offsets: torch.Tensor,
    kv_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    kept_ends: torch.Tensor,
    max_seq_len: int,
    alpha: float,
    spec: SLAMaskSpec,
    num_targets: Optional[torch.Tensor] = None,
    cache_prefix: int = 0,
) -> torch.Tensor:
    """q ``[sum M, H, D]``, k ``[sum (R + M), H, D]``, v ``[sum (R + M), H, Dv]`` ->
    ``[sum M, H, Dv]``: ``silu(alpha q k^T) / max_seq_len * mask @ v`` per user and head.

    ``num_targets[b]``: candidates at the end of user b's *full* sequence (cached + new).
    Padded and dense over ``[M_max, (R + M)_max]`` only (never the full ``L x L``).
    """
    total_q, H, D = q.shape
    Dv = v.shape[2]
    B = q_offsets.numel() - 1
    new_rows = (q_offsets[1:] - q_offsets[:-1]).to(torch.int64)
    kv_rows = (kv_offsets[1:] - kv_offsets[:-1]).to(torch.int64)
    Mq = int(new_rows.max()) if B > 0 else 0
    Mk = int(kv_rows.max()) if B > 0 else 0
    qb, qi = jagged_index(new_rows, total_q)
    kb, ki = jagged_index(kv_rows, k.shape[0])

    def pad(x: torch.Tensor, b: torch.Tensor, i: torch.Tensor, n: int) -> torch.Tensor:
        out = x.new_zeros(B, n, x.shape[1], x.shape[2])
        out[b, i] = x
        return out.transpose(1, 2)  # [B, H, n, *]

    pq, pk, pv = pad(q, qb, qi, Mq), pad(k, kb, ki, Mk), pad(v, kb, ki, Mk)
    n = cache_lengths.to(torch.int64).view(B, 1, 1)
    kept = (kv_rows - new_rows).view(B, 1, 1)
    rows = torch.arange(Mq, device=q.device).view(1, -1, 1)
    cols = torch.arange(Mk, device=q.device).view(1, 1, -1)
    row_pos = n + rows
    col_pos = torch.where(
        cols < kept,
        kept_cache_positions(cols, kept, kept_ends.to(torch.int64).view(B, 1, 1), cache_prefix),
        n + (cols - kept),
    )
    lengths = cache_lengths.to(torch.int64) + new_rows
    mask = sla_visible(row_pos, col_pos, lengths, spec, num_targets)
    mask = mask & (rows < new_rows.view(B, 1, 1)) & (cols < kv_rows.view(B, 1, 1))
    scores = F.silu(torch.einsum("bhxd,bhyd->bhxy", pq, pk) * alpha) / max_seq_len
    scores = scores * mask.unsqueeze(1).to(scores.dtype)
    out = torch.einsum("bhxy,bhyv->bhxv", scores, pv)  # [B, H, Mq, Dv]
    return out.transpose(1, 2)[qb, qi].reshape(total_q, H, Dv)


def delta_sla_attention_split_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    q_offsets: torch.Tensor,
    cache_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    kept_ends: torch.Tensor,
    max_seq_len: int,
    alpha: float,
    spec: SLAMaskSpec,
    num_targets: Optional[torch.Tensor] = None,
    cache_prefix: int = 0,
) -> torch.Tensor:
    """The delta attention with the keys in two sources (the split layout).

    q, k ``[sum M, H, D]``, v ``[sum M, H, Dv]``: the new rows (jagged by ``q_offsets``) and
    their keys/values; k_cache ``[sum R, H, D]``, v_cache ``[sum R, H, Dv]``: the kept cached
    rows (jagged by ``cache_offsets``).  User b's keys are its kept cached rows followed by
    its new rows, exactly :func:`delta_sla_attention_reference`'s ``kv`` layout, but nothing
    is concatenated: the two score blocks are computed apart and their outputs summed.
    """
    total_q, H, _ = q.shape
    Dv = v.shape[2]
    B = q_offsets.numel() - 1
    new_rows = (q_offsets[1:] - q_offsets[:-1]).to(torch.int64)
    kept = (cache_offsets[1:] - cache_offsets[:-1]).to(torch.int64)
    if B == 0 or total_q == 0:
        return q.new_zeros(total_q, H, Dv)
    Mq, R = (int(x) for x in torch.stack([new_rows.max(), kept.max()]).tolist())
    qb, qi = jagged_index(new_rows, total_q)
    cb, ci = jagged_index(kept, k_cache.shape[0])

    def pad(x: torch.Tensor, b: torch.Tensor, i: torch.Tensor, n: int) -> torch.Tensor:
        out = x.new_zeros(B, n, x.shape[1], x.shape[2])
        out[b, i] = x
        return out.transpose(1, 2)  # [B, H, n, *]

    pq, pk, pv = pad(q, qb, qi, Mq), pad(k, qb, qi, Mq), pad(v, qb, qi, Mq)
    pkc, pvc = pad(k_cache, cb, ci, R), pad(v_cache, cb, ci, R)
    n = cache_lengths.to(torch.int64).view(B, 1, 1)
    M_b = new_rows.view(B, 1, 1)
    R_b = kept.view(B, 1, 1)
    rows = torch.arange(Mq, device=q.device).view(1, -1, 1)
    cache_cols = torch.arange(R, device=q.device).view(1, 1, -1)
    cache_pos = kept_cache_positions(
        cache_cols, R_b, kept_ends.to(torch.int64).view(B, 1, 1), cache_prefix
    )
    # one mask evaluation over [cached columns | new columns]; padding columns are masked
    cols = torch.cat([cache_pos.expand(B, 1, R), (n + rows.view(1, 1, -1)).expand(B, 1, Mq)], 2)
    mask = sla_visible(n + rows, cols, n.view(B) + new_rows, spec, num_targets)
    valid = torch.cat([cache_cols < R_b, rows.view(1, 1, -1) < M_b], 2).expand(B, 1, R + Mq)
    mask = (mask & valid & (rows < M_b)).unsqueeze(1)
    scale = alpha
    cached_scores = F.silu(torch.einsum("bhxd,bhyd->bhxy", pq, pkc) * scale) / max_seq_len
    new_scores = F.silu(torch.einsum("bhxd,bhyd->bhxy", pq, pk) * scale) / max_seq_len
    cached_scores = cached_scores * mask[..., :R].to(q.dtype)
    new_scores = new_scores * mask[..., R:].to(q.dtype)
    out = torch.einsum("bhxy,bhyv->bhxv", cached_scores, pvc)
    out = out + torch.einsum("bhxy,bhyv->bhxv", new_scores, pv)  # [B, H, Mq, Dv]
    return out.transpose(1, 2)[qb, qi].reshape(total_q, H, Dv)


def split_dense_plan(
    cache_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    kept_ends: torch.Tensor,
    delta: int,
    max_kept: int,
    max_seq_len: int,
    spec: SLAMaskSpec,
    num_targets: Optional[torch.Tensor],
    cache_prefix: int,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`delta_sla_attention_split_padded` needs for ``delta`` new rows per user,
    independent of the layer: ``cache_rows`` ``[B * max_kept]`` (user b's kept rows, padded
    by repeating a valid row) and the scaled mask ``[B, 1, delta, max_kept + delta]``
    (``sla_visible``, the one mask definition, over [cached columns | new columns], divided by
    ``max_seq_len``; padding columns 0).  Computed once per cached call, shared by all layers.
    """
    B = cache_lengths.numel()
    device = cache_lengths.device
    R = max_kept
    kept = (cache_offsets[1:] - cache_offsets[:-1]).to(torch.int64).view(B, 1, 1)
    cols = torch.arange(R, device=device).view(1, 1, -1)
    total = int(cache_offsets[-1]) if R else 0
    rows = cache_offsets[:-1].to(torch.int64).view(B, 1, 1) + torch.minimum(cols, kept - 1)
    cache_rows = rows.clamp(0, max(total - 1, 0)).flatten()
    n = cache_lengths.to(torch.int64).view(B, 1, 1)
    new = torch.arange(delta, device=device)
    cache_pos = kept_cache_positions(
        cols, kept, kept_ends.to(torch.int64).view(B, 1, 1), cache_prefix
    )
    col_pos = torch.cat(
        [cache_pos.expand(B, 1, R), (n + new.view(1, 1, -1)).expand(B, 1, delta)], 2
    )
    mask = sla_visible(n + new.view(1, -1, 1), col_pos, n.view(B) + delta, spec, num_targets)
    valid = torch.cat([cols < kept, torch.ones(B, 1, delta, dtype=torch.bool, device=device)], 2)
    return cache_rows, ((mask & valid).to(dtype) / max_seq_len).unsqueeze(1)


def delta_sla_attention_split_padded(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_rows: torch.Tensor,
    scaled_mask: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """The split attention for the same number of new rows per user, on a precomputed
    :func:`split_dense_plan`: a handful of dense ops a layer (the eager CPU path of the KV
    cache; equal to :func:`delta_sla_attention_split_reference` there)."""
    B, _, delta, width = scaled_mask.shape
    R = width - delta
    _, H, D = q.shape
    Dv = v.shape[2]
    keys = torch.cat(
        [k_cache.index_select(0, cache_rows).view(B, R, H, D), k.view(B, delta, H, D)], 1
    )
    values = torch.cat(
        [v_cache.index_select(0, cache_rows).view(B, R, H, Dv), v.view(B, delta, H, Dv)], 1
    )
    scores = F.silu(torch.einsum("bxhd,byhd->bhxy", q.view(B, delta, H, D), keys) * alpha)
    out = torch.einsum("bhxy,byhv->bxhv", scores * scaled_mask, values)
    return out.reshape(B * delta, H, Dv)
