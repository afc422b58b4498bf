# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""LBSL: the cost model, the water-filling trim, GR's SL semantics, the sampler, the simulator."""

from __future__ import annotations

import json

import pytest
import torch

from ultra_hstu_plugin.sampling import (
    AttentionCostModel,
    LBSLSampler,
    StochasticLengthSampler,
    choose_kept_lengths,
    stochastic_length,
)
from ultra_hstu_plugin.sampling.lbsl import (
    quantile_knob,
    rank_quantile_level,
    rank_quantile_target,
)

QUAD = AttentionCostModel()  # cost = L (L + 1) / 2


def test_cost_full_causal_by_hand():
    m = AttentionCostModel(quadratic=2.0, linear=3.0, n_lower=2, fixed_tokens=1)
    # T = 4 + 1 = 5: 2 layers * (2 * 15 + 3 * 5) = 90
    assert float(m(4)) == 90.0


def test_cost_sla_by_hand():
    m = AttentionCostModel(attention="sla", sla_global=1, sla_local=2)  # window W = 3
    # T <= 3: causal; T = 10: 3*4/2 + 7*3 = 27
    assert m(torch.tensor([2, 3, 10])).tolist() == [3.0, 6.0, 27.0]


def test_cost_truncated_upper_layers_by_hand():
    m = AttentionCostModel(n_lower=1, n_upper=2, truncate_to=4, linear=1.0)
    # lower: 10*11/2 + 10 = 65; upper on 4 tokens: 2 * (10 + 4) = 28
    assert float(m(10)) == 93.0
    assert float(m(3)) == 6.0 + 3.0 + 2 * (6.0 + 3.0)  # shorter than L': upper sees all


def test_cost_from_flops():
    m = AttentionCostModel.from_flops(dim=8, n_lower=1)
    assert m.quadratic == 32.0 and m.linear == 2.0 * 8 * (32 + 8)
    assert float(m(2)) == 32.0 * 3 + 640.0 * 2


def test_cost_bad_attention():
    with pytest.raises(ValueError, match="attention='flash'"):
        AttentionCostModel(attention="flash")


def test_trim_cuts_longest_first_and_meets_target():
    lengths = torch.tensor([10, 100, 1000, 50])
    target = 1e5
    kept = choose_kept_lengths(lengths, target, QUAD, floor=20)
    assert float(QUAD(kept).sum()) <= target
    assert kept.tolist()[:2] == [10, 100] and kept[3] == 50  # short ones untouched
    assert 100 < kept[2] < 1000
    # water-filling is tight: one more token on the cut sequence would exceed the target
    assert float(QUAD(kept).sum() - QUAD(kept[2]) + QUAD(kept[2] + 1)) > target


def test_trim_two_long_sequences_share_the_cap():
    kept = choose_kept_lengths(torch.tensor([500, 800, 5]), 2 * 200 * 201 / 2 + 15, QUAD, 1)
    assert kept.tolist() == [200, 200, 5]


def test_trim_respects_floor_and_short_sequences():
    kept = choose_kept_lengths(torch.tensor([5, 1000, 1000]), 1.0, QUAD, floor=30)
    assert kept.tolist() == [5, 30, 30]


def test_trim_noop_under_target_and_deterministic():
    lengths = torch.tensor([3, 7, 9])
    assert choose_kept_lengths(lengths, 1e9, QUAD, 2).tolist() == [3, 7, 9]
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 5000, (64,), generator=g)
    a = choose_kept_lengths(lengths, 1e6, QUAD, 16)
    assert torch.equal(a, choose_kept_lengths(lengths, 1e6, QUAD, 16))


def test_trim_rows_are_independent_batches():
    rows = torch.tensor([[10, 100, 1000, 50], [10, 100, 1000, 50]])
    kept = choose_kept_lengths(rows, torch.tensor([1e5, 1e9]), QUAD, 20)
    assert torch.equal(kept[0], choose_kept_lengths(rows[0], 1e5, QUAD, 20))
    assert kept[1].tolist() == [10, 100, 1000, 50]


def test_sl_semantics():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 1025, (10_000,), generator=g)
    kept = stochastic_length(lengths, 1.5, 1024, g)
    threshold = int(1024**0.75)
    assert (kept <= lengths).all()
    cut = kept != lengths
    assert (kept[cut] == threshold).all() and (lengths[cut] > threshold).all()
    assert torch.equal(kept[lengths <= threshold], lengths[lengths <= threshold])
    # a sequence of length L > threshold is kept whole with probability max_len^alpha / L^2
    long = torch.full((20_000,), 1024)
    kept_whole = float((stochastic_length(long, 1.5, 1024, g) == 1024).double().mean())
    assert abs(kept_whole - 1024**1.5 / 1024**2) < 0.01


@pytest.mark.parametrize("alpha", [1.0, 2.5, 0.5])
def test_sl_alpha_bounds(alpha):
    with pytest.raises(ValueError, match=f"alpha={alpha}"):
        stochastic_length(torch.tensor([10]), alpha, 100)


def test_sampler_warmup_then_trims():
    g = torch.Generator().manual_seed(0)
    model = AttentionCostModel()
    s = LBSLSampler(model, max_len=4096, alpha=1.6, floor=32, warmup_steps=5, generator=g)
    batches = [torch.randint(1, 4097, (16,), generator=g) for _ in range(12)]
    stats = []
    for b in batches:
        kept, st = s(b)
        assert (kept <= b).all()
        stats.append(st)
    assert [st["phase"] for st in stats] == ["warmup"] * 5 + ["lbsl"] * 7
    target = stats[5]["target_cost"]
    assert target is not None and target > 0
    for st in stats[5:]:
        assert st["cost"] <= target + 1e-6
        assert 0 < st["kept_fraction"] <= 1


def test_sampler_refreshes_target():
    g = torch.Generator().manual_seed(1)
    s = LBSLSampler(QUAD, 1000, warmup_steps=2, refresh_every=2, floor=1, generator=g)
    targets = []
    for i in range(8):
        _, st = s(torch.full((4,), 100 if i < 4 else 1000))
        targets.append(st["target_cost"])
    assert targets[-1] > targets[2]  # longer batches since: the refreshed target follows


def test_rank_quantile_target_and_level_by_hand():
    c = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0]], dtype=torch.float64)
    # the 1/3 quantile of 4 values (linear interpolation) is the second one
    assert rank_quantile_target(c, 1 / 3).tolist() == pytest.approx([2.0, 4.0])
    assert rank_quantile_target(c, 0.0, 0.5).tolist() == pytest.approx([0.5, 1.0])
    # trimmed to those: [1, 2, 2, 2] and [2, 4, 4, 4], mean 2.625
    q, f = rank_quantile_level(c, 2.625)
    assert q == pytest.approx(1 / 3, abs=1e-9) and f == 1.0
    # below every step's cheapest rank: all ranks cut, the minimum scaled
    q, f = rank_quantile_level(c, 0.75)  # 0.5 * min: [0.5]*4 and [1.0]*4
    assert q == 0.0 and f == pytest.approx(0.5, abs=1e-9)
    assert rank_quantile_level(c, 100.0) == (1.0, 1.0)  # nothing to trim
    assert quantile_knob(0.25) == (0.0, 0.25) and quantile_knob(1.5) == (0.5, 1.0)
    with pytest.raises(ValueError, match="steps, ranks"):
        rank_quantile_level(torch.ones(3), 1.0)


def test_sampler_single_process_uses_the_mean_target():
    # rank_quantile (the default) needs other ranks; alone it is the fixed mean target
    g = torch.Generator().manual_seed(2)
    s = LBSLSampler(QUAD, 4096, floor=8, warmup_steps=3, generator=g)
    assert s.target_mode == "rank_quantile"
    stats = [s(torch.randint(1, 4097, (8,), generator=g))[1] for _ in range(8)]
    assert len({st["target_cost"] for st in stats[3:]}) == 1
    assert all(st["target_quantile"] is None for st in stats)
    with pytest.raises(ValueError, match="target_mode='median'"):
        LBSLSampler(QUAD, 100, target_mode="median")


def test_sampler_bad_inputs():
    with pytest.raises(ValueError, match="alpha=2.5"):
        LBSLSampler(QUAD, 100, alpha=2.5)
    with pytest.raises(ValueError, match="floor=200 is above max_len=100"):
        LBSLSampler(QUAD, 100, floor=200)
    s = LBSLSampler(QUAD, 100, floor=10, target_cost=1.0)
    with pytest.raises(ValueError, match="below this batch's cost with every sequence cut"):
        s(torch.tensor([50, 60]))
    with pytest.raises(ValueError, match="above max_len=100"):
        s(torch.tensor([500]))


def test_sampler_registered():
    from ultra_hstu_plugin.registry import Registry, register_builtin_components

    r = Registry()
    register_builtin_components(r)
    assert r.get("sampler", "lbsl").load() is LBSLSampler
    assert r.get("sampler", "sl").load() is StochasticLengthSampler


def test_bench_quick_writes_files_and_lbsl_balances(tmp_path):
    from ultra_hstu_plugin.bench import lbsl

    assert lbsl.main(["--out", str(tmp_path), "--quick", "--bound-grid", "40"]) == 0
    for name in ("lbsl.json", "lbsl.md", "lbsl.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = json.loads((tmp_path / "lbsl.json").read_text())["rows"]
    syn = next(r for r in rows if r["source"].startswith("synthetic") and r["ranks"] == 64)
    for key in ("lbsl", "lbsl_mean"):
        assert syn[key]["imbalance"] < syn["sl"]["imbalance"]
        # tuned to keep about SL's tokens, never fewer
        assert syn["sl"]["kept_fraction"] <= syn[key]["kept_fraction"]
        assert syn[key]["kept_fraction"] - syn["sl"]["kept_fraction"] < 0.002
        d = syn[key]["diagnosis"]
        assert d["deficit_untrimmed_share"] + d["deficit_granularity_share"] == pytest.approx(1)
        # no policy at SL's kept fraction beats the bound
        assert syn["bound"]["imbalance_lower_bound"] <= syn[key]["imbalance"] + 1e-9
    # the per-step quantile target balances at least as well as the fixed one
    assert syn["lbsl"]["imbalance"] <= syn["lbsl_mean"]["imbalance"]
    # users handed to ranks by cost first: below what any trim of the ranks' own batches
    # reaches (the bound), at the same tokens kept
    bal = syn["balanced"]
    assert bal["none"]["imbalance"] < syn["none"]["imbalance"]
    assert bal["lbsl"]["imbalance"] < syn["bound"]["imbalance_lower_bound"]
    assert bal["lbsl"]["kept_fraction"] >= syn["sl"]["kept_fraction"]
    assert "length-balanced rank assignment" in (tmp_path / "lbsl.md").read_text()


def test_step_time_statistics_by_hand():
    from ultra_hstu_plugin.bench import lbsl_step_time as st

    x = [1.0, 2.0, 3.0, 4.0]
    assert st.pearson(x, [2.0, 4.0, 6.0, 8.0]) == pytest.approx(1.0)
    assert st.pearson(x, [8.0, 6.0, 4.0, 2.0]) == pytest.approx(-1.0)
    # monotone but not linear: Spearman 1, Pearson below 1
    y = [1.0, 2.0, 3.0, 100.0]
    assert st.spearman(x, y) == pytest.approx(1.0) and st.pearson(x, y) < 0.9
    assert st._ranks([5.0, 1.0, 5.0]) == [2.5, 1.0, 2.5]  # ties share their mean rank
    assert st.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None  # constant: undefined
    fit = st.line_fit(x, [3.0, 5.0, 7.0, 9.0])
    assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(1.0)
