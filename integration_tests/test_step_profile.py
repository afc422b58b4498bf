# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""RunSettings.profile_steps: whole steps of GR's own training loop profiled, with no change
to GR, and the report written to the run folder."""

import json

import pytest

from .conftest import run_cli

SMOKE = "gin_configs/ml100k_smoke_cpu.gin"


def _train(out, ml100k_dir, *extra):
    args = ["train", "--gin", SMOKE, "--device", "cpu", "--mode", "train"]
    for b in (
        f"make_dataloaders.data_dir='{ml100k_dir}'",
        f"RunSettings.output_dir='{out}'",
        "RunSettings.save_checkpoint=False",
        *extra,
    ):
        args += ["--gin-param", b]
    res = run_cli(*args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


@pytest.fixture(scope="module")
def profiled(tmp_path_factory, ml100k_dir):
    out = tmp_path_factory.mktemp("profiled") / "run"
    _train(out, ml100k_dir, "train_loop.num_batches=7", "RunSettings.profile_steps=(2, 3)")
    return out


def test_the_profiled_steps_and_their_operators_are_reported(profiled):
    summary = json.loads((profiled / "step_profile.json").read_text())
    assert summary["steps"] == 3 and summary["device"] == "cpu"
    assert summary["wall_ms_per_step"] > 0 and summary["cpu_op_ms_per_step"] > 0
    names = [r["name"] for r in summary["top_cpu"]]
    # the backward pass and the optimizer ran inside the window: whole steps, not just forward
    assert any("backward" in n.lower() or "Backward" in n for n in names + _all_ops(profiled))
    assert any("optimizer" in n.lower() or "adam" in n.lower() for n in _all_ops(profiled))
    text = (profiled / "step_profile.txt").read_text()
    assert text.startswith("3 training steps profiled (cpu)")
    assert "top self time on the CPU" in text


def test_the_profiled_window_is_left_out_of_the_runs_steps_per_second(profiled):
    metrics = json.loads((profiled / "metrics.json").read_text())
    assert metrics["steps_excluded_from_rate"] == 3
    # 7 steps: the first (timed alone), 3 profiled, 3 left for the rate
    assert metrics["train_steps"] == 7 and metrics["steps_per_second"] > 0


def _all_ops(out):
    trace = json.loads((out / "step_profile_trace.json").read_text())
    return sorted({e.get("name", "") for e in trace["traceEvents"]})


def test_a_run_ending_inside_the_window_reports_the_steps_it_ran(tmp_path, ml100k_dir):
    out = tmp_path / "run"
    _train(out, ml100k_dir, "train_loop.num_batches=6", "RunSettings.profile_steps=(4, 10)")
    assert json.loads((out / "step_profile.json").read_text())["steps"] == 2
