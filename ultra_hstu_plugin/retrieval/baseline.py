# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The popularity baseline on GR's leave-one-out split, ranked as GR's eval ranks.

Each user's last item is the eval target; items are scored by how often they occur in the
training part of every sequence (all items but each user's last), ties broken by the
smaller id; the items of the user's eval history (the last ``max_sequence_length`` before
the target, what GR's eval filters as ``past_ids``) are removed, and the target's rank
among the rest gives HR@K, NDCG@K and MRR as GR's ``eval_metrics_v2_from_tensors`` does.
Needs no GR (reads the csv :mod:`ultra_hstu_plugin.data.retrieval` writes).
"""

from __future__ import annotations

import math
from typing import Dict, List

import pandas as pd


def _ids(s: str) -> List[int]:
    return [int(v) for v in str(s).split(",")]


def popularity_metrics(csv_path: str, max_sequence_length: int, num_items: int) -> Dict[str, float]:
    seqs = [_ids(s) for s in pd.read_csv(csv_path)["sequence_item_ids"]]
    counts = [0] * (num_items + 1)
    for seq in seqs:
        for item in seq[:-1]:
            counts[item] += 1
    order = sorted(range(1, num_items + 1), key=lambda i: (-counts[i], i))
    position = {item: r for r, item in enumerate(order)}
    ranks = []
    for seq in seqs:
        target, history = seq[-1], set(seq[:-1][-max_sequence_length:])
        if target in history:  # GR filters seen ids, the target included: never found
            ranks.append(None)
            continue
        ahead = sum(1 for h in history if position[h] < position[target])
        ranks.append(position[target] - ahead + 1)
    n = len(ranks)

    def hr(k: int) -> float:
        return sum(1 for r in ranks if r is not None and r <= k) / n

    def ndcg(k: int) -> float:
        return sum(1 / math.log2(r + 1) for r in ranks if r is not None and r <= k) / n

    return {
        "hr@10": hr(10),
        "ndcg@10": ndcg(10),
        "hr@50": hr(50),
        "ndcg@50": ndcg(50),
        "mrr": sum(1 / r for r in ranks if r is not None) / n,
        "users": n,
    }
