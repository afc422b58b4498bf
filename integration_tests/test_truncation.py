# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""TruncatedSTU against GR's L2STU: same kept tokens, same outputs, same gradients."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ultra_hstu_plugin.host import L2STU, HammerKernel, STULayer, STULayerConfig, STUStack
from ultra_hstu_plugin.modules.truncation import TruncatedSTU, truncation_plan


@st.composite
def batches(draw, max_len=40):
    ctx = draw(st.integers(0, 3))
    B = draw(st.integers(1, 5))
    lengths = [draw(st.integers(ctx + 1, max_len)) for _ in range(B)]
    targets = [draw(st.integers(0, min(5, n - ctx))) for n in lengths]
    keep = draw(st.integers(1, max_len))
    return ctx, torch.tensor(lengths), torch.tensor(targets), keep


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])


def _upper(ctx: int, seed: int) -> STUStack:
    torch.manual_seed(seed)
    cfg = STULayerConfig(
        embedding_dim=16,
        num_heads=2,
        hidden_dim=8,
        attention_dim=8,
        output_dropout_ratio=0.0,
        contextual_seq_len=ctx,
    )
    stack = STUStack([STULayer(cfg), STULayer(cfg)])
    stack.set_hammer_kernel(HammerKernel.PYTORCH)
    return stack


@settings(max_examples=30, deadline=None)
@given(batch=batches(), seed=st.integers(0, 2**16))
def test_truncated_stu_equals_l2stu_fwd_bwd(batch, seed):
    ctx, lengths, targets, keep = batch
    upper = _upper(ctx, seed)
    ours = TruncatedSTU(upper, truncated_seq_len=keep, is_inference=False, contextual_seq_len=ctx)
    gr = L2STU(upper, max_l2_len=keep, is_inference=False, contextual_seq_len=ctx)
    for m in (ours, gr):
        m.set_hammer_kernel(HammerKernel.PYTORCH)
    x = torch.randn(int(lengths.sum()), 16)
    grad = torch.randn_like(x)
    kwargs = dict(
        x_lengths=lengths,
        x_offsets=_offsets(lengths),
        max_seq_len=int(lengths.max()),
        num_targets=targets,
    )
    results = []
    for m in (ours, gr):
        xi = x.clone().requires_grad_()
        y = m(x=xi, **kwargs)
        y.backward(grad)
        results.append((y.detach(), xi.grad, [p.grad.clone() for p in upper.parameters()]))
        upper.zero_grad(set_to_none=True)
    (y_ours, dx_ours, dw_ours), (y_gr, dx_gr, dw_gr) = results
    torch.testing.assert_close(y_ours, y_gr, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx_ours, dx_gr, rtol=1e-5, atol=1e-5)
    for a, b in zip(dw_ours, dw_gr):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the dropped history really passes through untouched (and the kept part changed)
    plan = truncation_plan(lengths, _offsets(lengths), targets, keep, ctx)
    untouched = torch.ones(x.shape[0], dtype=torch.bool)
    untouched[plan.rows] = False
    torch.testing.assert_close(y_ours[untouched], x[untouched], rtol=0, atol=0)
    assert not torch.allclose(y_ours[plan.rows], x[plan.rows])


def test_plan_keeps_contextual_then_last_tokens():
    # two sequences: 10 tokens (2 contextual, 3 targets) and 4 tokens; keep 2 history tokens
    lengths = torch.tensor([10, 4])
    plan = truncation_plan(lengths, _offsets(lengths), torch.tensor([3, 1]), 2, 2)
    # seq 0: contextual 0,1; history 2..6 -> last two 5,6; targets 7,8,9
    # seq 1 (offset 10): contextual 10,11; history 12 (kept: only 1 < 2); target 13
    assert plan.rows.tolist() == [0, 1, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert plan.lengths.tolist() == [7, 4]
    assert plan.offsets.tolist() == [0, 7, 11]
    assert (plan.max_len, plan.total) == (7, 11)


def test_empty_batch_and_bad_length():
    plan = truncation_plan(
        torch.zeros(0, dtype=torch.long), torch.zeros(1, dtype=torch.long), None, 4, 0
    )
    assert plan.total == 0 and plan.offsets.tolist() == [0]
    with pytest.raises(ValueError, match="truncated_seq_len"):
        TruncatedSTU(_upper(0, 0), truncated_seq_len=0, is_inference=False)


@pytest.mark.parametrize("recompute_truncated", [False, True])
def test_selective_recomputation_of_truncated_layers(recompute_truncated):
    from ultra_hstu_plugin.modules.encoder import build_ultra_hstu_encoder
    from ultra_hstu_plugin.modules.encoder_config import UltraHSTUEncoderConfig
    from ultra_hstu_plugin.modules.ultra_stu import UltraHSTULayer

    enc = UltraHSTUEncoderConfig(
        num_full_layers=1,
        num_truncated_layers=2,
        truncated_seq_len=8,
        k1=4,
        recompute_truncated_layers=recompute_truncated,
    )
    cfg = STULayerConfig(embedding_dim=16, num_heads=2, hidden_dim=8, attention_dim=8)
    stack = build_ultra_hstu_encoder(enc, cfg, is_inference=False, max_seq_len=32)
    (trunc,) = [m for m in stack.modules() if isinstance(m, TruncatedSTU)]
    upper = [m for m in trunc.modules() if isinstance(m, UltraHSTULayer)]
    full = [m for m in stack._stu_layers if isinstance(m, UltraHSTULayer)]
    assert len(upper) == 2 and len(full) == 1
    assert full[0]._recompute_uvqk and full[0]._recompute_y  # GR's defaults, kept
    for layer in upper:
        assert layer._recompute_uvqk == recompute_truncated
        assert layer._recompute_normed_x == recompute_truncated
        assert layer._recompute_y == recompute_truncated
