# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Our vectorised row conversion returns exactly what GR's ``load_item`` returns."""

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ultra_hstu_plugin.data import fast_rows
from ultra_hstu_plugin.data.datasets import (
    MOVIELENS_100K,
    SYNTHETIC_LONG,
    TwoTaskMovieLensDataset,
    two_task_candidates,
)
from ultra_hstu_plugin.host import DLRMv3MovieLensDataset

CONTEXT = {"user_id": 7, "sex": 1, "age_group": 25, "occupation": 3, "zip_code": 60}


def _dataset(max_seq_len: int) -> TwoTaskMovieLensDataset:
    cfg = SYNTHETIC_LONG.hstu_config({"max_seq_len": max_seq_len})
    return TwoTaskMovieLensDataset(hstu_config=cfg, ratings_file="", is_inference=False)


def _assert_same_kjt(got, want) -> None:
    assert got.keys() == want.keys()
    assert torch.equal(got.lengths(), want.lengths())
    assert got.values().dtype == want.values().dtype == torch.int64
    assert torch.equal(got.values(), want.values())


def _row(items, ratings, times, brackets: bool) -> pd.Series:
    def text(xs):
        body = ",".join(str(x) for x in xs)
        return f"[{body}]" if brackets else body

    return pd.Series(
        {
            **CONTEXT,
            "sequence_item_ids": text(items),
            "sequence_ratings": text(ratings),
            "sequence_timestamps": text(times),
        }
    )


@settings(deadline=None, max_examples=60)
@given(
    length=st.integers(1, 90),
    max_seq_len=st.sampled_from([32, 64, 128]),  # short ones truncate the history
    brackets=st.booleans(),
    data=st.data(),
)
def test_equals_grs_load_item_on_random_rows(length, max_seq_len, brackets, data):
    ds = _dataset(max_seq_len)
    n = ds._max_num_candidates
    length = length + n  # at least the candidates, as GR's load_query_samples requires
    items = data.draw(st.lists(st.integers(1, 1700), min_size=length, max_size=length))
    ratings = data.draw(st.lists(st.integers(1, 5), min_size=length, max_size=length))
    times = data.draw(st.lists(st.integers(0, 2**40), min_size=length, max_size=length))
    row = _row(items, ratings, times, brackets)
    got = fast_rows.load_item(ds, row, n)
    want = DLRMv3MovieLensDataset.load_item(ds, row, n)
    for g, w in zip(got, want):
        _assert_same_kjt(g, w)
    # the two-task dataset: GR's conversion plus the bitmask, as before the fast path
    for g, w in zip(ds.load_item(row, n), (want[0], two_task_candidates(want[1]))):
        _assert_same_kjt(g, w)


def test_equals_grs_load_item_on_real_movielens_rows(ml100k_dir):
    cfg = MOVIELENS_100K.hstu_config({})
    path = MOVIELENS_100K.data_path(str(ml100k_dir))
    ds = DLRMv3MovieLensDataset(hstu_config=cfg, ratings_file=str(path), is_inference=False)
    n = ds._max_num_candidates
    checked = 0
    for idx in range(0, ds.get_item_count(), 37):
        row = ds.iloc(idx)
        if len(row.sequence_item_ids) <= n:  # GR's load_query_samples skips these rows
            continue
        for g, w in zip(fast_rows.load_item(ds, row, n), ds.load_item(row, n)):
            _assert_same_kjt(g, w)
        checked += 1
    assert checked > 10


def test_history_lengths_that_differ_are_an_error_naming_them():
    ds = _dataset(64)
    n = ds._max_num_candidates
    row = _row(list(range(1, n + 6)), [4] * (n + 5), [1] * (n + 4), brackets=False)
    with pytest.raises(ValueError, match="history lengths differ.*timestamps"):
        fast_rows.load_item(ds, row, n)


def test_a_row_is_parsed_once_and_read_back_the_same(monkeypatch):
    ds = _dataset(64)
    n = ds._max_num_candidates
    rows = [
        _row(list(range(1, n + 9)), ([1, 5, 3, 4] * n)[: n + 8], list(range(n + 8)), True)
        for _ in range(2)
    ]
    for i, row in enumerate(rows):
        row.name = i
    first = [ds.load_item(row, n) for row in rows]
    assert sorted(ds.parsed_rows) == [0, 1]
    calls = []
    monkeypatch.setattr(fast_rows, "parse_sequence", lambda x: calls.append(x))
    again = [ds.load_item(row, n) for row in rows]
    assert calls == []  # read from the cache
    for a, b in zip(first, again):
        for g, w in zip(a, b):
            _assert_same_kjt(g, w)
