# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu bench retrieval``'s report (means, verdicts, published rows) and plan; no GR."""

from pathlib import Path

import pytest

from ultra_hstu_plugin.bench import retrieval as bench
from ultra_hstu_plugin.bench import retrieval_published as published

REPO = Path(__file__).resolve().parents[1]


def _row(ds, model, seed, hr10, ndcg10, status="ok"):
    if status != "ok":
        return {"dataset": ds, "model": model, "seed": seed, "status": status, "error": "boom"}
    return {
        "dataset": ds,
        "model": model,
        "seed": seed,
        "status": "ok",
        "hr@10": hr10,
        "ndcg@10": ndcg10,
        "hr@50": 0.2,
        "ndcg@50": 0.06,
        "mrr": 0.04,
        "best_epoch": 9,
        "epochs_run": 20,
        "stop_reason": "early_stopping",
        "wall_seconds": 100.0,
    }


def test_means_ratios_and_verdicts():
    rows = [
        _row("amzn-beauty", "hstu", 0, 0.080, 0.044),
        _row("amzn-beauty", "hstu", 1, 0.078, 0.044),
        _row("amzn-beauty", "ultra_hstu", 0, 0.081, 0.045),
        _row("amzn-beauty", "ultra_hstu", 1, 0.081, 0.045),
        _row("amzn-beauty", "sasrec", 0, 0.070, 0.040),
        _row("amzn-beauty", "sasrec", 1, 0, 0, status="timeout"),
        _row("amzn-games", "hstu", 0, 0.05, 0.03),
        _row("amzn-games", "ultra_hstu", 0, 0.04, 0.03),
    ]
    agg = bench.aggregate(rows)
    mean, std = agg[("amzn-beauty", "hstu")]["hr@10"]
    assert mean == pytest.approx(0.079) and std == pytest.approx(0.001414, rel=1e-3)
    assert len(agg[("amzn-beauty", "sasrec")]["ok"]) == 1
    v = bench.ultra_vs_hstu(agg, "amzn-beauty")
    assert v["verdict"] == "met" and v["hr@10"] == pytest.approx(0.081 / 0.079)
    assert bench.ultra_vs_hstu(agg, "amzn-games")["verdict"] == "missed"
    assert bench.ultra_vs_hstu(agg, "amzn-toys")["verdict"] == "not measured"
    zero = bench.aggregate([_row("d", "hstu", 0, 0.0, 0.0), _row("d", "ultra_hstu", 0, 0.0, 0.0)])
    assert bench.ultra_vs_hstu(zero, "d")["verdict"].startswith("not measurable")
    assert bench.vs_published(0.0788 * 1.05, 0.0788)[1] == "within 10%"
    assert bench.vs_published(0.05, 0.0788)[1] == "below by more than 10%"
    md = bench.markdown({"rows": rows, "environment": {"device": "H200"}, "command": "c"})
    assert "| amzn-beauty | GR HSTU | 2/2 | 0.0790 ± 0.0014 |" in md
    assert "| amzn-beauty | SASRec | 1/2 |" in md
    assert "Overall: not met on every dataset." in md
    assert "| amzn-beauty | GR HSTU (HSTU) | 0.0790 | 0.0788 | 1.003 |" in md
    assert "SASRec+SS" in md and "no full-ranking SASRec or HSTU row" in md  # games
    assert "amzn-beauty sasrec seed 1: timeout" in md


def test_plan_is_seed_major_largest_dataset_first():
    pr = bench.resolve(bench.parse_args(["--preset", "gpu"]))
    runs = bench.plan(pr)
    assert len(runs) == 36 and len(set(runs)) == 36
    assert runs[0] == ("amzn-sports", "sasrec", 0) and {s for _, _, s in runs[:12]} == {0}
    for d, m, _ in runs:
        assert bench.gin_file(d, m).exists(), (d, m)
    assert bench.gin_file("ml-100k", "hstu").exists()
    cmd = bench.run_command(pr, "amzn-toys", "hstu", 2, Path("/r"), Path("/d"), 99.0)
    joined = " ".join(cmd)
    for text in (
        "amzn_toys_hstu.gin",
        "train_fn.random_seed = 2",
        "ultra_hstu.RetrievalRun.validation = True",
        "early_stopping_patience = 10",
        "max_train_seconds = 99",
        "RetrievalRun.device = 'cuda'",
    ):
        assert text in joined, text


def test_published_markdown_file_is_the_modules_output():
    path = REPO / "benchmarks" / "results" / "retrieval_published.md"
    assert path.read_text() == published.markdown()
    for d in ("amzn-beauty", "amzn-sports", "amzn-toys"):
        for m in ("sasrec", "hstu"):
            row = published.target_row(d, m)
            assert row is not None and 0 < row.ndcg10 < row.hr10 < 1
    assert published.target_row("amzn-games", "hstu") is None
    assert "amzn-games" in published.NO_SOURCE
