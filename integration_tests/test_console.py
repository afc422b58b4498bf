# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""What a user of ``ultra-hstu train`` sees: our progress and results, not the host's logs.

torchrec's planner alone logs 4096 ``GreedyPerfPartitioner`` lines and a wide table per
run; those, fbgemm's and GR's records and Python warnings go to ``RUN_DIR/host.log``.
"""

import torch

from .conftest import run_cli

SMOKE = "gin_configs/ml100k_smoke_cpu.gin"
MAX_CONSOLE_LINES = 100


def _console_lines(text: str) -> list:
    # A progress bar redraws with "\r" on one terminal line; only "\n" starts a new one.
    return text.split("\n")


def test_train_console_is_short_and_host_logs_go_to_the_run_folder(tmp_path, ml100k_dir):
    out = tmp_path / "run"
    res = run_cli(
        "train",
        "--gin",
        SMOKE,
        "--device",
        "cpu",
        "--gin-param",
        f"make_dataloaders.data_dir='{ml100k_dir}'",
        "--gin-param",
        f"RunSettings.output_dir='{out}'",
        "--gin-param",
        "train_loop.num_batches=3",
        "--gin-param",
        "eval_loop.num_batches=3",
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    console = res.stdout + res.stderr
    lines = _console_lines(console)
    assert len(lines) < MAX_CONSOLE_LINES, console
    assert "GreedyPerfPartitioner" not in console
    assert "Planner Statistics" not in console
    if not torch.cuda.is_available():
        assert "CUDA 12.8" not in console  # GR's autotune note concerns CUDA kernels only
    host_log = out / "host.log"
    assert f"logs: {host_log}" in console  # the one line saying where
    assert "eval NE: rating=" in res.stdout
    text = host_log.read_text()
    assert "GreedyPerfPartitioner" in text and "Planner Statistics" in text
    assert "py.warnings" in text  # Python warnings from the host libraries land here too
