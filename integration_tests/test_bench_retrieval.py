# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The retrieval trainer's validation split, early stopping and time cap, and ``ultra-hstu
bench retrieval --preset cpu-smoke`` end to end, on the first users of Amazon Beauty
(converted from ``$ULTRA_HSTU_SHARED_DATA``, default ``/work/shared/data``, into tmp_path;
skipped only where that file is absent; nothing is downloaded)."""

from __future__ import annotations

import json
import lzma
import math
import os
from pathlib import Path

import gin
import pandas as pd
import pytest

from ultra_hstu_plugin.data import retrieval as rdata
from ultra_hstu_plugin.retrieval import trainer

from .conftest import REPO, run_cli

BEAUTY_HSTU = REPO / "gin_configs" / "retrieval" / "amzn_beauty_hstu.gin"
SMOKE = REPO / "gin_configs" / "retrieval" / "common" / "amzn_smoke_cpu.gin"
USERS = 120


@pytest.fixture(autouse=True)
def _clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture(scope="session")
def beauty_dir(tmp_path_factory) -> Path:
    shared = Path(os.environ.get(rdata.SHARED_DATA_ENV) or "/work/shared/data")
    src = shared / rdata.AMZN_BEAUTY.default_source
    if not src.exists():
        pytest.skip(f"{src} is absent (set ${rdata.SHARED_DATA_ENV} to the shared data folder)")
    out = tmp_path_factory.mktemp("beauty")
    with lzma.open(src, "rt") as f:
        lines = [line for _, line in zip(range(USERS), f)]
    (out / "Beauty_head.txt").write_text("".join(lines))
    rdata.prepare(rdata.AMZN_BEAUTY, out, source=out / "Beauty_head.txt")
    return out


def _config(beauty_dir: Path, out: Path, *bindings: str) -> trainer.RetrievalRun:
    return trainer.load_config(
        [str(BEAUTY_HSTU), str(SMOKE)],
        [
            f"ultra_hstu.RetrievalData.data_dir = '{beauty_dir}'",
            f"ultra_hstu.RetrievalRun.output_dir = '{out}'",
            "train_fn.eval_interval = 1000",
            *bindings,
        ],
    )


def _row_items(row: dict) -> list:
    """A DatasetV2 row's items in time order: its history (chronological) and target."""
    n = int(row["history_lengths"])
    return [int(i) for i in row["historical_ids"][:n]] + [int(row["target_ids"])]


def test_validation_split_keeps_the_validation_item_out_of_training(beauty_dir, tmp_path):
    _config(beauty_dir, tmp_path, "ultra_hstu.RetrievalRun.validation = True")
    p = trainer.train_fn_settings()
    data = trainer.trainer_get_reco_dataset()(
        dataset_name="amzn-beauty", max_sequence_length=p["max_sequence_length"], chronological=True
    )
    train, val, test = trainer.splits(data, validation=True)
    seqs = pd.read_csv(rdata.AMZN_BEAUTY.csv_path(beauty_dir))["sequence_item_ids"]
    L = p["max_sequence_length"]
    for i, s in enumerate(seqs):
        items = [int(v) for v in s.split(",")]
        # training sees the items before the last two only (history + its last target)
        assert _row_items(train[i]) == items[:-2][-(L + 1) :]
        # validation: the second-to-last item from everything before it
        assert int(val[i]["target_ids"]) == items[-2]
        assert _row_items(val[i]) == items[:-1][-(L + 1) :]
        # test: the last item, the validation item in its history
        assert int(test[i]["target_ids"]) == items[-1]
        assert _row_items(test[i]) == items[-(L + 1) :]
    # GR's own splits are untouched (the copies have their own row caches)
    assert trainer.splits(data, validation=False) == (data.train_dataset, None, data.eval_dataset)
    assert (
        _row_items(data.train_dataset[0]) == [int(v) for v in seqs[0].split(",")][:-1][-(L + 1) :]
    )


def _scripted_evaluate(monkeypatch, val_ndcg):
    """trainer.evaluate returning scripted validation NDCG@10s; records what each call
    evaluated: the split (items left out) and a checksum of the weights."""
    from ultra_hstu_plugin.host import ignored_last_n

    calls = []

    def fake(model, dataset, loader, sampler, p, device, world_size, max_batches=None):
        split = {0: "test", 1: "validation"}[ignored_last_n(loader.dataset)]
        weights = float(sum(t.double().sum() for t in model.state_dict().values()))
        calls.append((split, weights))
        n_val = sum(c[0] == "validation" for c in calls)
        v = val_ndcg[n_val - 1] if split == "validation" else 0.5
        return {k: v for k in trainer.REPORTED}

    monkeypatch.setattr(trainer, "evaluate", fake)
    return calls


def test_early_stopping_reports_the_test_metrics_of_the_best_validation_epoch(
    beauty_dir, tmp_path, monkeypatch
):
    calls = _scripted_evaluate(monkeypatch, [0.1, 0.3, 0.2, 0.25, 0.1, 0.9, 0.9])
    settings = _config(
        beauty_dir,
        tmp_path,
        "train_fn.num_epochs = 7",
        "train_fn.learning_rate = 1e-2",
        "ultra_hstu.RetrievalRun.validation = True",
        "ultra_hstu.RetrievalRun.early_stopping_patience = 3",
    )
    summary = trainer.train(settings)
    # best at epoch 1; epochs 2, 3, 4 do not beat it: stop after epoch 4 (0.9 never seen)
    assert [c[0] for c in calls] == ["validation"] * 5 + ["test"]
    assert (summary["stop_reason"], summary["epochs_run"], summary["best_epoch"]) == (
        "early_stopping",
        5,
        1,
    )
    assert summary["validation"]["ndcg@10"] == 0.3 and summary["validation"]["epoch"] == 1
    assert summary["test"]["epoch"] == 1 and summary["test"]["hr@10"] == 0.5
    assert summary["eval"] == summary["test"]
    # the test split was ranked with epoch 1's weights, not the last epoch's
    val_weights = [w for s, w in calls if s == "validation"]
    assert len(set(val_weights)) == 5  # training moved the weights every epoch
    assert calls[-1][1] == val_weights[1] != val_weights[-1]
    curves = [json.loads(x) for x in (tmp_path / "curves.jsonl").read_text().splitlines()]
    assert [c["split"] for c in curves] == ["validation"] * 5
    assert json.loads((tmp_path / "metrics.json").read_text())["best_epoch"] == 1


def test_max_train_seconds_stops_within_the_epoch_and_still_tests(
    beauty_dir, tmp_path, monkeypatch
):
    calls = _scripted_evaluate(monkeypatch, [0.1])
    settings = _config(
        beauty_dir,
        tmp_path,
        "train_fn.num_epochs = 5",
        "ultra_hstu.RetrievalRun.validation = True",
        "ultra_hstu.RetrievalRun.max_train_seconds = 0.001",
    )
    summary = trainer.train(settings)
    assert (summary["stop_reason"], summary["epochs_run"], summary["steps"]) == (
        "max_train_seconds",
        1,
        2,  # the clock starts after the first step (autotuning excluded)
    )
    assert summary["first_step_seconds"] is not None and summary["first_step_seconds"] >= 0
    assert [c[0] for c in calls] == ["validation", "test"]
    assert summary["test"]["epoch"] == 0


def test_patience_without_validation_is_an_error(beauty_dir, tmp_path):
    with pytest.raises(ValueError, match="early_stopping_patience needs .*validation = True"):
        _config(beauty_dir, tmp_path, "ultra_hstu.RetrievalRun.early_stopping_patience = 2")
    with pytest.raises(ValueError, match="early_stopping_metric must be one of"):
        _config(beauty_dir, tmp_path, "ultra_hstu.RetrievalRun.early_stopping_metric = 'auc'")


def test_a_bad_autotuning_bound_is_an_error_naming_it(beauty_dir, tmp_path):
    with pytest.raises(ValueError, match="RetrievalRun.autotune_max_configs must be an integer"):
        _config(beauty_dir, tmp_path, "ultra_hstu.RetrievalRun.autotune_max_configs = 0")
    with pytest.raises(ValueError, match="RetrievalRun.autotune_record must be a path or None"):
        _config(beauty_dir, tmp_path, "ultra_hstu.RetrievalRun.autotune_record = 3")


def test_cpu_smoke_bench_end_to_end(beauty_dir, tmp_path):
    out = tmp_path / "bench"
    r = run_cli(
        "bench", "retrieval", "--preset", "cpu-smoke", "--data-dir", str(beauty_dir),
        "--out", str(out), timeout=1500,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "retrieval.jsonl").read_text().splitlines()]
    assert sorted(r["model"] for r in rows) == ["hstu", "sasrec", "ultra_hstu"]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["dataset"] == "amzn-beauty" and row["seed"] == 0
        assert all(math.isfinite(row[k]) and 0 <= row[k] <= 1 for k in trainer.REPORTED)
        assert row["epochs_run"] <= 2 and row["best_epoch"] in (0, 1)
        assert (Path(row["log"])).exists()
    doc = json.loads((out / "retrieval.json").read_text())
    assert doc["environment"]["git_commit"] and doc["command"].startswith(
        "ultra-hstu bench retrieval --preset cpu-smoke"
    )
    assert len(doc["rows"]) == doc["planned_runs"] == 3
    md = (out / "retrieval.md").read_text()
    for text in ("## Test metrics", "ULTRA / HSTU", "SASRec+SS", "0.0921", "| amzn-beauty |"):
        assert text in md, text
    # the report re-renders from the json alone
    r2 = run_cli(
        "bench", "retrieval", "--report-only", str(out / "retrieval.json"), "--out",
        str(tmp_path / "re"), "--tag", "_re",
    )  # fmt: skip
    assert r2.returncode == 0, r2.stderr
    assert (tmp_path / "re" / "retrieval_re.md").read_text() == md


def test_a_failing_run_is_recorded_and_the_bench_goes_on(beauty_dir, tmp_path):
    from ultra_hstu_plugin.bench import retrieval as bench

    pr = bench.resolve(
        bench.parse_args(["--preset", "cpu-smoke", "--gin-param", "train_fn.nonsense = 1"])
    )
    row = bench.run_one(pr, "amzn-beauty", "sasrec", 0, tmp_path, beauty_dir, 10.0)
    assert row["status"] == "failed" and "nonsense" in row["error"], row
    doc = {"rows": [row], "environment": {}, "command": "x"}
    assert "Runs without a result" in bench.markdown(doc)
