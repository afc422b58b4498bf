# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The synthetic set's planted signal lies far back: the early events predict the labels of
the candidates the early taste decides, the last K1 events do not (issue 11, item 3)."""

import numpy as np
import pytest

from ultra_hstu_plugin.data import synthetic
from ultra_hstu_plugin.data.synthetic import CANDIDATE, EARLY, NOISE, SyntheticConfig

K1 = 64  # the local window of a window-only model (SLA with K2 = 0)
CFG = SyntheticConfig(num_users=3000, min_len=400, max_len=512, seed=7)


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    s = score[order]
    i = 0
    while i < len(s):  # average ranks over runs of ties (few distinct scores here)
        j = np.searchsorted(s, s[i], side="right")
        ranks[order[i:j]] = (i + j + 1) / 2
        i = j
    pos = label.astype(bool)
    n1, n0 = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@pytest.fixture(scope="module")
def data():
    a = synthetic.synthetic_arrays(CFG)
    C = CFG.num_clusters
    clusters = (a["items"] - 1) % C
    liked = a["ratings"] >= 4
    U, W = a["items"].shape
    hist_end = a["lengths"] - CFG.num_candidates
    pos = np.arange(W)[None, :]
    early_part = pos < CFG.signal_events  # the start of the history
    window = (pos >= (hist_end - K1)[:, None]) & (pos < hist_end[:, None])  # its last K1 events

    def per_cluster(mask: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """[U, C]: sum of ``weight`` over the masked history events of each cluster."""
        out = np.zeros((U, C))
        for k in range(C):  # over the 4 clusters, not events
            out[:, k] = (mask & (clusters == k) & weight).sum(axis=1)
        return out

    ones = np.ones_like(liked)
    feats = {
        "early_count": per_cluster(early_part, ones),
        "window_count": per_cluster(window, ones),
        # the leak of the earlier generator: liked events of the cluster in the window
        "window_liked": per_cluster(window, liked),
    }
    feats["window_like_rate"] = feats["window_liked"] / np.maximum(feats["window_count"], 1)
    u, j = np.nonzero(a["role"] == CANDIDATE)
    cand_cluster = clusters[u, j]
    cand = {name: f[u, cand_cluster] for name, f in feats.items()}
    return a, clusters, liked, u, cand_cluster, cand, liked[u, j]


def test_generator_is_deterministic_and_well_formed():
    a = synthetic.synthetic_arrays(CFG)
    b = synthetic.synthetic_arrays(CFG)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    valid = a["role"] >= 0
    assert (a["items"][valid] >= 1).all() and (a["items"][valid] <= CFG.num_items).all()
    assert set(np.unique(a["ratings"][valid])) <= {1, 2, 3, 4, 5}
    assert (valid.sum(axis=1) == a["lengths"]).all()
    assert (a["early"] != a["recent"]).all()
    rows = synthetic.synthetic_rows(SyntheticConfig(num_users=5, min_len=60, max_len=70))
    small = synthetic.synthetic_arrays(SyntheticConfig(num_users=5, min_len=60, max_len=70))
    first = np.array(rows.sequence_item_ids[0].split(","), dtype=int)
    assert np.array_equal(first, small["items"][0, : small["lengths"][0]])


def test_noise_events_are_labelled_at_the_base_rate(data):
    a, clusters, liked, *_ = data
    noise = a["role"] == NOISE
    in_early = clusters == a["early"][:, None]
    rate_early = liked[noise & in_early].mean()
    rate_other = liked[noise & ~in_early].mean()
    assert abs(rate_early - CFG.p_base) < 0.02 and abs(rate_other - CFG.p_base) < 0.01
    assert (clusters[a["role"] == EARLY] == np.repeat(a["early"], CFG.signal_events)).all()


def test_early_events_predict_what_the_last_k1_events_cannot(data):
    a, clusters, liked, u, cand_cluster, cand, label = data
    # candidates outside the user's recent cluster: the early taste alone decides them
    far = cand_cluster != a["recent"][u]
    assert far.sum() > 5000
    early_auc = auc(cand["early_count"][far], label[far])
    assert early_auc > 0.8, early_auc
    for name in ("window_count", "window_liked", "window_like_rate"):
        window_auc = auc(cand[name][far], label[far])
        assert abs(window_auc - 0.5) < 0.03, (name, window_auc)
    # the recent signal is there too: outside the early cluster the window predicts labels
    near = cand_cluster != a["early"][u]
    assert auc(cand["window_count"][near], label[near]) > 0.65
    # and the oracle of both (the labels' own probabilities) beats either part alone
    both = cand["early_count"] * 10 + cand["window_count"]
    assert auc(both, label) > max(auc(cand["early_count"], label), 0.6)


@pytest.mark.parametrize("num_clusters", [4, 40])
def test_window_only_models_have_a_far_higher_ne_floor(num_clusters):
    # Bayes floors of the two kinds of model, from the generator's own label probabilities
    cfg = SyntheticConfig(num_users=3000, min_len=266, max_len=266, num_clusters=num_clusters)
    floors = synthetic.signal_floors(synthetic.synthetic_arrays(cfg), cfg)
    assert floors.full < 0.7 and floors.window_only > 0.93, floors
    # one cluster per item: the signal is the candidate's own id among the early events
    if num_clusters == cfg.num_items:
        assert floors.full < 0.6, floors


def test_user_ids_carry_no_taste():
    # a per-user id would let a model memorise training users' tastes (no use on eval users)
    cfg = SyntheticConfig(num_users=2000, min_len=60, max_len=60)
    rows = synthetic.synthetic_rows(cfg)
    early = synthetic.synthetic_arrays(cfg)["early"]
    assert rows.user_id.nunique() <= synthetic.USER_ID_BUCKETS
    for uid in np.unique(rows.user_id):  # every id is shared by users of every early taste
        assert len(set(early[rows.user_id.to_numpy() == uid])) == cfg.num_clusters


def test_propensity_signal_lives_in_the_early_events_only():
    cfg = SyntheticConfig(num_users=3000, min_len=266, max_len=266, early_signal="propensity")
    a = synthetic.synthetic_arrays(cfg)
    liked = a["ratings"] >= 4
    likes_things = a["early"] == 1
    early_rate = (liked & (a["role"] == EARLY)).sum(axis=1) / cfg.signal_events
    assert early_rate[likes_things].mean() > 0.8 and early_rate[~likes_things].mean() < 0.2
    # the last K1 history events are alike for both halves (noise and the recent cluster)
    hist_end = (a["lengths"] - cfg.num_candidates)[:, None]
    pos = np.arange(a["items"].shape[1])[None, :]
    window = (pos >= hist_end - K1) & (pos < hist_end)
    window_rate = (liked & window).sum(axis=1) / K1
    assert abs(window_rate[likes_things].mean() - window_rate[~likes_things].mean()) < 0.01
    # and the coin is independent of the recent cluster the window does see
    assert abs(np.corrcoef(a["early"], a["recent"] % 2)[0, 1]) < 0.05
    floors = synthetic.signal_floors(a, cfg)
    assert floors.full < 0.75 and floors.window_only > 0.9, floors


def test_unknown_early_signal_is_an_error_naming_it():
    with pytest.raises(ValueError, match="early_signal.*'bogus'"):
        SyntheticConfig(early_signal="bogus").validate()


def test_signal_offset_moves_the_early_events_and_only_them():
    base = dict(num_users=500, min_len=300, max_len=300, early_signal="propensity")
    a0 = synthetic.synthetic_arrays(SyntheticConfig(**base))
    a = synthetic.synthetic_arrays(SyntheticConfig(**base, signal_offset=100))
    s = a["role"].shape[1]
    early_cols = np.nonzero((a["role"] == EARLY).all(axis=0))[0]
    assert early_cols.tolist() == list(range(100, 132)) and s > 132
    assert (a0["role"][:, :32] == EARLY).all()  # the default: the very start of the history
    assert (a["role"][:, :100] == NOISE).all()  # what a global prefix would see: noise only
    # the signal is still there, now at the offset: the early like rate tells the halves apart
    liked = a["ratings"] >= 4
    rate = (liked & (a["role"] == EARLY)).sum(axis=1) / 32
    assert rate[a["early"] == 1].mean() > 0.8 and rate[a["early"] == 0].mean() < 0.2


@pytest.mark.parametrize("offset", [-1, 300, True])
def test_a_signal_offset_that_does_not_fit_is_an_error_naming_it(offset):
    with pytest.raises(ValueError, match="signal_offset"):
        SyntheticConfig(min_len=300, max_len=300, signal_offset=offset).validate()
