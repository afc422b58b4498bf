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


TARGET_MODES = ("rank_quantile", "mean")


def rank_quantile_target(
    rank_costs: torch.Tensor, quantile: float, factor: float = 1.0
) -> torch.Tensor:
    """The per-step target of ``target_mode="rank_quantile"``: ``factor`` times the
    ``quantile`` quantile (linear interpolation) of each step's unsampled rank costs;
    ``rank_costs`` is ``(..., ranks)``, the result ``(...)``."""
    return factor * torch.quantile(rank_costs.to(torch.float64), float(quantile), dim=-1)


def quantile_knob(x: float) -> Tuple[float, float]:
    """``(quantile, factor)`` of one knob ``x`` in [0, 2], increasing and continuous in the
    target: ``x <= 1`` is ``x`` times the cheapest rank's cost (every rank trimmed), ``x >= 1``
    the ``x - 1`` quantile of the ranks' costs."""
    x = min(max(float(x), 0.0), 2.0)
    return (0.0, x) if x <= 1.0 else (x - 1.0, 1.0)


def rank_quantile_level(
    rank_costs: torch.Tensor, mean_cost: float, iters: int = 48
) -> Tuple[float, float]:
    """``(quantile, factor)`` at which trimming every step's ranks to
    :func:`rank_quantile_target` keeps a mean rank cost of ``mean_cost``.

    ``rank_costs`` is ``(steps, ranks)``: the unsampled batch cost of every rank on recorded
    steps.  A rank trimmed to target ``T`` costs ``min(C, T)`` (up to whole tokens), so the
    kept mean grows with the target; the smallest :func:`quantile_knob` that reaches
    ``mean_cost`` is found by bisection (``factor < 1`` only when even the cheapest rank of
    every step has to be cut; ``(1, 1)``: nothing is trimmed).  Why a quantile: with the
    per-rank cap ``T_s`` of step ``s``, the step takes ``T_s`` and keeps
    ``sum_i min(C_i, T_s)``, so lowering ``T_s`` by ``dT`` saves ``dT`` of step time for
    ``(ranks cut) * dT`` of kept cost; spending a fixed budget of kept cost for the least
    total step time equalises that rate, i.e. cuts the same fraction of ranks every step --
    a fixed quantile of the step's rank costs.  A fixed target instead over-trims the light
    steps (many ranks below it) and under-trims the heavy ones.  Deterministic: every rank
    computes the same level from the same all-gathered costs."""
    c = rank_costs.to(torch.float64)
    if c.dim() != 2 or not c.numel():
        raise ValueError(
            f"rank_costs: expected a non-empty (steps, ranks) tensor, got {tuple(c.shape)}"
        )

    def kept_mean(x: float) -> float:
        target = rank_quantile_target(c, *quantile_knob(x))
        return float(torch.minimum(c, target.unsqueeze(-1)).mean())

    if kept_mean(2.0) <= mean_cost:
        return quantile_knob(2.0)
    lo, hi = 0.0, 2.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        if kept_mean(mid) < mean_cost:
            lo = mid
        else:
            hi = mid
    return quantile_knob(hi)


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

    def _observe(self, rows: torch.Tensor) -> Dict[str, Any]:
        """Called on every rank after the step's all-gather (``rows``: one row per rank,
        the same on every rank) with no error; returns extra stats."""
        return {}

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
        extra = {**extra, **self._observe(rows)}
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


_no_level = {"target_quantile": None, "target_factor": None}


class LBSLSampler(_RankSampler):
    """Load-balanced stochastic length over training steps.

    * Warm-up (``warmup_steps`` steps): plain SL; the SL batch cost of each step is recorded,
      and (from the per-step all-gather) every rank's unsampled batch cost.
    * Target, set at the end of warm-up and refreshed every ``refresh_every`` steps (0:
      never) from the steps recorded since (SL is still sampled each step, only for its
      cost, so the target follows drifting length distributions).  Its level is SL's mean
      rank cost times ``target_scale``, averaged over ranks by an all-reduce, so every rank
      aims at the same thing.  ``target_mode``:

      - ``"rank_quantile"`` (default): per step, one all-gather of each rank's unsampled
        batch cost (one scalar a rank) and the target is the ``q`` quantile of those costs,
        ``q`` being estimated at warm-up / refresh (:func:`rank_quantile_level`) so that the
        recorded steps, trimmed this way, keep that level of mean cost.  The target thus
        follows each step's load: the same fraction of ranks is cut every step, which
        spends the kept-token budget for the least step time (see
        :func:`rank_quantile_level`).  With a single process it is the ``"mean"`` target.
      - ``"mean"``: a fixed target between refreshes, the level itself.

    * After warm-up: each batch is trimmed with :func:`choose_kept_lengths` toward the target.
      A batch that even cut to the floor everywhere is above the target is an error (raised
      on every rank, naming the rank, the target and the batch's floor cost).  The stats'
      ``target_cost`` is the target the step trimmed toward (None during warm-up) and
      ``target_quantile`` / ``target_factor`` the level it came from (``factor`` times the
      ``quantile`` quantile of the ranks' costs, :func:`rank_quantile_level`; None unless
      per-step).

    Where the remaining imbalance comes from: a rank whose whole batch is below the target
    is not trimmed and cannot be raised, so at a given fraction of tokens kept,
    ``max/mean`` is about ``T / mean(min(C_i, T))`` over the ranks' batch costs ``C_i``; the
    floor and whole-token granularity add next to nothing (``ultra-hstu bench lbsl``
    reports the split).

    ``target_scale`` tunes how many tokens LBSL keeps relative to SL (1.0 = SL's mean cost).
    ``target_cost`` fixes the target and skips warm-up (``target_mode`` is then unused).
    Each call returns the kept lengths and the step's stats (see :class:`_RankSampler` for
    the collectives and the load statistics).
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
        target_mode: str = "rank_quantile",
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
        if target_mode not in TARGET_MODES:
            raise ValueError(f"target_mode={target_mode!r}: expected one of {TARGET_MODES}")
        self.floor = floor
        self.warmup_steps = warmup_steps
        self.refresh_every = refresh_every
        self.target_scale = target_scale
        self.target_mode = target_mode
        self.fixed_target = target_cost is not None
        self.target: Optional[float] = None if target_cost is None else float(target_cost)
        # (quantile, factor) of the per-step target, once estimated
        self.quantile: Optional[Tuple[float, float]] = None
        self._sl_costs: List[float] = []
        self._rank_costs: List[torch.Tensor] = []  # all-gathered unsampled costs per step

    def config(self) -> Dict[str, Any]:
        return {
            **super().config(),
            "floor": self.floor,
            "warmup_steps": self.warmup_steps,
            "refresh_every": self.refresh_every,
            "target_scale": self.target_scale,
            "target_cost": self.target if self.fixed_target else None,
            "target_mode": None if self.fixed_target else self.target_mode,
        }

    def _mean_over_ranks(self, costs: List[float]) -> float:
        total = torch.tensor([sum(costs), float(len(costs))], dtype=torch.float64)
        if self._group() is not None:
            # mean over ranks (weighted by steps): every rank gets the same target
            total = _all_reduce_sum(total)
        return float(total[0] / total[1])

    def _per_step(self) -> Optional[Tuple[int, int]]:
        """The process group when the target is the per-step rank quantile, else None."""
        if self.fixed_target or self.target_mode != "rank_quantile":
            return None
        group = self._group()
        return group if group is not None and group[1] > 1 else None

    def _choose(self, lengths: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, Any], Optional[str]]:
        sl = stochastic_length(lengths, self.alpha, self.max_len, self.generator)
        if not self.fixed_target:
            self._sl_costs.append(float(self.cost_model(sl).sum()))
        in_warmup = self.step < self.warmup_steps and not self.fixed_target
        if in_warmup:
            return sl, {"phase": "warmup", "target_cost": None, **_no_level}, None
        assert self.target is not None
        target, level = self.target, dict(_no_level)
        group = self._per_step()
        if group is not None and self.quantile is not None:
            # one scalar a rank: every rank gets the same costs, hence the same target
            mine = torch.tensor([float(self.cost_model(lengths).sum())], dtype=torch.float64)
            costs = _all_gather_rows(mine, group[1])[:, 0]
            level = {"target_quantile": self.quantile[0], "target_factor": self.quantile[1]}
            target = float(rank_quantile_target(costs, *self.quantile))
        error = None
        floor_cost = float(self.cost_model(lengths.clamp(max=self.floor)).sum())
        if target < floor_cost:
            error = (
                f"target cost {target:.4g} is below this batch's cost with every "
                f"sequence cut to the floor ({floor_cost:.4g} at floor={self.floor}): no "
                "trim can reach it; lower floor or raise target_cost/target_scale"
            )
        kept = choose_kept_lengths(lengths, target, self.cost_model, self.floor)
        return kept, {"phase": "lbsl", "target_cost": target, **level}, error

    def _observe(self, rows: torch.Tensor) -> Dict[str, Any]:
        if self.fixed_target:
            return {}
        since = self.step - self.warmup_steps + 1  # steps after warm-up, this one included
        if since > 0 and not self.refresh_every:
            self._sl_costs = []  # no refresh to come: keep nothing
            return {}
        if self._per_step() is not None:
            self._rank_costs.append(rows[:, _COST_UNSAMPLED].clone())
        if since == 0 or (since > 0 and since % self.refresh_every == 0):
            self._set_target()
        return {}

    def _set_target(self) -> None:
        """The target from the steps recorded since the last one (a collective)."""
        self.target = self.target_scale * self._mean_over_ranks(self._sl_costs)
        if self._rank_costs:
            self.quantile = rank_quantile_level(torch.stack(self._rank_costs), self.target)
        self._sl_costs, self._rank_costs = [], []
