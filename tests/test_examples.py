# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The examples that need no GR run as written (the GR one is in integration_tests)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "script,expect",
    [
        ("sla_attention.py", "torch.Size([19, 2, 32])"),
        ("fp8_gemm.py", "FP8Linear: (1000, 512), weight grad (512, 256)"),
    ],
)
def test_example_runs(script, expect):
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / script)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert expect in out.stdout, out.stdout
