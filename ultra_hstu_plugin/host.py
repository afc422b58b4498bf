# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The one seam to generative-recommenders (GR).

Every GR symbol the plugin uses is imported here and nowhere else, so that when GR moves
upstream one file changes, and when GR is missing the user gets one clear error naming
the install.  Numbers in this repository were measured against GR commit db1bf8f.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

GR_PINNED_COMMIT = "db1bf8f"
GR_INSTALL_HINT = (
    "generative-recommenders (GR) is not importable. Install it from its repository, e.g.\n"
    "  git clone https://github.com/meta-recsys/generative-recommenders && "
    f"git -C generative-recommenders checkout {GR_PINNED_COMMIT} && "
    "pip install --no-deps -e generative-recommenders"
)


class HostNotInstalledError(ImportError):
    """Raised when a GR-facing part of the plugin is used without GR installed."""


# The layer-level API: GR's STU layers, transducer and kernels.  Needs GR and torch only
# (plus torchrec's maybe_sorted_index_select, which GPU benchmark scripts may stub).
try:
    from generative_recommenders.common import HammerKernel, HammerModule
    from generative_recommenders.modules.dynamic_stu import L2STU
    from generative_recommenders.modules.hstu_transducer import HSTUTransducer
    from generative_recommenders.modules.stu import STU, STULayer, STULayerConfig, STUStack
    from generative_recommenders.ops.hstu_compute import (
        hstu_compute_output,
        hstu_compute_uqvk,
    )
    from generative_recommenders.ops.layer_norm import layer_norm
    from generative_recommenders.ops.pytorch.pt_hstu_linear import pytorch_norm_mul_dropout
    from generative_recommenders.ops.triton.triton_hstu_linear import (
        triton_layer_norm_mul_dropout_bwd,
        triton_layer_norm_mul_dropout_fwd,
        triton_norm_mul_dropout,
    )
except ImportError as e:  # pragma: no cover - exercised by tests without GR
    raise HostNotInstalledError(f"{GR_INSTALL_HINT}\n(import failed with: {e})") from e

# The ranking stack (dlrm_v3: torchrec, fbgemm, datasets, loops, metrics, checkpoints),
# imported on first use so that layers and kernels work where torchrec is absent.
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
            f"{name} needs GR's ranking stack (torchrec, fbgemm): {e}\n{GR_INSTALL_HINT}"
        ) from e
    value = getattr(module, attr or name)
    globals()[name] = value
    return value


def import_ranking_stack() -> None:
    """Import all of GR's ranking stack now (registers GR's gin configurables)."""
    for name in _RANKING_STACK:
        __getattr__(name)


def gr_checkout_root() -> str:
    """The folder holding GR's ``generative_recommenders`` package (its repository root)."""
    import os

    import generative_recommenders

    return os.path.dirname(os.path.dirname(os.path.abspath(generative_recommenders.__file__)))


__all__ = [
    "GR_INSTALL_HINT",
    "GR_PINNED_COMMIT",
    "ChunkDistributedSampler",
    "ContextualPreprocessor",
    "DLRMv3MovieLensDataset",
    "DLRMv3RandomDataset",
    "DlrmHSTU",
    "DlrmHSTUConfig",
    "HSTUTransducer",
    "HammerKernel",
    "HammerModule",
    "HammerToTorchDataset",
    "HostNotInstalledError",
    "L2STU",
    "MetricsLogger",
    "MultitaskTaskType",
    "STU",
    "STULayer",
    "STULayerConfig",
    "STUStack",
    "TaskConfig",
    "collate_fn",
    "concat_2D_jagged",
    "dense_optimizer_factory_and_class",
    "embedding_collection_of",
    "eval_loop",
    "get_contextual_input_embeddings",
    "get_embedding_table_config",
    "get_hstu_configs",
    "get_gr_dataset",
    "gr_checkout_root",
    "hstu_compute_output",
    "hstu_compute_uqvk",
    "layer_norm",
    "pytorch_norm_mul_dropout",
    "triton_layer_norm_mul_dropout_bwd",
    "triton_layer_norm_mul_dropout_fwd",
    "triton_norm_mul_dropout",
    "load_dmp_checkpoint",
    "load_nonsparse_checkpoint",
    "load_sparse_checkpoint",
    "save_dmp_checkpoint",
    "set_embedding_collection",
    "sparse_optimizer_factory_and_class",
    "train_eval_loop",
    "train_loop",
]


# --- The GR attributes the plugin reaches into, named in this file only. ---


def stu_module_of(model: DlrmHSTU) -> STU:
    """The STU stack inside GR's ranking model (``DlrmHSTU._hstu_transducer._stu_module``)."""
    return model._hstu_transducer._stu_module


def set_stu_module(model: DlrmHSTU, stu: STU) -> None:
    """Swap the encoder of GR's ranking model, keeping GR's transducer around it."""
    model._hstu_transducer._stu_module = stu


def input_preprocessor_of(model: DlrmHSTU) -> ContextualPreprocessor:
    return model._hstu_transducer._input_preprocessor


def action_encoder_of(pre: ContextualPreprocessor) -> Optional[torch.nn.Module]:
    """The ActionEncoder of GR's ContextualPreprocessor, or None without action features."""
    if getattr(pre, "_action_weights", None) is None:
        return None
    return pre._action_encoder


def set_action_mlp(pre: ContextualPreprocessor, mlp: torch.nn.Module) -> None:
    pre._action_embedding_mlp = mlp


def zero_target_action_table(action_encoder: torch.nn.Module) -> None:
    """Make GR's ActionEncoder emit zeros at candidate positions.

    GR gives candidates a learned "target action" embedding; ULTRA-HSTU's merged tokens
    carry no action at candidates at all.  The table becomes a zero buffer (not a
    parameter), so nothing can learn a value into it.
    """
    table = action_encoder._target_action_embedding_table
    del action_encoder._target_action_embedding_table
    action_encoder.register_buffer(
        "_target_action_embedding_table", torch.zeros_like(table.data), persistent=False
    )


def transducer_of(model: DlrmHSTU) -> HSTUTransducer:
    return model._hstu_transducer


def set_transducer(model: DlrmHSTU, transducer: HSTUTransducer) -> None:
    model._hstu_transducer = transducer


def transducer_parts(t: HSTUTransducer) -> dict:
    """Constructor arguments that rebuild GR's ``HSTUTransducer`` around new encoders."""
    return {
        "stu_module": t._stu_module,
        "input_preprocessor": t._input_preprocessor,
        "output_postprocessor": t._output_postprocessor,
        "input_dropout_ratio": t._input_dropout_ratio,
        "positional_encoder": t._positional_encoder,
        "return_full_embeddings": t._return_full_embeddings,
    }


def embedding_collection_of(model: DlrmHSTU) -> torch.nn.Module:
    """The torchrec ``EmbeddingCollection`` of GR's ranking model (``_embedding_collection``)."""
    return model._embedding_collection


def set_embedding_collection(model: DlrmHSTU, ec: torch.nn.Module) -> None:
    """Swap the embedding tables of GR's ranking model (e.g. for a quantized collection)."""
    model._embedding_collection = ec
