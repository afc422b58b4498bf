# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The one seam to the host libraries: generative-recommenders (GR), torchrec and fbgemm.

Every import of those libraries, and every private name of theirs the plugin touches,
lives in this package and nowhere else (``tests/test_seam.py`` and
``integration_tests/test_seam_private_names.py`` check it), so that when GR moves upstream
one file changes, and when a library is missing the user gets one clear
:class:`HostNotInstalledError` naming the install.  Numbers in this repository were
measured against GR commit db1bf8f.

Submodules, by host library and by what each import needs:

* :mod:`.gr`: GR's layer API (STU layers, transducer, layer kernels) and accessors for
  GR model internals; needs GR (and torchrec's ``maybe_sorted_index_select``).
* :mod:`.ranking`: GR's dlrm_v3 ranking stack, each name imported on first use.
* :mod:`.gr_attention`: GR's Triton attention alone (no torchrec), for benchmarks.
* :mod:`.torchrec`: every torchrec/fbgemm name, and accessors for their internals; works
  without GR.
* :mod:`.stubs`: the torchrec stand-in for the GPU benchmark machine.
* :mod:`.install`: pinned versions, install hints, the error.

Every name of the submodules is importable from here (``from ultra_hstu_plugin.host
import STULayer``); each is resolved on first use, so importing this package imports no
host library, and e.g. INT4 tables (torchrec, no GR) and the GPU benchmarks (GR, no
torchrec) each load only what they need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Dict

from ultra_hstu_plugin.host.install import (
    GR_INSTALL_HINT,
    GR_PINNED_COMMIT,
    TORCHREC_INSTALL_HINT,
    HostNotInstalledError,
)

_GR = (
    "EMBEDDING_COLLECTION_STATE_PREFIX",
    "HSTUTransducer",
    "HammerKernel",
    "HammerModule",
    "L2STU",
    "STU",
    "STULayer",
    "STULayerConfig",
    "STUStack",
    "action_encoder_of",
    "embedding_collection_of",
    "gr_addmm",
    "gr_checkout_root",
    "hstu_compute_output",
    "hstu_compute_uqvk",
    "input_preprocessor_of",
    "is_sparse_state_key",
    "layer_norm",
    "pytorch_norm_mul_dropout",
    "set_action_mlp",
    "set_embedding_collection",
    "set_stu_module",
    "set_transducer",
    "split_sparse_dense_state",
    "stu_module_of",
    "transducer_of",
    "transducer_parts",
    "triton_layer_norm_mul_dropout_bwd",
    "triton_layer_norm_mul_dropout_fwd",
    "triton_norm_mul_dropout",
    "zero_target_action_table",
)
_RANKING = (
    "load_dmp_checkpoint",
    "load_nonsparse_checkpoint",
    "load_sparse_checkpoint",
    "save_dmp_checkpoint",
    "get_embedding_table_config",
    "get_hstu_configs",
    "DLRMv3RandomDataset",
    "collate_fn",
    "DLRMv3MovieLensDataset",
    "ChunkDistributedSampler",
    "HammerToTorchDataset",
    "dense_optimizer_factory_and_class",
    "eval_loop",
    "sparse_optimizer_factory_and_class",
    "train_eval_loop",
    "train_loop",
    "MetricsLogger",
    "get_gr_dataset",
    "DlrmHSTU",
    "DlrmHSTUConfig",
    "MultitaskTaskType",
    "TaskConfig",
    "ContextualPreprocessor",
    "get_contextual_input_embeddings",
    "concat_2D_jagged",
    "import_ranking_stack",
)
_TORCHREC = (
    "QUANT_DEFAULT_ROW_ALIGNMENT",
    "QUANT_ROW_ALIGNMENT_ATTR",
    "CombinedOptimizer",
    "DataType",
    "DistributedModelParallel",
    "EmbeddingBagCollection",
    "EmbeddingCollection",
    "EmbeddingConfig",
    "EmbeddingShardingPlanner",
    "KeyedJaggedTensor",
    "KeyedOptimizerWrapper",
    "QuantConfig",
    "QuantEmbeddingCollection",
    "ShardedTensor",
    "ShardingEnv",
    "Topology",
    "get_default_sharders",
    "in_backward_optimizer_filter",
    "tbe_modules",
    "tbe_modules_by_table",
    "versions",
)
# name -> the host submodule that defines it
_SUBMODULE_OF: Dict[str, str] = {
    **dict.fromkeys(_GR, "gr"),
    **dict.fromkeys(_RANKING, "ranking"),
    **dict.fromkeys(_TORCHREC, "torchrec"),
    "triton_hstu_mha": "gr_attention",
    "stub_torchrec_if_missing": "stubs",
}

if TYPE_CHECKING:  # the lazily resolved names, for type checkers
    from ultra_hstu_plugin.host.gr import (
        EMBEDDING_COLLECTION_STATE_PREFIX,
        L2STU,
        STU,
        HammerKernel,
        HammerModule,
        HSTUTransducer,
        STULayer,
        STULayerConfig,
        STUStack,
        action_encoder_of,
        embedding_collection_of,
        gr_addmm,
        gr_checkout_root,
        hstu_compute_output,
        hstu_compute_uqvk,
        input_preprocessor_of,
        is_sparse_state_key,
        layer_norm,
        pytorch_norm_mul_dropout,
        set_action_mlp,
        set_embedding_collection,
        set_stu_module,
        set_transducer,
        split_sparse_dense_state,
        stu_module_of,
        transducer_of,
        transducer_parts,
        triton_layer_norm_mul_dropout_bwd,
        triton_layer_norm_mul_dropout_fwd,
        triton_norm_mul_dropout,
        zero_target_action_table,
    )
    from ultra_hstu_plugin.host.gr_attention import (
        triton_hstu_mha,
    )
    from ultra_hstu_plugin.host.ranking import (
        ChunkDistributedSampler,
        ContextualPreprocessor,
        DlrmHSTU,
        DlrmHSTUConfig,
        DLRMv3MovieLensDataset,
        DLRMv3RandomDataset,
        HammerToTorchDataset,
        MetricsLogger,
        MultitaskTaskType,
        TaskConfig,
        collate_fn,
        concat_2D_jagged,
        dense_optimizer_factory_and_class,
        eval_loop,
        get_contextual_input_embeddings,
        get_embedding_table_config,
        get_gr_dataset,
        get_hstu_configs,
        import_ranking_stack,
        load_dmp_checkpoint,
        load_nonsparse_checkpoint,
        load_sparse_checkpoint,
        save_dmp_checkpoint,
        sparse_optimizer_factory_and_class,
        train_eval_loop,
        train_loop,
    )
    from ultra_hstu_plugin.host.stubs import (
        stub_torchrec_if_missing,
    )
    from ultra_hstu_plugin.host.torchrec import (
        QUANT_DEFAULT_ROW_ALIGNMENT,
        QUANT_ROW_ALIGNMENT_ATTR,
        CombinedOptimizer,
        DataType,
        DistributedModelParallel,
        EmbeddingBagCollection,
        EmbeddingCollection,
        EmbeddingConfig,
        EmbeddingShardingPlanner,
        KeyedJaggedTensor,
        KeyedOptimizerWrapper,
        QuantConfig,
        QuantEmbeddingCollection,
        ShardedTensor,
        ShardingEnv,
        Topology,
        get_default_sharders,
        in_backward_optimizer_filter,
        tbe_modules,
        tbe_modules_by_table,
        versions,
    )


def __getattr__(name: str) -> object:
    submodule = _SUBMODULE_OF.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Raises HostNotInstalledError (an ImportError) when the submodule's library is missing;
    # ``from ultra_hstu_plugin.host import X`` then fails with that error, as it did when
    # the seam was one eagerly importing module.
    value = getattr(importlib.import_module(f"{__name__}.{submodule}"), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted([*globals(), *_SUBMODULE_OF])


__all__ = [  # literal, so linters see the TYPE_CHECKING names as re-exported
    "ChunkDistributedSampler",
    "CombinedOptimizer",
    "ContextualPreprocessor",
    "DLRMv3MovieLensDataset",
    "DLRMv3RandomDataset",
    "DataType",
    "DistributedModelParallel",
    "DlrmHSTU",
    "DlrmHSTUConfig",
    "EMBEDDING_COLLECTION_STATE_PREFIX",
    "EmbeddingBagCollection",
    "EmbeddingCollection",
    "EmbeddingConfig",
    "EmbeddingShardingPlanner",
    "GR_INSTALL_HINT",
    "GR_PINNED_COMMIT",
    "HSTUTransducer",
    "HammerKernel",
    "HammerModule",
    "HammerToTorchDataset",
    "HostNotInstalledError",
    "KeyedJaggedTensor",
    "KeyedOptimizerWrapper",
    "L2STU",
    "MetricsLogger",
    "MultitaskTaskType",
    "QUANT_DEFAULT_ROW_ALIGNMENT",
    "QUANT_ROW_ALIGNMENT_ATTR",
    "QuantConfig",
    "QuantEmbeddingCollection",
    "STU",
    "STULayer",
    "STULayerConfig",
    "STUStack",
    "ShardedTensor",
    "ShardingEnv",
    "TORCHREC_INSTALL_HINT",
    "TaskConfig",
    "Topology",
    "action_encoder_of",
    "collate_fn",
    "concat_2D_jagged",
    "dense_optimizer_factory_and_class",
    "embedding_collection_of",
    "eval_loop",
    "get_contextual_input_embeddings",
    "get_default_sharders",
    "get_embedding_table_config",
    "get_gr_dataset",
    "get_hstu_configs",
    "gr_addmm",
    "gr_checkout_root",
    "hstu_compute_output",
    "hstu_compute_uqvk",
    "import_ranking_stack",
    "in_backward_optimizer_filter",
    "input_preprocessor_of",
    "is_sparse_state_key",
    "layer_norm",
    "load_dmp_checkpoint",
    "load_nonsparse_checkpoint",
    "load_sparse_checkpoint",
    "pytorch_norm_mul_dropout",
    "save_dmp_checkpoint",
    "set_action_mlp",
    "set_embedding_collection",
    "set_stu_module",
    "set_transducer",
    "sparse_optimizer_factory_and_class",
    "split_sparse_dense_state",
    "stu_module_of",
    "stub_torchrec_if_missing",
    "tbe_modules",
    "tbe_modules_by_table",
    "train_eval_loop",
    "train_loop",
    "transducer_of",
    "transducer_parts",
    "triton_hstu_mha",
    "triton_layer_norm_mul_dropout_bwd",
    "triton_layer_norm_mul_dropout_fwd",
    "triton_norm_mul_dropout",
    "versions",
    "zero_target_action_table",
]
