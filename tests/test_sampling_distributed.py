# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The samplers over a real 2-process gloo group (torch.multiprocessing spawn; no GR).

One spawn runs every scenario in turn on the same process group (an error raised on every
rank leaves the group in step, so the next scenario can run):

* LBSL on long-tailed batches that differ per rank: after the warm-up both ranks hold the
  same target, see the same per-rank costs, and their max/mean imbalance is below what the
  unsampled batches would have given;
* ranks with different configurations raise on the first step, naming the field and values;
* an unreachable target on one rank, and a length above max_len on the other, raise on
  both ranks, naming the rank that failed.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ultra_hstu_plugin.sampling import AttentionCostModel, LBSLSampler, StochasticLengthSampler

WARMUP, STEPS, BATCH = 8, 40, 32
FLOPS = AttentionCostModel.from_flops(dim=64, n_lower=2)
QUAD = AttentionCostModel()  # cost = L (L + 1) / 2


def long_tailed(n: int, g: torch.Generator) -> torch.Tensor:
    x = torch.exp(torch.randn(n, generator=g, dtype=torch.float64) * 1.2 + 5.0)
    return x.clamp(1, 4096).to(torch.int64)


def balance_sampler(rank: int, warmup_steps: int = WARMUP) -> LBSLSampler:
    """The LBSL sampler both multi-process tests run on every rank (seeded by rank)."""
    return LBSLSampler(
        FLOPS,
        max_len=4096,
        alpha=1.6,
        floor=32,
        warmup_steps=warmup_steps,
        refresh_every=8,
        generator=torch.Generator().manual_seed(rank),
    )


def _error(fn) -> str:
    try:
        fn()
    except ValueError as e:
        return str(e)
    return ""


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        res = {}
        data = torch.Generator().manual_seed(100 + rank)  # each rank draws its own users
        s = balance_sampler(rank)
        res["balance"] = [s(long_tailed(BATCH, data))[1] for _ in range(STEPS)]
        mean = LBSLSampler(
            FLOPS,
            max_len=4096,
            floor=32,
            warmup_steps=WARMUP,
            refresh_every=8,
            target_mode="mean",
            generator=torch.Generator().manual_seed(rank),
        )
        res["mean"] = [mean(long_tailed(BATCH, data))[1] for _ in range(STEPS)]
        lengths = long_tailed(BATCH, data)
        alpha = 1.6 if rank == 0 else 1.5
        res["mismatch"] = _error(
            lambda: LBSLSampler(FLOPS, 4096, alpha=alpha, warmup_steps=2)(lengths)
        )
        # target: two sequences at the floor; rank 1's four long ones cannot get there
        fixed = LBSLSampler(QUAD, 4096, floor=16, target_cost=2 * float(QUAD(16)))
        res["unreachable"] = _error(lambda: fixed(torch.full((4,), 8 if rank == 0 else 1000)))
        sl = StochasticLengthSampler(QUAD, 100)
        res["max_len"] = _error(lambda: sl(torch.tensor([500 if rank == 0 else 50])))
        Path(out, f"rank{rank}.json").write_text(json.dumps(res))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))

    # --- both ranks converge to the same target and balance their load
    b0, b1 = r0["balance"], r1["balance"]
    assert [s["phase"] for s in b0] == ["warmup"] * WARMUP + ["lbsl"] * (STEPS - WARMUP)
    after = range(WARMUP, STEPS)
    for i in after:
        assert b0[i]["target_cost"] == b1[i]["target_cost"] > 0
        assert b0[i]["rank_costs"] == b1[i]["rank_costs"]  # the all-gather
        assert b0[i]["imbalance"] == b1[i]["imbalance"]
        for s in (b0[i], b1[i]):
            assert s["cost"] <= s["target_cost"] * (1 + 1e-9)
            assert s["cost"] <= s["cost_unsampled"]
        # per step: the q quantile of the ranks' unsampled costs, the same q on both ranks
        q, f = b0[i]["target_quantile"], b0[i]["target_factor"]
        assert q is not None and (q, f) == (b1[i]["target_quantile"], b1[i]["target_factor"])
        costs = torch.tensor([b0[i]["cost_unsampled"], b1[i]["cost_unsampled"]])
        assert b0[i]["target_cost"] == pytest.approx(f * float(torch.quantile(costs, q)))
    levels = [(b0[i]["target_quantile"], b0[i]["target_factor"]) for i in after]
    assert all(levels[j] == levels[0] for j in range(8))  # fixed until the refresh...
    assert len(set(levels)) > 1  # ...refreshed every 8 steps
    # target_mode="mean": one target between refreshes, the same on both ranks
    m0, m1 = r0["mean"], r1["mean"]
    assert [m0[i]["target_cost"] for i in after] == [m1[i]["target_cost"] for i in after]
    assert len({m0[i]["target_cost"] for i in range(WARMUP, WARMUP + 8)}) == 1
    assert len({m0[i]["target_cost"] for i in after}) > 1
    assert all(m0[i]["target_quantile"] is None for i in after)
    lbsl = sum(b0[i]["imbalance"] for i in after) / len(after)
    none = sum(b0[i]["imbalance_unsampled"] for i in after) / len(after)
    sl = sum(b0[i]["imbalance"] for i in range(WARMUP)) / WARMUP
    assert lbsl < none and lbsl < 1.1, (lbsl, none, sl)
    assert 0.2 < b0[-1]["kept_fraction_global"] < 1

    # --- bad input: the same clear error on both ranks, naming the value and the rank
    for r in (r0, r1):
        assert "sampler configuration: alpha differs (rank 0: 1.6, rank 1: 1.5)" in r["mismatch"]
        assert "rank 1: target cost 272 is below this batch's cost" in r["unreachable"]
        assert "rank 0:" not in r["unreachable"]
        assert "rank 0: a length 500 is above max_len=100" in r["max_len"]
