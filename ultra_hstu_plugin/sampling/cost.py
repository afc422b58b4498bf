# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""What one sequence costs in the encoder, as a function of its kept history length.

The cost of a sequence with ``l`` kept history tokens and ``fixed_tokens`` always-kept tokens
(contextual features + candidates), ``T = l + fixed_tokens``, is::

    n_lower * (quadratic * pairs_lower(T) + linear * T)
  + n_upper * (quadratic * pairs_full(min(T, truncate_to)) + linear * min(T, truncate_to))

* ``pairs_full(T) = T (T + 1) / 2``: causal attention, query ``i`` sees ``i + 1`` keys (~T^2).
* ``pairs_lower`` is ``pairs_full`` for ``attention="full"``; for ``attention="sla"`` query ``i``
  sees ``min(i + 1, K1 + K2)`` keys (K1 sink/global + K2 local window), so the pairs are
  ``W (W + 1) / 2 + (T - W) W`` with ``W = min(T, K1 + K2)`` (~T * min(T, K1 + K2)).
* The ``n_upper`` layers see only the last ``truncate_to`` (L') tokens (ULTRA-HSTU's attention
  truncation); ``truncate_to=None`` means they see all ``T``.

The constants are calibrated from the encoder benchmark by :mod:`.calibration` (a
least-squares fit of ``quadratic`` and ``linear`` to ``ultra-hstu bench scaling`` rows;
``SamplerSettings.cost_calibration`` hands the result to training);
:meth:`AttentionCostModel.from_flops` gives analytic FLOPs, the uncalibrated default.  Only ratios of costs matter to LBSL (targets are means of the same
model's costs), so the unit (FLOPs, seconds) is free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

ATTENTIONS = ("full", "sla")


def _causal_pairs(t: torch.Tensor) -> torch.Tensor:
    return t * (t + 1) / 2


@dataclass(frozen=True)
class AttentionCostModel:
    """Per-sequence encoder cost; see the module docstring for the formula."""

    quadratic: float = 1.0  # cost per attention (query, key) pair per layer
    linear: float = 0.0  # cost per token per layer (projections, MLP, norms)
    n_lower: int = 1  # N1: layers on all tokens
    n_upper: int = 0  # N2: layers on the last ``truncate_to`` tokens
    truncate_to: Optional[int] = None  # L'
    attention: str = "full"  # attention of the lower layers: "full" or "sla"
    sla_global: int = 0  # K2, the global prefix
    sla_local: int = 0  # K1, the local window
    fixed_tokens: int = 0  # contextual + candidate tokens, never dropped

    def __post_init__(self) -> None:
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention={self.attention!r}; expected one of {ATTENTIONS}")
        if self.attention == "sla" and self.sla_global + self.sla_local <= 0:
            raise ValueError("attention='sla' needs sla_global + sla_local (K2 + K1) > 0")
        if self.truncate_to is not None and self.truncate_to <= 0:
            raise ValueError(f"truncate_to={self.truncate_to}; expected a positive length or None")
        if self.n_lower < 0 or self.n_upper < 0:
            raise ValueError(f"n_lower={self.n_lower}, n_upper={self.n_upper}; expected >= 0")

    @classmethod
    def from_flops(
        cls,
        dim: int,
        n_lower: int,
        n_upper: int = 0,
        truncate_to: Optional[int] = None,
        attention: str = "full",
        sla_global: int = 0,
        sla_local: int = 0,
        fixed_tokens: int = 0,
        projection_widths: Optional[Sequence[int]] = None,
    ) -> AttentionCostModel:
        """Analytic forward FLOPs: each attention pair costs ``4 * dim`` (``q.k`` and the
        ``p * v`` accumulate, 2 FLOPs per multiply-add each); each token costs
        ``2 * dim * sum(projection_widths)`` in GEMMs.  The HSTU default widths are the fused
        UVQK projection (``4 * dim``) and the output projection (``dim``).  Backward is about
        twice forward for both terms, so it does not change ratios and is left out."""
        widths = list(projection_widths) if projection_widths is not None else [4 * dim, dim]
        return cls(
            quadratic=4.0 * dim,
            linear=2.0 * dim * float(sum(widths)),
            n_lower=n_lower,
            n_upper=n_upper,
            truncate_to=truncate_to,
            attention=attention,
            sla_global=sla_global,
            sla_local=sla_local,
            fixed_tokens=fixed_tokens,
        )

    def pairs_lower(self, tokens: torch.Tensor) -> torch.Tensor:
        """Attention pairs of one lower layer for sequences of ``tokens`` tokens (float64)."""
        t = tokens.to(torch.float64)
        if self.attention == "full":
            return _causal_pairs(t)
        w = t.clamp(max=float(self.sla_global + self.sla_local))
        return _causal_pairs(w) + (t - w) * w

    def __call__(self, kept: Union[torch.Tensor, int]) -> torch.Tensor:
        """Cost of each sequence with ``kept`` history tokens (any shape; float64)."""
        t = torch.as_tensor(kept).to(torch.float64) + self.fixed_tokens
        cost = self.n_lower * (self.quadratic * self.pairs_lower(t) + self.linear * t)
        if self.n_upper:
            u = t if self.truncate_to is None else t.clamp(max=float(self.truncate_to))
            cost = cost + self.n_upper * (self.quadratic * _causal_pairs(u) + self.linear * u)
        return cost
