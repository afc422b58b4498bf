# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Every torchrec and fbgemm_gpu name the plugin uses, and accessors for their internals.

Imported eagerly, so only the paths that need embedding tables import it (datasets,
sharding, INT4 quantization, the embedding benchmark); layers, kernels and GR's layer
API (:mod:`.gr`) never do, and keep working where torchrec is absent.  Works without GR.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch

from ultra_hstu_plugin.host.install import TORCHREC_INSTALL_HINT, HostNotInstalledError

try:
    import fbgemm_gpu
    import torchrec
    import torchrec.quant.embedding_modules as _trec_quant
    from torchrec import KeyedJaggedTensor
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.sharding_plan import get_default_sharders
    from torchrec.distributed.types import ShardedTensor, ShardingEnv
    from torchrec.modules.embedding_configs import DataType, EmbeddingConfig, QuantConfig
    from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter
except ImportError as e:  # pragma: no cover - exercised without torchrec
    raise HostNotInstalledError(f"{TORCHREC_INSTALL_HINT}\n(import failed with: {e})") from e

# torchrec's quantized (inference) EmbeddingCollection: fbgemm's int-n-bit TBE inside.
QuantEmbeddingCollection = _trec_quant.EmbeddingCollection
# Row alignment torchrec pads quantized rows to by default (16 bytes, for GPU vector loads).
QUANT_DEFAULT_ROW_ALIGNMENT: int = _trec_quant.DEFAULT_ROW_ALIGNMENT
# Attribute that ``QuantEmbeddingCollection.from_float`` reads the row alignment from.
QUANT_ROW_ALIGNMENT_ATTR: str = _trec_quant.MODULE_ATTR_ROW_ALIGNMENT_INT


def versions() -> Dict[str, str]:
    """Installed torchrec and fbgemm_gpu versions, for benchmark records."""
    return {
        "fbgemm_gpu": getattr(fbgemm_gpu, "__version__", "unknown"),
        "torchrec": getattr(torchrec, "__version__", "unknown"),
    }


# --- torchrec internals the plugin reaches into, named in this file only. ---


def metric_task_count(computation: Any) -> int:
    """Tasks of a torchrec ``RecMetricComputation`` (its private ``_n_tasks``)."""
    return int(computation._n_tasks)


def auc_metric_computation() -> Optional[type]:
    """torchrec's ``AUCMetricComputation`` (eval AUC in the training curves), or ``None``
    where the installed torchrec has no metrics package (the GPU machine's stand-in)."""
    try:
        from torchrec.metrics.auc import AUCMetricComputation
    except ImportError:
        return None
    return AUCMetricComputation


def tbe_modules(qec: QuantEmbeddingCollection) -> List[torch.nn.Module]:
    """fbgemm TBEs of a quantized collection, one per table data type (``_emb_modules``)."""
    return list(qec._emb_modules)


def tbe_modules_by_table(qec: QuantEmbeddingCollection) -> Dict[str, Tuple[Any, int]]:
    """table name -> (fbgemm TBE holding it, index of the table inside that TBE).

    torchrec groups tables into one TBE per data type; ``_key_to_tables`` lists each
    group's tables in the TBE's order, in the same order as ``_emb_modules``.
    """
    out = {}
    for tbe, tables in zip(qec._emb_modules, qec._key_to_tables.values()):
        for i, table in enumerate(tables):
            out[table.name] = (tbe, i)
    return out


__all__ = [
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
]
