# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""GR's ranking stack (dlrm_v3: model, configs, datasets, loops, metrics, checkpoints).

Each name is imported on first use (module ``__getattr__``), not when this module is
imported: the stack pulls in torchrec and fbgemm, and layers and kernels must keep
working where those are absent (the GPU benchmark machine has GR but no torchrec).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List

import torch

from ultra_hstu_plugin.host.install import (
    GR_INSTALL_HINT,
    TORCHREC_INSTALL_HINT,
    HostNotInstalledError,
)

_RANKING_STACK = {
    "load_dmp_checkpoint": "generative_recommenders.dlrm_v3.checkpoint",
    "load_nonsparse_checkpoint": "generative_recommenders.dlrm_v3.checkpoint",
    "load_sparse_checkpoint": "generative_recommenders.dlrm_v3.checkpoint",
    "save_dmp_checkpoint": "generative_recommenders.dlrm_v3.checkpoint",
    "get_embedding_table_config": "generative_recommenders.dlrm_v3.configs",
    "get_hstu_configs": "generative_recommenders.dlrm_v3.configs",
    "DLRMv3RandomDataset": "generative_recommenders.dlrm_v3.datasets.dataset",
    "collate_fn": "generative_recommenders.dlrm_v3.datasets.dataset",
    "DLRMv3MovieLensDataset": "generative_recommenders.dlrm_v3.datasets.movie_lens",
    "ChunkDistributedSampler": "generative_recommenders.dlrm_v3.train.utils",
    "HammerToTorchDataset": "generative_recommenders.dlrm_v3.train.utils",
    "dense_optimizer_factory_and_class": "generative_recommenders.dlrm_v3.train.utils",
    "eval_loop": "generative_recommenders.dlrm_v3.train.utils",
    "sparse_optimizer_factory_and_class": "generative_recommenders.dlrm_v3.train.utils",
    "train_eval_loop": "generative_recommenders.dlrm_v3.train.utils",
    "train_loop": "generative_recommenders.dlrm_v3.train.utils",
    "MetricsLogger": "generative_recommenders.dlrm_v3.utils",
    "get_gr_dataset": "generative_recommenders.dlrm_v3.utils:get_dataset",
    "DlrmHSTU": "generative_recommenders.modules.dlrm_hstu",
    "DlrmHSTUConfig": "generative_recommenders.modules.dlrm_hstu",
    "MultitaskTaskType": "generative_recommenders.modules.multitask_module",
    "TaskConfig": "generative_recommenders.modules.multitask_module",
    "ContextualPreprocessor": "generative_recommenders.modules.preprocessors",
    "get_contextual_input_embeddings": "generative_recommenders.modules.preprocessors",
    "concat_2D_jagged": "generative_recommenders.ops.jagged_tensors",
}


if TYPE_CHECKING:  # the lazily imported names, for type checkers and linters
    from generative_recommenders.dlrm_v3.checkpoint import (
        load_dmp_checkpoint,
        load_nonsparse_checkpoint,
        load_sparse_checkpoint,
        save_dmp_checkpoint,
    )
    from generative_recommenders.dlrm_v3.configs import (
        get_embedding_table_config,
        get_hstu_configs,
    )
    from generative_recommenders.dlrm_v3.datasets.dataset import DLRMv3RandomDataset, collate_fn
    from generative_recommenders.dlrm_v3.datasets.movie_lens import DLRMv3MovieLensDataset
    from generative_recommenders.dlrm_v3.train.utils import (
        ChunkDistributedSampler,
        HammerToTorchDataset,
        dense_optimizer_factory_and_class,
        eval_loop,
        sparse_optimizer_factory_and_class,
        train_eval_loop,
        train_loop,
    )
    from generative_recommenders.dlrm_v3.utils import MetricsLogger
    from generative_recommenders.dlrm_v3.utils import get_dataset as get_gr_dataset
    from generative_recommenders.modules.dlrm_hstu import DlrmHSTU, DlrmHSTUConfig
    from generative_recommenders.modules.multitask_module import MultitaskTaskType, TaskConfig
    from generative_recommenders.modules.preprocessors import (
        ContextualPreprocessor,
        get_contextual_input_embeddings,
    )
    from generative_recommenders.ops.jagged_tensors import concat_2D_jagged


def __getattr__(name: str) -> object:
    target = _RANKING_STACK.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise HostNotInstalledError(
            f"{name} needs GR's ranking stack (torchrec, fbgemm): {e}\n{GR_INSTALL_HINT}\n"
            f"{TORCHREC_INSTALL_HINT}"
        ) from e
    value = getattr(module, attr or name)
    globals()[name] = value
    return value


@dataclass(frozen=True)
class MovieLensRowLayout:
    """How GR's ``DLRMv3MovieLensDataset.load_item`` lays a row out (its private fields, read
    here so that :mod:`ultra_hstu_plugin.data.fast_rows` reproduces it without touching them)."""

    max_uih_len: int  # history events kept (the first ones)
    contextual_lengths: Dict[str, int]  # contextual feature -> its KJT length, in GR's order
    uih_keys: List[str]
    candidates_keys: List[str]
    action_weights: List[int]  # by star rating - 1


def movielens_row_layout(dataset: Any) -> MovieLensRowLayout:
    """The :class:`MovieLensRowLayout` of a ``DLRMv3MovieLensDataset`` (db1bf8f's fields)."""
    return MovieLensRowLayout(
        max_uih_len=dataset._max_uih_len,
        contextual_lengths=dict(dataset._contextual_feature_to_max_length or {}),
        uih_keys=list(dataset._uih_keys),
        candidates_keys=list(dataset._candidates_keys),
        action_weights=list(dataset.action_weights),
    )


def movielens_history_lengths(dataset: Any) -> torch.Tensor:
    """Each row's history length as a ``DLRMv3MovieLensDataset``'s ``load_item`` yields it
    (training mode), without converting any row: the events before the last
    ``max_num_candidates`` (the candidates), capped at its ``_max_uih_len`` (db1bf8f's
    fields).  Rows GR skips (no more events than candidates) get 0."""
    frame = getattr(dataset, "ratings_frame", None)
    if frame is None:
        raise ValueError(
            f"{type(dataset).__name__} has no ratings_frame: per-row history lengths are "
            "only known for GR's MovieLens-layout datasets"
        )
    ids = frame["sequence_item_ids"].astype(str).str.strip("[] ")
    events = torch.tensor((ids.str.count(",") + (ids.str.len() > 0)).to_numpy(), dtype=torch.int64)
    candidates = int(dataset._max_num_candidates)
    history = (events - candidates).clamp(min=0, max=int(dataset._max_uih_len))
    return torch.where(events > candidates, history, torch.zeros_like(history))


def import_ranking_stack() -> None:
    """Import all of GR's ranking stack now (registers GR's gin configurables)."""
    for name in _RANKING_STACK:
        __getattr__(name)


__all__ = [
    "ChunkDistributedSampler",
    "ContextualPreprocessor",
    "DLRMv3MovieLensDataset",
    "DLRMv3RandomDataset",
    "DlrmHSTU",
    "DlrmHSTUConfig",
    "HammerToTorchDataset",
    "MetricsLogger",
    "MovieLensRowLayout",
    "MultitaskTaskType",
    "TaskConfig",
    "collate_fn",
    "concat_2D_jagged",
    "dense_optimizer_factory_and_class",
    "eval_loop",
    "get_contextual_input_embeddings",
    "get_embedding_table_config",
    "get_gr_dataset",
    "get_hstu_configs",
    "import_ranking_stack",
    "load_dmp_checkpoint",
    "load_nonsparse_checkpoint",
    "load_sparse_checkpoint",
    "movielens_history_lengths",
    "movielens_row_layout",
    "save_dmp_checkpoint",
    "sparse_optimizer_factory_and_class",
    "train_eval_loop",
    "train_loop",
]
