# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Dataset specs: GR's feature/table configuration plus the GR dataset class to load it.

Each spec says how to build GR's ``DlrmHSTUConfig`` (feature names, contextual features,
tasks), its embedding tables, and the GR ``Dataset`` that reads the files.  The
MovieLens-100k and synthetic specs reuse GR's MovieLens feature layout and GR's
``DLRMv3MovieLensDataset`` unchanged; only table sizes, model size defaults and the data
file differ.  Registered in :mod:`ultra_hstu_plugin.registry`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from ultra_hstu_plugin.data import fast_rows, movielens, synthetic
from ultra_hstu_plugin.host import (
    DlrmHSTUConfig,
    DLRMv3MovieLensDataset,
    DLRMv3RandomDataset,
    MultitaskTaskType,
    TaskConfig,
    get_embedding_table_config,
    get_hstu_configs,
    movielens_row_layout,
)
from ultra_hstu_plugin.host.torchrec import DataType, EmbeddingConfig, KeyedJaggedTensor


class MissingDataError(FileNotFoundError):
    pass


# Small enough to train on two CPU cores in minutes; every field can be overridden in gin
# through make_ultra_model.hstu_overrides.
CPU_MODEL_DEFAULTS: Dict[str, Any] = {
    "max_seq_len": 256,
    "hstu_num_heads": 2,
    "hstu_attn_linear_dim": 32,
    "hstu_attn_qk_dim": 32,
    "hstu_attn_num_layers": 2,
    "hstu_embedding_table_dim": 32,
    "hstu_preprocessor_hidden_dim": 64,
    "hstu_transducer_embedding_dim": 64,
}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    gr_config_name: str  # the GR dataset whose feature layout this one shares
    data_file: Optional[str]  # relative to the data dir; None = no files
    prepare_hint: str
    table_sizes: Dict[str, int] = field(default_factory=dict)
    model_defaults: Dict[str, Any] = field(default_factory=dict)
    extra_tasks: tuple = ()
    make_dataset: Optional[Callable[..., Any]] = None

    def hstu_config(self, overrides: Optional[Dict[str, Any]] = None) -> DlrmHSTUConfig:
        cfg = get_hstu_configs(self.gr_config_name)
        cfg.multitask_configs = list(cfg.multitask_configs) + list(self.extra_tasks)
        values = {**self.model_defaults, **(overrides or {})}
        known = {f.name for f in dataclasses.fields(DlrmHSTUConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown DlrmHSTUConfig field(s) {unknown} in hstu_overrides; known: {sorted(known)}"
            )
        for key, value in values.items():
            setattr(cfg, key, value)
        return cfg

    def tables(self, hstu_config: DlrmHSTUConfig) -> Dict[str, EmbeddingConfig]:
        tables = get_embedding_table_config(self.gr_config_name)
        if not self.table_sizes:
            return tables
        dim = hstu_config.hstu_embedding_table_dim
        return {
            name: dataclasses.replace(
                t,
                num_embeddings=self.table_sizes[name],
                embedding_dim=dim,
                data_type=DataType.FP32,
            )
            for name, t in tables.items()
        }

    def data_path(self, data_dir: str) -> Optional[Path]:
        if self.data_file is None:
            return None
        path = Path(data_dir) / self.data_file
        if not path.exists():
            raise MissingDataError(
                f"dataset {self.name!r}: data file {path} not found; {self.prepare_hint}"
            )
        return path

    def dataset(
        self, hstu_config: DlrmHSTUConfig, data_dir: str, is_inference: bool = False
    ) -> Any:
        assert self.make_dataset is not None
        return self.make_dataset(
            hstu_config=hstu_config,
            path=self.data_path(data_dir),
            data_dir=data_dir,
            is_inference=is_inference,
        )


def _movielens_dataset(
    hstu_config: DlrmHSTUConfig, path: Path, is_inference: bool, **_: Any
) -> Any:
    return DLRMv3MovieLensDataset(
        hstu_config=hstu_config, ratings_file=str(path), is_inference=is_inference
    )


LIKE_BIT, LOVE_BIT = 1, 2  # candidates' action bitmask: rating >= 4, rating == 5


def two_task_candidates(candidates: Any) -> Any:
    """GR's candidates KJT with ``item_action_weights`` replaced by the two tasks' bitmask
    (bit 1: rating >= 4, bit 2: rating == 5)."""
    feats = candidates.to_dict()
    stars = feats["item_movie_rating"].values()
    bits = (stars >= 4).long() * LIKE_BIT + (stars == 5).long() * LOVE_BIT
    keys = candidates.keys()
    values = [bits if k == "item_action_weights" else feats[k].values() for k in keys]
    return KeyedJaggedTensor(keys=keys, lengths=candidates.lengths(), values=torch.cat(values))


class TwoTaskMovieLensDataset(DLRMv3MovieLensDataset):
    """GR's MovieLens loader with two binary tasks in the candidates' action bitmask.

    GR's loader sets bit 1 for "rating >= 4" only; this adds bit 2 for "rating == 5", so
    the multitask head trains two classification tasks.  (GR's ``MetricsLogger`` passes
    every task's predictions to every metric, so classification and regression tasks
    cannot be mixed; both tasks here are classification.)  Rows are converted by
    :func:`ultra_hstu_plugin.data.fast_rows.load_item`, GR's ``load_item`` vectorised (the
    synthetic set's histories are thousands of events long), each row parsed once per
    process and kept (``parsed_rows``; ~100 KB a row at L = 4096).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parsed_rows: Dict[Any, fast_rows.Parsed] = {}
        self.row_layout = movielens_row_layout(self)

    def load_item(self, data: Any, max_num_candidates: int) -> Any:
        uih, candidates = fast_rows.load_item(
            self, data, max_num_candidates, self.parsed_rows, self.row_layout
        )
        return uih, two_task_candidates(candidates)


def _two_task_dataset(hstu_config: DlrmHSTUConfig, path: Path, is_inference: bool, **_: Any) -> Any:
    return TwoTaskMovieLensDataset(
        hstu_config=hstu_config, ratings_file=str(path), is_inference=is_inference
    )


def _gr_dataset(gr_name: str) -> Callable[..., Any]:
    def make(hstu_config: DlrmHSTUConfig, data_dir: str, is_inference: bool, **_: Any) -> Any:
        from ultra_hstu_plugin.host import get_gr_dataset

        cls, kwargs = get_gr_dataset(gr_name, new_path_prefix=data_dir)
        return cls(hstu_config=hstu_config, is_inference=is_inference, **kwargs)

    return make


_ML_TABLES = {
    "movie_id": 1700,
    "user_id": 1000,
    "sex": 4,
    "age_group": 64,
    "occupation": 32,
    "zip_code": 1024,
}

MOVIELENS_100K = DatasetSpec(
    name="movielens-100k",
    gr_config_name="movielens-1m",
    data_file=movielens.OUTPUT_NAME,
    prepare_hint="run `ultra-hstu data prepare movielens-100k --out DATA_DIR` first",
    table_sizes=_ML_TABLES,
    model_defaults=CPU_MODEL_DEFAULTS,
    make_dataset=_movielens_dataset,
)

SYNTHETIC_LONG = DatasetSpec(
    name="synthetic-long",
    gr_config_name="movielens-1m",
    data_file=synthetic.OUTPUT_NAME,
    prepare_hint="run `ultra-hstu data prepare synthetic-long --out DATA_DIR` first",
    table_sizes={**_ML_TABLES, "movie_id": synthetic.MAX_ITEMS, "user_id": synthetic.MAX_USERS},
    model_defaults={**CPU_MODEL_DEFAULTS, "max_seq_len": 1040},
    extra_tasks=(
        TaskConfig(
            task_name="love",
            task_weight=LOVE_BIT,
            task_type=MultitaskTaskType.BINARY_CLASSIFICATION,
        ),
    ),
    make_dataset=_two_task_dataset,
)

KUAIRAND_1K = DatasetSpec(
    name="kuairand-1k",
    gr_config_name="kuairand-1k",
    data_file="data/KuaiRand-1K/data/processed_seqs.csv",
    prepare_hint=(
        "download KuaiRand-1K and run GR's `python preprocess_public_data.py --dataset kuairand-1k` "
        "so that DATA_DIR/data/KuaiRand-1K/data/processed_seqs.csv exists"
    ),
    make_dataset=_gr_dataset("kuairand-1k"),
)

GR_DEBUG = DatasetSpec(
    name="debug",
    gr_config_name="debug",
    data_file=None,
    prepare_hint="",
    make_dataset=lambda hstu_config, is_inference, **_: DLRMv3RandomDataset(
        hstu_config=hstu_config, is_inference=is_inference
    ),
)


def prepare(name: str, out_dir: str, **kwargs: Any) -> Path:
    """``ultra-hstu data prepare NAME``: write the files a dataset spec reads."""
    if name == "movielens-100k":
        return movielens.prepare_movielens_100k(out_dir, **kwargs)
    if name == "synthetic-long":
        return synthetic.generate_synthetic(out_dir, synthetic.SyntheticConfig(**kwargs))
    raise ValueError(
        f"dataset {name!r} cannot be prepared here; preparable: movielens-100k, synthetic-long"
        + (f". {KUAIRAND_1K.prepare_hint}" if name == "kuairand-1k" else "")
    )
