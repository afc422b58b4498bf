# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Length-balanced rank assignment: the partition and the distributed sampler built on it."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ultra_hstu_plugin.sampling import AttentionCostModel
from ultra_hstu_plugin.sampling.balance import (
    LengthBalancedDistributedSampler,
    balanced_assignment,
    rank_costs,
)

QUAD = AttentionCostModel()  # cost = L (L + 1) / 2


def long_tailed(n: int, seed: int, sigma: float = 1.4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.exp(torch.randn(n, generator=g, dtype=torch.float64) * sigma + 5.0)
    return x.clamp(1, 8192).to(torch.int64)


def _max_over_mean(loads: torch.Tensor) -> torch.Tensor:
    return loads.max(-1).values / loads.mean(-1)


@settings(deadline=None, max_examples=40)
@given(
    world=st.integers(1, 9),
    per=st.integers(1, 12),
    steps=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_assignment_is_an_equal_size_partition(world, per, steps, seed):
    costs = QUAD(long_tailed(steps * world * per, seed)).view(steps, world * per)
    parts = balanced_assignment(costs, world)
    assert parts.shape == (steps, world, per)
    for s in range(steps):  # every user exactly once
        assert sorted(parts[s].flatten().tolist()) == list(range(world * per))
    # deterministic: the same costs give the same assignment (every rank computes it)
    assert torch.equal(parts, balanced_assignment(costs, world))


@settings(deadline=None, max_examples=25)
@given(world=st.integers(2, 16), seed=st.integers(0, 2**16))
def test_assignment_beats_position_and_meets_the_greedy_bound(world, seed):
    per = 16
    costs = QUAD(long_tailed(20 * world * per, seed)).view(20, world * per)
    parts = balanced_assignment(costs, world)
    loads = torch.gather(costs, -1, parts.flatten(1)).view(20, world, per).sum(-1)
    by_position = costs.view(20, world, per).sum(-1)
    assert float(_max_over_mean(loads).mean()) <= float(_max_over_mean(by_position).mean())
    # greedy LPT with a capacity: the heaviest rank is at most the mean plus one user's
    # cost (the user that tipped it), or that rank's own heaviest user when it dominates
    mean = costs.sum(-1) / world
    heaviest = costs.max(-1).values
    assert bool((loads.max(-1).values <= torch.maximum(mean + heaviest, heaviest) + 1e-6).all())


def test_assignment_by_hand():
    # 4 users over 2 ranks: {10, 1} and {6, 5} is the best split (11 / 11)
    parts = balanced_assignment(torch.tensor([10.0, 6.0, 5.0, 1.0]), 2)
    groups = sorted(sorted(p) for p in parts.tolist())
    assert groups == [[0, 3], [1, 2]]


def test_swap_refinement_fixes_what_greedy_leaves():
    # capacity 3: greedy puts 9, 8 on their own ranks, 4 on the 8 (12), the 3s on the 9
    # (12, then 15: that rank is full) and the 1 on the other: {9, 3, 3} = 15, {8, 4, 1} = 13.
    # Swapping the 9 and the 8 reaches the optimum 14 / 14.
    costs = torch.tensor([9.0, 8.0, 4.0, 3.0, 3.0, 1.0])
    greedy = balanced_assignment(costs, 2, refine_steps=0)
    refined = balanced_assignment(costs, 2)
    load = lambda p: sorted(float(costs[r].sum()) for r in p)  # noqa: E731
    assert load(refined) == [14.0, 14.0]
    assert load(greedy) == [13.0, 15.0]


def test_assignment_bad_input():
    with pytest.raises(ValueError, match="do not split evenly over 3 ranks"):
        balanced_assignment(torch.ones(7), 3)
    with pytest.raises(ValueError, match="world=0"):
        balanced_assignment(torch.ones(4), 0)


def test_sampler_ranks_cover_each_global_batch_once_and_balance():
    # a tail mild enough that no single user outweighs a rank's mean share
    lengths = long_tailed(1000, 3, sigma=0.6)
    world, batch = 4, 16
    samplers = [
        LengthBalancedDistributedSampler(lengths, batch, QUAD, num_replicas=world, rank=r, seed=7)
        for r in range(world)
    ]
    per_rank = [list(s) for s in samplers]
    n_batches = 1000 // (batch * world)
    assert all(len(p) == len(s) == n_batches * batch for p, s in zip(per_rank, samplers))
    batches = samplers[0].global_batches()
    for b in range(n_batches):  # the ranks' b-th batches together are global batch b
        got = sorted(i for p in per_rank for i in p[b * batch : (b + 1) * batch])
        assert got == sorted(batches[b].tolist())
    loads = rank_costs(samplers[0])
    by_position = QUAD(lengths[batches]).view(n_batches, world, batch).sum(-1)
    assert float(_max_over_mean(loads).mean()) < float(_max_over_mean(by_position).mean())
    assert float(_max_over_mean(loads).mean()) < 1.05


def test_sampler_epochs_and_determinism():
    lengths = long_tailed(512, 4)
    s = LengthBalancedDistributedSampler(lengths, 8, QUAD, num_replicas=2, rank=1, seed=1)
    first = list(s)
    assert first == list(LengthBalancedDistributedSampler(lengths, 8, QUAD, 2, 1, seed=1))
    s.set_epoch(1)
    assert list(s) != first
    unshuffled = LengthBalancedDistributedSampler(lengths, 8, QUAD, 2, 0, shuffle=False)
    assert sorted(unshuffled.global_batches()[0].tolist()) == list(range(16))


def test_sampler_bad_input():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        LengthBalancedDistributedSampler(torch.ones(10, dtype=torch.int64), 4, QUAD, 4, 0)
    with pytest.raises(ValueError, match="rank=2"):
        LengthBalancedDistributedSampler(torch.ones(64, dtype=torch.int64), 4, QUAD, 2, 2)
    with pytest.raises(ValueError, match="row 1 has a negative length -3"):
        LengthBalancedDistributedSampler(torch.tensor([1, -3, 2, 2]), 1, QUAD, 2, 0)


def test_row_history_lengths_from_a_movielens_frame():
    # GR's layout: comma-joined ids, with or without brackets; the last max_num_candidates
    # events are candidates, histories are capped at _max_uih_len, rows GR skips get 0
    from types import SimpleNamespace

    import pandas as pd

    from ultra_hstu_plugin.host.ranking import movielens_history_lengths

    frame = pd.DataFrame(
        {"sequence_item_ids": ["1,2,3,4,5", "[1, 2, 3]", "7", "1,2,3,4,5,6,7,8,9"]}
    )
    ds = SimpleNamespace(ratings_frame=frame, _max_num_candidates=2, _max_uih_len=4)
    assert movielens_history_lengths(ds).tolist() == [3, 1, 0, 4]
    with pytest.raises(ValueError, match="has no ratings_frame"):
        movielens_history_lengths(SimpleNamespace())
