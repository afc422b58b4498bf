# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The FP8 path of the ULTRA-HSTU layer (uvqk + output projections, residual as 2D bias).

On CPU the FP8 GEMM runs through its PyTorch reference (same quantisation, same math);
the Triton kernel itself is tested in tests/kernels/test_fp8_gemm.py.
"""

import logging

import pytest
import torch

from ultra_hstu_plugin.host import HammerKernel, STULayerConfig
from ultra_hstu_plugin.modules import ultra_stu
from ultra_hstu_plugin.modules.ultra_stu import UltraHSTULayer


def _layers(dropout=0.0):
    cfg = STULayerConfig(
        embedding_dim=64, num_heads=2, hidden_dim=16, attention_dim=16, output_dropout_ratio=dropout
    )
    torch.manual_seed(0)
    fp8 = UltraHSTULayer(cfg, k1=8, k2=2, fp8=True)
    ref = UltraHSTULayer(cfg, k1=8, k2=2)
    ref.load_state_dict(fp8.state_dict())
    for m in (fp8, ref):
        m.set_hammer_kernel(HammerKernel.PYTORCH)
    fp8._fp8_backend = "pytorch"
    return fp8, ref


def _inputs():
    lengths = torch.tensor([30, 0, 45, 17])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    x = torch.randn(int(lengths.sum()), 64, requires_grad=True)
    return x, dict(
        x_lengths=lengths, x_offsets=offsets, max_seq_len=48, num_targets=torch.tensor([3, 0, 5, 2])
    )


def test_fp8_layer_matches_plain_layer_within_e4m3_error(monkeypatch):
    monkeypatch.setattr(ultra_stu, "fp8_supported", lambda device: True)
    fp8, ref = _layers()
    x, kw = _inputs()
    xb = x.detach().bfloat16().requires_grad_()
    y8, y = fp8(x=xb, **kw), ref(x=xb, **kw)  # the reference: the same layer in bf16
    rel = ((y8.float() - y.float()).norm() / y.float().norm()).item()
    assert rel < 3e-2, rel
    g = torch.randn_like(y)
    grads8 = torch.autograd.grad(y8, [xb, fp8._uvqk_weight, fp8._output_weight], g)
    grads = torch.autograd.grad(y, [xb, ref._uvqk_weight, ref._output_weight], g)
    errors = [
        ((a.float() - b.float()).norm() / b.float().norm()).item() for a, b in zip(grads8, grads)
    ]
    # e4m3 forward error (~2-3%) carried through attention into the gradients
    assert max(errors) < 8e-2, errors
    # the residual really goes through the fused 2D bias: zero weights leave x
    with torch.no_grad():
        fp8._output_weight.zero_()
    torch.testing.assert_close(
        fp8(x=x, **kw).float(), x.detach().bfloat16().float(), rtol=1e-2, atol=1e-2
    )


def test_fp8_falls_back_on_cpu_with_one_notice(caplog):
    fp8, ref = _layers()
    ultra_stu._fp8_fallback_logged = False
    x, kw = _inputs()
    with caplog.at_level(logging.WARNING):
        a, b = fp8(x=x, **kw), fp8(x=x, **kw)
    assert torch.equal(a, ref(x=x, **kw)) and torch.equal(a, b)
    notices = [r for r in caplog.records if "fp8=True" in r.getMessage()]
    assert len(notices) == 1


@pytest.mark.parametrize("flag", [True, False])
def test_encoder_config_switches_fp8(flag):
    from ultra_hstu_plugin.modules.encoder import build_ultra_hstu_encoder
    from ultra_hstu_plugin.modules.encoder_config import UltraHSTUEncoderConfig

    cfg = STULayerConfig(embedding_dim=32, num_heads=1, hidden_dim=16, attention_dim=16)
    stack = build_ultra_hstu_encoder(
        UltraHSTUEncoderConfig(num_full_layers=2, fp8=flag), cfg, False
    )
    layers = [m for m in stack.modules() if isinstance(m, UltraHSTULayer)]
    assert len(layers) == 2 and all(m._fp8 is flag for m in layers)
