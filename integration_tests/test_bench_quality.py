# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu bench quality --preset cpu-smoke`` end to end: every run through our launcher
in a subprocess, rows finite, a failed run recorded (not a crash), markdown and PNG written."""

import json
import math

from .conftest import run_cli


def test_cpu_smoke_preset_end_to_end(tmp_path, ml100k_dir):
    out = tmp_path / "quality"
    res = run_cli(
        "bench", "quality", "--preset", "cpu-smoke", "--out", str(out),
        "--ml100k-data", str(ml100k_dir), "--inject-failure", "ml100k/ultra_d1",
        timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    doc = json.loads((out / "quality.json").read_text())
    rows = doc["rows"]
    lines = (out / "quality.jsonl").read_text().splitlines()
    assert len(lines) == len(rows) == 6
    assert {r["dataset"] for r in rows} == {"synthetic", "ml100k"}
    failed = [r for r in rows if r["status"] != "ok"]
    assert [(r["dataset"], r["config"]) for r in failed] == [("ml100k", "ultra_d1")]
    assert "NO_SUCH_KERNEL" in failed[0]["error"]
    for r in rows:
        assert r["train_flops"] > 0 and math.isfinite(r["train_flops"])
        if r["status"] != "ok":
            continue
        assert r["train_steps"] == 3
        values = [*r["ne"].values(), *r["auc"].values(), *r["gauc"].values()]
        values += [r["train_wall_seconds"], r["steps_per_second"]]
        assert all(isinstance(x, float) and math.isfinite(x) for x in values), r
    syn = [r for r in rows if r["dataset"] == "synthetic"]
    assert all(set(r["ne"]) == {"rating", "love"} for r in syn)
    # truncation: fewer FLOPs than GR's stack of the same depth
    flops = {r["config"]: r["train_flops"] for r in syn}
    assert flops["ultra_d2"] < flops["hstu_d2"]
    fits = doc["summary"]["synthetic"]["fits"]
    assert fits["hstu"] and fits["ultra"] and math.isfinite(fits["ultra"]["b"])
    # two sizes a family at cpu-smoke: no verdict on the curves, and the report says why
    t2 = doc["summary"]["synthetic"]["target2"]
    assert t2["met"] is None and "needs >= 3 sizes" in t2["why"], t2
    assert doc["meta"]["commit"] and doc["meta"]["device"] and "cpu-smoke" in doc["meta"]["command"]
    md = (out / "quality.md").read_text()
    assert "power law hstu" in md and "target 1" in md and "did not finish" in md
    assert (out / "quality.png").stat().st_size > 1000


def test_prime_runs_each_config_once_alone_and_stays_out_of_the_results(tmp_path, ml100k_dir):
    out, runs = tmp_path / "quality", tmp_path / "runs"
    res = run_cli(
        "bench", "quality", "--preset", "cpu-smoke", "--out", str(out), "--runs", str(runs),
        "--ml100k-data", str(ml100k_dir), "--datasets", "ml100k", "--prime-steps", "1",
        timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "priming: 2 runs of 1 steps, one at a time" in res.stdout
    primes = [json.loads(x) for x in (runs / "prime" / "quality.jsonl").read_text().splitlines()]
    assert sorted(r["config"] for r in primes) == ["hstu_d1", "ultra_d1"]
    assert all(r["status"] == "ok" and r["train_steps"] == 1 for r in primes)
    doc = json.loads((out / "quality.json").read_text())
    assert sorted(r["config"] for r in doc["rows"]) == ["hstu_d1", "ultra_d1"]
    assert all(r["train_steps"] == 3 for r in doc["rows"] if r["status"] == "ok")
    assert doc["meta"]["prime_steps"] == 1 and doc["meta"]["prime_seconds"] > 0
