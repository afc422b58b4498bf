# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Public delta-query SLA attention (KV-cached inference): checks, then one custom op.

``delta_sla_attention_split(...)`` is the same attention with the keys in two sources, the
kept cache and the new rows' own keys (``ultra_hstu::delta_sla_attention_split_fwd``): the
KV-cached layers call it, so a cached call concatenates nothing per layer.

``delta_sla_attention(...)`` validates its inputs (one clear ``ValueError`` naming the user
and the value) and calls ``ultra_hstu::delta_sla_attention_fwd``; backends ``"pytorch"``
(the dense reference, :mod:`.delta_reference`) and ``"triton"`` (:mod:`.delta_triton`,
CUDA or the CPU interpreter).  Forward only: it serves inference.

The checks include the one that makes a bounded cache safe: a cache with dropped rows
(``R_b < kept_ends[b]``) is accepted only where the SLA mask proves no new row can see them
(window mode, no full-attention tail, ``k1 > 0``, the whole prefix and at least the last
``k1`` rows kept), so the op never silently attends to a key it was not given.
"""

from __future__ import annotations

from typing import Optional

import torch

from ultra_hstu_plugin.kernels.ops import check_backend, custom_op
from ultra_hstu_plugin.kernels.sla_attention.delta_reference import (
    delta_sla_attention_reference,
    delta_sla_attention_split_reference,
)
from ultra_hstu_plugin.kernels.sla_attention.mask import SLAMaskSpec
from ultra_hstu_plugin.kernels.sla_attention.op import TRITON_DTYPES, TRITON_HEAD_DIMS, _spec

__all__ = [
    "bounded_cache",
    "cache_prefix_len",
    "delta_sla_attention",
    "delta_sla_attention_split",
]


def bounded_cache(spec: SLAMaskSpec) -> bool:
    """Whether a cache under ``spec`` may drop rows: only then does every later row see just
    the global prefix and the last ``k1`` rows.  ``k1 = 0`` (full causal), history-mode
    candidates (they see all history) and a full-attention tail need every cached row."""
    return spec.k1 > 0 and spec.target_mode == "window" and spec.full_attn_tail == 0


def cache_prefix_len(spec: SLAMaskSpec) -> int:
    """Leading rows a bounded cache always keeps: the global prefix and the contextual tokens
    (``max(k2, contextual_seq_len)``; contextual tokens too under ``contextual_in_prefix=False``,
    where the window reaches them by id, not by position)."""
    return max(spec.k2, spec.contextual_seq_len)


def _fake(q, k, v, qo, kvo, n, e, nt, N, M, alpha, k1, k2, ctx, mode, tail, inp, cp, backend):
    return q.new_empty(q.shape[0], q.shape[1], v.shape[2])


@custom_op("delta_sla_attention_fwd", fake=_fake)
def delta_sla_attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_offsets: torch.Tensor,
    kv_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    kept_ends: torch.Tensor,
    num_targets: Optional[torch.Tensor],
    max_seq_len: int,
    max_delta_len: int,
    alpha: float,
    k1: int,
    k2: int,
    contextual_seq_len: int,
    target_mode: str,
    full_attn_tail: int,
    contextual_in_prefix: bool,
    cache_prefix: int,
    backend: str,
) -> torch.Tensor:
    spec = _spec(k1, k2, contextual_seq_len, target_mode, full_attn_tail, contextual_in_prefix)
    if backend == "triton":
        from ultra_hstu_plugin.kernels.sla_attention.delta_triton import (
            delta_sla_attention_triton_fwd,
        )

        return delta_sla_attention_triton_fwd(
            q, k, v, q_offsets, kv_offsets, cache_lengths, kept_ends, max_seq_len,
            max_delta_len, alpha, spec, num_targets, cache_prefix,
        )  # fmt: skip
    return delta_sla_attention_reference(
        q, k, v, q_offsets, kv_offsets, cache_lengths, kept_ends, max_seq_len, alpha, spec,
        num_targets, cache_prefix,
    )  # fmt: skip


def _offsets_lengths(name: str, offsets: torch.Tensor, total: int) -> torch.Tensor:
    if offsets.dim() != 1 or offsets.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"delta_sla_attention: {name} must be a 1-D int32/int64 tensor, got {offsets.dtype} "
            f"of shape {tuple(offsets.shape)}"
        )
    o = offsets.detach().to("cpu", torch.int64)
    if int(o[0]) != 0 or int(o[-1]) != total:
        raise ValueError(
            f"delta_sla_attention: {name} must run from 0 to {total} (the rows it describes), "
            f"got {int(o[0])} .. {int(o[-1])}"
        )
    lengths = o[1:] - o[:-1]
    if bool((lengths < 0).any()):
        bad = int(torch.nonzero(lengths < 0)[0, 0])
        raise ValueError(f"delta_sla_attention: {name} decreases at user {bad}")
    return lengths


def _first_bad(cond: torch.Tensor) -> Optional[int]:
    bad = torch.nonzero(cond)
    return int(bad[0, 0]) if bad.numel() else None


def _check(
    q, k, v, q_offsets, kv_offsets, cache_lengths, kept_ends, num_targets, max_seq_len,
    max_delta_len, spec, cache_prefix, backend, full,
) -> None:  # fmt: skip
    check_backend("delta_sla_attention", backend, q.device)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 3:
            raise ValueError(f"delta_sla_attention: {name} must be [rows, H, dim], got {t.shape}")
    if k.shape[1:] != q.shape[1:] or v.shape[:2] != k.shape[:2]:
        raise ValueError(
            f"delta_sla_attention: shapes disagree: q {tuple(q.shape)}, k {tuple(k.shape)}, "
            f"v {tuple(v.shape)} (k must be [kv rows, H, D], v [kv rows, H, Dv])"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"delta_sla_attention: dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if backend == "triton":
        if q.dtype not in TRITON_DTYPES:
            raise ValueError(f"delta_sla_attention: triton supports {TRITON_DTYPES}, got {q.dtype}")
        if q.shape[2] not in TRITON_HEAD_DIMS or v.shape[2] not in TRITON_HEAD_DIMS:
            raise ValueError(
                f"delta_sla_attention: triton supports head dims {TRITON_HEAD_DIMS}, got "
                f"D={q.shape[2]}, Dv={v.shape[2]}"
            )
    B = q_offsets.numel() - 1
    for name, t in (("kv_offsets", kv_offsets),):
        if t.numel() != B + 1:
            raise ValueError(f"delta_sla_attention: {name} has {t.numel()} entries, want {B + 1}")
    for name, t in (("cache_lengths", cache_lengths), ("kept_ends", kept_ends)) + (
        (("num_targets", num_targets),) if num_targets is not None else ()
    ):
        if t.dim() != 1 or t.numel() != B or t.is_floating_point():
            raise ValueError(
                f"delta_sla_attention: {name} must be a 1-D integer tensor of {B} users, got "
                f"{t.dtype} of shape {tuple(t.shape)}"
            )
    if cache_prefix < 0:
        raise ValueError(f"delta_sla_attention: cache_prefix must be >= 0, got {cache_prefix}")
    if not full:
        return
    new = _offsets_lengths("q_offsets", q_offsets, q.shape[0])
    kv = _offsets_lengths("kv_offsets", kv_offsets, k.shape[0])
    kept = kv - new
    b = _first_bad(kept < 0)
    if b is not None:
        raise ValueError(
            f"delta_sla_attention: user {b} has {int(kv[b])} kv rows, fewer than its "
            f"{int(new[b])} new rows"
        )
    _check_values(
        new, kept, cache_lengths, kept_ends, num_targets, max_seq_len, max_delta_len, spec,
        cache_prefix,
    )  # fmt: skip


def _check_values(
    new: torch.Tensor,
    kept: torch.Tensor,
    cache_lengths: torch.Tensor,
    kept_ends: torch.Tensor,
    num_targets: Optional[torch.Tensor],
    max_seq_len: int,
    max_delta_len: int,
    spec: SLAMaskSpec,
    cache_prefix: int,
) -> None:
    """The O(B) checks on host ``new`` (new rows) and ``kept`` (kept cached rows) per user."""
    n = cache_lengths.detach().to("cpu", torch.int64)
    e = kept_ends.detach().to("cpu", torch.int64)
    L = n + new
    checks = [
        (new > max_delta_len, lambda b: f"has {int(new[b])} new rows > max_delta_len={max_delta_len}"),
        ((e < 0) | (e > n), lambda b: f"kept_ends={int(e[b])} is outside [0, cache_lengths={int(n[b])}]"),
        (kept > e, lambda b: f"keeps {int(kept[b])} cached rows, more than kept_ends={int(e[b])}"),
        (L > max_seq_len, lambda b: f"has {int(L[b])} rows (cached {int(n[b])} + new {int(new[b])}) > max_seq_len={max_seq_len}"),
    ]  # fmt: skip
    if num_targets is not None:
        T = num_targets.detach().to("cpu", torch.int64)
        NN = L - T
        checks += [
            ((T < 0) | (T > L), lambda b: f"num_targets={int(T[b])} is outside [0, {int(L[b])}]"),
            (NN < e, lambda b: f"num_targets={int(T[b])} makes kept cached rows (up to {int(e[b])}) candidates"),
            ((e < n) & (NN != e), lambda b: f"caches candidates past position {int(e[b])} but num_targets={int(T[b])} puts history there"),
        ]  # fmt: skip
    dropped = kept < e
    if bool(dropped.any()):
        b = int(torch.nonzero(dropped)[0, 0])
        where = f"delta_sla_attention: user {b} keeps {int(kept[b])} of {int(e[b])} cached rows"
        if not bounded_cache(spec):
            raise ValueError(
                f"{where}, but under {spec} later rows can see every cached row "
                "(k1 = 0, target_mode='history' or full_attn_tail > 0): keep them all"
            )
        if cache_prefix < cache_prefix_len(spec):
            raise ValueError(
                f"{where} with cache_prefix={cache_prefix} < max(k2, contextual_seq_len)="
                f"{cache_prefix_len(spec)}: the prefix must be kept whole"
            )
        checks.append(
            (dropped & (kept < cache_prefix + spec.k1),
             lambda b: f"keeps {int(kept[b])} cached rows with some dropped, fewer than "
                       f"cache_prefix + k1 = {cache_prefix + spec.k1}"),
        )  # fmt: skip
    for cond, message in checks:
        b = _first_bad(cond)
        if b is not None:
            raise ValueError(f"delta_sla_attention: user {b} {message(b)}")


def delta_sla_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_offsets: torch.Tensor,
    kv_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    kept_ends: torch.Tensor,
    max_seq_len: int,
    max_delta_len: int,
    alpha: float,
    spec: SLAMaskSpec,
    num_targets: Optional[torch.Tensor] = None,
    cache_prefix: int = 0,
    backend: str = "pytorch",
    debug_checks: bool = False,
) -> torch.Tensor:
    """HSTU attention of the new rows against kept cache + new rows, under the SLA mask.

    Layout: :mod:`.delta_reference`.  ``max_seq_len`` is HSTU's ``1/N`` normaliser (and the
    bound on every user's full length); ``max_delta_len`` bounds the new rows per user (it
    sizes the launch grid).  ``num_targets[b]`` counts candidates at the end of user b's full
    sequence.  The O(B) checks read tensors on the host: always on CPU, with
    ``debug_checks`` on CUDA.
    """
    if not isinstance(spec, SLAMaskSpec):
        raise ValueError(f"delta_sla_attention: spec must be an SLAMaskSpec, got {type(spec)}")
    full = debug_checks or q.device.type == "cpu"
    if torch.compiler.is_compiling():
        full = False
    _check(
        q, k, v, q_offsets, kv_offsets, cache_lengths, kept_ends, num_targets, max_seq_len,
        max_delta_len, spec, cache_prefix, backend, full,
    )  # fmt: skip
    return delta_sla_attention_fwd(
        q, k, v, q_offsets, kv_offsets, cache_lengths, kept_ends, num_targets, int(max_seq_len),
        int(max_delta_len), float(alpha), spec.k1, spec.k2, spec.contextual_seq_len,
        spec.target_mode, spec.full_attn_tail, spec.contextual_in_prefix, int(cache_prefix),
        backend,
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# The split layout: cached keys and new keys from two tensors
# --------------------------------------------------------------------------------------


def _split_fake(q, k, v, kc, vc, qo, co, n, e, nt, N, M, alpha, k1, k2, ctx, mode, tail, inp,
                cp, backend):  # fmt: skip
    return q.new_empty(q.shape[0], q.shape[1], v.shape[2])


@custom_op("delta_sla_attention_split_fwd", fake=_split_fake)
def delta_sla_attention_split_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    q_offsets: torch.Tensor,
    cache_offsets: torch.Tensor,
    cache_lengths: torch.Tensor,
    kept_ends: torch.Tensor,
    num_targets: Optional[torch.Tensor],
    max_seq_len: int,
    max_delta_len: int,
    alpha: float,
    k1: int,
    k2: int,
    contextual_seq_len: int,
    target_mode: str,
    full_attn_tail: int,
    contextual_in_prefix: bool,
    cache_prefix: int,
    backend: str,
) -> torch.Tensor:
    spec = _spec(k1, k2, contextual_seq_len, target_mode, full_attn_tail, contextual_in_prefix)
    if backend == "triton":
        from ultra_hstu_plugin.kernels.sla_attention.delta_triton import (
            delta_sla_attention_split_triton_fwd,
        )

        return delta_sla_attention_split_triton_fwd(
            q, k, v, k_cache, v_cache, q_offsets, cache_offsets, cache_lengths, kept_ends,
            max_seq_len, max_delta_len, alpha, spec, num_targets, cache_prefix,
        )  # fmt: skip
    return delta_sla_attention_split_reference(
        q, k, v, k_cache, v_cache, q_offsets, cache_offsets, cache_lengths, kept_ends,
        max_seq_len, alpha, spec, num_targets, cache_prefix,
    )  # fmt: skip


def check_split_shapes(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    backend: str,
) -> None:
    """The split op's O(1) checks (shapes, dtypes, backend): attribute reads only, no op."""
    check_backend("delta_sla_attention", backend, q.device)
    for name, t in (("q", q), ("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache)):
        if t.dim() != 3:
            raise ValueError(f"delta_sla_attention: {name} must be [rows, H, dim], got {t.shape}")
    if (
        k.shape != q.shape
        or v.shape[:2] != q.shape[:2]
        or k_cache.shape[1:] != q.shape[1:]
        or v_cache.shape[:2] != k_cache.shape[:2]
        or v_cache.shape[2] != v.shape[2]
    ):
        raise ValueError(
            f"delta_sla_attention: shapes disagree: q {tuple(q.shape)}, k {tuple(k.shape)}, "
            f"v {tuple(v.shape)}, k_cache {tuple(k_cache.shape)}, v_cache {tuple(v_cache.shape)} "
            "(k must be [new rows, H, D], v [new rows, H, Dv], the cache [kept rows, H, D/Dv])"
        )
    if not (q.dtype == k.dtype == v.dtype == k_cache.dtype == v_cache.dtype):
        raise ValueError(
            f"delta_sla_attention: dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}, "
            f"{k_cache.dtype}, {v_cache.dtype}"
        )
    if backend == "triton":
        if q.dtype not in TRITON_DTYPES:
            raise ValueError(f"delta_sla_attention: triton supports {TRITON_DTYPES}, got {q.dtype}")
        if q.shape[2] not in TRITON_HEAD_DIMS or v.shape[2] not in TRITON_HEAD_DIMS:
            raise ValueError(
                f"delta_sla_attention: triton supports head dims {TRITON_HEAD_DIMS}, got "
                f"D={q.shape[2]}, Dv={v.shape[2]}"
            )


def delta_sla_attention_split(
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
    max_delta_len: int,
    alpha: float,
    spec: SLAMaskSpec,
    num_targets: Optional[torch.Tensor] = None,
    cache_prefix: int = 0,
    backend: str = "pytorch",
    debug_checks: bool = False,
    checked: bool = False,
) -> torch.Tensor:
    """:func:`delta_sla_attention` with the keys in two sources: user b's keys are its kept
    cached rows ``k_cache[cache_offsets[b]:cache_offsets[b+1]]`` followed by its new rows'
    own keys ``k[q_offsets[b]:q_offsets[b+1]]`` (same for values).  Same mask, same layout
    semantics (:mod:`.delta_reference`), same checks; nothing is concatenated.

    ``checked=True``: the caller has validated the O(B) bookkeeping already (the KV cache's
    :class:`~ultra_hstu_plugin.modules.kv_cache.DeltaLayout` does, once per cached call), so
    only the O(1) shape checks run here.
    """
    if not isinstance(spec, SLAMaskSpec):
        raise ValueError(f"delta_sla_attention: spec must be an SLAMaskSpec, got {type(spec)}")
    check_split_shapes(q, k, v, k_cache, v_cache, backend)
    full = (debug_checks or q.device.type == "cpu") and not checked
    if torch.compiler.is_compiling():
        full = False
    if full:
        B = q_offsets.numel() - 1
        for name, t in (("cache_offsets", cache_offsets),):
            if t.numel() != B + 1:
                raise ValueError(
                    f"delta_sla_attention: {name} has {t.numel()} entries, want {B + 1}"
                )
        for name, t in (("cache_lengths", cache_lengths), ("kept_ends", kept_ends)) + (
            (("num_targets", num_targets),) if num_targets is not None else ()
        ):
            if t.dim() != 1 or t.numel() != B or t.is_floating_point():
                raise ValueError(
                    f"delta_sla_attention: {name} must be a 1-D integer tensor of {B} users, "
                    f"got {t.dtype} of shape {tuple(t.shape)}"
                )
        if cache_prefix < 0:
            raise ValueError(f"delta_sla_attention: cache_prefix must be >= 0, got {cache_prefix}")
        new = _offsets_lengths("q_offsets", q_offsets, q.shape[0])
        kept = _offsets_lengths("cache_offsets", cache_offsets, k_cache.shape[0])
        _check_values(
            new, kept, cache_lengths, kept_ends, num_targets, max_seq_len, max_delta_len, spec,
            cache_prefix,
        )  # fmt: skip
    return delta_sla_attention_split_fwd(
        q, k, v, k_cache, v_cache, q_offsets, cache_offsets, cache_lengths, kept_ends,
        num_targets, int(max_seq_len), int(max_delta_len), float(alpha), spec.k1, spec.k2,
        spec.contextual_seq_len, spec.target_mode, spec.full_attn_tail,
        spec.contextual_in_prefix, int(cache_prefix), backend,
    )  # fmt: skip
