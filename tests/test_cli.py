# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
import subprocess
import sys


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "ultra_hstu_plugin.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_list_prints_every_component():
    out = _cli("list")
    assert out.returncode == 0, out.stderr
    for name in ("ultra_hstu", "hstu", "pytorch", "triton", "movielens-100k", "synthetic-long"):
        assert name in out.stdout


def test_unknown_dataset_fails_with_known_names(tmp_path):
    out = _cli("data", "prepare", "movielens-1b", "--out", str(tmp_path))
    assert out.returncode == 2
    assert "unknown dataset 'movielens-1b'" in out.stderr and "movielens-100k" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_benchmark():
    out = _cli("bench", "nope")
    assert (
        out.returncode != 0
        and "known: fp8_gemm, int4_embedding, layer, sla_attention" in out.stderr
    )


def test_bench_help_is_the_benchmarks_own():
    out = _cli("bench", "fp8_gemm", "--help")
    assert out.returncode == 0
    assert "--host-only" in out.stdout and "--sweep" in out.stdout
