# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu bench lbsl --step-time`` end to end on CPU at toy sizes (``--preset smoke``):
the encoder is built and stepped for every batch and policy, the rows and the correlation
summary are written, and ``--time-budget`` cuts a run short but keeps what it measured."""

import json

from ultra_hstu_plugin.bench import lbsl, lbsl_step_time


def test_smoke_measures_every_batch_and_policy(tmp_path):
    assert lbsl.main(["--step-time", "--preset", "smoke", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "lbsl_step_time.json").read_text())
    rows = data["rows"]
    n = lbsl_step_time.PRESETS["smoke"]["batches"]
    assert [(r["batch"], r["policy"]) for r in rows] == [
        (i, p) for i in range(n) for p in lbsl_step_time.POLICIES
    ]
    assert all(r["status"] == "ok" and r["ms"] > 0 and r["warmup_s"] >= 0 for r in rows)
    by = {(r["batch"], r["policy"]): r for r in rows}
    for i in range(n):
        none, sl, lb = (by[(i, p)] for p in lbsl_step_time.POLICIES)
        assert sl["tokens"] <= none["tokens"] and lb["tokens"] <= none["tokens"]
        # LBSL trims (with the calibrated model) to the mean SL batch cost, never above
        assert lb["cost_calibrated"] <= lb["target_cost"] * (1 + 1e-9)
        assert lb["cost_calibrated"] <= none["cost_calibrated"]
        assert none["tokens"] == none["tokens_unsampled"]
    corr = data["summary"]["correlation"]
    for model in ("flops", "calibrated"):
        c = corr[f"{model}/all"]
        assert c["n"] == 3 * n and -1 <= c["pearson"] <= 1 and -1 <= c["spearman"] <= 1
        assert c["fit"] is not None
    assert data["summary"]["policies"]["lbsl"]["kept_fraction"] < 1
    md = (tmp_path / "lbsl_step_time.md").read_text()
    assert "Pearson" in md and "calibrated/all" in md
    assert len((tmp_path / "lbsl_step_time.jsonl").read_text().splitlines()) == 3 * n


def test_time_budget_keeps_what_was_measured(tmp_path):
    argv = ["--step-time", "--preset", "smoke", "--out", str(tmp_path), "--time-budget", "1e-9"]
    assert lbsl.main(argv + ["--tag", "_cut"]) == 0
    data = json.loads((tmp_path / "lbsl_cut.json").read_text())
    assert data["cut_off"] is True and data["rows"] == []  # the budget is spent at once
    assert "stopped by --time-budget" in (tmp_path / "lbsl_cut.md").read_text()
