# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Delta-query SLA attention (KV cache): reference and Triton kernel vs the new rows of the
full dense reference, on random jagged batches with bounded (compacted) caches."""

import os

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ultra_hstu_plugin.kernels import ops  # noqa: E402
from ultra_hstu_plugin.kernels.sla_attention.delta_op import (  # noqa: E402
    bounded_cache,
    cache_prefix_len,
    delta_sla_attention,
    delta_sla_attention_fwd,
)
from ultra_hstu_plugin.kernels.sla_attention.delta_reference import (  # noqa: E402
    delta_sla_attention_reference,
)
from ultra_hstu_plugin.kernels.sla_attention.mask import SLAMaskSpec  # noqa: E402
from ultra_hstu_plugin.kernels.sla_attention.reference import sla_attention_reference  # noqa: E402

TOL = 1e-4
needs_triton = pytest.mark.skipif(
    DEVICE == "cpu" and not ops.triton_interpreting(),
    reason="needs a GPU or TRITON_INTERPRET=1 set before triton import",
)


def _rel_err(got, want):
    return float((got.double() - want.double()).norm() / (want.double().norm() + 1e-30))


def _offsets(lengths):
    o = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    o[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)
    return o


def build_case(spec, cached, new, targets, windows, H=2, D=16, Dv=16, seed=0, extra_prefix=0):
    """Full q/k/v of sequences ``cached[b] + new[b]`` long, the full reference's new rows, and
    the delta layout with a cache keeping the prefix and the last ``windows[b]`` rows (None:
    every row) of the cached history (cached candidates are dropped)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [n + m for n, m in zip(cached, new)]
    offsets = _offsets(lengths)
    total = int(offsets[-1])
    q, k, v = (torch.randn(total, H, d, generator=g) for d in (D, D, Dv))
    N = max([1, *lengths])
    nt = torch.tensor(targets, dtype=torch.int64)
    full = sla_attention_reference(q, k, v, offsets, N, 0.4, spec, nt)
    P = cache_prefix_len(spec) + extra_prefix
    q_rows, kv_rows, kept_ends, kv_len, want = [], [], [], [], []
    for b, (n, m) in enumerate(zip(cached, new)):
        s = int(offsets[b])
        e = min(n, lengths[b] - targets[b])
        kept = list(range(e))
        if windows[b] is not None and e > P + windows[b]:
            kept = list(range(P)) + list(range(e - windows[b], e))
        q_rows += range(s + n, s + n + m)
        kv_rows += [s + i for i in kept] + list(range(s + n, s + n + m))
        kept_ends.append(e)
        kv_len.append(len(kept) + m)
        want.append(full[s + n : s + n + m])
    q_rows, kv_rows = (
        torch.tensor(q_rows, dtype=torch.long),
        torch.tensor(kv_rows, dtype=torch.long),
    )
    args = (
        q[q_rows], k[kv_rows], v[kv_rows], _offsets(new), _offsets(kv_len),
        torch.tensor(cached), torch.tensor(kept_ends), N, max([0, *new]), 0.4, spec, nt, P,
    )  # fmt: skip
    return args, torch.cat(want) if want else full[:0]


@st.composite
def cases(draw, max_cached=40, max_new=20):
    spec = SLAMaskSpec(
        k1=draw(st.sampled_from([0, 1, 3, 8, 17])),
        k2=draw(st.sampled_from([0, 1, 5, 16])),
        contextual_seq_len=draw(st.sampled_from([0, 0, 1, 4])),
        target_mode=draw(st.sampled_from(["window", "history"])),
        full_attn_tail=draw(st.sampled_from([0, 0, 0, 3])),
        contextual_in_prefix=draw(st.booleans()),
    )
    B = draw(st.integers(1, 3))
    c = spec.contextual_seq_len
    cached, new, targets, windows = [], [], [], []
    for _ in range(B):
        n = draw(st.integers(c, max_cached))
        m = draw(st.integers(0, max_new))
        kind = draw(st.sampled_from(["candidates", "mixed", "cached_candidates"]))
        if kind == "candidates":  # the new rows are all candidates
            t = m
        elif kind == "mixed":  # appended history rows, then some candidates
            t = draw(st.integers(0, m))
        else:  # GR's test: the cache ends with candidates, the new rows are candidates too
            t = m + draw(st.integers(0, max(0, n - c)))
        cached.append(n)
        new.append(m)
        targets.append(t)
        w = None
        if bounded_cache(spec) and draw(st.booleans()):
            w = spec.k1 + draw(st.sampled_from([0, 0, 2]))
        windows.append(w)
    extra = draw(st.sampled_from([0, 0, 3]))
    return spec, cached, new, targets, windows, draw(st.integers(0, 2**16)), extra


@settings(max_examples=80, deadline=None)
@given(cases())
def test_reference_equals_new_rows_of_the_full_reference(case):
    spec, cached, new, targets, windows, seed, extra = case
    args, want = build_case(spec, cached, new, targets, windows, seed=seed, extra_prefix=extra)
    got = delta_sla_attention(*args)  # checks included (CPU)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@needs_triton
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(max_cached=36, max_new=18), st.sampled_from([(1, 16, 16), (2, 16, 32)]))
def test_triton_matches_reference(case, heads):
    from ultra_hstu_plugin.kernels.sla_attention.delta_triton import (
        delta_sla_attention_triton_fwd,
    )

    spec, cached, new, targets, windows, seed, extra = case
    H, D, Dv = heads
    args, want = build_case(
        spec, cached, new, targets, windows, H=H, D=D, Dv=Dv, seed=seed, extra_prefix=extra
    )
    args = tuple(a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in args)
    ref = delta_sla_attention_reference(*args[:7], args[7], *args[9:])
    poisoned = torch.full_like(ref, float("nan"))
    got = delta_sla_attention_triton_fwd(*args, out=poisoned)
    assert not torch.isnan(got).any(), "a new row was not written"
    assert _rel_err(got.cpu(), want) < TOL
    assert _rel_err(ref.cpu(), want) < TOL


@needs_triton
def test_public_op_triton_backend_and_registration():
    spec = SLAMaskSpec(k1=4, k2=2, contextual_seq_len=1)
    args, want = build_case(spec, [30, 9], [5, 5], [5, 5], [4, None])
    got = delta_sla_attention(*args, backend="triton")
    assert _rel_err(got, want) < TOL
    assert hasattr(delta_sla_attention_fwd, "op")
    # through the dispatcher (as compile/export see it)
    scalars = (spec.k1, spec.k2, 1, "window", 0, True, args[12], "pytorch")
    out = delta_sla_attention_fwd.op(*args[:5], args[5], args[6], args[11], args[7], args[8],
                                     args[9], *scalars)  # fmt: skip
    assert _rel_err(out, want) < TOL


def test_fake_impl_opcheck():
    spec = SLAMaskSpec(k1=3, k2=1)
    args, _ = build_case(spec, [12, 6], [3, 3], [3, 3], [3, None])
    q, k, v, qo, kvo, n, e, N, M, alpha, spec, nt, P = args
    torch.library.opcheck(
        delta_sla_attention_fwd.op,
        (q.double(), k.double(), v.double(), qo, kvo, n, e, nt, N, M, alpha, 3, 1, 0, "window",
         0, True, P, "pytorch"),
        test_utils=("test_schema", "test_faketensor"),
    )  # fmt: skip


def test_dropped_rows_a_new_row_could_see_are_refused():
    spec = SLAMaskSpec(k1=6, k2=2)
    args, _ = build_case(spec, [30], [4], [4], [6])
    q, k, v, qo, kvo, n, e, N, M, alpha, _, nt, P = args
    # the same compacted cache under a wider window: rows it needs were dropped
    with pytest.raises(ValueError, match=r"user 0 keeps 8 cached rows .* cache_prefix \+ k1 = 14"):
        delta_sla_attention(q, k, v, qo, kvo, n, e, N, M, alpha, SLAMaskSpec(k1=12, k2=2), nt, P)
    with pytest.raises(ValueError, match="user 0 keeps 8 of 30 cached rows, but under"):
        delta_sla_attention(
            q, k, v, qo, kvo, n, e, N, M, alpha, SLAMaskSpec(k1=6, k2=2, target_mode="history"),
            nt, P,
        )  # fmt: skip
    with pytest.raises(ValueError, match="cache_prefix=1 < max"):
        delta_sla_attention(q, k, v, qo, kvo, n, e, N, M, alpha, spec, nt, 1)
    with pytest.raises(ValueError, match=r"user 0 has 34 rows .* > max_seq_len=33"):
        delta_sla_attention(q, k, v, qo, kvo, n, e, 33, M, alpha, spec, nt, P)
    with pytest.raises(ValueError, match=r"user 0 num_targets=6 makes kept cached rows"):
        delta_sla_attention(q, k, v, qo, kvo, n, e, N, M, alpha, spec, nt + 2, P)


# ------------------------------------------------------------------------------------------
# The split layout (ultra_hstu::delta_sla_attention_split_fwd): cached keys and new keys in
# two tensors, compared with the concatenated delta op and the full dense reference.
# ------------------------------------------------------------------------------------------


def split_args(args):
    """The concatenated delta layout's arguments as the split op's: per user, its first
    ``R_b`` kv rows go to the cache tensors, its last ``M_b`` (the new rows) to k / v."""
    q, k, v, qo, kvo, n, e, N, M, alpha, spec, nt, P = args
    cache_rows, new_rows, kept = [], [], []
    for b in range(qo.numel() - 1):
        m = int(qo[b + 1] - qo[b])
        s, t = int(kvo[b]), int(kvo[b + 1])
        cache_rows += range(s, t - m)
        new_rows += range(t - m, t)
        kept.append(t - m - s)
    c = torch.tensor(cache_rows, dtype=torch.long)
    r = torch.tensor(new_rows, dtype=torch.long)
    return (q, k[r], v[r], k[c], v[c], qo, _offsets(kept), n, e, N, M, alpha, spec, nt, P)


@settings(max_examples=60, deadline=None)
@given(cases())
def test_split_reference_equals_the_delta_op_and_the_full_reference(case):
    from ultra_hstu_plugin.kernels.sla_attention.delta_op import delta_sla_attention_split

    spec, cached, new, targets, windows, seed, extra = case
    args, want = build_case(spec, cached, new, targets, windows, seed=seed, extra_prefix=extra)
    got = delta_sla_attention_split(*split_args(args))  # checks included (CPU)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, delta_sla_attention(*args), rtol=1e-5, atol=1e-6)


@needs_triton
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cases(max_cached=36, max_new=18),
    st.sampled_from([(1, 16, 16), (2, 16, 32)]),
    st.sampled_from(
        [
            None,  # the launcher's choice (the interpreter counts 4 SMs: it often splits)
            {"BLOCK_M": 16, "BLOCK_N": 16, "num_splits": 1},
            {"BLOCK_M": 16, "BLOCK_N": 32, "num_splits": 1},
            {"BLOCK_M": 16, "BLOCK_N": 16, "num_splits": 3},  # split-K over the cache keys
            {"BLOCK_M": 16, "BLOCK_N": 16, "num_splits": 16},  # more splits than tiles
        ]
    ),
)
def test_split_triton_matches_the_delta_op_poisoned_output(case, heads, config):
    from ultra_hstu_plugin.kernels.sla_attention.delta_reference import (
        delta_sla_attention_split_reference,
    )
    from ultra_hstu_plugin.kernels.sla_attention.delta_triton import (
        delta_sla_attention_split_triton_fwd,
    )

    spec, cached, new, targets, windows, seed, extra = case
    H, D, Dv = heads
    args, want = build_case(
        spec, cached, new, targets, windows, H=H, D=D, Dv=Dv, seed=seed, extra_prefix=extra
    )
    sargs = tuple(a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in split_args(args))
    delta_ref = delta_sla_attention_reference(*args[:7], args[7], *args[9:])
    ref = delta_sla_attention_split_reference(*sargs[:9], sargs[9], *sargs[11:])
    poisoned = torch.full_like(ref, float("nan"))
    got = delta_sla_attention_split_triton_fwd(*sargs, config=config, out=poisoned)
    assert not torch.isnan(got).any(), "a new row was not written"
    assert _rel_err(got.cpu(), want) < TOL
    assert _rel_err(got.cpu(), delta_ref) < TOL
    assert _rel_err(ref.cpu(), want) < TOL


@needs_triton
def test_split_public_op_triton_backend_registration_and_fake():
    from ultra_hstu_plugin.kernels.sla_attention.delta_op import (
        delta_sla_attention_split,
        delta_sla_attention_split_fwd,
    )

    spec = SLAMaskSpec(k1=4, k2=2, contextual_seq_len=1)
    args, want = build_case(spec, [30, 9, 3], [5, 5, 0], [5, 5, 0], [4, None, None])
    sargs = split_args(args)
    got = delta_sla_attention_split(*sargs, backend="triton")
    assert _rel_err(got, want) < TOL
    q, k, v, kc, vc, qo, co, n, e, N, M, alpha, spec, nt, P = sargs
    scalars = (spec.k1, spec.k2, 1, "window", 0, True, P, "pytorch")
    out = delta_sla_attention_split_fwd.op(q, k, v, kc, vc, qo, co, n, e, nt, N, M, alpha,
                                           *scalars)  # fmt: skip
    assert _rel_err(out, want) < TOL
    torch.library.opcheck(
        delta_sla_attention_split_fwd.op,
        (q.double(), k.double(), v.double(), kc.double(), vc.double(), qo, co, n, e, nt, N, M,
         alpha, *scalars),
        test_utils=("test_schema", "test_faketensor"),
    )  # fmt: skip


def test_split_op_refuses_what_the_delta_op_refuses():
    from ultra_hstu_plugin.kernels.sla_attention.delta_op import delta_sla_attention_split

    spec = SLAMaskSpec(k1=6, k2=2)
    args, _ = build_case(spec, [30], [4], [4], [6])
    q, k, v, kc, vc, qo, co, n, e, N, M, alpha, _, nt, P = split_args(args)
    with pytest.raises(ValueError, match=r"user 0 keeps 8 cached rows .* cache_prefix \+ k1 = 14"):
        delta_sla_attention_split(q, k, v, kc, vc, qo, co, n, e, N, M, alpha,
                                  SLAMaskSpec(k1=12, k2=2), nt, P)  # fmt: skip
    with pytest.raises(ValueError, match=r"user 0 num_targets=6 makes kept cached rows"):
        delta_sla_attention_split(q, k, v, kc, vc, qo, co, n, e, N, M, alpha, spec, nt + 2, P)
    with pytest.raises(ValueError, match=r"user 0 has 34 rows .* > max_seq_len=33"):
        delta_sla_attention_split(q, k, v, kc, vc, qo, co, n, e, 33, M, alpha, spec, nt, P)
    with pytest.raises(ValueError, match="shapes disagree"):
        delta_sla_attention_split(q, k[:2], v, kc, vc, qo, co, n, e, N, M, alpha, spec, nt, P)
    with pytest.raises(ValueError, match="cache_offsets must run from 0 to 8"):
        delta_sla_attention_split(q, k, v, kc, vc, qo, co + 1, n, e, N, M, alpha, spec, nt, P)


@settings(max_examples=40, deadline=None)
@given(cases(max_new=0), st.integers(1, 9))
def test_padded_plan_equals_the_split_reference(case, delta):
    """The eager CPU path of the cache (a dense plan shared by the layers, then a few dense
    ops) against the split reference, with the same number of new rows per user."""
    from ultra_hstu_plugin.kernels.sla_attention.delta_reference import (
        delta_sla_attention_split_padded,
        delta_sla_attention_split_reference,
        split_dense_plan,
    )

    spec, cached, _, targets, windows, seed, extra = case
    new = [delta] * len(cached)
    targets = [t + delta for t in targets]  # the new rows are candidates
    args, want = build_case(spec, cached, new, targets, windows, seed=seed, extra_prefix=extra)
    q, k, v, kc, vc, qo, co, n, e, N, M, alpha, spec, nt, P = split_args(args)
    ref = delta_sla_attention_split_reference(q, k, v, kc, vc, qo, co, n, e, N, alpha, spec, nt, P)
    kept = int((co[1:] - co[:-1]).max())
    rows, mask = split_dense_plan(co, n, e, delta, kept, N, spec, nt, P, q.dtype)
    got = delta_sla_attention_split_padded(q, k, v, kc, vc, rows, mask, alpha)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_cache_split_choice_and_its_env_switch(monkeypatch):
    from ultra_hstu_plugin.kernels.sla_attention import delta_triton as dt

    monkeypatch.setattr(dt, "_multiprocessors", lambda index: 132)  # an H100
    cpu = torch.device("cpu")
    # one user, 4 heads, 256 candidates: 16 programs; 1152 kept keys allow 9 splits of 2 tiles
    assert dt.num_cache_splits(16, 1152, 64, cpu) == 9
    assert dt.num_cache_splits(64, 1152, 64, cpu) == 4  # 1024 candidates: fill-bound
    assert dt.num_cache_splits(512, 1152, 64, cpu) == 1  # many users: the grid is full
    assert dt.num_cache_splits(1, 10**6, 64, cpu) == dt._MAX_SPLITS
    assert dt.num_cache_splits(4, 100, 64, cpu) == 1  # a short cache: one split
    monkeypatch.delenv(dt.SPLITS_ENV, raising=False)
    assert dt.forced_cache_splits() is None
    monkeypatch.setenv(dt.SPLITS_ENV, "3")
    assert dt.forced_cache_splits() == 3
    for bad in ("0", "17", "two", "-1"):
        monkeypatch.setenv(dt.SPLITS_ENV, bad)
        with pytest.raises(ValueError, match=f"ULTRA_HSTU_DELTA_SPLITS={bad!r}"):
            dt.forced_cache_splits()


@needs_triton
@pytest.mark.parametrize("splits", [None, 2, 5])
def test_split_k_reads_a_cache_longer_than_the_bound_it_was_sized_for(splits):
    """A bounded spec sizes the splits for prefix + k1 kept keys; a cache that kept every row
    (40 > 2 + 8) must still be read to its end: its last rows are the ones the window sees."""
    from ultra_hstu_plugin.kernels.sla_attention.delta_triton import (
        delta_sla_attention_split_triton_fwd,
    )

    spec = SLAMaskSpec(k1=8, k2=2)
    assert bounded_cache(spec)
    args, want = build_case(spec, [40], [6], [6], [None], seed=3)
    sargs = tuple(a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in split_args(args))
    assert sargs[3].shape[0] == 40  # every cached row kept
    config = {"BLOCK_M": 16, "BLOCK_N": 16, "num_splits": splits}
    poisoned = torch.full((6, 2, 16), float("nan"), device=DEVICE)
    got = delta_sla_attention_split_triton_fwd(*sargs, config=config, out=poisoned)
    assert _rel_err(got.cpu(), want) < TOL
