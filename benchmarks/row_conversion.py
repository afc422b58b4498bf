# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Loader time of one synthetic-long row: GR's ``load_item`` vs ours (``data/fast_rows.py``).

Side by side in one process, same rows, one CPU thread: the synthetic set at the quality
bench's GPU preset length (histories of 4096 events + 10 candidates), and MovieLens-100k if
given.  Prints a markdown table; writes OUT/row_conversion.json.

    python benchmarks/row_conversion.py --out DIR [--users 200] [--ml100k-data DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ultra_hstu_plugin.data import fast_rows  # noqa: E402
from ultra_hstu_plugin.data.datasets import MOVIELENS_100K, SYNTHETIC_LONG  # noqa: E402
from ultra_hstu_plugin.data.synthetic import SyntheticConfig, generate_synthetic  # noqa: E402
from ultra_hstu_plugin.host import DLRMv3MovieLensDataset  # noqa: E402


def _per_row_ms(convert: Callable[[Any], Any], rows: List[Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for row in rows:
            convert(row)
        best = min(best, (time.perf_counter() - t0) / len(rows) * 1e3)
    return best


def _measure(name: str, ds: Any, n_rows: int, rounds: int) -> Dict[str, Any]:
    n = ds._max_num_candidates
    rows = [ds.iloc(i) for i in range(min(n_rows, ds.get_item_count()))]
    rows = [r for r in rows if len(r.sequence_item_ids) > n]  # as GR's load_query_samples
    gr = _per_row_ms(lambda r: DLRMv3MovieLensDataset.load_item(ds, r, n), rows, rounds)
    ours = _per_row_ms(lambda r: fast_rows.load_item(ds, r, n), rows, rounds)
    cache: Dict[Any, Any] = {}
    fast_rows.load_item(ds, rows[0], n, cache)  # every row parsed once, as in epoch 1
    for r in rows:
        fast_rows.load_item(ds, r, n, cache)
    cached = _per_row_ms(lambda r: fast_rows.load_item(ds, r, n, cache), rows, rounds)
    history = sum(len(fast_rows.parse_sequence(r.sequence_item_ids)) - n for r in rows) / len(rows)
    return {
        "dataset": name,
        "rows": len(rows),
        "mean_history": round(history, 1),
        "gr_ms": round(gr, 3),
        "ours_ms": round(ours, 3),
        "ours_cached_ms": round(cached, 3),
        "speedup": round(gr / ours, 1),
        "speedup_cached": round(gr / cached, 1),
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--users", type=int, default=200, help="synthetic users generated")
    p.add_argument("--rows", type=int, default=64, help="rows converted a round")
    p.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    p.add_argument("--ml100k-data", default=None, help="folder with ml100k_sasrec_format.csv")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "synthetic_data"
    cfg = SyntheticConfig(num_users=args.users, min_len=4106, max_len=4106)
    generate_synthetic(data, cfg)
    syn = SYNTHETIC_LONG.dataset(SYNTHETIC_LONG.hstu_config({"max_seq_len": 4122}), str(data))
    results = [_measure("synthetic-long (L=4096)", syn, args.rows, args.rounds)]
    if args.ml100k_data:
        ml = MOVIELENS_100K.dataset(MOVIELENS_100K.hstu_config({}), args.ml100k_data)
        results.append(_measure("movielens-100k", ml, args.rows * 4, args.rounds))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    meta = {
        "device": "cpu, 1 thread",
        "commit": commit.stdout.strip(),
        "command": "python benchmarks/row_conversion.py " + " ".join(argv or sys.argv[1:]),
    }
    (args.out / "row_conversion.json").write_text(
        json.dumps({"meta": meta, "rows": results}, indent=1)
    )
    print(
        "| dataset | rows | mean history | GR load_item ms | ours ms (first epoch) | "
        "ours ms (parsed rows kept) | speed-up first / later epochs |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['dataset']} | {r['rows']} | {r['mean_history']} | {r['gr_ms']} | "
            f"{r['ours_ms']} | {r['ours_cached_ms']} | {r['speedup']}x / {r['speedup_cached']}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
