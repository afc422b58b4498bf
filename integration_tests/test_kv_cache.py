# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""KV-cached inference through GR's interface: cached scoring equals full recompute (fp32,
CPU; PyTorch reference and the Triton delta kernel under the interpreter), the bounded cache
holds exactly the documented rows, and bad calls fail naming the user and the value."""

import pytest
import torch
from generative_recommenders.common import HammerKernel
from generative_recommenders.modules.stu import STULayer, STULayerConfig, STUStack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ultra_hstu_plugin.kernels import ops
from ultra_hstu_plugin.modules import ultra_stu
from ultra_hstu_plugin.modules.kv_cache import KVCacheError, cache_bytes_per_user
from ultra_hstu_plugin.modules.ultra_stu import UltraHSTULayer

DIM, HEADS, ATTN, HIDDEN = 16, 2, 16, 16


def _offsets(lengths):
    return torch.cat([torch.zeros(1, dtype=torch.long), torch.as_tensor(lengths).cumsum(0)])


def _layers(n, c, seed, **sla):
    torch.manual_seed(seed)
    cfg = STULayerConfig(
        embedding_dim=DIM, num_heads=HEADS, hidden_dim=HIDDEN, attention_dim=ATTN,
        output_dropout_ratio=0.0, contextual_seq_len=c,
    )  # fmt: skip
    layers = [UltraHSTULayer(cfg, is_inference=True, **sla) for _ in range(n)]
    stack = STUStack(stu_list=layers, is_inference=True)
    stack.recursive_setattr("_hammer_kernel", HammerKernel.PYTORCH)
    return stack.eval(), layers


def _split(x, lengths, tail):
    """Rows of each user before and in its last ``tail[b]`` rows."""
    head_rows, tail_rows = [], []
    start = 0
    for n, t in zip(lengths, tail):
        head_rows += range(start, start + n - t)
        tail_rows += range(start + n - t, start + n)
        start += n
    return x[torch.tensor(head_rows, dtype=torch.long)], x[
        torch.tensor(tail_rows, dtype=torch.long)
    ]


def _run(stack, c, history, appended, M, seed):
    """Full recompute vs cache(history) -> [append events] -> score M candidates.

    Returns (cached candidate outputs, full recompute's candidate rows)."""
    B = len(history)
    lengths = [c + h + appended + M for h in history]
    N = max(lengths)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(lengths), DIM, generator=g)
    nt = torch.full((B,), M)
    with torch.inference_mode():
        full = stack(x=x, x_lengths=torch.tensor(lengths), x_offsets=_offsets(lengths),
                     max_seq_len=N, num_targets=nt)  # fmt: skip
        _, want = _split(full, lengths, [M] * B)
        rest, cands = _split(x, lengths, [M] * B)
        prime, events = _split(rest, [n - M for n in lengths], [appended] * B)
        n = torch.tensor([c + h for h in history])
        # GR normalises a cached call by max_kv_caching_len + new rows: keep it at N
        first_delta = appended or M
        stack(x=prime, x_lengths=n, x_offsets=_offsets(n), max_seq_len=N,
              num_targets=torch.zeros(B, dtype=torch.long), max_kv_caching_len=N - first_delta,
              kv_caching_lengths=n)  # fmt: skip
        if appended:
            stack.cached_forward(delta_x=events, num_targets=torch.zeros(B, dtype=torch.long),
                                 max_kv_caching_len=N - M, kv_caching_lengths=n + appended)  # fmt: skip
        got = stack.cached_forward(delta_x=cands, num_targets=nt)
    return got, want


@st.composite
def cases(draw):
    c = draw(st.sampled_from([0, 0, 1, 3]))
    mode = draw(st.sampled_from(["window", "history"]))
    sla = dict(
        k1=draw(st.sampled_from([0, 1, 4, 7])),
        k2=draw(st.sampled_from([0, 2, 5])),
        target_mode=mode,
        full_attn_tail=draw(st.sampled_from([0, 0, 0, 2])),
        contextual_in_prefix=draw(st.booleans()),
    )
    B = draw(st.integers(1, 3))
    history = [draw(st.integers(1, 30)) for _ in range(B)]
    appended = draw(st.sampled_from([0, 0, 1, 5]))
    M = draw(st.integers(1, 6))
    # Exact for appended events only where no earlier row's output depends on later rows:
    # contextual rows see the whole history and tail rows move as it grows (as in GR), so with
    # those an append is exact for the first layer only.
    layers = 1 if appended and (c or sla["full_attn_tail"]) else draw(st.sampled_from([1, 2]))
    return c, sla, history, appended, M, layers, draw(st.integers(0, 2**16))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_cached_scoring_equals_full_recompute(case):
    c, sla, history, appended, M, n_layers, seed = case
    stack, _ = _layers(n_layers, c, seed, **sla)
    got, want = _run(stack, c, history, appended, M, seed)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not ops.triton_interpreting(), reason="needs TRITON_INTERPRET=1")
@pytest.mark.parametrize(
    "c, sla, appended",
    [
        (2, dict(k1=4, k2=3), 0),
        (0, dict(k1=3, k2=2, target_mode="history"), 3),
        (1, dict(k1=0), 0),
        (3, dict(k1=5, contextual_in_prefix=False), 0),
    ],
)
def test_cached_scoring_with_the_triton_kernels_under_the_interpreter(
    monkeypatch, c, sla, appended
):
    # Layers dispatch HammerKernel.TRITON to CUDA only; here both attentions (full and delta)
    # run the Triton kernels in the interpreter, GR's projections stay on PyTorch.
    monkeypatch.setattr(
        ultra_stu, "backend_for", lambda kernel, device, op="sla_attention": "triton"
    )
    stack, _ = _layers(2 if not appended else 1, c, 7, **sla)
    got, want = _run(stack, c, [20, 9, 31], appended, 4, seed=3)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "sla, bounded",
    [
        (dict(k1=8, k2=4), True),
        (dict(k1=8, k2=1), True),  # prefix = the 3 contextual tokens
        (dict(k1=0, k2=4), False),  # full causal: everything, like GR
        (dict(k1=8, k2=4, target_mode="history"), False),
        (dict(k1=8, k2=4, full_attn_tail=2), False),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cache_bytes_per_user_equal_the_formula(sla, bounded, dtype):
    c = 3
    stack, layers = _layers(2, c, 0, **sla)
    stack = stack.to(dtype)
    history = [0, 5, 9, 40, 300]
    n = torch.tensor([c + h for h in history])
    x = torch.randn(int(n.sum()), DIM, dtype=dtype)
    with torch.inference_mode():
        stack(x=x, x_lengths=n, x_offsets=_offsets(n), max_seq_len=int(n.max()),
              num_targets=torch.zeros(5, dtype=torch.long), kv_caching_lengths=n)  # fmt: skip
    item = torch.finfo(dtype).bits // 8
    P = max(sla["k2"], c)
    kept = torch.clamp(n, max=P + sla["k1"]) if bounded else n  # written out independently
    want = kept * HEADS * (ATTN + HIDDEN) * item
    for layer in layers:
        got = layer.kv_cache_bytes_per_user()
        assert torch.equal(got, want), (got, want)
        assert torch.equal(got, cache_bytes_per_user(n, layer.sla, HEADS, ATTN, HIDDEN, item))
        cache = layer.kv_cache
        assert int(got.sum()) == cache.k.numel() * item + cache.v.numel() * item
    if bounded:  # the longest user: (P + k1) / L of GR's full cache
        assert int(want[-1]) * n[-1] == (P + sla["k1"]) * int(
            n[-1] * HEADS * (ATTN + HIDDEN) * item
        )


def test_cached_candidates_are_not_kept_and_gr_test_pattern_matches_gr():
    """GR's own test: the prime forward caches some candidates too; the new rows are the rest.
    Full causal (k1 = 0): our cached outputs equal GR's STULayer cached outputs."""
    c, M, extra = 2, 3, 2
    torch.manual_seed(5)
    cfg = STULayerConfig(embedding_dim=DIM, num_heads=HEADS, hidden_dim=HIDDEN,
                         attention_dim=ATTN, output_dropout_ratio=0.0, contextual_seq_len=c)  # fmt: skip
    gr, ours = STULayer(cfg, is_inference=True), UltraHSTULayer(cfg, is_inference=True)
    ours.load_state_dict(gr.state_dict())
    lengths = [c + 10 + M + extra, c + 4 + M + extra]
    N = max(lengths)
    x = torch.randn(sum(lengths), DIM)
    nt = torch.full((2,), M + extra)
    outs = []
    for m in (gr, ours):
        m.set_hammer_kernel(HammerKernel.PYTORCH)
        m.eval()
        with torch.inference_mode():
            prime, delta = _split(x, lengths, [M, M])
            pl = torch.tensor(lengths) - M
            m(x=prime, x_lengths=pl, x_offsets=_offsets(pl), max_seq_len=N,
              num_targets=nt - M, max_kv_caching_len=N - M, kv_caching_lengths=pl)  # fmt: skip
            outs.append(m.cached_forward(delta_x=delta, num_targets=nt))
            full = m(x=x, x_lengths=torch.tensor(lengths), x_offsets=_offsets(lengths),
                     max_seq_len=N, num_targets=nt)  # fmt: skip
            torch.testing.assert_close(outs[-1], _split(full, lengths, [M, M])[1])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    # the cached candidates are dropped: only history (and contextual) rows are kept
    assert ours.kv_cache.offsets.tolist() == [0, c + 10, c + 10 + c + 4]


def _filled(k1=4, k2=2, c=1, users=(12, 7)):
    stack, layers = _layers(1, c, 1, k1=k1, k2=k2)
    n = torch.tensor(users)
    x = torch.randn(int(n.sum()), DIM)
    with torch.inference_mode():
        stack(x=x, x_lengths=n, x_offsets=_offsets(n), max_seq_len=int(n.max()) + 4,
              num_targets=torch.zeros(len(users), dtype=torch.long), kv_caching_lengths=n)  # fmt: skip
    return layers[0], n


def test_bad_cached_calls_name_the_user_and_the_value():
    layer, n = _filled()
    delta = torch.randn(2 * 3, DIM)
    nt = torch.full((2,), 3)
    fresh, _ = _layers(1, 1, 1, k1=4, k2=2)
    with pytest.raises(KVCacheError, match="cached_forward called with no KV cache"):
        fresh.cached_forward(delta_x=delta, num_targets=nt)
    with pytest.raises(KVCacheError, match="delta_x has 5 rows for the 2 cached users"):
        layer.cached_forward(delta_x=delta[:5], num_targets=nt)
    # appended rows overflow the new rows given / the declared max length
    with pytest.raises(KVCacheError, match=r"user 1: kv_caching_lengths=11 is outside \[7 .*, 10"):
        layer.cached_forward(delta_x=delta, num_targets=torch.zeros(2, dtype=torch.long),
                             kv_caching_lengths=n + torch.tensor([0, 4]))  # fmt: skip
    with pytest.raises(
        KVCacheError, match="user 0: kv_caching_lengths=14 overflows max_kv_caching_len=13"
    ):
        layer.cached_forward(delta_x=delta, num_targets=torch.zeros(2, dtype=torch.long),
                             max_kv_caching_len=13, kv_caching_lengths=n + 2)  # fmt: skip
    with pytest.raises(ValueError, match=r"user 1 num_targets=5 makes kept cached rows"):
        layer.cached_forward(delta_x=delta, num_targets=torch.tensor([3, 5]))
    # a cache built under another mask
    other, _ = _filled(k1=8, k2=2)
    with pytest.raises(
        KVCacheError, match=r"another configuration \(spec: cache .*k1=8.* vs layer .*k1=4"
    ):
        layer.set_kv_cache(other.kv_cache)
    layer.sla = type(layer.sla)(k1=4, k2=3, contextual_seq_len=1)  # reconfigured after filling
    with pytest.raises(KVCacheError, match=r"k2=2.* vs layer .*k2=3"):
        layer.cached_forward(delta_x=delta, num_targets=nt)
    # a user with nothing cached (or not every contextual token)
    empty, _ = _filled(users=(12, 0))
    with pytest.raises(KVCacheError, match=r"user 1 has no usable KV cache: kv_caching_lengths=0"):
        empty.cached_forward(delta_x=delta, num_targets=nt)
    with pytest.raises(KVCacheError, match=r"user 0: kv_caching_lengths=13 is outside"):
        _filled_with(n_cache=torch.tensor([13, 7]))


def _filled_with(n_cache):
    stack, _ = _layers(1, 1, 1, k1=4, k2=2)
    n = torch.tensor([12, 7])
    stack(x=torch.randn(19, DIM), x_lengths=n, x_offsets=_offsets(n), max_seq_len=12,
          num_targets=torch.zeros(2, dtype=torch.long), kv_caching_lengths=n_cache)  # fmt: skip


def test_reset_and_appends_keep_the_cache_bounded():
    layer, n = _filled(k1=4, k2=2, c=1, users=(12, 7))
    assert layer.kv_cache_bytes_per_user().tolist() == [6 * 64 * 4, 6 * 64 * 4]
    with torch.inference_mode():
        layer.cached_forward(delta_x=torch.randn(2 * 5, DIM), num_targets=torch.zeros(2, dtype=torch.long),
                             max_kv_caching_len=20, kv_caching_lengths=n + 5)  # fmt: skip
    cache = layer.kv_cache
    assert cache.lengths.tolist() == [17, 12] and cache.max_len == 20
    assert (cache.offsets[1:] - cache.offsets[:-1]).tolist() == [6, 6]
    layer.reset_kv_cache()
    assert layer.kv_cache is None and layer.k_cache is None


def _truncated_stack(c, Lp, seed, lower=None, upper=None):
    from ultra_hstu_plugin.modules.truncation import TruncatedSTU

    lower = lower or dict(k1=4, k2=2)
    upper = upper or dict(k1=3, k2=1)
    low, low_layers = _layers(1, c, seed, **lower)
    up, up_layers = _layers(2, c, seed + 1, **upper)
    trunc = TruncatedSTU(up, truncated_seq_len=Lp, is_inference=True, contextual_seq_len=c)
    stack = STUStack(stu_list=[*low_layers, trunc], is_inference=True).eval()
    return stack, trunc, up_layers


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    c=st.sampled_from([0, 2]),
    Lp=st.sampled_from([3, 8]),
    history=st.lists(st.integers(1, 20), min_size=1, max_size=3),
    M=st.integers(1, 4),
    mode=st.sampled_from(["window", "history"]),
    seed=st.integers(0, 2**16),
)
def test_truncated_stack_cached_scoring_equals_full_recompute(c, Lp, history, M, mode, seed):
    stack, trunc, upper = _truncated_stack(
        c,
        Lp,
        seed,
        lower=dict(k1=4, k2=2, target_mode=mode),
        upper=dict(k1=3, k2=1, target_mode=mode),
    )
    got, want = _run(stack, c, history, 0, M, seed)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for layer in upper:  # the upper caches hold the kept tokens: at most contextual + L'
        kept = layer.kv_cache.lengths
        assert torch.equal(kept, torch.tensor([c + min(h, Lp) for h in history]))


def test_truncated_stack_refuses_appends_and_missing_cache():
    stack, trunc, _ = _truncated_stack(1, 4, 0)
    delta = torch.randn(6, DIM)
    with pytest.raises(KVCacheError, match="TruncatedSTU.cached_forward called with no KV cache"):
        trunc.cached_forward(delta_x=delta, num_targets=torch.full((2,), 3))
    n = torch.tensor([9, 5])
    with torch.inference_mode():
        stack(x=torch.randn(14, DIM), x_lengths=n, x_offsets=_offsets(n), max_seq_len=12,
              num_targets=torch.zeros(2, dtype=torch.long), kv_caching_lengths=n)  # fmt: skip
        with pytest.raises(NotImplementedError, match="user 1: num_targets=1 < 3 new rows"):
            stack.cached_forward(delta_x=delta, num_targets=torch.tensor([3, 1]))
        with pytest.raises(NotImplementedError, match="user 0: num_targets=3 in an append"):
            trunc.cached_forward(delta_x=delta, num_targets=torch.full((2,), 3),
                                 kv_caching_lengths=n + 3)  # fmt: skip
        with pytest.raises(NotImplementedError, match="user 1: kv_caching_lengths=7, but a"):
            trunc.cached_forward(delta_x=delta, num_targets=torch.zeros(2, dtype=torch.long),
                                 kv_caching_lengths=torch.tensor([12, 7]))  # fmt: skip


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    Lp=st.sampled_from([3, 8]),
    history=st.lists(st.integers(1, 20), min_size=1, max_size=3),
    appended=st.sampled_from([1, 3, 9]),
    M=st.integers(1, 4),
    lower_layers=st.sampled_from([1, 2]),
    mode=st.sampled_from(["window", "history"]),
    seed=st.integers(0, 2**16),
)
def test_truncated_stack_appends_equal_full_recompute(
    Lp, history, appended, M, lower_layers, mode, seed
):
    """Cache the history, append events (the kept L' window slides; 9 > L' drops some of
    them from the upper layers' view), score candidates: equal to the full recompute.  No
    contextual rows: their lower outputs see the whole history (see the SLA cases above)."""
    from ultra_hstu_plugin.modules.truncation import TruncatedSTU

    _, low = _layers(lower_layers, 0, seed, k1=4, k2=2, target_mode=mode)
    up, up_layers = _layers(2, 0, seed + 1, k1=3, k2=1, target_mode=mode)
    trunc = TruncatedSTU(up, truncated_seq_len=Lp, is_inference=True, contextual_seq_len=0)
    stack = STUStack(stu_list=[*low, trunc], is_inference=True).eval()
    got, want = _run(stack, 0, history, appended, M, seed)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for layer in up_layers:  # the refilled upper caches hold the slid window
        kept = layer.kv_cache.lengths
        assert torch.equal(kept, torch.tensor([min(h + appended, Lp) for h in history]))


def test_truncated_stack_two_appends_then_scoring_equal_full_recompute():
    from ultra_hstu_plugin.modules.truncation import TruncatedSTU

    _, low = _layers(2, 0, 5, k1=4, k2=2)
    up, _ = _layers(2, 0, 6, k1=3, k2=1)
    trunc = TruncatedSTU(up, truncated_seq_len=6, is_inference=True, contextual_seq_len=0)
    stack = STUStack(stu_list=[*low, trunc], is_inference=True).eval()
    history, first, second, M = [11, 4], 2, 5, 3
    B = len(history)
    lengths = [h + first + second + M for h in history]
    N = max(lengths)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(sum(lengths), DIM, generator=g)
    nt = torch.full((B,), M)
    zeros = torch.zeros(B, dtype=torch.long)
    with torch.inference_mode():
        full = stack(x=x, x_lengths=torch.tensor(lengths), x_offsets=_offsets(lengths),
                     max_seq_len=N, num_targets=nt)  # fmt: skip
        _, want = _split(full, lengths, [M] * B)
        rest, cands = _split(x, lengths, [M] * B)
        rest_len = [n - M for n in lengths]
        head, ev2 = _split(rest, rest_len, [second] * B)
        prime, ev1 = _split(head, [n - second for n in rest_len], [first] * B)
        n = torch.tensor(history)
        stack(x=prime, x_lengths=n, x_offsets=_offsets(n), max_seq_len=N, num_targets=zeros,
              max_kv_caching_len=N - first, kv_caching_lengths=n)  # fmt: skip
        stack.cached_forward(delta_x=ev1, num_targets=zeros, max_kv_caching_len=N - second,
                             kv_caching_lengths=n + first)  # fmt: skip
        stack.cached_forward(delta_x=ev2, num_targets=zeros, max_kv_caching_len=N - M,
                             kv_caching_lengths=n + first + second)  # fmt: skip
        for _ in range(2):  # scoring twice leaves the caches as they were
            got = stack.cached_forward(delta_x=cands, num_targets=nt)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["pytorch", "triton"])
def test_repeated_cached_calls_equal_full_recompute(monkeypatch, backend):
    """Cache the history, append events twice, score the candidates twice: every cached
    call's rows equal the full recompute's rows at the same positions, and every layer of the
    stack shares one index (one DeltaLayout per call, built by the first layer)."""
    if backend == "triton":
        if not ops.triton_interpreting():
            pytest.skip("needs TRITON_INTERPRET=1")
        monkeypatch.setattr(
            ultra_stu, "backend_for", lambda kernel, device, op="sla_attention": "triton"
        )
    stack, layers = _layers(2, 0, 11, k1=4, k2=2)
    history, e1, e2, M = [9, 14], 3, 2, 4
    B = len(history)
    lengths = [h + e1 + e2 + M for h in history]
    N = max(lengths)
    x = torch.randn(sum(lengths), DIM, generator=torch.Generator().manual_seed(4))
    nt = torch.full((B,), M)
    zeros = torch.zeros(B, dtype=torch.long)
    with torch.inference_mode():
        full = stack(x=x, x_lengths=torch.tensor(lengths), x_offsets=_offsets(lengths),
                     max_seq_len=N, num_targets=nt)  # fmt: skip
        rest, cands = _split(x, lengths, [M] * B)
        _, want_c = _split(full, lengths, [M] * B)
        full_rest, _ = _split(full, lengths, [M] * B)
        before_e2, ev2 = _split(rest, [n - M for n in lengths], [e2] * B)
        prime, ev1 = _split(before_e2, [h + e1 for h in history], [e1] * B)
        fb_e2, want_e2 = _split(full_rest, [n - M for n in lengths], [e2] * B)
        _, want_e1 = _split(fb_e2, [h + e1 for h in history], [e1] * B)
        n = torch.tensor(history)
        # each call normalises by max_kv_caching_len + its new rows = N, as the full recompute
        stack(x=prime, x_lengths=n, x_offsets=_offsets(n), max_seq_len=N, num_targets=zeros,
              max_kv_caching_len=N - e1, kv_caching_lengths=n)  # fmt: skip
        got_e1 = stack.cached_forward(delta_x=ev1, num_targets=zeros, max_kv_caching_len=N - e2,
                                      kv_caching_lengths=n + e1)  # fmt: skip
        got_e2 = stack.cached_forward(delta_x=ev2, num_targets=zeros, max_kv_caching_len=N - M,
                                      kv_caching_lengths=n + e1 + e2)  # fmt: skip
        got_c = [stack.cached_forward(delta_x=cands, num_targets=nt) for _ in range(3)]
    tol = dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_e1, want_e1, **tol)
    torch.testing.assert_close(got_e2, want_e2, **tol)
    for got in got_c:
        torch.testing.assert_close(got, want_c, **tol)
    torch.testing.assert_close(got_c[1], got_c[0], rtol=0, atol=0)  # the reused layout
    index = layers[0].kv_cache.index
    assert all(layer.kv_cache.index is index for layer in layers)
    assert list(index.layouts) == [(M, layers[0].sla)]
    assert index.host_lengths == [h + e1 + e2 for h in history]
