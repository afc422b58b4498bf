# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Mixture of transducers routing, merged item+action tokens, truncation, in GR's model."""

import gin
import pytest
import torch
from torchrec import KeyedJaggedTensor

import ultra_hstu_plugin.gin  # noqa: F401
from ultra_hstu_plugin.config import RunSettings
from ultra_hstu_plugin.host import HammerKernel, HammerToTorchDataset, collate_fn
from ultra_hstu_plugin.model import make_ultra_model
from ultra_hstu_plugin.modules.encoder_config import UltraHSTUEncoderConfig
from ultra_hstu_plugin.modules.mixture_of_transducers import (
    MixtureOfTransducers,
    StreamConfig,
    stream_token_mask,
)
from ultra_hstu_plugin.registry import discover


def test_stream_token_mask_keeps_last_matching_events():
    # one sequence: 1 contextual, 6 history events, 2 candidates
    lengths, targets = torch.tensor([9]), torch.tensor([2])
    actions = torch.tensor([1, 2, 1, 4, 1, 2])  # history events only
    keep = stream_token_mask(lengths, targets, 1, actions, action_mask=1, max_len=2)
    #            C     h0     h1     h2     h3     h4    h5     t0    t1
    assert keep.tolist() == [True, False, False, True, False, True, False, True, True]
    keep = stream_token_mask(lengths, targets, 1, actions, action_mask=2 | 4, max_len=10)
    assert keep.tolist() == [True, False, True, False, True, False, True, True, True]
    with pytest.raises(ValueError, match="action payload has 5 values but the batch has 6"):
        stream_token_mask(lengths, targets, 1, actions[:5], 1, 4)


def test_stream_config_errors():
    with pytest.raises(ValueError, match="action_mask"):
        StreamConfig("x", 0).validate()
    with pytest.raises(ValueError, match="max_len"):
        StreamConfig("x", 1, max_len=0).validate()


def _model_and_batch(ml100k_dir, **kwargs):
    gin.clear_config()
    torch.manual_seed(0)
    model, cfg, _ = make_ultra_model(
        settings=RunSettings(dataset="movielens-100k"),
        hstu_overrides={"hstu_input_dropout_ratio": 0.0, "hstu_linear_dropout_rate": 0.0},
        **kwargs,
    )
    model.set_hammer_kernel(HammerKernel.PYTORCH)
    model._embedding_collection.to_empty(device="cpu")  # meta tables -> real, then init
    for p in model._embedding_collection.parameters():
        torch.nn.init.normal_(p, std=0.1)
    model.eval()
    spec = discover().get("dataset", "movielens-100k").load()
    ds = HammerToTorchDataset(spec.dataset(cfg, str(ml100k_dir)))
    batch = collate_fn([ds[i] for i in range(200, 206)])
    return model, batch


def _preds(model, uih, cand):
    with torch.no_grad():
        return model(uih, cand)[3]


def _replace(kjt: KeyedJaggedTensor, key: str, fn) -> KeyedJaggedTensor:
    d = kjt.to_dict()
    values = {k: (fn(v.values()) if k == key else v.values()) for k, v in d.items()}
    return KeyedJaggedTensor.from_lengths_sync(
        keys=kjt.keys(),
        values=torch.cat([values[k] for k in kjt.keys()]),
        lengths=torch.cat([d[k].lengths() for k in kjt.keys()]),
    )


@pytest.mark.parametrize("merged", [True, False])
def test_candidate_labels_cannot_leak(ml100k_dir, merged):
    model, b = _model_and_batch(ml100k_dir, merged_item_action_tokens=merged)
    base = _preds(model, b.uih_features_kjt, b.candidates_features_kjt)
    flipped = _replace(b.candidates_features_kjt, "item_action_weights", lambda v: 1 - v)
    flipped = _replace(flipped, "item_movie_rating", lambda v: 6 - v)
    torch.testing.assert_close(_preds(model, b.uih_features_kjt, flipped), base, rtol=0, atol=0)
    # ...while history actions do matter
    hist = _replace(b.uih_features_kjt, "item_weights", lambda v: torch.where(v == 16, 1, 16))
    assert not torch.allclose(_preds(model, hist, b.candidates_features_kjt), base)


def test_merged_tokens_give_candidates_no_action_input(ml100k_dir):
    model, _ = _model_and_batch(ml100k_dir, merged_item_action_tokens=True)
    pre = model._hstu_transducer._input_preprocessor
    assert not any("target_action" in n for n, _ in pre.named_parameters())
    mlp = pre._action_embedding_mlp
    assert torch.equal(
        mlp(torch.zeros(3, mlp.fc1.in_features)), torch.zeros(3, mlp.fc2.out_features)
    )


def test_mixture_of_transducers_routes_events_by_action(ml100k_dir):
    streams = [
        StreamConfig("loved", 16, num_layers=1, max_len=64),
        StreamConfig("hated", 1 | 2, num_layers=2, max_len=32),
    ]
    model, b = _model_and_batch(
        ml100k_dir,
        encoder_config=UltraHSTUEncoderConfig(k1=16, k2=4),
        streams=streams,
    )
    assert isinstance(model._hstu_transducer, MixtureOfTransducers)
    base = _preds(model, b.uih_features_kjt, b.candidates_features_kjt)
    assert torch.isfinite(base).all()
    # an event rated 3 or 4 stars (weights 4, 8) is in no stream: changing its item changes nothing
    uih = b.uih_features_kjt.to_dict()
    weights = uih["item_weights"].values()
    outside = (weights == 4) | (weights == 8)
    assert outside.any()
    moved = _replace(
        b.uih_features_kjt, "movie_id", lambda v: torch.where(outside, (v % 1600) + 1, v)
    )
    torch.testing.assert_close(
        _preds(model, moved, b.candidates_features_kjt), base, rtol=0, atol=0
    )
    inside = _replace(
        b.uih_features_kjt, "movie_id", lambda v: torch.where(weights == 16, (v % 1600) + 1, v)
    )
    assert not torch.allclose(_preds(model, inside, b.candidates_features_kjt), base)


def test_streams_conflict_with_truncation(ml100k_dir):
    with pytest.raises(ValueError, match="num_truncated_layers=1 conflicts with streams"):
        _model_and_batch(
            ml100k_dir,
            encoder_config=UltraHSTUEncoderConfig(
                num_full_layers=1, num_truncated_layers=1, truncated_seq_len=8
            ),
            streams=[StreamConfig("a", 1), StreamConfig("b", 2)],
        )


def test_truncated_layers_only_change_the_last_tokens(ml100k_dir):
    """Upper layers see contextual + last L' + candidates; earlier tokens pass through."""
    enc = UltraHSTUEncoderConfig(
        num_full_layers=1, num_truncated_layers=1, truncated_seq_len=8, k1=8
    )
    model, b = _model_and_batch(ml100k_dir, encoder_config=enc)
    stack = model._hstu_transducer._stu_module
    l2 = stack._stu_layers[1]
    x = torch.randn(40, 64)
    lengths, targets = torch.tensor([40]), torch.tensor([10])
    offsets = torch.tensor([0, 40])
    with torch.no_grad():
        out = l2(x=x, x_lengths=lengths, x_offsets=offsets, max_seq_len=40, num_targets=targets)
    c = 5
    untouched = slice(c, 40 - 10 - 8)
    torch.testing.assert_close(out[untouched], x[untouched], rtol=0, atol=0)
    assert not torch.allclose(out[-18:], x[-18:])
