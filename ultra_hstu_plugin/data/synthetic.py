# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""A synthetic long-sequence ranking dataset with a planted, learnable signal.

Written in the same CSV layout as :mod:`ultra_hstu_plugin.data.movielens`, so GR's
MovieLens dataset class loads it unchanged.  Items fall into ``num_clusters`` clusters
(``item_id % num_clusters``).  Every user has

* an *early* taste: their first ``signal_events`` events come from one cluster, and
* a *recent* taste: their last ``signal_events`` history events come from another;

everything in between is uniform noise.  A candidate's rating (the label) is high with
probability ``p_early`` if it is in the early cluster, ``p_recent`` if in the recent one,
``p_base`` otherwise.  A model that only sees a local window of the last events cannot
see the early taste once sequences are longer than the window, so it scores measurably
worse than one with a global prefix (SLA's K2) or full attention.

Two tasks: "rating >= 4" (GR's own label) and "rating == 5", both binary
(see ``TwoTaskMovieLensDataset`` in :mod:`ultra_hstu_plugin.data.datasets`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import gin
import numpy as np
import pandas as pd

OUTPUT_NAME = "synthetic_sasrec_format.csv"
# Embedding-table rows the dataset spec allocates; ids must stay below them (fbgemm would
# otherwise map out-of-range ids to row 0 with only a log line).
MAX_ITEMS = 1 << 16
MAX_USERS = 1 << 17


@gin.configurable(module="ultra_hstu")
@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and signal strength; bound in gin (``ultra_hstu.SyntheticConfig.num_users = ...``)."""

    num_users: int = 2000
    num_items: int = 5000
    num_clusters: int = 20
    min_len: int = 256
    max_len: int = 1024
    num_candidates: int = 10
    signal_events: int = 8
    p_early: float = 0.85
    p_recent: float = 0.7
    p_base: float = 0.15
    seed: int = 0

    def validate(self) -> None:
        if not (0 < self.num_users < MAX_USERS and 0 < self.num_items < MAX_ITEMS):
            raise ValueError(
                f"num_users must be in [1, {MAX_USERS}) and num_items in [1, {MAX_ITEMS}) "
                f"(the embedding tables' sizes), got {self.num_users}, {self.num_items}"
            )
        if self.num_users <= 0 or self.num_items <= 0:
            raise ValueError(
                f"num_users and num_items must be positive, got {self.num_users}, {self.num_items}"
            )
        if not 2 <= self.num_clusters <= self.num_items:
            raise ValueError(f"num_clusters must be in [2, num_items], got {self.num_clusters}")
        needed = 2 * self.signal_events + self.num_candidates + 1
        if self.min_len < needed:
            raise ValueError(
                f"min_len={self.min_len} is too short: need at least {needed} events "
                "(early signal + recent signal + candidates)"
            )
        if self.max_len < self.min_len:
            raise ValueError(f"max_len={self.max_len} is below min_len={self.min_len}")
        for name in ("p_early", "p_recent", "p_base"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")


def _items_in_cluster(
    rng: np.random.Generator, cfg: SyntheticConfig, cluster: int, n: int
) -> np.ndarray:
    per_cluster = (cfg.num_items - 1 - cluster) // cfg.num_clusters + 1
    # items are 1-based and item i is in cluster (i - 1) % num_clusters
    return cluster + cfg.num_clusters * rng.integers(0, per_cluster, size=n) + 1


def synthetic_rows(cfg: SyntheticConfig) -> pd.DataFrame:
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    rows = []
    s, c = cfg.signal_events, cfg.num_candidates
    for user in range(1, cfg.num_users + 1):
        n = int(rng.integers(cfg.min_len, cfg.max_len + 1))
        early, recent = rng.choice(cfg.num_clusters, size=2, replace=False)
        items = rng.integers(1, cfg.num_items + 1, size=n)
        items[:s] = _items_in_cluster(rng, cfg, int(early), s)
        hist_end = n - c
        items[hist_end - s : hist_end] = _items_in_cluster(rng, cfg, int(recent), s)
        # candidates: a third from each planted cluster, a third random
        kinds = rng.integers(0, 3, size=c)
        for j, kind in enumerate(kinds):
            if kind < 2:
                items[hist_end + j] = _items_in_cluster(rng, cfg, int((early, recent)[kind]), 1)[0]
        clusters = (items - 1) % cfg.num_clusters
        p = np.where(
            clusters == early, cfg.p_early, np.where(clusters == recent, cfg.p_recent, cfg.p_base)
        )
        liked = rng.random(n) < p
        ratings = np.where(liked, rng.integers(4, 6, size=n), rng.integers(1, 4, size=n))
        times = 1_600_000_000 + np.cumsum(rng.integers(1, 3600, size=n))
        rows.append(
            {
                "user_id": user,
                "sex": int(rng.integers(1, 3)),
                "age_group": 25,
                "occupation": int(rng.integers(1, 22)),
                "zip_code": int(rng.integers(1, 100)),
                "sequence_item_ids": ",".join(map(str, items.tolist())),
                "sequence_ratings": ",".join(map(str, ratings.tolist())),
                "sequence_timestamps": ",".join(map(str, times.tolist())),
            }
        )
    return pd.DataFrame(rows)


def generate_synthetic(out_dir: Union[str, os.PathLike], cfg: SyntheticConfig) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / OUTPUT_NAME
    synthetic_rows(cfg).to_csv(path, index=False)
    return path
