# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The sampler on the training path (issue 13): the batch trim, the gin wiring, bad input,
and ``ultra-hstu train`` with LBSL writing its load statistics to TensorBoard.

* The trim keeps exactly the most recent ``kept`` events of every history feature of each
  user and nothing else changes (hypothesis, random jagged batches collated by GR's
  ``collate_fn``, against a pure-python reference that slices each sample's lists), and real
  MovieLens-100k batches trimmed by :class:`SampledLoader` still pass the batch checks.
* Bad settings fail before the first step (alpha, floor, ignored bindings, unknown names),
  an unreachable target on the first trimmed step.
* A 2-process ``ultra-hstu train`` (gloo) with ``RunSettings.sampler = 'lbsl'``: the
  ``load/*`` scalars are in each rank's TensorBoard event file, in range, the ranks agree on
  the target and the imbalance, and curves.jsonl carries their means.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ultra_hstu_plugin import config, host
from ultra_hstu_plugin.config import ConfigSource, RunSettings
from ultra_hstu_plugin.model import make_ultra_model
from ultra_hstu_plugin.registry import UnknownComponentError
from ultra_hstu_plugin.sampling import AttentionCostModel, LBSLSampler, StochasticLengthSampler
from ultra_hstu_plugin.sampling.batch import trim_kjt, trim_samples
from ultra_hstu_plugin.train.batch_checks import BatchLimits, check_batch
from ultra_hstu_plugin.train.launcher import RunRequest, preflight
from ultra_hstu_plugin.train.sampled_loader import (
    SampledLoader,
    encoder_cost_model,
    history_features,
    make_train_sampler,
    max_history_len,
)

from .conftest import REPO, run_cli

KJT = host.KeyedJaggedTensor
CONTEXT = ("user_id", "sex")
HISTORY = ("movie_id", "movie_rating", "action_timestamp")
UIH_KEYS = [*CONTEXT, *HISTORY, "dummy_query_time"]
CAND_KEYS = ["item_movie_id", "item_query_time"]


# --- the trim against a pure-python reference ------------------------------------------


def _sample_kjts(user: Dict[str, List[int]], cands: Dict[str, List[int]]):
    uih = KJT(
        keys=UIH_KEYS,
        lengths=torch.tensor([len(user[k]) for k in UIH_KEYS]),
        values=torch.tensor([v for k in UIH_KEYS for v in user[k]], dtype=torch.int64),
    )
    cand = KJT(
        keys=CAND_KEYS,
        lengths=torch.tensor([len(cands[k]) for k in CAND_KEYS]),
        values=torch.tensor([v for k in CAND_KEYS for v in cands[k]], dtype=torch.int64),
    )
    return uih, cand


@st.composite
def jagged_batches(draw):
    batch = draw(st.integers(1, 6))
    users, cands, kept = [], [], []
    ints = st.integers(-(2**40), 2**40)
    for _ in range(batch):
        n = draw(st.integers(0, 12))
        user = {k: [draw(ints)] for k in (*CONTEXT, "dummy_query_time")}
        user.update({k: draw(st.lists(ints, min_size=n, max_size=n)) for k in HISTORY})
        c = draw(st.integers(1, 3))
        cands.append({k: draw(st.lists(ints, min_size=c, max_size=c)) for k in CAND_KEYS})
        users.append(user)
        kept.append(draw(st.integers(0, n)))
    return users, cands, kept


def _as_lists(kjt) -> Dict[str, List[List[int]]]:
    return {k: [t.tolist() for t in jt.to_dense()] for k, jt in kjt.to_dict().items()}


@settings(max_examples=60, deadline=None)
@given(jagged_batches())
def test_trim_keeps_the_most_recent_events_and_the_rest(case):
    users, cands, kept = case
    batch = host.collate_fn([_sample_kjts(u, c) for u, c in zip(users, cands)])
    out = trim_samples(batch, torch.tensor(kept), HISTORY)
    # reference: each sample's history lists cut to their last `kept` values, in python
    ref_users = [
        {k: (v[len(v) - n :] if k in HISTORY else v) for k, v in u.items()}
        for u, n in zip(users, kept)
    ]
    ref = host.collate_fn([_sample_kjts(u, c) for u, c in zip(ref_users, cands)])
    assert out.uih_features_kjt.keys() == UIH_KEYS
    assert torch.equal(out.uih_features_kjt.lengths(), ref.uih_features_kjt.lengths())
    assert torch.equal(out.uih_features_kjt.offsets(), ref.uih_features_kjt.offsets())
    assert torch.equal(out.uih_features_kjt.values(), ref.uih_features_kjt.values())
    assert _as_lists(out.uih_features_kjt) == _as_lists(ref.uih_features_kjt)
    for key in HISTORY:  # GR's uih_seq_lengths are the kept lengths
        assert out.uih_features_kjt[key].lengths().tolist() == kept
    assert out.candidates_features_kjt is batch.candidates_features_kjt
    assert batch.uih_features_kjt.lengths().sum() >= out.uih_features_kjt.lengths().sum()


def test_trim_weights_noop_and_bad_kept():
    kjt = KJT(
        keys=["a", "b"],
        lengths=torch.tensor([3, 1, 3, 1]),
        values=torch.arange(8),
        weights=torch.arange(8).double() / 10,
    )
    out = trim_kjt(kjt, torch.tensor([1, 1]), {"a"})
    assert out.lengths().tolist() == [1, 1, 3, 1]
    assert out.values().tolist() == [2, 3, 4, 5, 6, 7]
    assert out.weights().tolist() == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert trim_kjt(kjt, torch.tensor([3, 1]), {"a"}) is kjt  # nothing cut: the same object
    with pytest.raises(ValueError, match="sample 1: kept length 2 is above the 1 values of a"):
        trim_kjt(kjt, torch.tensor([1, 2]), {"a"})


# --- real MovieLens-100k batches through SampledLoader ---------------------------------


@pytest.fixture(scope="module")
def ml100k(ml100k_dir):
    spec = RunSettings(dataset="movielens-100k").dataset_spec()
    cfg = spec.hstu_config(None)
    data = host.HammerToTorchDataset(dataset=spec.dataset(cfg, str(ml100k_dir), is_inference=False))
    return cfg, spec.tables(cfg), data


def test_real_batches_trimmed_by_the_loader_stay_valid(ml100k):
    cfg, tables, data = ml100k
    batches = [host.collate_fn([data[i] for i in range(32 * j, 32 * j + 32)]) for j in range(4)]
    cost = AttentionCostModel(fixed_tokens=15)
    sampler = LBSLSampler(cost, max_len=max_history_len(cfg), floor=8, warmup_steps=2)
    loader = SampledLoader(batches, sampler, history_features(cfg), cfg.uih_post_id_feature_name)
    limits = BatchLimits.from_config(cfg, tables)
    for i, (raw, out) in enumerate(zip(batches, loader)):
        check_batch(out, limits, f"trimmed batch {i}")
        before, after = raw.uih_features_kjt.to_dict(), out.uih_features_kjt.to_dict()
        kept = after["movie_id"].lengths()
        assert torch.equal(kept, torch.minimum(before["movie_id"].lengths(), kept))
        for key in raw.uih_features_kjt.keys():
            for b in range(32):
                v0, v1 = before[key].to_dense()[b], after[key].to_dense()[b]
                if key in history_features(cfg):
                    assert torch.equal(v1, v0[len(v0) - int(kept[b]) :]), (key, b)
                else:
                    assert torch.equal(v1, v0), key
        assert out.candidates_features_kjt is raw.candidates_features_kjt
    assert loader.last_stats["phase"] == "lbsl" and loader.last_stats["kept_fraction"] < 1


# --- building from gin, and bad input --------------------------------------------------

SMOKE = REPO / "gin_configs" / "ml100k_smoke_cpu.gin"


@pytest.fixture
def clean_gin():
    config.clear()
    yield
    config.clear()


def _sampler(*bindings, rank=0):
    settings = config.load(ConfigSource.of([str(SMOKE)], list(bindings)))
    model, cfg, _ = make_ultra_model(settings=settings)
    return make_train_sampler(settings, model, cfg, rank), model, cfg


def test_gin_builds_the_sampler_with_its_settings(clean_gin):
    s, model, cfg = _sampler(
        "RunSettings.sampler = 'lbsl'",
        "SamplerSettings.alpha = 1.8",
        "SamplerSettings.floor = 16",
        "SamplerSettings.warmup_steps = 7",
        "SamplerSettings.refresh_every = 5",
        "SamplerSettings.target_scale = 0.9",
    )
    assert isinstance(s, LBSLSampler)
    assert (s.alpha, s.floor, s.warmup_steps, s.refresh_every, s.target_scale) == (
        1.8,
        16,
        7,
        5,
        0.9,
    )
    assert s.max_len == 256 - 10 - 5  # max_seq_len - candidates - contextual features
    # the smoke encoder: 1 SLA layer (k1=64 window, k2=16 prefix) + 1 truncated to 64
    cm = s.cost_model
    assert (cm.n_lower, cm.n_upper, cm.truncate_to, cm.attention) == (1, 1, 64, "sla")
    assert (cm.sla_local, cm.sla_global, cm.fixed_tokens) == (65, 16, 15)
    assert cm == encoder_cost_model(model, cfg)
    # seeded from RunSettings.seed + rank: the same draws on the same rank, others elsewhere
    lengths = torch.full((64,), 200)
    a = _sampler("RunSettings.sampler = 'lbsl'")[0](lengths)[0]
    b = _sampler("RunSettings.sampler = 'lbsl'")[0](lengths)[0]
    c = _sampler("RunSettings.sampler = 'lbsl'", rank=1)[0](lengths)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    sl = _sampler("RunSettings.sampler = 'sl'", "SamplerSettings.max_len = 200")[0]
    assert isinstance(sl, StochasticLengthSampler) and sl.max_len == 200
    assert _sampler()[0] is None  # no sampler by default


def test_gr_encoder_costs_full_causal_layers(clean_gin):
    settings = config.load(
        ConfigSource.of([str(REPO / "gin_configs" / "ml100k_hstu_baseline_cpu.gin")])
    )
    model, cfg, _ = make_ultra_model(settings=settings)
    cm = encoder_cost_model(model, cfg)
    assert (cm.n_lower, cm.n_upper, cm.attention) == (cfg.hstu_attn_num_layers, 0, "full")


@pytest.mark.parametrize(
    "bindings,match",
    [
        (["SamplerSettings.alpha = 2.5"], r"alpha=2.5.*alpha in \(1, 2\]"),
        (["SamplerSettings.alpha = 1.0"], r"alpha=1.0.*alpha in \(1, 2\]"),
        (["SamplerSettings.floor = 500"], "floor=500 is above max_len=241"),
    ],
)
def test_bad_sampler_settings_fail_before_training(clean_gin, bindings, match):
    with pytest.raises(ValueError, match=match):
        _sampler("RunSettings.sampler = 'lbsl'", *bindings)


@pytest.mark.parametrize(
    "bindings,error,match",
    [
        (
            ["RunSettings.sampler = 'lbsl'", "SamplerSettings.alpha = 2.5"],
            ValueError,
            r"SamplerSettings.alpha=2.5",
        ),
        (
            ["RunSettings.sampler = 'sl'", "SamplerSettings.floor = 8"],
            ValueError,
            "SamplerSettings.floor is bound but sampler 'sl' takes no floor",
        ),
        (
            ["SamplerSettings.alpha = 1.5"],
            ValueError,
            "SamplerSettings.alpha is bound but RunSettings.sampler is None",
        ),
        (["RunSettings.sampler = 'lbls'"], UnknownComponentError, "known samplers: lbsl, sl"),
    ],
)
def test_preflight_rejects_sampler_mistakes(clean_gin, ml100k_dir, bindings, error, match):
    request = RunRequest(
        gin_files=[str(SMOKE)],
        gin_bindings=[f"make_dataloaders.data_dir = '{ml100k_dir}'", *bindings],
    )
    with pytest.raises(error, match=match):
        preflight(request)


def test_unreachable_target_fails_on_the_first_step(clean_gin):
    s = _sampler("RunSettings.sampler = 'lbsl'", "SamplerSettings.target_cost = 1.0")[0]
    with pytest.raises(ValueError, match=r"target cost 1 is below this batch's cost .*floor=64"):
        s(torch.tensor([100, 190, 30]))


# --- ultra-hstu train with LBSL, 2 processes (gloo), TensorBoard read back ------------

STEPS, WARMUP = 6, 2
TAGS = [
    "load/cost",
    "load/cost_unsampled",
    "load/target_cost",
    "load/imbalance",
    "load/imbalance_unsampled",
    "load/kept_fraction",
    "load/kept_fraction_global",
]


def _scalars(run_dir: Path) -> Dict[str, Dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    return {t: {e.step: e.value for e in acc.Scalars(t)} for t in tags}


def _train_two_ranks(out: Path, ml100k_dir: Path, *bindings: str) -> None:
    """``ultra-hstu train`` of the smoke config with LBSL, 2 processes (gloo), STEPS steps."""
    res = run_cli(
        "train",
        "--gin",
        str(SMOKE),
        "--device",
        "cpu",
        "--nproc",
        "2",
        "--mode",
        "train",
        *(
            a
            for b in (
                f"make_dataloaders.data_dir='{ml100k_dir}'",
                f"RunSettings.output_dir='{out}'",
                "RunSettings.sampler='lbsl'",
                f"SamplerSettings.warmup_steps={WARMUP}",
                "SamplerSettings.floor=16",
                f"train_loop.num_batches={STEPS}",
                "RunSettings.save_checkpoint=False",
                "make_dataloaders.progress=False",
                *bindings,
            )
            for a in ("--gin-param", b)
        ),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]


def test_train_with_lbsl_writes_load_scalars(tmp_path, ml100k_dir):
    out = tmp_path / "lbsl"
    _train_two_ranks(out, ml100k_dir, "RunSettings.log_every_steps=3")
    ranks = [_scalars(out / "tensorboard" / f"rank{r}") for r in (0, 1)]
    for sc in ranks:
        missing = [t for t in TAGS if t not in sc]
        assert not missing, (missing, sorted(sc))
        assert sorted(sc["load/cost"]) == list(range(1, STEPS + 1))
        assert sorted(sc["load/target_cost"]) == list(range(WARMUP + 1, STEPS + 1))
        for step in range(1, STEPS + 1):
            kept = sc["load/kept_fraction"][step]
            assert 0 < kept <= 1 and 0 < sc["load/kept_fraction_global"][step] <= 1
            assert 1 <= sc["load/imbalance"][step] < 2
            assert 0 < sc["load/cost"][step] <= sc["load/cost_unsampled"][step] * (1 + 1e-6)
            if step > WARMUP:
                assert sc["load/cost"][step] <= sc["load/target_cost"][step] * (1 + 1e-6)
    for tag in ("load/target_cost", "load/imbalance", "load/kept_fraction_global"):
        assert ranks[0][tag] == ranks[1][tag], tag  # all-reduced / all-gathered
    assert any(ranks[0]["load/kept_fraction"][s] < 1 for s in range(1, STEPS + 1))
    rows = [json.loads(x) for x in (out / "curves.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["mode"] == "train"]
    assert [r["step"] for r in train] == [3, 6]
    for r in train:
        assert 0 < r["load/kept_fraction"] <= 1 and r["load/imbalance"] >= 1


@pytest.mark.parametrize("sampler", ["lbsl", "sl"])
def test_cost_calibration_from_gin_replaces_the_flops(clean_gin, sampler):
    path = REPO / "benchmarks" / "results" / "lbsl_cost_calibration_h200.json"
    data = json.loads(path.read_text())
    s, model, cfg = _sampler(
        f"RunSettings.sampler = '{sampler}'", f"SamplerSettings.cost_calibration = '{path}'"
    )
    assert (s.cost_model.quadratic, s.cost_model.linear) == (
        data["quadratic_ms"],
        data["linear_ms"],
    )
    flops = encoder_cost_model(model, cfg)
    assert s.cost_model.n_lower == flops.n_lower and s.cost_model.quadratic != flops.quadratic


def test_cost_calibration_errors(clean_gin, tmp_path):
    with pytest.raises(FileNotFoundError, match="cost_calibration: no file"):
        _sampler("RunSettings.sampler = 'lbsl'", "SamplerSettings.cost_calibration = '/nope.json'")
    bad = tmp_path / "bad.json"
    bad.write_text('{"quadratic_ms": 1.0}')
    with pytest.raises(ValueError, match="not a calibration json"):
        _sampler("RunSettings.sampler = 'lbsl'", f"SamplerSettings.cost_calibration = '{bad}'")


# --- length-balanced rank assignment (make_dataloaders.sampler = 'length_balanced') -----


@pytest.mark.parametrize("max_seq_len", [None, 64])  # 64: histories capped at 64 - 10 - 5
def test_row_history_lengths_match_what_gr_loads(ml100k_dir, max_seq_len):
    spec = RunSettings(dataset="movielens-100k").dataset_spec()
    cfg = spec.hstu_config(None if max_seq_len is None else {"max_seq_len": max_seq_len})
    data = host.HammerToTorchDataset(dataset=spec.dataset(cfg, str(ml100k_dir), is_inference=False))
    lengths = host.movielens_history_lengths(data.dataset)
    assert len(lengths) == data.dataset.get_item_count()
    rows = list(range(0, len(lengths), 5))
    loaded = [int(data[i][0][cfg.uih_post_id_feature_name].lengths()[0]) for i in rows]
    assert lengths[rows].tolist() == loaded
    capped = int((lengths == max_history_len(cfg)).sum())
    assert (capped > 0) == (max_seq_len == 64), capped


def test_length_balanced_needs_a_cost_model(clean_gin, ml100k_dir):
    from ultra_hstu_plugin.train.dataloaders import make_dataloaders

    settings = config.load(ConfigSource.of([str(SMOKE)]))
    cfg = settings.dataset_spec().hstu_config(None)
    with pytest.raises(ValueError, match="'length_balanced' needs a cost_model"):
        make_dataloaders(cfg, settings, str(ml100k_dir), sampler="length_balanced")


def test_train_with_length_balanced_ranks(tmp_path, ml100k_dir):
    """2 processes: the ranks' unsampled batch costs are balanced before LBSL trims them
    (GR's chunk sampler: 1.05-1.15 max/mean in the first 6 steps of this run; balanced: <= 1.001)."""
    out = tmp_path / "balanced"
    _train_two_ranks(out, ml100k_dir, "make_dataloaders.sampler='length_balanced'")
    ranks = [_scalars(out / "tensorboard" / f"rank{r}") for r in (0, 1)]
    unsampled = ranks[0]["load/imbalance_unsampled"]
    assert sorted(unsampled) == list(range(1, STEPS + 1))
    assert max(unsampled.values()) < 1.01, unsampled
    assert ranks[0]["load/imbalance_unsampled"] == ranks[1]["load/imbalance_unsampled"]
    for step in range(1, STEPS + 1):  # the ranks' batches are different users
        costs = [ranks[r]["load/cost_unsampled"][step] for r in (0, 1)]
        assert costs[0] != costs[1] or step == 1
