# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu bench inference`` end to end on CPU at toy sizes (``--preset cpu-smoke``):
every (config, L, M, mode, micro-batch) row, cached scores checked against full recompute
inside the bench (and a wrong cache caught), cache bytes equal to the formula written out
here, the targets evaluated from the rows, ``--report-only``, and bad input."""

import json

import pytest
import torch

from ultra_hstu_plugin import host
from ultra_hstu_plugin.bench import inference

CONFIGS = ("gr_hstu", "ultra_sla18", "ultra_sla3_trunc15_L1024")
LENGTHS, CANDIDATES = (96, 48), (8, 4)
# cpu-smoke shapes: 2 heads, head dims 16, fp32; k1 16, k2 4; L' = 1024 / 32
HEADS, HEAD_DIM, ITEM, K1, K2, LPRIME = 2, 16, 4, 16, 4, 32


def _load(out_dir, stem="inference"):
    return json.loads((out_dir / f"{stem}.json").read_text())


def _variants(data):
    return {
        (r["config"], r["L"], r["M"], r["mode"], r["executor"], r["micro_batch"]): r
        for r in data["rows"]
    }


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("inference")
    argv = ["--preset", "cpu-smoke", "--micro-batch", "2", "3", "--out", str(out)]
    assert inference.main(argv) == 0
    return out


def test_every_request_has_its_rows_with_positive_times(smoke):
    data = _load(smoke)
    rows = _variants(data)
    assert data["meta"][0]["device_kind"] == "cpu"
    assert (smoke / "inference.jsonl").is_file() and (smoke / "inference.md").is_file()
    for config in CONFIGS:
        for L in LENGTHS:
            for M in CANDIDATES:
                for mode, m in (("full", M), ("cached", M), ("cached", 2)):
                    r = rows[(config, L, M, mode, "eager", m)]
                    assert r["status"] == "ok", r
                    assert r["ms"] > 0 and r["warmup_s"] >= 0 and r["reps"] == 2
                    assert r["calls"] == M // m
                    assert r["candidates_per_s"] == pytest.approx(M / (r["ms"] * 1e-3))
                # 3 divides neither 8 nor 4: recorded, not measured
                r = rows[(config, L, M, "cached", "eager", 3)]
                assert r["status"] == f"rejected: micro-batch 3 does not divide M={M}"
                assert "ms" not in r
    # graphs need CUDA: not measured on CPU, and not reported as failed
    assert not [r for r in data["rows"] if r["executor"] == "graphs"]


def test_cached_scores_equal_full_recompute_inside_the_bench(smoke):
    data = _load(smoke)
    cached = [r for r in data["rows"] if r["mode"] == "cached" and r["status"] == "ok"]
    assert len(cached) == len(CONFIGS) * len(LENGTHS) * len(CANDIDATES) * 2
    for r in cached:
        assert r["verified"] is True, r
        assert r["tolerance"] == 1e-4 and 0 <= r["rel_err"] <= 1e-4
        assert r["max_abs_err"] <= r["rel_err"] * 100  # outputs are O(1): same order
    assert {r["config"] for r in cached} == set(CONFIGS)  # GR's own cache included


def _formula(config, L):
    row = HEADS * 2 * HEAD_DIM * ITEM  # keys + values of one cached row
    if config == "gr_hstu":
        return {"full": [L * row] * 10}
    sla = [min(L, K2 + K1) * row]
    if config == "ultra_sla18":
        return {"sla": sla * 18}
    return {"sla": sla * 3, "truncated": [min(L, LPRIME) * row] * 15}


def test_cache_bytes_are_measured_and_equal_the_formula(smoke):
    data = _load(smoke)
    for r in data["rows"]:
        if r["mode"] != "cached" or r["status"] != "ok":
            continue
        want = _formula(r["config"], r["L"])
        assert r["cache_bytes_per_layer"] == want, r["config"]
        assert r["cache_bytes_per_user"] == sum(sum(v) for v in want.values())
        assert r["cache_bytes_formula"] == r["cache_bytes_per_user"] and r["cache_bytes_match"]
    s = {(x["config"], x["L"], x["M"]): x for x in data["summary"]}
    # the SLA layers keep k1 + k2 rows, GR's layers all L: the whole stack is smaller at L=96
    sla18 = s[("ultra_sla18", 96, 8)]
    assert sla18["gr_cache_bytes_measured"] == sum(_formula("gr_hstu", 96)["full"])
    assert sla18["cache_bytes_per_user"] < sla18["gr_cache_bytes_measured"]


def test_targets_are_evaluated_from_the_rows(smoke):
    data = _load(smoke)
    rows = _variants(data)
    for config in CONFIGS[1:]:
        full = rows[(config, 96, 8, "full", "eager", 8)]["ms"]
        cached = min(rows[(config, 96, 8, "cached", "eager", m)]["ms"] for m in (8, 2))
        gr = min(rows[("gr_hstu", 96, 8, "cached", "eager", m)]["ms"] for m in (8, 2))
        speed = [t for t in data["targets"] if t["config"] == config and "20x" in t["target"]]
        assert len(speed) == 1
        assert speed[0]["value"] == pytest.approx(full / cached)
        assert speed[0]["met"] is (full / cached >= 20)
        vs_gr = [t for t in data["targets"] if t["config"] == config and "gr_hstu" in t["target"]]
        assert vs_gr[0]["value"] == pytest.approx(gr / cached)
        assert vs_gr[0]["met"] is (gr / cached > 1)
        cache = [t for t in data["targets"] if t["config"] == config and "bytes" in t["target"]]
        assert cache[0]["limit"] == pytest.approx((K1 + K2) / 96)
        assert cache[0]["value"] == pytest.approx(min(96, K1 + K2) / 96)
        assert cache[0]["met"] is True
    assert len(data["targets"]) == 3 * 2 and all(t["config"] != "gr_hstu" for t in data["targets"])
    md = (smoke / "inference.md").read_text()
    assert "## Targets (L = 96, M = 8)" in md and "every measurement started" in md


def test_report_only_reproduces_the_markdown(smoke, tmp_path):
    argv = ["--preset", "cpu-smoke", "--report-only", str(smoke / "inference.jsonl")]
    assert inference.main([*argv, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "inference.md").read_text() == (smoke / "inference.md").read_text()
    assert _load(tmp_path)["summary"] == _load(smoke)["summary"]


SMALL = ["--preset", "cpu-smoke", "--lengths", "48", "--candidates", "4", "--micro-batch"]


def test_a_wrong_cache_fails_the_verification(tmp_path, monkeypatch):
    """A cache filled with another normaliser (L + M + 5) scores differently from the full
    recompute: the bench must say so, and no target may count that row."""
    fill = inference.fill_cache
    monkeypatch.setattr(inference, "fill_cache", lambda enc, h, M, m: fill(enc, h, M + 5, m))
    argv = [*SMALL, "--configs", "ultra_sla18", "--target-length", "48"]
    assert inference.main([*argv, "--target-candidates", "4", "--out", str(tmp_path)]) == 0
    data = _load(tmp_path)
    (r,) = [r for r in data["rows"] if r["mode"] == "cached"]
    assert r["status"] == "ok" and r["verified"] is False and r["rel_err"] > 1e-4
    speed = [t for t in data["targets"] if "20x" in t["target"]]
    assert speed[0]["value"] is None and speed[0]["met"] is None
    md = (tmp_path / "inference.md").read_text().splitlines()
    (line,) = [x for x in md if x.startswith("| ultra_sla18 | 48 | 4 | cached | eager | 4 | 1 |")]
    assert line.split(" | ")[12] == "NO"  # the verified column


def test_gr_cache_unavailable_is_recorded_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(host, "gr_kv_cache_unavailable", lambda device: "no fbgemm ops here")
    argv = [*SMALL, "--configs", "gr_hstu", "ultra_sla18", "--target-length", "48"]
    assert inference.main([*argv, "--target-candidates", "4", "--out", str(tmp_path)]) == 0
    data = _load(tmp_path)
    rows = _variants(data)
    assert rows[("gr_hstu", 48, 4, "cached", "eager", 4)]["status"] == (
        "unavailable: no fbgemm ops here"
    )
    assert rows[("gr_hstu", 48, 4, "full", "eager", 4)]["status"] == "ok"
    assert rows[("ultra_sla18", 48, 4, "cached", "eager", 4)]["verified"] is True
    (vs_gr,) = [t for t in data["targets"] if "gr_hstu" in t["target"]]
    assert vs_gr["met"] is None and "unavailable: no fbgemm ops here" in vs_gr["basis"]
    assert data["meta"][0]["gr_cache"] == "no fbgemm ops here"


def test_time_budget_stops_new_measurements(tmp_path):
    argv = [*SMALL, "--configs", "ultra_sla18", "--time-budget", "1e-9", "--out", str(tmp_path)]
    assert inference.main(argv) == 0
    data = _load(tmp_path)
    assert {r["status"] for r in data["rows"]} == {"skipped: time budget"}
    assert data["end"][0]["budget_reached"] and data["end"][0]["not_started"] == 2
    assert "time budget of 1e-09 s reached" in (tmp_path / "inference.md").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--configs", "nope"], "invalid choice: 'nope'"),
        (["--candidates", "0"], "--candidates must be >= 1, got 0"),
        (["--lengths", "64", "-5"], "--lengths must be >= 1, got -5"),
        (["--micro-batch", "0"], "--micro-batch must be >= 1, got 0"),
        (["--preset", "laptop"], "invalid choice: 'laptop'"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        inference.main(["--preset", "cpu-smoke", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusals without a GPU")
def test_bad_runs_exit_2_with_a_clear_message(capsys, tmp_path):
    assert inference.main(["--report-only", str(tmp_path / "none.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    # no GPU here: the L is refused on CPU, and --device cuda cannot be honoured
    assert inference.main(["--out", str(tmp_path)]) == 2
    assert "far too big for the CPU" in capsys.readouterr().err
    assert inference.main(["--preset", "gpu", "--out", str(tmp_path)]) == 2
    assert "--device cuda, but no CUDA GPU is visible" in capsys.readouterr().err
