# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Known-config tables: recorded from a run's autotuners, replayed for the same device and TF32
setting only, and a bad file named.  The CUDA context is stubbed (no GPU here); the autotuner
is our real SLA forward kernel's, its in-memory cache filled as a tuning would fill it."""

import json

import pytest
import triton

from ultra_hstu_plugin import autotune
from ultra_hstu_plugin.kernels.autotune_budget import config_dict
from ultra_hstu_plugin.kernels.sla_attention import triton_kernels

FWD = "ultra_hstu_plugin.kernels.sla_attention.triton_kernels.fwd_tuned"
KEY = (4096, 64, 64, 64, "tf32", "torch.float32")


@pytest.fixture
def fwd_tuner(monkeypatch):
    tuner = triton_kernels.fwd_tuned
    saved = dict(tuner.cache)
    tuner.cache.clear()
    yield tuner
    tuner.cache.clear()
    tuner.cache.update(saved)
    autotune.bound_autotuning(None)


def _context(monkeypatch, device="NVIDIA H200", tf32=True):
    monkeypatch.setattr(autotune, "_cuda_context", lambda: (device, tf32))


def test_record_then_replay_on_the_same_device(tmp_path, monkeypatch, fwd_tuner):
    _context(monkeypatch)
    chosen = triton_kernels._FWD_CONFIGS[2]
    fwd_tuner.cache[KEY] = chosen
    path = tmp_path / "t.json"
    assert autotune.record_table(path, command="test") >= 1
    data = json.loads(path.read_text())
    (row,) = [r for r in data["allow_tf32"][FWD] if r["key"] == [str(k) for k in KEY]]
    assert row["config"] == config_dict(chosen) and data["device"] == "NVIDIA H200"
    assert data["recorded_with"][-1] == {"triton": triton.__version__, "command": "test"}

    known, line = autotune.load_table(path, "NVIDIA H200", True)
    assert known is not None and "known configs" in line
    pick = known.pick(FWD, tuple(str(k) for k in KEY), list(triton_kernels._FWD_CONFIGS))
    assert pick is chosen


def test_recording_merges_with_what_the_file_holds(tmp_path, monkeypatch, fwd_tuner):
    _context(monkeypatch)
    path = tmp_path / "t.json"
    fwd_tuner.cache[KEY] = triton_kernels._FWD_CONFIGS[2]
    autotune.record_table(path)
    fwd_tuner.cache.clear()
    other = (8192,) + KEY[1:]
    fwd_tuner.cache[other] = triton_kernels._FWD_CONFIGS[0]
    autotune.record_table(path)
    keys = [r["key"][0] for r in json.loads(path.read_text())["allow_tf32"][FWD]]
    assert sorted(keys) == ["4096", "8192"]


def test_another_device_or_tf32_setting_does_not_use_the_table(tmp_path, monkeypatch, fwd_tuner):
    _context(monkeypatch)
    fwd_tuner.cache[KEY] = triton_kernels._FWD_CONFIGS[2]
    path = tmp_path / "t.json"
    autotune.record_table(path)
    known, line = autotune.load_table(path, "NVIDIA H100 80GB HBM3", True)
    assert known is None and "is for NVIDIA H200, not NVIDIA H100" in line
    known, line = autotune.load_table(path, "NVIDIA H200", False)
    assert known is None and "no entries with allow_tf32=False" in line
    _context(monkeypatch, device="NVIDIA A100")
    with pytest.raises(ValueError, match="holds configs for NVIDIA H200, not NVIDIA A100"):
        autotune.record_table(path)


def test_bound_autotuning_applies_the_table_it_names(tmp_path, monkeypatch, fwd_tuner):
    _context(monkeypatch)
    chosen = triton_kernels._FWD_CONFIGS[4]  # 64 x 64: fp32 pruning keeps it
    fwd_tuner.cache[KEY] = chosen
    path = tmp_path / "t.json"
    autotune.record_table(path)
    fwd_tuner.cache.clear()
    autotune.bound_autotuning(4, str(path))
    named = {"AUTOTUNE_N": 4096, "AUTOTUNE_W": 64, "Q": _Fp32()}
    kwargs = {"D": 64, "DV": 64, "PRECISION": "tf32"}
    fwd_tuner.nargs = named
    try:
        got = fwd_tuner.prune_configs(kwargs)
    finally:
        fwd_tuner.nargs = None
    assert got == [chosen]
    assert autotune.table_use().startswith("autotune table: 1 tunings from the table, 0 tuned")


class _Fp32:
    """A stand-in tensor argument: Triton's key reads only its dtype."""

    import torch

    dtype = torch.float32


@pytest.mark.parametrize("text", ["not json", '{"format": 0, "device": "x"}', "[]"])
def test_a_file_that_is_not_a_table_is_named(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"autotune table {path} cannot be read"):
        autotune.load_table(path, "NVIDIA H200", True)


def test_missing_named_table_is_an_error_and_auto_without_a_file_is_fine(monkeypatch, tmp_path):
    _context(monkeypatch, device="Some GPU 9000")
    with pytest.raises(ValueError, match="no file"):
        autotune.bound_autotuning(4, str(tmp_path / "none.json"))
    autotune.bound_autotuning(4, "auto")  # no committed table for this device: the bound only
    assert autotune.table_use() == "no autotune table in use"
    autotune.bound_autotuning(None)


def test_table_file_names_follow_the_device_name():
    assert autotune.table_path_for("NVIDIA H200").name == "NVIDIA_H200.json"
    assert autotune.table_path_for("NVIDIA H100 80GB HBM3").name == "NVIDIA_H100_80GB_HBM3.json"


def test_benchmarks_ignore_a_table_on_cpu_and_refuse_to_record_there():
    import argparse
    from pathlib import Path

    from ultra_hstu_plugin.bench.common import add_autotune_option, apply_autotune_option

    p = argparse.ArgumentParser()
    add_autotune_option(p)
    notes: list = []
    apply_autotune_option(p.parse_args(["--autotune-table", "auto"]), notes, "cpu")
    assert notes == ["--autotune-table auto ignored: tables are for CUDA devices"]
    args = p.parse_args(["--autotune-record", "t.json"])
    assert args.autotune_record == Path("t.json")
    with pytest.raises(SystemExit, match="--autotune-record needs a CUDA device"):
        apply_autotune_option(args, [], "cpu")
