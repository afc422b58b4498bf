# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Batches are checked on the CPU before the device: real MovieLens-100k batches through GR's
dataset and collate_fn pass; each kind of corruption fails naming the batch, sample and
feature."""

import time

import pytest
import torch
from torchrec import KeyedJaggedTensor

from ultra_hstu_plugin import host
from ultra_hstu_plugin.config import RunSettings
from ultra_hstu_plugin.train.batch_checks import (
    BatchCheckError,
    BatchLimits,
    CheckedLoader,
    check_batch,
)


@pytest.fixture(scope="module")
def ml100k(ml100k_dir):
    spec = RunSettings(dataset="movielens-100k").dataset_spec()
    cfg = spec.hstu_config(None)
    tables = spec.tables(cfg)
    data = host.HammerToTorchDataset(dataset=spec.dataset(cfg, str(ml100k_dir), is_inference=False))
    return cfg, tables, data


def _batch(data, n=8, start=0):
    return host.collate_fn([data[i] for i in range(start, start + n)])


def _replace(kjt, key, lengths=None, values=None, offsets=None):
    """``kjt`` with one feature's per-sample lengths or values replaced (or raw offsets)."""
    if offsets is not None:
        return KeyedJaggedTensor(keys=kjt.keys(), values=kjt.values(), offsets=offsets)
    feats = kjt.to_dict()
    keys = kjt.keys()
    lens = [lengths if (k == key and lengths is not None) else feats[k].lengths() for k in keys]
    vals = [values if (k == key and values is not None) else feats[k].values() for k in keys]
    return KeyedJaggedTensor(keys=keys, lengths=torch.cat(lens), values=torch.cat(vals))


def test_real_batches_pass_and_cost_is_reported(ml100k, capsys):
    cfg, tables, data = ml100k
    limits = BatchLimits.from_config(cfg, tables)
    batches = [_batch(data, 32, 32 * i) for i in range(20)]
    t0 = time.perf_counter()
    for i, b in enumerate(batches):
        check_batch(b, limits, f"train batch {i}")
    per_batch_ms = (time.perf_counter() - t0) / len(batches) * 1e3
    with capsys.disabled():  # the number README quotes; not asserted (no timed unit tests)
        print(f"\ncheck_batch: {per_batch_ms:.2f} ms per MovieLens-100k batch of 32 on this CPU")


def test_decreasing_offsets_name_the_position(ml100k):
    cfg, tables, data = ml100k
    b = _batch(data)
    offsets = b.uih_features_kjt.offsets().clone()
    a, b4 = int(offsets[3]), int(offsets[4])
    offsets[3], offsets[4] = b4 + 1, a  # the offsets now decrease at position 4
    b.uih_features_kjt = _replace(b.uih_features_kjt, None, offsets=offsets)
    with pytest.raises(
        BatchCheckError, match="train batch 5, history features: offsets decrease at position 4"
    ):
        check_batch(b, BatchLimits.from_config(cfg, tables), "train batch 5")


def test_id_outside_its_table(ml100k):
    cfg, tables, data = ml100k
    b = _batch(data)
    movies = b.uih_features_kjt["movie_id"]
    vals = movies.values().clone()
    first_of_sample_2 = int(movies.lengths()[:2].sum())
    vals[first_of_sample_2] = 1700  # the table has 1700 rows
    b.uih_features_kjt = _replace(b.uih_features_kjt, "movie_id", values=vals)
    with pytest.raises(
        BatchCheckError, match=r"sample 2: movie_id id 1700 is outside .*\[0, 1700\)"
    ):
        check_batch(b, BatchLimits.from_config(cfg, tables), "eval batch 0")


def test_history_features_disagree(ml100k):
    cfg, tables, data = ml100k
    b = _batch(data)
    rating = b.uih_features_kjt["movie_rating"]
    lens = rating.lengths().clone()
    lens[1] -= 1
    vals = torch.cat([rating.values()[: int(lens[:1].sum()) + int(lens[1])],
                      rating.values()[int(rating.lengths()[:2].sum()):]])  # fmt: skip
    b.uih_features_kjt = _replace(b.uih_features_kjt, "movie_rating", lengths=lens, values=vals)
    with pytest.raises(BatchCheckError, match="sample 1: history feature movie_rating has"):
        check_batch(b, BatchLimits.from_config(cfg, tables), "train batch 0")


def test_sequence_above_max_seq_len(ml100k):
    cfg, tables, data = ml100k
    b = _batch(data)
    limits = BatchLimits.from_config(cfg, tables)
    tight = BatchLimits(**{**limits.__dict__, "max_seq_len": 20})
    with pytest.raises(BatchCheckError, match=r"contextual \+ .* history \+ .* = .*max_seq_len=20"):
        check_batch(b, tight, "train batch 0")


def test_too_many_candidates(ml100k):
    cfg, tables, data = ml100k
    limits = BatchLimits.from_config(cfg, tables)
    few = BatchLimits(**{**limits.__dict__, "max_num_candidates": 3})
    with pytest.raises(BatchCheckError, match="candidates, above max_num_candidates=3"):
        check_batch(_batch(data), few, "train batch 0")


def test_checked_loader_names_the_batch_and_keeps_the_loader_attributes(ml100k):
    cfg, tables, data = ml100k
    good, bad = _batch(data, 4), _batch(data, 4, 4)
    vals = bad.candidates_features_kjt["item_movie_id"].values().clone()
    vals[0] = -1
    bad.candidates_features_kjt = _replace(
        bad.candidates_features_kjt, "item_movie_id", values=vals
    )

    class Loader(list):
        sampler = "the sampler"
        batch_size = 4

    loader = CheckedLoader(Loader([good, bad]), BatchLimits.from_config(cfg, tables), "train")
    assert loader.sampler == "the sampler" and loader.batch_size == 4 and len(loader) == 2
    it = iter(loader)
    assert next(it) is good
    with pytest.raises(BatchCheckError, match="train batch 1, candidate features, sample 0"):
        next(it)
