# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""A run whose data does not match the model's features fails at its first batch naming the
feature; a NaN loss stops training at its step with the last finite metrics and keeps the
last finite state as a checkpoint (issue 11)."""

import json
import subprocess
import sys

import pytest

from ultra_hstu_plugin.config import RunSettings
from ultra_hstu_plugin.train.batch_checks import (
    CheckedLoader,
    FeatureMismatchError,
    FeatureNames,
)

from .conftest import REPO, TEST_DEVICE, run_cli

SMOKE = "gin_configs/ml100k_smoke_cpu.gin"
# GR's MovieLens candidate features with item_movie_id renamed: GR's dataset names its KJT
# keys after the config, but the movie_id table and the uih/candidate mapping still read
# item_movie_id.
RENAMED = (
    "make_ultra_model.hstu_overrides={'hstu_attn_num_layers': 2, 'hstu_candidate_feature_names': "
    "['item_id', 'item_movie_rating', 'item_query_time', 'item_action_weights', "
    "'item_dummy_watchtime']}"
)


def _args(out, ml100k_dir, *extra):
    args = ["train", "--gin", SMOKE, "--device", TEST_DEVICE]
    for b in (
        f"make_dataloaders.data_dir='{ml100k_dir}'",
        f"RunSettings.output_dir='{out}'",
        "make_dataloaders.progress=False",
        *extra,
    ):
        args += ["--gin-param", b]
    return args


@pytest.mark.gpu
def test_renamed_feature_fails_at_the_first_batch_naming_it(tmp_path, ml100k_dir):
    res = run_cli(*_args(tmp_path / "run", ml100k_dir, RENAMED, "train_loop.num_batches=3"))
    assert res.returncode == 2, res.stdout[-3000:] + res.stderr[-5000:]
    err = res.stderr
    assert "ultra-hstu: error: train batch 0: the batches lack 1 feature(s)" in err
    assert (
        "candidate feature 'item_movie_id' (read by merge_uih_candidate_feature_mapping, "
        "embedding table 'movie_id')" in err
    )
    assert "no embedding table or other field reads ['dummy_query_time', 'item_id']" in err
    assert "make_ultra_model.hstu_overrides (hstu_candidate_feature_names)" in err
    assert "Traceback" not in err and "is not in list" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_batches_of_another_dataset_layout_fail_naming_the_features(ml100k_dir):
    """MovieLens-100k batches (GR's dataset and collate_fn) against KuaiRand's features."""
    from ultra_hstu_plugin import host

    spec = RunSettings(dataset="movielens-100k").dataset_spec()
    cfg = spec.hstu_config(None)
    data = host.HammerToTorchDataset(dataset=spec.dataset(cfg, str(ml100k_dir), is_inference=False))
    batch = host.collate_fn([data[i] for i in range(4)])
    # the real layout passes
    names = FeatureNames.from_config(cfg, spec.tables(cfg), source="dataset 'movielens-100k'")
    assert list(CheckedLoader([batch], None, "train", names)) == [batch]
    kuairand = host.get_hstu_configs("kuairand-1k")
    other = FeatureNames.from_config(kuairand, host.get_embedding_table_config("kuairand-1k"), "x")
    with pytest.raises(FeatureMismatchError) as err:
        list(CheckedLoader([batch], None, "train", other))
    msg = str(err.value)
    assert msg.startswith("train batch 0: the batches lack")
    assert "history feature 'video_id' (read by hstu_uih_feature_names" in msg
    assert "embedding table 'video_id'" in msg and "Feature names come from x" in msg


@pytest.mark.gpu
def test_nan_loss_stops_at_its_step_and_keeps_the_last_finite_checkpoint(tmp_path, ml100k_dir):
    """A learning rate of 1e30 overflows the first step's update: step 2's loss is NaN."""
    out = tmp_path / "run"
    res = run_cli(
        *_args(
            out,
            ml100k_dir,
            "dense_optimizer_factory_and_class.learning_rate=1e30",
            "train_loop.num_batches=20",
        )
    )
    assert res.returncode == 2, res.stdout[-3000:] + res.stderr[-5000:]
    assert "ultra-hstu: error: non-finite training loss at step 2 (rating=nan)" in res.stderr
    assert "last finite step 1: loss rating=" in res.stderr
    assert f"saved the last finite step's state as {out / 'checkpoints' / '1'}" in res.stderr
    assert (out / "checkpoints" / "1" / "non_sparse.ckpt").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["1"]
    stopped = json.loads((out / "metrics.json").read_text())["stopped"]
    assert stopped["step"] == 2 and stopped["last_finite_step"] == 1
    assert stopped["losses"] == {"rating": "nan"} and stopped["last_finite_loss"]["rating"] > 0
    assert "eval" not in json.loads((out / "metrics.json").read_text())


# A NaN at step 5 of an otherwise healthy run, through the real CLI in a fresh process.
POISON = """
import sys
import torch
from ultra_hstu_plugin.train import curves
original = curves.CurveMetricsLogger.add_losses
def poisoned(self, aux):
    if int(self.global_step["train"]) + 1 == 5:
        aux = {k: v * float("nan") for k, v in aux.items()}
    return original(self, aux)
curves.CurveMetricsLogger.add_losses = poisoned
from ultra_hstu_plugin.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.gpu
def test_nan_mid_run_names_step_and_last_logged_metrics(tmp_path, ml100k_dir):
    out = tmp_path / "run"
    args = _args(out, ml100k_dir, "train_loop.num_batches=20", "RunSettings.log_every_steps=2")
    res = subprocess.run(
        [sys.executable, "-c", POISON, *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert res.returncode == 2, res.stdout[-3000:] + res.stderr[-5000:]
    err = res.stderr
    assert "non-finite training loss at step 5 (rating=nan)" in err
    assert "last finite step 4: loss rating=" in err
    assert "metrics at step 4: " in err and "metric/lifetime_ne/rating=" in err
    summary = json.loads((out / "metrics.json").read_text())
    stopped = summary["stopped"]
    assert stopped["last_metrics_step"] == 4
    assert 0 < stopped["last_metrics"]["metric/lifetime_ne/rating"] < 2
    curves = [json.loads(line) for line in (out / "curves.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curves if c["mode"] == "train"] == [2, 4]
    assert stopped["checkpoint"] == str(out / "checkpoints" / "4")
    # the checkpoint is loadable and evaluates to finite metrics (the state before the NaN)
    again = run_cli(
        *_args(
            tmp_path / "eval",
            ml100k_dir,
            f"RunSettings.load_checkpoint='{stopped['checkpoint']}'",
            "eval_loop.num_batches=3",
        ),
        "--mode",
        "eval",
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-5000:]
    ne = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())["eval"]
    assert 0 < ne["metric/lifetime_ne/rating"] < 2
