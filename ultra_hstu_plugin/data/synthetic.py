# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""A synthetic long-sequence ranking dataset whose planted signal lies far back *and* recently.

Written in the same CSV layout as :mod:`ultra_hstu_plugin.data.movielens`, so GR's
MovieLens dataset class loads it unchanged.  Few items (``num_items``, default 40) fall into
few clusters (``num_clusters``, default 4; item ``i`` is in cluster ``(i - 1) % num_clusters``),
so the signal is learnable in a few hundred steps.  Every user has two tastes, an *early*
cluster and a different *recent* one:

* the first ``signal_events`` history events (the start of the history, far back once the
  history is long; from position ``signal_offset`` on where it is set) are items of the early
  cluster, liked with probability ``p_early``;
* the last ``recent_events`` history events are items of the recent cluster, liked with
  probability ``p_recent``;
* every other history event is *noise*: a uniformly drawn item whose label is drawn at the
  base rate ``p_base``, whatever its cluster.  (Were noise events in the early cluster
  liked more often, the early taste would leak into the recent window, and a window-only
  model could learn it from recent events alone.)

Candidates (the last ``num_candidates`` events) are a third each from the early cluster, the
recent cluster and uniform; a candidate's label is drawn with ``p_early`` if it is in the
user's early cluster, ``p_recent`` if in the recent one, ``p_base`` otherwise.  So the label
of a candidate outside the recent cluster depends only on events at the start of the
history: a model that attends to a local window of the last ``K1 < L - signal_events``
events (SLA with ``K2 = 0``) cannot tell the early cluster from the other clusters, while
one with a global prefix (``K2 >= signal_events`` + contextual tokens) or full attention
can (``tests/test_synthetic_signal.py`` checks this on the generator itself).

``early_signal="propensity"`` plants a simpler far-back signal: half the users like things
(their early events are liked at ``p_early``, the rest's at ``p_base``), and so are their
candidates outside the recent cluster.  A model reads it as a count of liked early events,
no item matching needed; the window still sees nothing of it (:func:`_propensity_arrays`).
:func:`signal_floors` gives the best NE reachable with and without the early events.

Vectorised over users and events (numpy); only the CSV strings are built per user.

Two tasks: "rating >= 4" (GR's own label) and "rating == 5" (a liked event is rated 4 or 5
with equal probability), both binary (``TwoTaskMovieLensDataset`` in
:mod:`ultra_hstu_plugin.data.datasets`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Union

import gin
import numpy as np
import pandas as pd

OUTPUT_NAME = "synthetic_sasrec_format.csv"
# Embedding-table rows the dataset spec allocates; ids must stay below them (fbgemm would
# otherwise map out-of-range ids to row 0 with only a log line).
MAX_ITEMS = 1 << 16
MAX_USERS = 1 << 17

# Bumped whenever the same SyntheticConfig generates different rows (caches key on it).
GENERATOR_VERSION = 3
# Distinct user ids of the generated rows (see synthetic_rows).
USER_ID_BUCKETS = 8

EARLY_SIGNALS = ("cluster", "propensity")

# Event roles in :func:`synthetic_arrays`' ``role`` matrix.
PAD, NOISE, EARLY, RECENT, CANDIDATE = -1, 0, 1, 2, 3


@gin.configurable(module="ultra_hstu")
@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and signal strength; bound in gin (``ultra_hstu.SyntheticConfig.num_users = ...``).

    ``min_len`` / ``max_len``: events per user, candidates included (history = length -
    ``num_candidates``).
    """

    num_users: int = 2000
    num_items: int = 40
    num_clusters: int = 4
    min_len: int = 256
    max_len: int = 1024
    num_candidates: int = 10
    signal_events: int = 32
    recent_events: int = 16
    p_early: float = 0.9
    p_recent: float = 0.8
    p_base: float = 0.1
    seed: int = 0
    # What the early events tell (see the module docstring): "cluster", the user's early
    # taste cluster (a candidate's label needs matching it against the early items), or
    # "propensity", how much the user likes things at all (a count of liked early events).
    early_signal: str = "cluster"
    # Where the early signal events start, in history positions (0: the very start, where a
    # global prefix of K2 >= signal_events + contextual tokens covers them).  A mid-history
    # offset puts them beyond both the prefix and the window: only full attention (or a
    # longer prefix / window) can reach them.
    signal_offset: int = 0

    def validate(self) -> None:
        if not (0 < self.num_users < MAX_USERS and 0 < self.num_items < MAX_ITEMS):
            raise ValueError(
                f"num_users must be in [1, {MAX_USERS}) and num_items in [1, {MAX_ITEMS}) "
                f"(the embedding tables' sizes), got {self.num_users}, {self.num_items}"
            )
        if not 2 <= self.num_clusters <= self.num_items:
            raise ValueError(f"num_clusters must be in [2, num_items], got {self.num_clusters}")
        if self.signal_events < 1 or self.recent_events < 0 or self.num_candidates < 1:
            raise ValueError(
                "signal_events and num_candidates must be >= 1 and recent_events >= 0, got "
                f"{self.signal_events}, {self.num_candidates}, {self.recent_events}"
            )
        if isinstance(self.signal_offset, bool) or not isinstance(self.signal_offset, int):
            raise ValueError(f"signal_offset must be an int >= 0, got {self.signal_offset!r}")
        needed = (
            self.signal_offset + self.signal_events + self.recent_events + self.num_candidates + 1
        )
        if self.signal_offset < 0 or self.min_len < needed:
            raise ValueError(
                f"min_len={self.min_len} is too short for signal_offset={self.signal_offset}: "
                f"need at least {needed} events (offset + early signal + recent signal + "
                "candidates + 1 noise event)"
            )
        if self.max_len < self.min_len:
            raise ValueError(f"max_len={self.max_len} is below min_len={self.min_len}")
        if self.early_signal not in EARLY_SIGNALS:
            raise ValueError(
                f"early_signal must be one of {EARLY_SIGNALS}, got {self.early_signal!r}"
            )
        for name in ("p_early", "p_recent", "p_base"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")


def _items_in(rng: np.random.Generator, cfg: SyntheticConfig, clusters: np.ndarray) -> np.ndarray:
    """One uniformly drawn item of each given cluster (same shape as ``clusters``)."""
    per_cluster = (cfg.num_items - 1 - clusters) // cfg.num_clusters + 1
    k = np.minimum((rng.random(clusters.shape) * per_cluster).astype(np.int64), per_cluster - 1)
    return clusters + cfg.num_clusters * k + 1  # 1-based ids


def synthetic_arrays(cfg: SyntheticConfig) -> Dict[str, np.ndarray]:
    """The dataset as padded ``[num_users, max_len]`` matrices (vectorised; no per-event loop).

    ``items`` (1-based ids, 0 = padding), ``ratings`` (1..5, 0 = padding), ``role``
    (:data:`NOISE`, :data:`EARLY`, :data:`RECENT`, :data:`CANDIDATE`, :data:`PAD`),
    ``lengths`` (events per user, candidates included), ``early`` / ``recent`` (each user's
    two taste clusters) and ``p_like`` (the probability each label was drawn with).
    """
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    U, W, C = cfg.num_users, cfg.max_len, cfg.num_clusters
    s, r, c = cfg.signal_events, cfg.recent_events, cfg.num_candidates
    lengths = rng.integers(cfg.min_len, cfg.max_len + 1, size=U)
    early = rng.integers(0, C, size=U)
    recent = (early + rng.integers(1, C, size=U)) % C  # never the early cluster
    pos = np.arange(W)[None, :]
    hist_end = (lengths - c)[:, None]
    role = np.full((U, W), NOISE, dtype=np.int64)
    o = cfg.signal_offset
    role[np.broadcast_to((pos >= o) & (pos < o + s), (U, W))] = EARLY
    role[(pos >= hist_end - r) & (pos < hist_end)] = RECENT
    role[pos >= hist_end] = CANDIDATE
    role[pos >= lengths[:, None]] = PAD

    if cfg.early_signal == "propensity":
        return _propensity_arrays(cfg, rng, role, lengths, recent)
    items = rng.integers(1, cfg.num_items + 1, size=(U, W))  # noise: uniform items
    # candidates: a third from the early cluster, a third from the recent one, a third uniform
    kind = rng.integers(0, 3, size=(U, W))
    cluster_of = np.where(
        (role == EARLY) | ((role == CANDIDATE) & (kind == 0)),
        early[:, None],
        np.where((role == RECENT) | ((role == CANDIDATE) & (kind == 1)), recent[:, None], -1),
    )
    planted = cluster_of >= 0
    items[planted] = _items_in(rng, cfg, cluster_of[planted])
    clusters = (items - 1) % C

    # labels: noise at the base rate whatever its cluster; planted history events at their
    # taste's rate; candidates by the cluster they fall in
    p_cand = np.where(
        clusters == early[:, None],
        cfg.p_early,
        np.where(clusters == recent[:, None], cfg.p_recent, cfg.p_base),
    )
    p_like = np.select(
        [role == EARLY, role == RECENT, role == CANDIDATE],
        [cfg.p_early, cfg.p_recent, p_cand],
        default=cfg.p_base,
    )
    return _drawn(rng, items, p_like, role, lengths, early, recent)


@dataclass(frozen=True)
class SignalFloors:
    """The best eval NE a model can reach on the candidates' "rating >= 4" task.

    ``full``: knowing every label's probability (full attention, or a global prefix that
    covers the early events); ``window_only``: knowing only what the last ``K1 >=
    recent_events`` history events tell (the recent cluster; the early events are out of
    reach and noise carries nothing).  NE is log loss over the log loss of the base rate.
    """

    full: float
    window_only: float


def signal_floors(arrays: Dict[str, np.ndarray], cfg: SyntheticConfig) -> SignalFloors:
    """:class:`SignalFloors` of :func:`synthetic_arrays`' output (the labels drawn there)."""
    cand = arrays["role"] == CANDIDATE
    y = (arrays["ratings"][cand] >= 4).astype(np.float64)
    cluster = ((arrays["items"] - 1) % cfg.num_clusters)[cand]
    recent = np.broadcast_to(arrays["recent"][:, None], arrays["items"].shape)[cand]

    def log_loss(q: np.ndarray) -> float:
        q = np.clip(q, 1e-7, 1 - 1e-7)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

    base = log_loss(np.full_like(y, y.mean()))
    in_recent = cluster == recent
    window = np.where(in_recent, y[in_recent].mean(), y[~in_recent].mean())
    return SignalFloors(
        full=log_loss(arrays["p_like"][cand]) / base, window_only=log_loss(window) / base
    )


def _drawn(
    rng: np.random.Generator,
    items: np.ndarray,
    p_like: np.ndarray,
    role: np.ndarray,
    lengths: np.ndarray,
    early: np.ndarray,
    recent: np.ndarray,
) -> Dict[str, np.ndarray]:
    """Labels drawn at ``p_like`` as 1-5 star ratings (liked: 4 or 5), padding zeroed."""
    U, W = items.shape
    liked = rng.random((U, W)) < p_like
    ratings = np.where(liked, rng.integers(4, 6, size=(U, W)), rng.integers(1, 4, size=(U, W)))
    pad = role == PAD
    items[pad], ratings[pad], p_like[pad] = 0, 0, 0.0
    return {
        "items": items,
        "ratings": ratings,
        "role": role,
        "lengths": lengths,
        "early": early,
        "recent": recent,
        "p_like": p_like,
    }


def _propensity_arrays(
    cfg: SyntheticConfig,
    rng: np.random.Generator,
    role: np.ndarray,
    lengths: np.ndarray,
    recent: np.ndarray,
) -> Dict[str, np.ndarray]:
    """``early_signal="propensity"``: half the users (``early`` = 1) like things.

    Their early events (uniform items) are liked with ``p_early``, the other half's at
    ``p_base``; a candidate outside the user's recent cluster is liked with ``p_early`` for
    the first half and ``p_base`` for the second, one in the recent cluster with
    ``p_recent``.  So the early events' like count decides those candidates, and every other
    history event (noise at ``p_base``, recent events at ``p_recent``) is the same for both
    halves: a window of the last K1 events cannot tell them apart.
    """
    U, W = role.shape
    # drawn here, not from the cluster draw: ``recent`` was built from that (parity leak)
    early = rng.integers(0, 2, size=U)  # 1: the user likes things
    items = rng.integers(1, cfg.num_items + 1, size=(U, W))
    kind = rng.integers(0, 2, size=(U, W))  # candidates: half in the recent cluster
    in_recent_slot = (role == RECENT) | ((role == CANDIDATE) & (kind == 1))
    items[in_recent_slot] = _items_in(
        rng, cfg, np.broadcast_to(recent[:, None], (U, W))[in_recent_slot]
    )
    clusters = (items - 1) % cfg.num_clusters
    likes = np.where(early == 1, cfg.p_early, cfg.p_base)[:, None]
    p_cand = np.where(clusters == recent[:, None], cfg.p_recent, likes)
    p_like = np.select(
        [role == EARLY, role == RECENT, role == CANDIDATE],
        [np.broadcast_to(likes, (U, W)), cfg.p_recent, p_cand],
        default=cfg.p_base,
    )
    return _drawn(rng, items, p_like, role, lengths, early, recent)


def _joined(matrix: np.ndarray, lengths: np.ndarray) -> list:
    return [",".join(map(str, row[:n].tolist())) for row, n in zip(matrix, lengths)]


def synthetic_rows(cfg: SyntheticConfig) -> pd.DataFrame:
    """One row per user in GR's MovieLens CSV layout (see :func:`synthetic_arrays`)."""
    a = synthetic_arrays(cfg)
    rng = np.random.default_rng(cfg.seed + 1)  # side features: no signal
    U, W = a["items"].shape
    times = 1_600_000_000 + np.cumsum(rng.integers(1, 3600, size=(U, W)), axis=1)
    n = a["lengths"]
    return pd.DataFrame(
        {
            # Few ids, each shared by users of every taste: a unique id per user let a model
            # memorise each training user's early taste in its id embedding (train NE 0.74,
            # eval NE 1.05 on unseen users: synthetic_learnability_cpu.md) instead of
            # reading it from the history.
            "user_id": rng.integers(1, USER_ID_BUCKETS + 1, size=U),
            "sex": rng.integers(1, 3, size=U),
            "age_group": 25,
            "occupation": rng.integers(1, 22, size=U),
            "zip_code": rng.integers(1, 100, size=U),
            "sequence_item_ids": _joined(a["items"], n),
            "sequence_ratings": _joined(a["ratings"], n),
            "sequence_timestamps": _joined(times, n),
        }
    )


def generate_synthetic(out_dir: Union[str, os.PathLike], cfg: SyntheticConfig) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / OUTPUT_NAME
    synthetic_rows(cfg).to_csv(path, index=False)
    return path
