# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""A quality-bench run that times out still says how far it got (its last training row)."""

import json

from ultra_hstu_plugin.bench.quality import last_progress


def test_last_training_row_is_kept_and_a_cut_line_skipped(tmp_path):
    rows = [
        {"mode": "train", "train_step": 100, "seconds": 294.6, "metric/lifetime_ne/rating": 1.02},
        {"mode": "eval", "train_step": 100, "seconds": 300.0, "metric/lifetime_ne/rating": 0.9},
        {
            "mode": "train",
            "train_step": 200,
            "seconds": 580.1,
            "metric/lifetime_ne/rating": 0.97,
            "metric/lifetime_ne/love": 0.99,
            "loss": 0.25,
        },
    ]
    text = "\n".join(json.dumps(r) for r in rows) + '\n{"mode": "tra'  # killed mid-write
    (tmp_path / "curves.jsonl").write_text(text)
    assert last_progress(tmp_path) == {
        "train_step": 200,
        "seconds": 580.1,
        "lifetime_ne": {"rating": 0.97, "love": 0.99},
    }


def test_no_progress_before_the_first_logged_step(tmp_path):
    assert last_progress(tmp_path) is None
    (tmp_path / "curves.jsonl").write_text("")
    assert last_progress(tmp_path) is None
