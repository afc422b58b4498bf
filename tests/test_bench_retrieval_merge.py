# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""`bench retrieval --report-only A.json B.json`: calls merged, a run finished later once."""

import copy
import json
from pathlib import Path

import pytest

from ultra_hstu_plugin.bench import retrieval

MEASURED = Path(__file__).resolve().parents[1] / "benchmarks/results/retrieval_h200.json"


def _calls():
    first = json.loads(MEASURED.read_text())  # seed 2 was skipped by its time budget
    later = copy.deepcopy(first)
    later["command"] = "ultra-hstu bench retrieval --seeds 2"
    later["rows"] = []
    for r in first["rows"]:
        if r["seed"] == 1 and r["status"] == "ok":
            later["rows"].append(dict(r, seed=2, **{"hr@10": r["hr@10"] + 0.01}))
    return first, later


def test_a_skipped_run_finished_by_a_later_call_counts_once(tmp_path):
    first, later = _calls()
    skipped = {(r["dataset"], r["model"]) for r in first["rows"] if r["status"] == "skipped"}
    assert skipped  # the fixture has the case this is about
    merged = retrieval.merge_docs([first, later])
    keys = [(r["dataset"], r["model"], r["seed"]) for r in merged["rows"]]
    assert len(keys) == len(set(keys)) == 36
    for d, m in skipped:
        (row,) = [r for r in merged["rows"] if (r["dataset"], r["model"], r["seed"]) == (d, m, 2)]
        assert row["status"] == "ok"
    # a finished run is not replaced by a later call's skip of the same seed
    undo = retrieval.merge_docs([merged, dict(first, rows=[dict(r) for r in first["rows"]])])
    assert all(
        r["status"] == "ok"
        for r in undo["rows"]
        if r["seed"] == 2 and (r["dataset"], r["model"]) in skipped
    )
    assert [m["command"] for m in merged["merged_from"]] == [first["command"], later["command"]]
    md = retrieval.markdown(merged)
    assert md.count("- merged from: `") == 2
    assert "| amzn-beauty | GR HSTU | 3/3 |" in md


def test_report_only_takes_several_files(tmp_path):
    first, later = _calls()
    paths = []
    for i, doc in enumerate((first, later)):
        paths.append(tmp_path / f"call{i}.json")
        paths[-1].write_text(json.dumps(doc))
    argv = ["--report-only", *map(str, paths), "--out", str(tmp_path / "m"), "--tag", "_m"]
    assert retrieval.main(argv) == 0
    md = (tmp_path / "m" / "retrieval_m.md").read_text()
    assert "| amzn-toys | ULTRA-HSTU | 3/3 |" in md
    with pytest.raises(ValueError, match="no documents"):
        retrieval.merge_docs([])
