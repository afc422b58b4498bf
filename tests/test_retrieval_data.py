# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Retrieval converters (GR's research csv) and the popularity baseline; no GR needed."""

import json
import lzma

import pandas as pd
import pytest

from ultra_hstu_plugin.data import retrieval as r
from ultra_hstu_plugin.retrieval.baseline import popularity_metrics

SPEC = r.RetrievalSource("tiny", "s3rec", 6, None, "test")
PAIRS = r.RetrievalSource("tiny-pairs", "sasrec", 6, None, "test")


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_s3rec_round_trip_in_gr_layout(tmp_path):
    src = _write(tmp_path, "t.txt", "1 1 2 3\n2 4 5 6 1\n")
    path = r.prepare(SPEC, tmp_path / "out", source=src)
    assert path == tmp_path / "out" / "retrieval" / "tiny" / "sasrec_format.csv"
    df = pd.read_csv(path)
    assert list(df.columns) == [
        "user_id",
        "sequence_item_ids",
        "sequence_ratings",
        "sequence_timestamps",
    ]
    assert df["sequence_item_ids"].tolist() == ["1,2,3", "4,5,6,1"]
    assert df["sequence_timestamps"].tolist() == ["0,1,2", "0,1,2,3"]  # positions
    meta = json.loads((path.parent / "meta.json").read_text())
    assert (meta["num_users"], meta["max_item_id"], meta["num_interactions"]) == (2, 6, 7)
    assert r.all_item_ids(meta) == [1, 2, 3, 4, 5, 6]


def test_xz_and_sasrec_pairs(tmp_path):
    src = tmp_path / "v.txt.xz"
    with lzma.open(src, "wt") as f:
        f.write("1 3\n1 2\n2 1\n1 5\n2 2\n2 6\n3 1\n")  # user 3 has one event: left out
    path = r.prepare(PAIRS, tmp_path, source=src)
    df = pd.read_csv(path)
    assert df["sequence_item_ids"].tolist() == ["3,2,5", "1,2,6"]
    assert json.loads((path.parent / "meta.json").read_text())["dropped_users"] == 1


@pytest.mark.parametrize(
    "text,match",
    [
        ("1 1 2 3\n2 4 x 6\n", r"t.txt:2: not an integer in '2 4 x 6'"),
        ("1 1 2 3\n7\n", r"t.txt:2: expected a user id and items, got '7'"),
        ("1 1 2 3\n\n2 1 2 3\n", r"t.txt:2: expected a user id and items, got ''"),
        ("1 1 2 3\n2 4 9 6\n", r"t.txt:2: item id 9 out of range 1..6 in '2 4 9 6'"),
        ("1 0 2 3\n", r"t.txt:1: item id 0 out of range 1..6"),
        ("1 1 2 3\n1 4 5 6\n", r"t.txt:2: user 1 already appeared on line 1"),
    ],
)
def test_s3rec_bad_lines_name_line_and_content(tmp_path, text, match):
    with pytest.raises(r.SequenceFormatError, match=match):
        r.prepare(SPEC, tmp_path, source=_write(tmp_path, "t.txt", text))


@pytest.mark.parametrize(
    "text,match",
    [
        ("1 2\n1 2 3\n", r"p.txt:2: expected 2 integers, got '1 2 3'"),
        ("1 2\n1 -4\n", r"p.txt:2: item id -4 out of range 1..6 in '1 -4'"),
        ("1 2\n1 7\n", r"p.txt:2: item id 7 out of range"),
    ],
)
def test_sasrec_bad_lines_name_line_and_content(tmp_path, text, match):
    with pytest.raises(r.SequenceFormatError, match=match):
        r.prepare(PAIRS, tmp_path, source=_write(tmp_path, "p.txt", text))


def test_missing_source_never_downloads(tmp_path, monkeypatch):
    monkeypatch.delenv(r.SHARED_DATA_ENV, raising=False)
    with pytest.raises(ValueError, match="nothing is downloaded"):
        r.prepare(r.AMZN_BEAUTY, tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        r.prepare(r.AMZN_BEAUTY, tmp_path, source=tmp_path / "nope.txt")


def test_missing_prepared_data_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="ultra-hstu data prepare amzn-toys --source FILE"):
        r.read_meta(r.AMZN_TOYS, tmp_path)


def test_popularity_baseline_by_hand(tmp_path):
    # counts over all but each last item: 1 x3, 2 x2, 3 x1, 4 x1; targets 4, 1, 2
    src = _write(tmp_path, "t.txt", "1 1 2 4\n2 1 2 3 1\n3 1 4 2\n")
    path = r.prepare(SPEC, tmp_path, source=src)
    m = popularity_metrics(str(path), max_sequence_length=50, num_items=6)
    # user 1: seen {1,2}; order 3(1),4(1)... -> 3 before 4: rank 2
    # user 2: target 1 is in its history: GR filters it, never found
    # user 3: seen {1,4}; target 2 ranks first among the unseen
    assert m["users"] == 3
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["mrr"] == pytest.approx((1 / 2 + 1) / 3)


def test_real_files_match_published_counts(tmp_path):
    shared = "/work/shared/data/amazon-s3rec/Toys_and_Games.txt.xz"
    if not __import__("os").path.exists(shared):
        pytest.skip("shared Amazon data not on this machine")
    path = r.prepare(r.AMZN_TOYS, tmp_path, source=shared)
    meta = json.loads((path.parent / "meta.json").read_text())
    assert (meta["num_users"], meta["num_unique_items"], meta["num_interactions"]) == (
        19412,
        11924,
        167597,
    )
