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


def _process_group() -> Optional[Tuple[int, int]]:
    """(rank, world size) of the default process group, or None when there is none."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def _collective_device() -> torch.device:
    """Where a collective's tensors must live: NCCL needs this rank's GPU, gloo the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    dev = t.to(_collective_device())
    torch.distributed.all_reduce(dev, op=torch.distributed.ReduceOp.SUM)
    return dev.cpu()


def _all_gather_rows(row: torch.Tensor, world: int) -> torch.Tensor:
    dev = row.to(_collective_device())
    out = [torch.empty_like(dev) for _ in range(world)]
    torch.distributed.all_gather(out, dev)
    return torch.stack(out).cpu()


def _all_gather_objects(obj: Any, world: int) -> List[Any]:
    out: List[Any] = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def _max_over_mean(x: torch.Tensor) -> float:
    mean = float(x.mean())
    return float(x.max()) / mean if mean > 0 else 1.0


# columns of the row every rank contributes to the per-step all-gather
_COST, _COST_UNSAMPLED, _KEPT, _TOTAL, _FAILED = range(5)


class _RankSampler:
    """The per-step protocol shared by :class:`StochasticLengthSampler` and
    :class:`LBSLSampler`.

    Each call takes one batch's history lengths ``(B,)`` and returns ``(kept, stats)``.
    With a ``torch.distributed`` process group (and ``distributed=True``) every rank must
    call it on every step, since it is collective:

    * first step: the ranks' :meth:`config` dicts are all-gathered and compared; ranks that
      disagree raise, each with the same message naming the field and every rank's value.
    * every step: one all-gather of ``[cost, unsampled cost, kept tokens, tokens, failed]``
      per rank gives the load statistics (``rank_costs``, ``imbalance`` = max/mean of the
      ranks' estimated costs, ``imbalance_unsampled``, ``kept_fraction_global``) and lets a
      bad batch on one rank (a length above ``max_len``, an unreachable target) raise on
      every rank with the same message, instead of leaving the others waiting in the next
      collective.

    Without a process group the statistics are this process's alone (imbalance 1.0) and
    errors are raised directly.
    """

    name = ""

    def __init__(
        self,
        cost_model: AttentionCostModel,
        max_len: int,
        alpha: float,
        generator: Optional[torch.Generator],
        distributed: bool,
    ) -> None:
        _check_alpha(alpha)  # fail at construction, before the first step runs
        if max_len <= 0:
            raise ValueError(f"max_len={max_len}: expected > 0")
        self.cost_model = cost_model
        self.max_len = max_len
        self.alpha = alpha
        self.generator = generator
        self.distributed = distributed
        self.step = 0

    def config(self) -> Dict[str, Any]:
        """What every rank must agree on (checked on the first step)."""
        return {
            "sampler": self.name,
            "alpha": self.alpha,
            "max_len": self.max_len,
            "cost_model": repr(self.cost_model),
        }

    def _group(self) -> Optional[Tuple[int, int]]:
        return _process_group() if self.distributed else None

    def _check_config_over_ranks(self, group: Tuple[int, int]) -> None:
        mine = self.config()
        every = _all_gather_objects(mine, group[1])
        for key in mine:
            values = [c.get(key) for c in every]
            if any(v != values[0] for v in values):
                per_rank = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
                raise ValueError(
                    f"ranks disagree on the sampler configuration: {key} differs ({per_rank})"
                )

    def _choose(self, lengths: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, Any], Optional[str]]:
        """Kept lengths, extra stats, and an error message (None: fine).  Must run the same
        collectives on every rank whatever the error, so errors are returned, not raised."""
        raise NotImplementedError

    def __call__(self, lengths: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, Any]]:
        lengths = torch.as_tensor(lengths)
        group = self._group()
        if self.step == 0 and group is not None and group[1] > 1:
            self._check_config_over_ranks(group)
        error = None
        if lengths.numel() and int(lengths.max()) > self.max_len:
            error = f"a length {int(lengths.max())} is above max_len={self.max_len}"
        kept, extra, choose_error = self._choose(lengths)
        error = error or choose_error
        row = torch.tensor(
            [
                float(self.cost_model(kept).sum()),
                float(self.cost_model(lengths).sum()),
                float(kept.sum()),
                float(lengths.sum()),
                1.0 if error else 0.0,
            ],
            dtype=torch.float64,
        )
        rows = row.unsqueeze(0) if group is None else _all_gather_rows(row, group[1])
        if bool(rows[:, _FAILED].any()):
            self._raise(error, rows, group)
        total, total_all = float(row[_TOTAL]), float(rows[:, _TOTAL].sum())
        stats: Dict[str, Any] = {
            "step": self.step,
            **extra,
            "cost": float(row[_COST]),
            "cost_unsampled": float(row[_COST_UNSAMPLED]),
            "kept_fraction": float(row[_KEPT]) / total if total else 1.0,
            "rank_costs": rows[:, _COST].tolist(),
            "imbalance": _max_over_mean(rows[:, _COST]),
            "imbalance_unsampled": _max_over_mean(rows[:, _COST_UNSAMPLED]),
            "kept_fraction_global": float(rows[:, _KEPT].sum()) / total_all if total_all else 1.0,
        }
        self.step += 1
        return kept, stats

    def _raise(
        self, error: Optional[str], rows: torch.Tensor, group: Optional[Tuple[int, int]]
    ) -> None:
        if group is None:
            raise ValueError(error)
        messages = _all_gather_objects(error, group[1])
        failed = "; ".join(f"rank {r}: {m}" for r, m in enumerate(messages) if m)
        raise ValueError(f"{self.name} sampler, step {self.step}: {failed}")


class StochasticLengthSampler(_RankSampler):
    """Plain SL (:func:`stochastic_length`, GR's ``apply_sampling`` semantics) per step,
    with the same protocol and load statistics as :class:`LBSLSampler`, for comparison."""

    name = "sl"

    def __init__(
        self,
        cost_model: AttentionCostModel,
        max_len: int,
        alpha: float = 1.6,
        generator: Optional[torch.Generator] = None,
        distributed: bool = True,
    ) -> None:
        super().__init__(cost_model, max_len, alpha, generator, distributed)

    def _choose(self, lengths: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, Any], Optional[str]]:
        kept = stochastic_length(lengths, self.alpha, self.max_len, self.generator)
        return kept, {"phase": "sl", "target_cost": None}, None


class LBSLSampler(_RankSampler):
    """Load-balanced stochastic length over training steps.

    * Warm-up (``warmup_steps`` steps): plain SL; the SL batch cost of each step is recorded.
    * Target: the mean recorded SL cost times ``target_scale`` -- averaged over ranks with
      ``torch.distributed`` when a process group is initialised, so every rank aims at the
      same cost -- set at the end of warm-up and refreshed every ``refresh_every`` steps
      (0: never) from the SL costs recorded since (SL is still sampled each step, only for
      its cost, so the target follows drifting length distributions).
    * After warm-up: each batch is trimmed with :func:`choose_kept_lengths` toward the target.
        A batch that even cut to the floor everywhere is above the target is an error (raised
      on every rank, naming the rank, the target and the batch's floor cost).  The stats'
      ``target_cost`` is the target the step trimmed toward (None during warm-up).

    ``target_scale`` tunes how many tokens LBSL keeps relative to SL (1.0 = SL's mean cost).
    ``target_cost`` fixes the target and skips warm-up.  Each call returns the kept lengths
    and the step's stats (see :class:`_RankSampler` for the collectives and the load
    statistics).  With one process it only caps the cost at its own SL mean.
    """

    name = "lbsl"

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
        super().__init__(cost_model, max_len, alpha, generator, distributed)
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
        if target_cost is not None and target_cost <= 0:
            raise ValueError(f"target_cost={target_cost}: expected > 0")
        self.floor = floor
        self.warmup_steps = warmup_steps
        self.refresh_every = refresh_every
        self.target_scale = target_scale
        self.fixed_target = target_cost is not None
        self.target: Optional[float] = None if target_cost is None else float(target_cost)
        self._sl_costs: List[float] = []

    def config(self) -> Dict[str, Any]:
        return {
            **super().config(),
            "floor": self.floor,
            "warmup_steps": self.warmup_steps,
            "refresh_every": self.refresh_every,
            "target_scale": self.target_scale,
            "target_cost": self.target if self.fixed_target else None,
        }

    def _mean_over_ranks(self, costs: List[float]) -> float:
        total = torch.tensor([sum(costs), float(len(costs))], dtype=torch.float64)
        if self._group() is not None:
            # mean over ranks (weighted by steps): every rank gets the same target
            total = _all_reduce_sum(total)
        return float(total[0] / total[1])

    def _choose(self, lengths: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, Any], Optional[str]]:
        sl = stochastic_length(lengths, self.alpha, self.max_len, self.generator)
        if not self.fixed_target:
            self._sl_costs.append(float(self.cost_model(sl).sum()))
        in_warmup = self.step < self.warmup_steps and not self.fixed_target
        used = None if in_warmup else self.target  # what this step trims toward
        error = None
        if in_warmup:
            kept = sl
            if self.step + 1 == self.warmup_steps:
                self.target = self.target_scale * self._mean_over_ranks(self._sl_costs)
                self._sl_costs = []
        else:
            assert self.target is not None
            floor_cost = float(self.cost_model(lengths.clamp(max=self.floor)).sum())
            if self.target < floor_cost:
                error = (
                    f"target cost {self.target:.4g} is below this batch's cost with every "
                    f"sequence cut to the floor ({floor_cost:.4g} at floor={self.floor}): no "
                    "trim can reach it; lower floor or raise target_cost/target_scale"
                )
            kept = choose_kept_lengths(lengths, self.target, self.cost_model, self.floor)
            since = self.step - self.warmup_steps + 1
            if not self.fixed_target and self.refresh_every and since % self.refresh_every == 0:
                self.target = self.target_scale * self._mean_over_ranks(self._sl_costs)
                self._sl_costs = []
        extra = {"phase": "warmup" if in_warmup else "lbsl", "target_cost": used}
        return kept, extra, error
