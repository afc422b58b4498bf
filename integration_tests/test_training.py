# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""CPU training through GR's loops, metrics and checkpoints (gloo process groups)."""

import json
import math

import pytest
import torch

from ultra_hstu_plugin.config import metrics_file_name

from .conftest import TEST_DEVICE, run_cli

SMOKE = "gin_configs/ml100k_smoke_cpu.gin"


def _train(
    tmp_path, ml100k_dir, *extra, mode="train-eval", nproc=1, gin=SMOKE, name="run", device=None
):
    out = tmp_path / name
    args = [
        "train",
        "--gin",
        gin,
        "--device",
        device or TEST_DEVICE,
        "--mode",
        mode,
        "--nproc",
        str(nproc),
        "--gin-param",
        f"make_dataloaders.data_dir='{ml100k_dir}'",
        "--gin-param",
        f"RunSettings.output_dir='{out}'",
    ]
    for b in extra:
        args += ["--gin-param", b]
    res = run_cli(*args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return json.loads((out / metrics_file_name(mode)).read_text())  # eval-only: eval_metrics.json


@pytest.mark.gpu
def test_few_hundred_steps_beat_the_constant_predictor(tmp_path, ml100k_dir):
    m = _train(tmp_path, ml100k_dir, "train_loop.num_batches=250")
    assert m["train_steps"] == 250
    assert m["device"] == TEST_DEVICE
    # time to first step (autotuning included) and the later steps' rate, in the summary
    assert 0 < m["first_step_seconds"] < m["train_seconds"] + 1
    assert m["steps_per_second"] > 0
    ne = m["eval"]["metric/lifetime_ne/rating"]
    assert math.isfinite(ne) and ne < 1.0, ne  # 1.0 = NE of the label-rate constant
    assert m["eval"]["metric/lifetime_gauc_num_samples/rating"] > 1000


AGREE = (
    "make_dataloaders.sampler='interleaved'",
    "make_ultra_model.hstu_overrides={'hstu_input_dropout_ratio': 0.0, 'hstu_linear_dropout_rate': 0.0}",
    "train_loop.num_batches=15",
    "eval_loop.num_batches=12",
    "RunSettings.save_checkpoint=False",
)


def test_two_processes_agree_with_one_on_the_same_global_batch(tmp_path, ml100k_dir):
    # gloo on CPU always: two processes need two GPUs on CUDA
    one = _train(
        tmp_path, ml100k_dir, *AGREE, "RunSettings.batch_size=32", name="one", device="cpu"
    )
    two = _train(
        tmp_path, ml100k_dir, *AGREE, "RunSettings.batch_size=16", nproc=2, name="two", device="cpu"
    )
    assert two["world_size"] == 2 and one["world_size"] == 1
    for key in ("metric/lifetime_ne/rating", "metric/lifetime_accuracy/rating"):
        a, b = one["eval"][key], two["eval"][key]
        assert abs(a - b) < 5e-3, (key, a, b)


@pytest.mark.gpu
def test_checkpoint_save_load_gives_identical_eval(tmp_path, ml100k_dir):
    first = _train(
        tmp_path,
        ml100k_dir,
        "train_loop.num_batches=10",
        "eval_loop.num_batches=12",
        name="trained",
    )
    ckpt = first["checkpoint"]
    again = _train(
        tmp_path,
        ml100k_dir,
        f"RunSettings.load_checkpoint='{ckpt}'",
        "eval_loop.num_batches=12",
        mode="eval",
        name="reloaded",
    )
    for key, value in first["eval"].items():
        assert again["eval"][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.gpu
def test_gr_hstu_baseline_runs_through_the_same_launcher(tmp_path, ml100k_dir):
    m = _train(
        tmp_path,
        ml100k_dir,
        "train_loop.num_batches=5",
        gin="gin_configs/ml100k_hstu_baseline_cpu.gin",
    )
    assert math.isfinite(m["eval"]["metric/lifetime_ne/rating"])


def test_synthetic_sizes_come_from_gin(tmp_path):
    res = run_cli(
        "data",
        "prepare",
        "synthetic-long",
        "--out",
        str(tmp_path),
        "--gin",
        "gin_configs/synthetic_long_gpu.gin",
        "--set",
        "num_users=40",
        "--set",
        "min_len=64",
        "--set",
        "max_len=80",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    import pandas as pd

    df = pd.read_csv(tmp_path / "synthetic_sasrec_format.csv")
    assert len(df) == 40  # --set overrides gin's num_users=20000
    items = df["sequence_item_ids"].str.split(",").explode().astype(int)
    assert items.max() > 40  # gin's num_items=80 (the default is 40)


def test_synthetic_dataset_has_two_binary_tasks(tmp_path):
    from ultra_hstu_plugin.data.synthetic import SyntheticConfig, generate_synthetic
    from ultra_hstu_plugin.registry import discover

    generate_synthetic(tmp_path, SyntheticConfig(num_users=6, min_len=60, max_len=64))
    spec = discover().get("dataset", "synthetic-long").load()
    cfg = spec.hstu_config({"max_seq_len": 72})
    assert [t.task_name for t in cfg.multitask_configs] == ["rating", "love"]
    ds = spec.dataset(cfg, str(tmp_path))
    ds.load_query_samples([0, 1])
    for i in (0, 1):
        _, cand = ds.get_sample(i)
        feats = cand.to_dict()
        stars = feats["item_movie_rating"].values()
        bits = feats["item_action_weights"].values()
        assert torch.equal(bits & 1, (stars >= 4).long()) and torch.equal(
            bits >> 1, (stars == 5).long()
        )
