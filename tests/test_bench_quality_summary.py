# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Target 1's wall-time ratio compares runs that shared the GPU alike, and only those."""

from ultra_hstu_plugin.bench.quality import aggregate, render, summarize


def _row(config, family, ne, wall, parallel, seed=0):
    return {
        "dataset": "synthetic",
        "config": config,
        "family": family,
        "depth": 2,
        "description": config,
        "seed": seed,
        "parallel": parallel,
        "status": "ok",
        "tasks": ["rating"],
        "ne": {"rating": ne},
        "auc": {"rating": 0.6},
        "gauc": {"rating": 0.5},
        "train_flops": 1e14 if family == "ultra" else 1e15,
        "train_wall_seconds": wall,
    }


def _pair(rows, ultra):
    (pair,) = [
        p
        for p in summarize(aggregate(rows))["synthetic"]["target1"]["pairs"]
        if p["ultra"] == ultra
    ]
    return pair


def test_wall_ratio_between_runs_at_the_same_parallelism():
    rows = [_row("hstu_d2", "hstu", 1.0, 200.0, 8), _row("ultra_d2", "ultra", 0.9, 80.0, 8)]
    pair = _pair(rows, "ultra_d2")
    assert pair["wall_ratio"] == 0.4 and pair["met"]


def test_no_wall_ratio_between_runs_that_shared_the_gpu_differently(tmp_path):
    rows = [_row("hstu_d2", "hstu", 1.0, 200.0, 12), _row("ultra_d2", "ultra", 0.9, 80.0, 1)]
    pair = _pair(rows, "ultra_d2")
    assert pair["wall_ratio"] is None and not pair["met"]
    md = (tmp_path / "quality.md").read_text() if render(rows, {}, tmp_path) else ""
    assert "- (--parallel [12] vs [1])" in md


def test_a_config_whose_seeds_ran_at_two_parallelisms_is_not_compared():
    rows = [
        _row("hstu_d2", "hstu", 1.0, 200.0, 8),
        _row("ultra_d2", "ultra", 0.9, 80.0, 8),
        _row("ultra_d2", "ultra", 0.9, 60.0, 1, seed=1),
    ]
    assert _pair(rows, "ultra_d2")["wall_ratio"] is None
