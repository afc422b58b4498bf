# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""GR's MovieLens row-to-KJT conversion, vectorised for long histories.

Why: GR's ``DLRMv3MovieLensDataset.load_item`` parses each row's three sequence strings with
``json.loads``, builds Python lists of every feature and calls ``torch.tensor`` on a list of
~5 x L ints.  At L = 4096 that is ~9 ms a sample on one CPU thread (profiled:
``torch.tensor`` on the list is half of it, the JSON parse and the per-event list
comprehension most of the rest), ~0.3 s of loader time a batch of 32, likely what the
quality bench's GPU runs at L = 4096 waited on (``benchmarks/results/row_conversion_cpu.md``).

:func:`load_item` returns exactly what GR's ``load_item`` returns for the same row (keys,
lengths, values; checked by ``tests/test_fast_rows.py`` against GR's own function) but parses
with numpy and builds each tensor in one piece.  GR's dataset class, its sample loading and
its collation stay as they are: only the per-row conversion is replaced, in our subclass.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from ultra_hstu_plugin.host import MovieLensRowLayout, movielens_row_layout
from ultra_hstu_plugin.host.torchrec import KeyedJaggedTensor


def parse_sequence(x: Any) -> np.ndarray:
    """A sequence field as float64, as GR's ``separate_uih_candidates`` reads it: a JSON list
    or a comma-separated string of numbers (``"[1,2]"`` or ``"1,2"``), or one number.
    float64 holds every integer below 2**53 exactly (timestamps included)."""
    if isinstance(x, str):
        text = x.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        return np.array(text.split(","), dtype=np.float64) if text else np.zeros(0)
    return np.atleast_1d(np.asarray(x, dtype=np.float64))


def _long(x: np.ndarray) -> np.ndarray:
    """torch's ``.long()`` on GR's values: truncation toward zero."""
    return x.astype(np.int64)


def _split(values: np.ndarray, num_candidates: int) -> Tuple[np.ndarray, np.ndarray]:
    """(history, candidates): the last ``num_candidates`` values are the candidates."""
    if num_candidates == 0:  # GR's y[-0:] is the whole list and y[:-0] is empty
        return values[:0], values
    return values[:-num_candidates], values[-num_candidates:]


Parsed = Tuple[np.ndarray, np.ndarray, np.ndarray]


def parse_row(data: Any, cache: Optional[Dict[Any, Parsed]] = None) -> Parsed:
    """The row's (items, ratings, timestamps), from ``cache`` (keyed by the row's index
    label) when it holds them.  Parsing is most of what is left of a row's cost (~0.4 us a
    number), and a run reads every training row once an epoch."""
    key = getattr(data, "name", None)
    if cache is not None and key in cache:
        return cache[key]
    parsed = tuple(
        parse_sequence(x)
        for x in (data.sequence_item_ids, data.sequence_ratings, data.sequence_timestamps)
    )
    if cache is not None and key is not None:
        cache[key] = parsed
    return parsed  # type: ignore[return-value]


def load_item(
    dataset: Any,
    data: Any,
    max_num_candidates: int,
    cache: Optional[Dict[Any, Parsed]] = None,
    layout: Optional[MovieLensRowLayout] = None,
) -> Tuple[Any, Any]:
    """GR's ``DLRMv3MovieLensDataset.load_item(data, max_num_candidates)`` for ``dataset``
    (a ``DLRMv3MovieLensDataset``): the (history KJT, candidates KJT) pair, same values.
    ``cache``: parsed rows kept across calls (:func:`parse_row`); ``layout``: the dataset's
    :class:`MovieLensRowLayout`, read once by a caller that converts many rows."""
    items, ratings, times = parse_row(data, cache)
    items_uih, items_cand = _split(items, max_num_candidates)
    ratings_uih, ratings_cand = _split(ratings, max_num_candidates)
    times_uih, _ = _split(times, max_num_candidates)
    if not (len(items_uih) == len(times_uih) == len(ratings_uih)):
        raise ValueError(
            f"row {getattr(data, 'name', '?')}: history lengths differ (items "
            f"{len(items_uih)}, ratings {len(ratings_uih)}, timestamps {len(times_uih)})"
        )
    layout = layout if layout is not None else movielens_row_layout(dataset)
    keep = layout.max_uih_len  # GR keeps the first events of a longer history
    items_uih, ratings_uih, times_uih = (
        _long(x[:keep]) for x in (items_uih, ratings_uih, times_uih)
    )
    n = len(items_uih)
    contextual = layout.contextual_lengths
    weights = np.asarray(layout.action_weights, dtype=np.int64)
    query_time = int(times_uih.max()) if n else 0
    uih_values = np.concatenate(
        [
            np.asarray([int(data[name]) for name in contextual], dtype=np.int64),
            items_uih,
            ratings_uih,
            times_uih,
            weights[ratings_uih - 1],  # GR: action_weights[int(rating) - 1]
            np.zeros(n, dtype=np.int64),  # dummy watch times
            np.asarray([query_time], dtype=np.int64),
        ]
    )
    seq_keys = len(layout.uih_keys) - len(contextual)
    uih_lengths = list(contextual.values()) + [n] * seq_keys + [1]
    uih = KeyedJaggedTensor(
        keys=layout.uih_keys + ["dummy_query_time"],
        lengths=torch.tensor(uih_lengths, dtype=torch.long),
        values=torch.from_numpy(uih_values),
    )
    m = len(items_cand)
    cand_values = np.concatenate(
        [
            _long(items_cand),
            _long(ratings_cand),
            np.full(m, query_time, dtype=np.int64),  # item_query_time
            (ratings_cand >= 3.5).astype(np.int64),  # GR: int(rating >= 3.5), before .long()
            np.ones(m, dtype=np.int64),  # item_dummy_watchtime
        ]
    )
    candidates = KeyedJaggedTensor(
        keys=layout.candidates_keys,
        lengths=torch.full((len(layout.candidates_keys),), max_num_candidates, dtype=torch.long),
        values=torch.from_numpy(cand_values),
    )
    return uih, candidates
