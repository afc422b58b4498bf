# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The eval table and ``ultra-hstu plot`` on hand-written run files (no GR needed)."""

import json

import pytest

from ultra_hstu_plugin import config
from ultra_hstu_plugin.report import eval_table, plot_run, read_curves

PNG = b"\x89PNG\r\n\x1a\n"


def _metrics(ne, gauc, task="rating"):
    return {
        f"metric/lifetime_ne/{task}": ne,
        f"metric/window_ne/{task}": ne + 0.01,
        f"metric/lifetime_gauc/{task}": gauc,
        f"metric/lifetime_accuracy/{task}": 0.6,
        f"metric/lifetime_gauc_num_samples/{task}": 113.0,
    }


def test_eval_table_has_a_row_per_task_with_lifetime_values():
    table = eval_table({**_metrics(0.9946, 0.5555), **_metrics(0.9, 0.7, task="love")})
    lines = table.splitlines()
    assert lines[0].split() == ["task", "NE", "GAUC", "accuracy", "GAUC", "samples"]
    assert lines[2].split() == ["rating", "0.9946", "0.5555", "0.6000", "113"]
    assert lines[3].split()[:3] == ["love", "0.9000", "0.7000"]
    assert "0.0046" not in table  # window values are not in it (0.9946 + 0.01)


def test_eval_table_of_a_regression_task_has_its_columns():
    table = eval_table({"metric/lifetime_mse/watch": 2.5, "metric/lifetime_mae/watch": 1.25})
    assert table.splitlines()[0].split() == ["task", "MSE", "MAE", "GAUC", "samples"]
    assert table.splitlines()[2].split() == ["watch", "2.5000", "1.2500", "-"]


def _write_run(run_dir, eval_only_too=False):
    run_dir.mkdir()
    rows = [
        {"mode": "train", "step": s, "train_step": s, "loss": 1.0 / s, "loss/rating": 1.0 / s,
         **_metrics(1.0 - s / 100, 0.5)}
        for s in (2, 4, 6)
    ] + [
        {"mode": "eval", "step": s, "train_step": 6, **_metrics(0.99, 0.55)} for s in (2, 3)
    ]  # fmt: skip
    (run_dir / "curves.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if eval_only_too:
        (run_dir / "eval_curves.jsonl").write_text(json.dumps(rows[-1]) + "\n")


def test_plot_writes_loss_and_ne_pngs(tmp_path):
    _write_run(tmp_path / "run", eval_only_too=True)
    written = plot_run(tmp_path / "run")
    assert [p.name for p in written] == ["train_loss.png", "train_ne.png", "eval_ne.png"]
    for path in written:
        assert path.parent == tmp_path / "run" / "plots"
        assert path.read_bytes().startswith(PNG)
    points = read_curves(tmp_path / "run")
    assert [p["file"] for p in points].count("eval_curves.jsonl") == 1


def test_plot_of_a_train_only_run_and_another_out_dir(tmp_path):
    run = tmp_path / "run"
    _write_run(run)
    lines = (run / "curves.jsonl").read_text().splitlines()
    (run / "curves.jsonl").write_text("\n".join(line for line in lines if '"train"' in line))
    written = plot_run(run, tmp_path / "png")
    assert [p.name for p in written] == ["train_loss.png", "train_ne.png"]
    assert all(p.parent == tmp_path / "png" for p in written)


def test_plot_of_a_folder_without_curves_names_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="curves.jsonl or eval_curves.jsonl"):
        plot_run(tmp_path)


def test_eval_only_runs_have_their_own_files():
    assert config.metrics_file_name("eval") == "eval_metrics.json"
    assert config.curves_file_name("eval") == "eval_curves.jsonl"
    for mode in ("train", "train-eval"):
        assert config.metrics_file_name(mode) == "metrics.json"
        assert config.curves_file_name(mode) == "curves.jsonl"


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_log_every_steps_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="RunSettings.log_every_steps"):
        config.RunSettings(log_every_steps=bad).validate()
    config.RunSettings(log_every_steps=1).validate()


def test_a_cut_last_line_is_left_out_and_any_other_bad_line_is_an_error(tmp_path):
    good = json.dumps({"mode": "train", "train_step": 5, "loss": 0.3})
    (tmp_path / "curves.jsonl").write_text(good + '\n{"mode": "tr')  # killed mid-write
    assert [p["train_step"] for p in read_curves(tmp_path)] == [5]
    (tmp_path / "curves.jsonl").write_text('{"mode": "tr\n' + good + "\n")
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        read_curves(tmp_path)
