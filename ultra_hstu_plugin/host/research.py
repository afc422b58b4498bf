# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""GR's research (retrieval) stack: ``generative_recommenders.research`` and its trainer.

Imported eagerly: importing this module imports GR's research modules (and fbgemm, whose
jagged ops GR's research HSTU calls through ``torch.ops.fbgemm``), or raises
:class:`HostNotInstalledError`.  The two names GR's ``train_fn`` looks up at call time,
``get_sequential_encoder`` and ``get_reco_dataset``, are the seam through which
``train_fn.main_module = "ULTRA-HSTU"`` and our datasets reach GR's trainer without an
edit to GR: :func:`install_research_hooks` wraps them in the trainer module's namespace
(GR's own ``main.py`` then runs ULTRA-HSTU after a gin ``import``).  Every private GR
attribute the retrieval path touches is named in this file only.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Callable, Dict, Mapping

import torch

from ultra_hstu_plugin.host.install import GR_INSTALL_HINT, HostNotInstalledError

try:
    import fbgemm_gpu  # noqa: F401 - registers torch.ops.fbgemm, which GR's research HSTU calls
    import generative_recommenders.research.trainer.train as _gr_train
    from generative_recommenders.research.data import eval as _gr_eval
    from generative_recommenders.research.data.dataset import DatasetV2
    from generative_recommenders.research.data.eval import (
        add_to_summary_writer,
        eval_metrics_v2_from_tensors,
        get_eval_state,
    )
    from generative_recommenders.research.data.reco_dataset import RecoDataset
    from generative_recommenders.research.indexing.candidate_index import CandidateIndex
    from generative_recommenders.research.indexing.utils import get_top_k_module
    from generative_recommenders.research.modeling.sequential import (
        encoder_utils as _gr_encoder_utils,
    )
    from generative_recommenders.research.modeling.sequential.autoregressive_losses import (
        BCELoss,
        InBatchNegativesSampler,
        LocalNegativesSampler,
    )
    from generative_recommenders.research.modeling.sequential.embedding_modules import (
        LocalEmbeddingModule,
    )
    from generative_recommenders.research.modeling.sequential.features import (
        movielens_seq_features_from_row,
    )
    from generative_recommenders.research.modeling.sequential.hstu import (
        HSTU as ResearchHSTU,
    )
    from generative_recommenders.research.modeling.sequential.hstu import (
        HSTUJagged as ResearchHSTUJagged,
    )
    from generative_recommenders.research.modeling.sequential.hstu import (
        SequentialTransductionUnitJagged as ResearchSTULayer,
    )
    from generative_recommenders.research.modeling.sequential.input_features_preprocessors import (
        LearnablePositionalEmbeddingInputFeaturesPreprocessor,
    )
    from generative_recommenders.research.modeling.sequential.losses.sampled_softmax import (
        SampledSoftmaxLoss,
    )
    from generative_recommenders.research.modeling.sequential.output_postprocessors import (
        L2NormEmbeddingPostprocessor,
        LayerNormEmbeddingPostprocessor,
    )
    from generative_recommenders.research.modeling.similarity_utils import (
        get_similarity_function,
    )
    from generative_recommenders.research.trainer.data_loader import create_data_loader
except ImportError as e:  # pragma: no cover - exercised by tests without GR
    raise HostNotInstalledError(f"{GR_INSTALL_HINT}\n(import failed with: {e})") from e

# GR's configurables, by the names gin files bind.
research_train_fn = _gr_train.train_fn
get_weighted_loss = _gr_train.get_weighted_loss
hstu_encoder = _gr_encoder_utils.hstu_encoder
sasrec_encoder = _gr_encoder_utils.sasrec_encoder
GR_MAIN_MODULES = ("SASRec", "HSTU")  # what GR's get_sequential_encoder builds itself


def research_avg(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """GR's ``_avg``: the mean of a metric's per-example values over every rank."""
    return _gr_eval._avg(x, world_size)


def item_embedding_table(model: torch.nn.Module) -> torch.nn.Embedding:
    """The item table of a research model (``model._embedding_module._item_emb``)."""
    return model._embedding_module._item_emb


def set_sampler_item_table(sampler: torch.nn.Module, table: torch.nn.Embedding) -> None:
    """What GR's train_fn does each step for the "local" sampler (``._item_emb``)."""
    sampler._item_emb = table


def ignored_last_n(dataset: torch.utils.data.Dataset) -> int:
    """How many of each user's last items a GR ``DatasetV2`` leaves out (``ignore_last_n``)."""
    return int(dataset._ignore_last_n)


def dataset_without_last_n(dataset: torch.utils.data.Dataset, n: int) -> torch.utils.data.Dataset:
    """A copy of a GR ``DatasetV2`` that also leaves out the last ``n`` items of every user.

    GR builds its splits with ``DatasetV2(ignore_last_n=...)``: the train split drops each
    user's last item, the eval split predicts it.  One more dropped item of each gives the
    SASRec protocol's leave-one-out validation: ``dataset_without_last_n(train, 1)`` trains
    without the second-to-last item, ``dataset_without_last_n(eval, 1)`` is GR's eval on it
    (its target the second-to-last item, its history everything before).  The copy shares
    the csv frame (read once) and starts with an empty row cache; ``dataset`` is unchanged.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not hasattr(dataset, "_ignore_last_n"):
        raise TypeError(f"{type(dataset).__name__} is not one of GR's DatasetV2 (no ignore_last_n)")
    out = copy.copy(dataset)
    out._ignore_last_n = dataset._ignore_last_n + n
    out._cache = {}
    return out


def configurable_defaults(fn: Callable[..., Any]) -> Dict[str, Any]:
    """A gin configurable's keyword defaults (its signature, through gin's wrapper)."""
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


# --- the seam into GR's train_fn ------------------------------------------------------

# train_fn's module-level names that it calls by name at run time, and GR's originals.
_GR_ORIGINALS = {
    "get_sequential_encoder": _gr_train.get_sequential_encoder,
    "get_reco_dataset": _gr_train.get_reco_dataset,
}


def install_research_hooks(
    encoders: Mapping[str, Callable[..., torch.nn.Module]],
    datasets: Mapping[str, Callable[..., Any]],
) -> None:
    """Make ``train_fn.main_module`` accept ``encoders`` and ``dataset_name`` ``datasets``.

    GR's ``train_fn`` builds its model with ``get_sequential_encoder(module_type=...)`` and
    its data with ``get_reco_dataset(dataset_name=...)``, both resolved in the trainer
    module's namespace when it runs.  Both are replaced there by wrappers that build the
    named extra component and pass every other name on to GR's original unchanged
    (GR's files stay as they are; importing this twice is harmless).  An unknown name is
    an error listing every known one.
    """
    gr_encoder = _GR_ORIGINALS["get_sequential_encoder"]
    gr_dataset = _GR_ORIGINALS["get_reco_dataset"]
    extra_encoders = dict(encoders)
    extra_datasets = dict(datasets)

    def get_sequential_encoder(module_type: str, **kwargs: Any) -> torch.nn.Module:
        if module_type in extra_encoders:
            # as GR's get_sequential_encoder hands it to sasrec_encoder / hstu_encoder
            kwargs["similarity_module"] = kwargs.pop("interaction_module")
            kwargs.setdefault(
                "activation_checkpoint",
                _gin_binding("get_sequential_encoder", "activation_checkpoint", False),
            )
            return extra_encoders[module_type](**kwargs)
        if module_type not in GR_MAIN_MODULES:
            known = ", ".join(sorted([*GR_MAIN_MODULES, *extra_encoders]))
            raise ValueError(
                f"unknown train_fn.main_module {module_type!r}; known main modules: {known}"
            )
        return gr_encoder(module_type=module_type, **kwargs)

    def get_reco_dataset(dataset_name: str, **kwargs: Any) -> Any:
        if dataset_name in extra_datasets:
            return extra_datasets[dataset_name](**kwargs)
        try:
            return gr_dataset(dataset_name=dataset_name, **kwargs)
        except ValueError as e:
            if "Unknown dataset" not in str(e):
                raise
            known = ", ".join(sorted([*GR_DATASETS, *extra_datasets]))
            raise ValueError(
                f"unknown train_fn.dataset_name {dataset_name!r}; known datasets: {known}"
            ) from None

    get_sequential_encoder.gr_original = gr_encoder  # type: ignore[attr-defined]
    get_reco_dataset.gr_original = gr_dataset  # type: ignore[attr-defined]
    _gr_train.get_sequential_encoder = get_sequential_encoder
    _gr_train.get_reco_dataset = get_reco_dataset


def research_hooks_installed() -> bool:
    return hasattr(_gr_train.get_sequential_encoder, "gr_original")


def trainer_get_sequential_encoder() -> Callable[..., torch.nn.Module]:
    """What GR's ``train_fn`` calls to build its model (our wrapper once installed)."""
    return _gr_train.get_sequential_encoder


def trainer_get_reco_dataset() -> Callable[..., Any]:
    """What GR's ``train_fn`` calls to load its data (our wrapper once installed)."""
    return _gr_train.get_reco_dataset


GR_DATASETS = ("amzn-books", "ml-1m", "ml-20m", "ml-3b")


def _gin_binding(selector: str, param: str, default: Any) -> Any:
    import gin

    try:
        return gin.query_parameter(f"{selector}.{param}")
    except ValueError:
        return default


__all__ = [
    "BCELoss",
    "CandidateIndex",
    "DatasetV2",
    "GR_DATASETS",
    "GR_MAIN_MODULES",
    "InBatchNegativesSampler",
    "L2NormEmbeddingPostprocessor",
    "LayerNormEmbeddingPostprocessor",
    "LearnablePositionalEmbeddingInputFeaturesPreprocessor",
    "LocalEmbeddingModule",
    "LocalNegativesSampler",
    "RecoDataset",
    "ResearchHSTU",
    "ResearchHSTUJagged",
    "ResearchSTULayer",
    "SampledSoftmaxLoss",
    "add_to_summary_writer",
    "configurable_defaults",
    "create_data_loader",
    "dataset_without_last_n",
    "eval_metrics_v2_from_tensors",
    "get_eval_state",
    "get_similarity_function",
    "get_top_k_module",
    "get_weighted_loss",
    "hstu_encoder",
    "ignored_last_n",
    "install_research_hooks",
    "item_embedding_table",
    "movielens_seq_features_from_row",
    "research_avg",
    "research_hooks_installed",
    "research_train_fn",
    "sasrec_encoder",
    "set_sampler_item_table",
    "trainer_get_reco_dataset",
    "trainer_get_sequential_encoder",
]
