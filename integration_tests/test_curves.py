# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Training curves through GR's loops: a tiny ``ultra-hstu train`` logging every 2 steps,
``ultra-hstu plot`` on its folder, and an eval-only run into the same folder."""

import json

import pytest

from ultra_hstu_plugin.train.curves import planned_train_steps

from .conftest import run_cli

SMOKE = "gin_configs/ml100k_smoke_cpu.gin"
PNG = b"\x89PNG\r\n\x1a\n"


def _train_args(out, ml100k_dir, *extra, mode="train-eval"):
    args = ["train", "--gin", SMOKE, "--device", "cpu", "--mode", mode]
    for b in (
        f"make_dataloaders.data_dir='{ml100k_dir}'",
        f"RunSettings.output_dir='{out}'",
        "RunSettings.log_every_steps=2",
        "eval_loop.num_batches=3",
        *extra,
    ):
        args += ["--gin-param", b]
    return args


@pytest.fixture(scope="module")
def run(tmp_path_factory, ml100k_dir):
    out = tmp_path_factory.mktemp("curves") / "run"
    res = run_cli(*_train_args(out, ml100k_dir, "train_loop.num_batches=6"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return out, res


def _points(path, mode):
    return [p for p in map(json.loads, path.read_text().splitlines()) if p["mode"] == mode]


def test_loss_and_metrics_every_n_steps_in_curves_jsonl(run):
    out, _ = run
    train = _points(out / "curves.jsonl", "train")
    assert [p["step"] for p in train] == [2, 4, 6]
    for p in train:
        assert p["loss"] > 0 and p["loss/rating"] == pytest.approx(p["loss"])
        assert 0 < p["metric/lifetime_ne/rating"] < 2 and "metric/window_gauc/rating" in p
    evals = _points(out / "curves.jsonl", "eval")
    assert [p["step"] for p in evals] == [2, 3] and {p["train_step"] for p in evals} == {6}
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["train_loss"] == pytest.approx(train[-1]["loss"])
    # the last eval point is the run's eval result
    assert evals[-1]["metric/lifetime_ne/rating"] == pytest.approx(
        summary["eval"]["metric/lifetime_ne/rating"]
    )


def test_loss_and_metrics_in_tensorboard_under_grs_tags(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = run
    events = EventAccumulator(str(out / "tensorboard" / "rank0"))
    events.Reload()
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert steps["losses/train_total"] == [2, 4, 6]
    assert steps["losses/train_rating"] == [2, 4, 6]
    assert steps["train_metric/lifetime_ne/rating"] == [2, 4, 6]
    assert steps["eval_metric/lifetime_ne/rating"] == [2, 3]


def test_one_progress_bar_for_the_run_and_an_eval_table(run):
    _, res = run
    assert "train: 100%" in res.stderr and "6/6" in res.stderr and "step/s" in res.stderr
    assert "/128" not in res.stderr  # not the per-epoch bar (128 batches an epoch)
    table = res.stdout[res.stdout.index("eval metrics over the eval split") :].splitlines()
    assert table[1].split() == ["task", "NE", "GAUC", "accuracy", "GAUC", "samples"]
    assert table[3].split()[0] == "rating"
    assert "eval NE: rating=" in res.stdout


def test_plot_writes_the_pngs(run):
    out, _ = run
    res = run_cli("plot", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("train_loss.png", "train_ne.png", "eval_ne.png"):
        path = out / "plots" / name
        assert f"wrote {path}" in res.stdout
        assert path.read_bytes().startswith(PNG)


def test_eval_only_run_keeps_metrics_json_and_writes_its_own(run, ml100k_dir):
    out, _ = run
    before = (out / "metrics.json").read_bytes()
    first = json.loads(before)
    res = run_cli(
        *_train_args(
            out, ml100k_dir, f"RunSettings.load_checkpoint='{first['checkpoint']}'", mode="eval"
        )
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    assert (out / "metrics.json").read_bytes() == before
    again = json.loads((out / "eval_metrics.json").read_text())
    assert again["mode"] == "eval" and "train" not in again
    assert again["eval"]["metric/lifetime_ne/rating"] == pytest.approx(
        first["eval"]["metric/lifetime_ne/rating"], rel=1e-9
    )
    assert [p["step"] for p in _points(out / "eval_curves.jsonl", "eval")] == [2, 3]
    assert _points(out / "curves.jsonl", "train")  # the training curve is still there
    assert (out / "tensorboard" / "eval_rank0").is_dir()


def test_planned_steps_are_what_grs_train_loop_runs():
    assert planned_train_steps(128, num_epochs=10, num_batches=300) == 300
    assert planned_train_steps(128, num_epochs=2, num_batches=None) == 256
    assert planned_train_steps(128, num_epochs=2, num_batches=1000) == 256
    assert planned_train_steps(128, num_epochs=1, num_batches=6, start=2) == 4
