# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Our semantics pinned to GR's: layer outputs, gradients and masks, float32, PYTORCH kernel."""

import pytest
import torch
from generative_recommenders.common import HammerKernel
from generative_recommenders.modules.stu import STULayer, STULayerConfig
from generative_recommenders.ops.pytorch.pt_hstu_attention import (
    _get_valid_attn_mask,
    pytorch_hstu_mha,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from ultra_hstu_plugin.kernels.sla_attention.mask import SLAMaskSpec, sla_mask
from ultra_hstu_plugin.kernels.sla_attention.reference import sla_attention_reference
from ultra_hstu_plugin.modules.ultra_stu import UltraHSTULayer

# In the GPU machine's selection too (benchmarks/gpu_integration_tests.sh): there GR's
# PyTorch references run with the CUDA fbgemm build; the tensors stay on the CPU.
pytestmark = pytest.mark.gpu


@st.composite
def jagged(draw, max_len=24):
    c = draw(st.integers(0, 2))
    B = draw(st.integers(1, 4))
    lengths = [draw(st.integers(c + 1, max_len)) for _ in range(B)]
    targets = [draw(st.integers(0, min(4, n - c))) for n in lengths]
    return c, torch.tensor(lengths), torch.tensor(targets)


def _offsets(lengths):
    return torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])


@settings(max_examples=25, deadline=None)
@given(batch=jagged(), seed=st.integers(0, 2**16), dropout=st.sampled_from([0.0, 0.3]))
def test_full_causal_layer_equals_gr_stulayer(batch, seed, dropout):
    c, lengths, targets = batch
    torch.manual_seed(seed)
    cfg = STULayerConfig(
        embedding_dim=16,
        num_heads=2,
        hidden_dim=8,
        attention_dim=8,
        output_dropout_ratio=dropout,
        contextual_seq_len=c,
    )
    gr, ours = STULayer(cfg), UltraHSTULayer(cfg, k1=0)
    ours.load_state_dict(gr.state_dict())
    for m in (gr, ours):
        m.set_hammer_kernel(HammerKernel.PYTORCH)
    x = torch.randn(int(lengths.sum()), 16, requires_grad=True)
    kwargs = dict(
        x_lengths=lengths,
        x_offsets=_offsets(lengths),
        max_seq_len=int(lengths.max()),
        num_targets=targets,
    )
    torch.manual_seed(seed + 1)
    y_gr = gr(x=x, **kwargs)
    torch.manual_seed(seed + 1)
    y_ours = ours(x=x, **kwargs)
    torch.testing.assert_close(y_ours, y_gr, rtol=0, atol=0)
    g = torch.randn_like(y_gr)
    gx_gr, *gw_gr = torch.autograd.grad(y_gr, [x, *gr.parameters()], g)
    gx_ours, *gw_ours = torch.autograd.grad(y_ours, [x, *ours.parameters()], g)
    torch.testing.assert_close(gx_ours, gx_gr, rtol=1e-6, atol=1e-6)
    for a, b in zip(gw_ours, gw_gr):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(batch=jagged(), k1=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_windowed_layer_equals_gr_local_mask(batch, k1, seed):
    """k1 = GR's max_attn_len, k2 = 0, no contextual tokens: GR's local mask exactly."""
    _, lengths, targets = batch
    torch.manual_seed(seed)
    cfg = STULayerConfig(
        embedding_dim=16, num_heads=2, hidden_dim=8, attention_dim=8, output_dropout_ratio=0.0
    )
    gr_cfg = STULayerConfig(**{**cfg.__dict__, "max_attn_len": k1})
    gr, ours = STULayer(gr_cfg), UltraHSTULayer(cfg, k1=k1, target_mode="window")
    ours.load_state_dict(gr.state_dict())
    for m in (gr, ours):
        m.set_hammer_kernel(HammerKernel.PYTORCH)
    x = torch.randn(int(lengths.sum()), 16)
    kwargs = dict(
        x_lengths=lengths,
        x_offsets=_offsets(lengths),
        max_seq_len=int(lengths.max()),
        num_targets=targets,
    )
    torch.testing.assert_close(ours(x=x, **kwargs), gr(x=x, **kwargs), rtol=0, atol=0)


@settings(max_examples=60, deadline=None)
@given(batch=jagged(max_len=20), k1=st.integers(0, 6), tail=st.integers(0, 3))
def test_mask_equals_gr_where_gr_can_express_it(batch, k1, tail):
    c, lengths, targets = batch
    if k1 > 0 and c > 0:
        c = 0  # GR keeps contextual tokens inside the window; ours makes them global
    if k1 == 0:
        tail = 0
    N = int(lengths.max())
    ours = sla_mask(
        lengths, N, SLAMaskSpec(k1=k1, contextual_seq_len=c, full_attn_tail=tail), targets
    )
    gr = _get_valid_attn_mask(torch.device("cpu"), True, N, lengths, targets, k1, c, tail)
    in_seq = torch.arange(N).view(1, -1) < lengths.view(-1, 1)
    gr = gr.expand(len(lengths), -1, -1) & in_seq.unsqueeze(2) & in_seq.unsqueeze(1)
    assert torch.equal(ours, gr)


@settings(max_examples=20, deadline=None)
@given(batch=jagged(), k1=st.integers(0, 5), seed=st.integers(0, 2**16))
def test_reference_attention_equals_gr_pytorch_hstu_mha(batch, k1, seed):
    _, lengths, targets = batch
    g = torch.Generator().manual_seed(seed)
    total = int(lengths.sum())
    q, k, v = (torch.randn(total, 2, 8, generator=g) for _ in range(3))
    offsets = _offsets(lengths)
    N = int(lengths.max()) + 1
    got = sla_attention_reference(q, k, v, offsets, N, 0.3, SLAMaskSpec(k1=k1), targets)
    want = pytorch_hstu_mha(N, 0.3, q, k, v, offsets, num_targets=targets, max_attn_len=k1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@st.composite
def jagged_any_targets(draw, max_len=20):
    """Like ``jagged`` but candidates may overlap the contextual tokens (num_targets > L - c)."""
    c = draw(st.integers(0, 3))
    B = draw(st.integers(1, 4))
    lengths = [draw(st.integers(1, max_len)) for _ in range(B)]
    targets = [draw(st.integers(0, n)) for n in lengths]
    return c, torch.tensor(lengths), torch.tensor(targets)


@settings(max_examples=80, deadline=None)
@given(batch=jagged_any_targets(), k1=st.integers(0, 6), tail=st.integers(0, 3))
def test_mask_equals_gr_with_gr_contextual_convention(batch, k1, tail):
    """contextual_in_prefix=False, k2 = 0: GR's _get_valid_attn_mask exactly, contextual tokens
    and every candidate count included."""
    c, lengths, targets = batch
    if k1 == 0:
        tail = 0
    N = int(lengths.max())
    spec = SLAMaskSpec(k1=k1, contextual_seq_len=c, full_attn_tail=tail, contextual_in_prefix=False)
    ours = sla_mask(lengths, N, spec, targets)
    gr = _get_valid_attn_mask(torch.device("cpu"), True, N, lengths, targets, k1, c, tail)
    in_seq = torch.arange(N).view(1, -1) < lengths.view(-1, 1)
    gr = gr.expand(len(lengths), -1, -1) & in_seq.unsqueeze(2) & in_seq.unsqueeze(1)
    assert torch.equal(ours, gr)


@settings(max_examples=40, deadline=None)
@given(batch=jagged_any_targets(), seed=st.integers(0, 2**16))
def test_full_causal_mask_equals_gr_for_any_candidate_count(batch, seed):
    """k1 = 0 (both conventions agree): GR's mask even when candidates overlap the contextual
    tokens, the case where our contextual rows used to lose their diagonal."""
    c, lengths, targets = batch
    N = int(lengths.max())
    for in_prefix in (True, False):
        spec = SLAMaskSpec(contextual_seq_len=c, contextual_in_prefix=in_prefix)
        ours = sla_mask(lengths, N, spec, targets)
        gr = _get_valid_attn_mask(torch.device("cpu"), True, N, lengths, targets, 0, c, 0)
        in_seq = torch.arange(N).view(1, -1) < lengths.view(-1, 1)
        gr = gr.expand(len(lengths), -1, -1) & in_seq.unsqueeze(2) & in_seq.unsqueeze(1)
        assert torch.equal(ours, gr), in_prefix


def test_candidate_over_contextual_token_sees_itself_as_in_gr():
    # lengths [1], num_targets [1], contextual_seq_len 1, k1 = k2 = 0: GR's pytorch_hstu_mha
    # gives a non-zero row (the token sees itself); ours gave exactly 0 before the fix.
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 8, generator=g) for _ in range(3))
    offsets, targets = torch.tensor([0, 1]), torch.tensor([1])
    spec = SLAMaskSpec(contextual_seq_len=1)
    got = sla_attention_reference(q, k, v, offsets, 1, 0.3, spec, targets)
    want = pytorch_hstu_mha(1, 0.3, q, k, v, offsets, num_targets=targets, contextual_seq_len=1)
    assert want.abs().sum() > 0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(batch=jagged(), k1=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_windowed_layer_with_contextual_tokens_equals_gr_in_gr_convention(batch, k1, seed):
    """contextual_in_prefix=False: GR's STULayer with max_attn_len = k1 and contextual tokens,
    bit for bit (the claim README makes)."""
    c, lengths, targets = batch
    torch.manual_seed(seed)
    cfg = STULayerConfig(
        embedding_dim=16,
        num_heads=2,
        hidden_dim=8,
        attention_dim=8,
        output_dropout_ratio=0.0,
        contextual_seq_len=c,
    )
    gr_cfg = STULayerConfig(**{**cfg.__dict__, "max_attn_len": k1})
    gr = STULayer(gr_cfg)
    ours = UltraHSTULayer(cfg, k1=k1, target_mode="window", contextual_in_prefix=False)
    ours.load_state_dict(gr.state_dict())
    for m in (gr, ours):
        m.set_hammer_kernel(HammerKernel.PYTORCH)
    x = torch.randn(int(lengths.sum()), 16)
    kwargs = dict(
        x_lengths=lengths,
        x_offsets=_offsets(lengths),
        max_seq_len=int(lengths.max()),
        num_targets=targets,
    )
    torch.testing.assert_close(ours(x=x, **kwargs), gr(x=x, **kwargs), rtol=0, atol=0)
