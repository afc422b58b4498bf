# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Our converted retrieval datasets as GR's ``RecoDataset``, read by GR's ``DatasetV2``.

What GR's ``get_reco_dataset`` does for its own datasets (``reco_dataset.py``), for the
files :mod:`ultra_hstu_plugin.data.retrieval` writes: a train split without each user's
last item (``ignore_last_n=1``) and an eval split with it (``ignore_last_n=0``), both
chronological, ``padding_length = max_sequence_length + 1``; the eval corpus is every item.
The folder is ``ultra_hstu.RetrievalData.data_dir`` (gin; default ``data``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict

import gin

from ultra_hstu_plugin.data.retrieval import RetrievalSource, all_item_ids, read_meta
from ultra_hstu_plugin.host import DatasetV2, RecoDataset


@gin.configurable(module="ultra_hstu")
@dataclass(frozen=True)
class RetrievalData:
    """Where the converted retrieval datasets live (``ultra-hstu data prepare --out``)."""

    data_dir: str = "data"


def retrieval_data() -> RetrievalData:
    return gin.get_configurable(RetrievalData)()


def load_reco_dataset(
    spec: RetrievalSource,
    max_sequence_length: int,
    chronological: bool,
    positional_sampling_ratio: float = 1.0,
    data_dir: str | None = None,
) -> Any:
    """GR's ``RecoDataset`` for one of our datasets (what ``get_reco_dataset`` returns)."""
    data_dir = data_dir if data_dir is not None else retrieval_data().data_dir
    meta = read_meta(spec, data_dir)
    csv = str(spec.csv_path(data_dir))
    common = dict(padding_length=max_sequence_length + 1, chronological=chronological)
    train = DatasetV2(
        ratings_file=csv, ignore_last_n=1, sample_ratio=positional_sampling_ratio, **common
    )
    eval_ = DatasetV2(ratings_file=csv, ignore_last_n=0, sample_ratio=1.0, **common)
    return RecoDataset(
        max_sequence_length=max_sequence_length,
        num_unique_items=int(meta["num_unique_items"]),
        max_item_id=int(meta["max_item_id"]),
        all_item_ids=all_item_ids(meta),
        train_dataset=train,
        eval_dataset=eval_,
    )


def dataset_loaders() -> Dict[str, Callable[..., Any]]:
    """name -> loader taking ``get_reco_dataset``'s keywords, for every registered source."""
    from ultra_hstu_plugin.registry import discover

    out: Dict[str, Callable[..., Any]] = {}
    for comp in discover().components("dataset"):
        spec = comp.load()
        if getattr(spec, "kind", None) == "retrieval":
            out[comp.name] = _loader(spec)
    return out


def _loader(spec: RetrievalSource) -> Callable[..., Any]:
    def load(**kwargs: Any) -> Any:
        return load_reco_dataset(spec, **kwargs)

    return load
