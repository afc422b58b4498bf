# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The sampler (LBSL or SL) on the training path: a step on each jagged batch before GR's loop.

``RunSettings.sampler`` names a ``sampler`` component of the registry ("lbsl", "sl");
:func:`make_train_sampler` builds it from ``SamplerSettings`` (gin), a cost model read off the
built encoder (:func:`encoder_cost_model`) and a ``torch.Generator`` seeded with
``RunSettings.seed + rank``.  :class:`SampledLoader` wraps the training dataloader: for each
batch (still on the CPU, before GR's ``train_loop`` moves it and calls the model) it hands the
per-user history lengths (GR's ``uih_seq_lengths``: the lengths of
``uih_post_id_feature_name``) to the sampler and keeps the most recent ``kept`` events of
every history feature (:func:`ultra_hstu_plugin.sampling.batch.trim_samples`); contextual
features and candidates are never cut.  Every step it writes the load statistics to the
rank's TensorBoard run (GR's ``MetricsLogger`` writer, ``<output_dir>/tensorboard/rank<r>``)
under ``load/*`` and hands them to the curves logger (means per point in ``curves.jsonl``).

Eval batches are never sampled.  All ranks iterate the same number of training batches
(GR's samplers drop the last partial batch), which the sampler's collectives rely on.
"""

from __future__ import annotations

import inspect
from dataclasses import fields
from typing import Any, Dict, Iterator, Optional, Tuple

import gin
import torch

from ultra_hstu_plugin.config import RunSettings, SamplerSettings, bound_parameters
from ultra_hstu_plugin.host import STULayer
from ultra_hstu_plugin.modules.mixture_of_transducers import MixtureOfTransducers
from ultra_hstu_plugin.modules.truncation import TruncatedSTU
from ultra_hstu_plugin.modules.ultra_stu import UltraHSTULayer
from ultra_hstu_plugin.registry import discover
from ultra_hstu_plugin.sampling.batch import trim_samples
from ultra_hstu_plugin.sampling.calibration import calibrated
from ultra_hstu_plugin.sampling.cost import AttentionCostModel

# What a sampler's constructor may take besides SamplerSettings' fields.
_PROVIDED = ("cost_model", "max_len", "generator")
# SamplerSettings fields the training path consumes itself (they shape the cost model).
_COST_MODEL_FIELDS = ("cost_calibration",)
# stats of the sampler -> TensorBoard tag (under load/) and curves.jsonl key
LOAD_SCALARS = (
    "cost",
    "cost_unsampled",
    "target_cost",
    "imbalance",
    "imbalance_unsampled",
    "kept_fraction",
    "kept_fraction_global",
)


def history_features(hstu_config: Any) -> Tuple[str, ...]:
    """GR's history (UIH) sequence features: ``hstu_uih_feature_names`` but the contextual."""
    contextual = dict(hstu_config.contextual_feature_to_max_length)
    return tuple(f for f in hstu_config.hstu_uih_feature_names if f not in contextual)


def max_history_len(hstu_config: Any) -> int:
    """The longest history GR's dataset yields (its ``_max_uih_len`` formula)."""
    contextual = dict(hstu_config.contextual_feature_to_max_length)
    return int(hstu_config.max_seq_len - hstu_config.max_num_candidates - len(contextual))


def encoder_cost_model(
    model: torch.nn.Module, hstu_config: Any, calibration: Optional[str] = None
) -> AttentionCostModel:
    """The analytic-FLOPs :class:`AttentionCostModel` of the encoder the model was built with.

    Full-sequence layers: the ULTRA-HSTU layers outside the truncation (SLA with a window of
    ``k1 + 1`` keys and a global prefix of ``max(k2, contextual)`` tokens; ``k1 = 0``: full
    causal) or GR's own STU layers (full causal).  Truncated layers: those inside
    :class:`TruncatedSTU`, on the last ``truncated_seq_len`` tokens, costed as full causal
    (their ``upper_k1``/``upper_k2`` window is not modelled).  Always-kept tokens: the
    contextual features and ``max_num_candidates`` candidates.  A mixture of transducers
    (streams) is not modelled: an error.  ``calibration``: a calibration json whose
    constants replace the analytic FLOPs (:func:`~ultra_hstu_plugin.sampling.calibration.
    calibrated`).
    """
    if any(isinstance(m, MixtureOfTransducers) for m in model.modules()):
        raise ValueError("RunSettings.sampler does not support streams (mixture of transducers)")
    truncated = [m for m in model.modules() if isinstance(m, TruncatedSTU)]
    upper_ids = {id(x) for t in truncated for x in t.modules() if isinstance(x, STULayer)}
    lower = [m for m in model.modules() if isinstance(m, STULayer) and id(m) not in upper_ids]
    if not lower:
        raise ValueError("RunSettings.sampler: the model has no STU layers to cost")
    contextual = sum(dict(hstu_config.contextual_feature_to_max_length).values())
    sla = {"attention": "full"}
    first = lower[0]
    if isinstance(first, UltraHSTULayer) and first.sla.k1 > 0:
        prefix = max(first.sla.k2, first.sla.contextual_seq_len)
        sla = {"attention": "sla", "sla_local": first.sla.k1 + 1, "sla_global": prefix}
    analytic = AttentionCostModel.from_flops(
        dim=int(hstu_config.hstu_transducer_embedding_dim),
        n_lower=len(lower),
        n_upper=len(upper_ids),
        truncate_to=truncated[0].truncated_seq_len if truncated else None,
        fixed_tokens=contextual + int(hstu_config.max_num_candidates),
        **sla,
    )
    return analytic if calibration is None else calibrated(analytic, calibration)


def sampler_settings() -> SamplerSettings:
    return gin.get_configurable(SamplerSettings)()


def check_sampler_bindings(name: Optional[str]) -> Optional[Any]:
    """The sampler class ``name`` names (None: no sampler), after checking that every bound
    ``SamplerSettings`` field is one it takes (a binding it would ignore is an error) and
    that ``alpha`` is in (1, 2].  Cheap: the launcher's preflight calls it before any
    worker starts; the rest (floor vs max_len ...) fails when the sampler is built."""
    bound = sorted({p for _, p in bound_parameters("SamplerSettings")})
    if name is None:
        if bound:
            raise ValueError(
                f"SamplerSettings.{bound[0]} is bound but RunSettings.sampler is None: set "
                "RunSettings.sampler ('lbsl' or 'sl') or drop the binding"
            )
        return None
    cls = discover().get("sampler", name).load()
    params = inspect.signature(cls).parameters
    missing = [p for p in _PROVIDED if p not in params]
    if missing:
        raise ValueError(
            f"sampler {name!r} cannot be used for training: its constructor takes no {missing}"
        )
    ignored = [p for p in bound if p not in params and p not in _COST_MODEL_FIELDS]
    if ignored:
        raise ValueError(
            f"SamplerSettings.{ignored[0]} is bound but sampler {name!r} takes no {ignored[0]}"
        )
    alpha = sampler_settings().alpha
    if "alpha" in params and not 1.0 < float(alpha) <= 2.0:
        raise ValueError(f"SamplerSettings.alpha={alpha}: stochastic length needs alpha in (1, 2]")
    return cls


def make_train_sampler(
    settings: RunSettings, model: torch.nn.Module, hstu_config: Any, rank: int
) -> Optional[Any]:
    """``RunSettings.sampler`` built for this rank, or None when it is not set."""
    cls = check_sampler_bindings(settings.sampler)
    if cls is None:
        return None
    s = sampler_settings()
    params = inspect.signature(cls).parameters
    kwargs: Dict[str, Any] = {
        f.name: getattr(s, f.name) for f in fields(s) if f.name in params and f.name != "max_len"
    }
    kwargs.update(
        cost_model=encoder_cost_model(model, hstu_config, s.cost_calibration),
        max_len=s.max_len if s.max_len is not None else max_history_len(hstu_config),
        generator=torch.Generator().manual_seed(settings.seed + rank),
    )
    return cls(**kwargs)


def load_scalars(stats: Dict[str, Any]) -> Dict[str, float]:
    """The step's statistics that go to TensorBoard and curves.jsonl."""
    return {k: float(stats[k]) for k in LOAD_SCALARS if stats.get(k) is not None}


class SampledLoader:
    """A training dataloader whose batches are trimmed by a sampler before GR's loop sees them.

    ``metrics``: the run's ``CurveMetricsLogger`` (its TensorBoard writer, ``global_step`` and
    ``add_load_stats``); None logs nothing.  ``last_stats`` holds the latest step's stats.
    Keeps the wrapped loader's attributes (GR's loops read ``sampler`` and ``batch_size``).
    """

    def __init__(
        self,
        loader: Any,
        sampler: Any,
        history_keys: Tuple[str, ...],
        length_key: str,
        metrics: Optional[Any] = None,
    ) -> None:
        if length_key not in history_keys:
            raise ValueError(f"{length_key!r} is not one of the history features {history_keys}")
        self._loader = loader
        self._sampler = sampler
        self._history_keys = frozenset(history_keys)
        self._length_key = length_key
        self._metrics = metrics
        self.last_stats: Dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def history_lengths(self, sample: Any) -> torch.Tensor:
        kjt = sample.uih_features_kjt
        keys = list(kjt.keys())
        return kjt.lengths().view(len(keys), -1)[keys.index(self._length_key)]

    def __iter__(self) -> Iterator[Any]:
        for sample in self._loader:
            kept, stats = self._sampler(self.history_lengths(sample))
            self.last_stats = stats
            self._log(stats)
            yield trim_samples(sample, kept, self._history_keys)

    def _log(self, stats: Dict[str, Any]) -> None:
        m = self._metrics
        if m is None:
            return
        scalars = load_scalars(stats)
        step = int(m.global_step["train"]) + 1  # the step this batch will be logged under
        if m.tb_logger is not None:
            for key, value in scalars.items():
                m.tb_logger.add_scalar(f"load/{key}", value, step)
        m.add_load_stats(scalars)


__all__ = [
    "LOAD_SCALARS",
    "SampledLoader",
    "check_sampler_bindings",
    "encoder_cost_model",
    "history_features",
    "make_train_sampler",
    "max_history_len",
]
