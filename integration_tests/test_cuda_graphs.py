# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""GraphedEncoder: replayed inference equals the eager forward; layouts, errors, plans.
GraphedTrainStep: replayed forward + backward equals the eager step's output and gradients."""

import pytest
import torch

from ultra_hstu_plugin.host import HammerKernel, STULayerConfig
from ultra_hstu_plugin.modules import cuda_graphs
from ultra_hstu_plugin.modules.cuda_graphs import GraphedEncoder, GraphedTrainStep, dropout_ratios
from ultra_hstu_plugin.modules.encoder import build_ultra_hstu_encoder
from ultra_hstu_plugin.modules.encoder_config import UltraHSTUEncoderConfig
from ultra_hstu_plugin.modules.truncation import TruncatedSTU

CUDA = torch.cuda.is_available()


def _encoder(device: str, kernel: HammerKernel, dropout: float = 0.3) -> torch.nn.Module:
    torch.manual_seed(0)
    enc = UltraHSTUEncoderConfig(
        num_full_layers=2, num_truncated_layers=2, truncated_seq_len=16, k1=8, k2=4
    )
    cfg = STULayerConfig(
        embedding_dim=64,
        num_heads=2,
        hidden_dim=32,
        attention_dim=32,
        contextual_seq_len=2,
        output_dropout_ratio=dropout,
    )
    model = build_ultra_hstu_encoder(enc, cfg, is_inference=True, max_seq_len=96).to(device)
    model.set_hammer_kernel(kernel)
    return model.eval()


def _batch(lengths, targets, device, dtype=torch.float32):
    lengths = torch.tensor(lengths, device=device)
    offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    x = torch.randn(int(lengths.sum()), 64, device=device, dtype=dtype)
    nt = torch.tensor(targets, device=device)
    return dict(
        x=x, x_lengths=lengths, x_offsets=offsets, max_seq_len=int(lengths.max()), num_targets=nt
    )


def test_refuses_cpu_tensors_and_training():
    model = _encoder("cpu", HammerKernel.PYTORCH)
    graphed = GraphedEncoder(model)
    with torch.no_grad(), pytest.raises(ValueError, match="needs CUDA tensors"):
        graphed(**_batch([40, 9], [3, 1], "cpu"))
    model.train()
    with torch.no_grad(), pytest.raises(RuntimeError, match="inference forward only"):
        graphed(**_batch([40, 9], [3, 1], "cpu"))
    model.eval()
    with pytest.raises(RuntimeError, match="inference forward only"):  # grad enabled
        graphed(**_batch([40, 9], [3, 1], "cpu"))
    with pytest.raises(ValueError, match="max_graphs"):
        GraphedEncoder(model, max_graphs=0)


def test_fixed_plans_are_used_and_removed():
    model = _encoder("cpu", HammerKernel.PYTORCH)
    batch = _batch([40, 9, 30], [3, 1, 5], "cpu")
    (trunc,) = [m for m in model.modules() if isinstance(m, TruncatedSTU)]
    calls = []
    real_plan = trunc.plan

    def counting_plan(*args):
        calls.append(1)
        return real_plan(*args)

    trunc.plan = counting_plan
    with torch.no_grad():
        want = model(**batch)
        assert len(calls) == 1  # eager: one plan per forward
        with cuda_graphs._fixed_truncation_plans(
            model, batch["x_lengths"], batch["x_offsets"], batch["num_targets"]
        ) as plans:
            assert len(plans) == 1 and len(calls) == 2  # computed once, up front
            got = model(**batch)
            got_again = model(**batch)
            assert len(calls) == 2  # forwards inside reuse it
        assert "forward" not in trunc.__dict__  # the module's own forward is back
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(got_again, want, rtol=0, atol=0)


@pytest.mark.gpu  # benchmarks/gpu_integration_tests.sh runs it on the GPU machine
@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")
def test_replay_equals_eager_and_layouts_are_kept():
    model = _encoder("cuda", HammerKernel.TRITON).to(torch.bfloat16)
    graphed = GraphedEncoder(model, max_graphs=2)
    a = _batch([90, 17, 60], [4, 2, 7], "cuda", torch.bfloat16)
    b = _batch([33, 80], [1, 9], "cuda", torch.bfloat16)
    c = _batch([50], [3], "cuda", torch.bfloat16)
    with torch.no_grad():
        for batch in (a, b, a, c, b):
            want = model(**batch)
            got = graphed(**batch)
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        # a, b, a (replay), c (evicts b, the least recent), b (again; evicts a): 4 captures
        assert graphed.captures == 4 and len(graphed._graphs) == 2
        # fresh inputs of a kept layout replay (no capture) and still match
        b2 = dict(b, x=torch.randn_like(b["x"]))
        torch.testing.assert_close(graphed(**b2), model(**b2), rtol=0, atol=0)
        assert graphed.captures == 4


def test_train_step_refuses_cpu_eval_and_dropout():
    batch = _batch([40, 9], [3, 1], "cpu")
    model = _encoder("cpu", HammerKernel.PYTORCH)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        GraphedTrainStep(model.train(), **batch)
    # (the mode and dropout refusals need CUDA tensors to be reached: tested on the GPU)
    assert dropout_ratios(model) and all(r == 0.3 for _, r in dropout_ratios(model))
    assert dropout_ratios(_encoder("cpu", HammerKernel.PYTORCH, dropout=0.0)) == []


@pytest.mark.gpu  # benchmarks/gpu_integration_tests.sh runs it on the GPU machine
@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")
def test_train_step_replay_equals_eager_step():
    torch.manual_seed(1)
    model = _encoder("cuda", HammerKernel.TRITON, dropout=0.0).train()
    batch = _batch([90, 17, 60], [4, 2, 7], "cuda")
    with pytest.raises(RuntimeError, match="call encoder.train"):
        GraphedTrainStep(_encoder("cuda", HammerKernel.TRITON, dropout=0.0).eval(), **batch)
    with pytest.raises(ValueError, match="dropout"):
        GraphedTrainStep(_encoder("cuda", HammerKernel.TRITON).train(), **batch)
    graphed = GraphedTrainStep(model, **batch)
    kwargs = {k: v for k, v in batch.items() if k != "x"}
    params = [p for p in model.parameters() if p.requires_grad]
    for _ in range(2):  # a second replay on new inputs: fresh gradients, not accumulated
        x = torch.randn_like(batch["x"])
        grad = torch.randn_like(batch["x"])
        got = graphed.step(x, grad).clone()
        got_grads = [None if p.grad is None else p.grad.clone() for p in params]
        got_x_grad = graphed.x_grad.clone()
        for p in params:
            p.grad = None
        xe = x.clone().requires_grad_(True)
        want = model(x=xe, **kwargs)
        want.backward(grad)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got_x_grad, xe.grad, rtol=1e-4, atol=1e-4)
        for p, g in zip(params, got_grads):
            torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="captured layout"):
        graphed.step(batch["x"][:-1], batch["x"][:-1])
