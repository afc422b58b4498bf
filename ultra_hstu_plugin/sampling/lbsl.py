# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Stochastic length (GR) and load-balanced stochastic length (LBSL).

Plain stochastic length (SL) drops tokens at random per user, so a rank that draws several
long users still gets a slow step and every other rank waits for it.  LBSL trims each rank's
batch *toward a cost target* instead: the longest sequences are cut first (water-filling),
never below a floor, so the per-rank cost -- and hence the step time under synchronous data
parallelism -- is capped near the same value on every rank.  The target is the mean cost that
SL would have given (measured during a warm-up of plain SL, averaged over ranks), so LBSL
keeps about as many tokens as SL but spends them where they do not stall the other ranks.

See :mod:`ultra_hstu_plugin.sampling` for how it plugs into training.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from ultra_hstu_plugin.sampling.cost import AttentionCostModel


def _check_alpha(alpha: float) -> None:
    if not 1.0 < float(alpha) <= 2.0:
        raise ValueError(f"alpha={alpha}: stochastic length needs alpha in (1, 2]")


def stochastic_length(
    lengths: torch.Tensor,
    alpha: float,
    max_len: int,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """GR's stochastic length (``generative_recommenders.common.apply_sampling``) semantics.

    With ``threshold = int(max_len ** (alpha / 2))``, a sequence longer than ``threshold`` is
    cut to ``threshold`` with probability ``1 - max_len ** alpha / length ** 2`` and kept whole
    otherwise; shorter ones are untouched.  Unlike GR's, this takes a ``generator`` so runs are
    reproducible.  Returns kept lengths (same shape and dtype); the caller keeps the most
    recent tokens.
    """
    _check_alpha(alpha)
    threshold = int(max_len ** (alpha / 2))
    lf = lengths.to(torch.float64).clamp(min=1.0)
    no_sample_prob = (float(max_len) ** alpha) / (lf * lf)
    u = torch.rand(lengths.shape, generator=generator, dtype=torch.float64, device=lengths.device)
    cut = (lengths > threshold) & (u < 1 - no_sample_prob)
    return torch.where(cut, torch.full_like(lengths, threshold), lengths)


def _batch_cost(
    lengths: torch.Tensor, cap: torch.Tensor, floor: int, cost_model: AttentionCostModel
) -> torch.Tensor:
    kept = torch.minimum(lengths, cap.clamp(min=floor).unsqueeze(-1))
    return cost_model(kept).sum(-1)


def choose_kept_lengths(
    lengths: torch.Tensor,
    target_cost: Union[float, torch.Tensor],
    cost_model: AttentionCostModel,
    floor: int,
) -> torch.Tensor:
    """Kept lengths whose total cost is at most ``target_cost``, longest sequences cut first.

    Water-filling: the largest integer cap ``c >= floor`` with
    ``sum(cost(min(l, c))) <= target_cost`` is found by binary search (cost is increasing in
    ``c``), and each sequence keeps ``min(l, c)`` tokens -- so a sequence is only cut when it
    is longer than every cut sequence's new length, and none goes below ``floor`` (or its own
    length, if shorter).  A batch already within the target is returned unchanged.  Where even
    ``c = floor`` is over the target, every sequence is cut to the floor (the cheapest allowed
    batch); :class:`LBSLSampler` reports that as an error.  Deterministic.

    ``lengths`` is ``(B,)`` or ``(..., B)`` (each row an independent batch, ``target_cost``
    broadcast to the leading shape), which lets the simulator trim many ranks at once.
    """
    if floor < 0:
        raise ValueError(f"floor={floor}: expected >= 0")
    lengths = torch.as_tensor(lengths)
    lead = lengths.shape[:-1]
    target = torch.as_tensor(target_cost, dtype=torch.float64, device=lengths.device)
    target = target.expand(lead) if target.dim() <= len(lead) else target
    top = lengths.max(-1).values if lengths.shape[-1] else torch.zeros(lead, dtype=lengths.dtype)
    lo = torch.full(lead, floor, dtype=lengths.dtype, device=lengths.device)
    lo = torch.minimum(lo, top)  # a batch shorter than the floor everywhere: nothing to cut
    hi = torch.maximum(top, lo)
    # invariant: cap = lo is feasible or is the floor; the answer lies in [lo, hi]
    done = _batch_cost(lengths, hi, floor, cost_model) <= target
    lo = torch.where(done, hi, lo)
    while True:
        open_ = lo < hi
        if not bool(open_.any()):
            break
        mid = (lo + hi + 1) // 2
        ok = _batch_cost(lengths, mid, floor, cost_model) <= target
        lo = torch.where(open_ & ok, mid, lo)
        hi = torch.where(open_ & ~ok, mid - 1, hi)
    return torch.minimum(lengths, lo.clamp(min=floor).unsqueeze(-1))


class LBSLSampler:
    """Load-balanced stochastic length over training steps.

    * Warm-up (``warmup_steps`` steps): plain SL; the SL batch cost of each step is recorded.
    * Target: the mean recorded SL cost times ``target_scale`` -- averaged over ranks with
      ``torch.distributed`` when a process group is initialised, so every rank aims at the
      same cost -- set at the end of warm-up and refreshed every ``refresh_every`` steps
      (0: never) from the SL costs recorded since (SL is still sampled each step, only for
      its cost, so the target follows drifting length distributions).
    * After warm-up: each batch is trimmed with :func:`choose_kept_lengths` toward the target.

    ``target_scale`` tunes how many tokens LBSL keeps relative to SL (1.0 = SL's mean cost).
    ``target_cost`` fixes the target and skips warm-up.  Each call returns the kept lengths
    and the step's stats.  All ranks must call it on every step (the all-reduce is
    collective).
    """

    def __init__(
        self,
        cost_model: AttentionCostModel,
        max_len: int,
        alpha: float = 1.6,
        floor: int = 64,
        warmup_steps: int = 100,
        refresh_every: int = 0,
        target_scale: float = 1.0,
        target_cost: Optional[float] = None,
        generator: Optional[torch.Generator] = None,
        distributed: bool = True,
    ) -> None:
        _check_alpha(alpha)  # fail at construction, before the first step runs
        if floor > max_len:
            raise ValueError(f"floor={floor} is above max_len={max_len}")
        if floor < 0 or warmup_steps < 0 or refresh_every < 0:
            raise ValueError(
                f"floor={floor}, warmup_steps={warmup_steps}, refresh_every={refresh_every}: "
                "expected >= 0"
            )
        if target_scale <= 0:
            raise ValueError(f"target_scale={target_scale}: expected > 0")
        if target_cost is None and warmup_steps == 0:
            raise ValueError("warmup_steps=0 needs a fixed target_cost")
        self.cost_model = cost_model
        self.max_len = max_len
        self.alpha = alpha
        self.floor = floor
        self.warmup_steps = warmup_steps
        self.refresh_every = refresh_every
        self.target_scale = target_scale
        self.fixed_target = target_cost is not None
        self.target: Optional[float] = None if target_cost is None else float(target_cost)
        self.generator = generator
        self.distributed = distributed
        self.step = 0
        self._sl_costs: List[float] = []

    def _mean_over_ranks(self, costs: List[float]) -> float:
        total = torch.tensor([sum(costs), float(len(costs))], dtype=torch.float64)
        dist = torch.distributed
        if self.distributed and dist.is_available() and dist.is_initialized():
            # mean over ranks (weighted by steps): every rank gets the same target
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return float(total[0] / total[1])

    def __call__(self, lengths: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, Any]]:
        lengths = torch.as_tensor(lengths)
        if lengths.numel() and int(lengths.max()) > self.max_len:
            raise ValueError(f"a length {int(lengths.max())} is above max_len={self.max_len}")
        sl = stochastic_length(lengths, self.alpha, self.max_len, self.generator)
        full_cost = float(self.cost_model(lengths).sum())
        if not self.fixed_target:
            self._sl_costs.append(float(self.cost_model(sl).sum()))
        in_warmup = self.step < self.warmup_steps and not self.fixed_target
        if in_warmup:
            kept = sl
            if self.step + 1 == self.warmup_steps:
                self.target = self.target_scale * self._mean_over_ranks(self._sl_costs)
                self._sl_costs = []
        else:
            assert self.target is not None
            floor_cost = float(self.cost_model(lengths.clamp(max=self.floor)).sum())
            if self.target < floor_cost:
                raise ValueError(
                    f"target cost {self.target:.4g} is below this batch's cost with every "
                    f"sequence cut to the floor ({floor_cost:.4g} at floor={self.floor}): no "
                    "trim can reach it; lower floor or raise target_cost/target_scale"
                )
            kept = choose_kept_lengths(lengths, self.target, self.cost_model, self.floor)
            since = self.step - self.warmup_steps + 1
            if not self.fixed_target and self.refresh_every and since % self.refresh_every == 0:
                self.target = self.target_scale * self._mean_over_ranks(self._sl_costs)
                self._sl_costs = []
        total = int(lengths.sum())
        stats = {
            "step": self.step,
            "phase": "warmup" if in_warmup else "lbsl",
            "target_cost": self.target,
            "cost": float(self.cost_model(kept).sum()),
            "cost_unsampled": full_cost,
            "kept_fraction": float(kept.sum()) / total if total else 1.0,
        }
        self.step += 1
        return kept, stats
