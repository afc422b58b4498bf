# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Length-balanced assignment of a global batch's users to ranks.

LBSL trims each rank's own batch toward a shared target, so a rank whose whole batch is
*below* the target stays below it: at a given fraction of tokens kept, that shortfall is
what is left of the max/mean imbalance (``benchmarks/results/lbsl_imbalance_finding.md``).
No trim can raise a light rank; choosing *which users each rank gets* can.  Under
synchronous data parallelism every rank reads from the same dataset and the global batch is
what the gradient averages over, so handing the global batch's users out by cost instead
of by position changes which rank computes a user, not what is computed.

:func:`balanced_assignment` is the partition (greedy longest-first with equal batch sizes,
then swaps between the heaviest and the lightest rank); :class:`LengthBalancedDistributedSampler`
is a ``torch.utils.data`` sampler built on it: every rank draws the same global batch
(same seed and epoch, no collective), partitions it with the same deterministic rule and
reads its own share, so the ranks' batches have about equal cost before any trimming.
Pure torch: no GR imports.
"""

from __future__ import annotations

import heapq
from typing import Callable, Iterator, Optional

import torch
from torch.utils.data import Sampler


def balanced_assignment(
    costs: torch.Tensor, world: int, refine_steps: Optional[int] = None
) -> torch.Tensor:
    """Indices of ``costs`` (``(..., N)``, ``N`` a multiple of ``world``) handed to ``world``
    ranks, ``N / world`` each, so that the ranks' summed costs are close: ``(..., world,
    N / world)``.

    Longest-processing-time first with a capacity: users are taken heaviest first and each
    goes to the lightest rank that still has room, so the rank that got a very heavy user
    is topped up with the lightest ones.  Then :func:`_swap_refine` (``refine_steps``
    rounds, default ``world``) swaps one user between the heaviest and the lightest rank
    while that lowers the heavier of the two.  Every rank gets exactly ``N / world`` users.
    Ties are broken by position and rank index, so every rank computes the same assignment
    from the same costs.

    Measured (``ultra-hstu bench lbsl``, 64 ranks x 32 users, calibrated H200 costs, max/mean
    rank cost): one user per rank per round instead (heaviest of each round to the lightest
    rank) left 1.30 on Amazon Beauty and 1.14 on the long-tailed synthetic; this gives
    1.07 and 1.0001.
    """
    if world <= 0:
        raise ValueError(f"world={world}: expected > 0")
    n = costs.shape[-1]
    if n % world:
        raise ValueError(f"{n} users do not split evenly over {world} ranks")
    per = n // world
    flat = costs.reshape(-1, n).to(torch.float64).cpu()
    order = torch.sort(flat, dim=-1, descending=True, stable=True).indices
    parts = torch.empty(flat.shape[0], world, per, dtype=torch.int64)
    for b in range(flat.shape[0]):
        cost_of, rows = flat[b].tolist(), [[] for _ in range(world)]
        heap = [(0.0, r) for r in range(world)]  # (load, rank) of the ranks with room
        for user in order[b].tolist():
            load, r = heapq.heappop(heap)
            rows[r].append(user)
            if len(rows[r]) < per:
                heapq.heappush(heap, (load + cost_of[user], r))
        parts[b] = torch.tensor(rows, dtype=torch.int64)
    parts = _swap_refine(flat, parts, world if refine_steps is None else refine_steps)
    return parts.view(*costs.shape[:-1], world, per).to(costs.device)


def _swap_refine(costs: torch.Tensor, parts: torch.Tensor, steps: int) -> torch.Tensor:
    """Up to ``steps`` rounds of: in every batch, the one swap of a user of the heaviest rank
    with a user of the lightest that most lowers the larger of their two loads (batches where
    no swap helps are left alone; stops when none helps anywhere).  ``costs`` ``(S, N)``,
    ``parts`` ``(S, world, per)``, changed in place and returned."""
    s_all = torch.arange(parts.shape[0])
    per = parts.shape[-1]
    item = torch.gather(costs, -1, parts.flatten(1)).view_as(parts).to(torch.float64)
    for _ in range(steps):
        load = item.sum(-1)
        h, lo = load.argmax(-1), load.argmin(-1)
        lh, ll = load[s_all, h], load[s_all, lo]
        # moving x out of the heavy rank and y into it shifts d = x - y of load
        d = item[s_all, h].unsqueeze(-1) - item[s_all, lo].unsqueeze(-2)
        gain = (
            lh[:, None, None] - torch.maximum(lh[:, None, None] - d, ll[:, None, None] + d)
        ).flatten(1)
        best = gain.argmax(-1)
        ok = gain[s_all, best] > 1e-12 * lh
        if not bool(ok.any()):
            break
        s, i, j = s_all[ok], best[ok] // per, best[ok] % per
        hs, ls = h[ok], lo[ok]
        for t in (parts, item):
            x, y = t[s, hs, i].clone(), t[s, ls, j].clone()
            t[s, hs, i], t[s, ls, j] = y, x
    return parts


class LengthBalancedDistributedSampler(Sampler[int]):
    """Per-rank row indices whose every ``batch_size`` consecutive ones are this rank's share
    of one global batch, the global batch partitioned by :func:`balanced_assignment`.

    ``lengths``: each row's history length (what the cost model prices); ``cost``: a
    callable from a tensor of lengths to per-row costs (an
    :class:`~ultra_hstu_plugin.sampling.cost.AttentionCostModel`).  Each epoch one
    permutation of the rows is drawn from ``seed + epoch`` -- the same on every rank -- and
    cut into global batches of ``batch_size * num_replicas`` rows (a last partial one is
    dropped, like GR's samplers with ``drop_last``).  Use it as a DataLoader's ``sampler``
    with that ``batch_size`` and ``drop_last=True``; GR's loops call :meth:`set_epoch`.
    """

    def __init__(
        self,
        lengths: torch.Tensor,
        batch_size: int,
        cost: Callable[[torch.Tensor], torch.Tensor],
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        if lengths.dim() != 1:
            raise ValueError(
                f"lengths: expected one length a row, got shape {tuple(lengths.shape)}"
            )
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size}: expected > 0")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank}: expected 0 <= rank < num_replicas={num_replicas}")
        if bool((lengths < 0).any()):
            row = int(torch.nonzero(lengths < 0)[0])
            raise ValueError(f"row {row} has a negative length {int(lengths[row])}")
        self.costs = cost(lengths).to(torch.float64)
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.global_batch = batch_size * num_replicas
        self.num_batches = len(lengths) // self.global_batch
        if self.num_batches == 0:
            raise ValueError(
                f"{len(lengths)} rows are fewer than one global batch "
                f"({batch_size} x {num_replicas} ranks)"
            )

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> torch.Tensor:
        """This epoch's global batches of row indices, ``(batches, batch_size * ranks)``."""
        n = self.num_batches * self.global_batch
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            rows = torch.randperm(len(self.costs), generator=g)[:n]
        else:
            rows = torch.arange(n)
        return rows.view(self.num_batches, self.global_batch)

    def assignment(self) -> torch.Tensor:
        """Every rank's rows of every global batch this epoch, ``(batches, ranks, batch_size)``."""
        batches = self.global_batches()
        parts = balanced_assignment(self.costs[batches], self.num_replicas)
        return batches.gather(-1, parts.flatten(1)).view_as(parts)

    def __iter__(self) -> Iterator[int]:
        return iter(self.assignment()[:, self.rank].reshape(-1).tolist())


def rank_costs(
    sampler: LengthBalancedDistributedSampler, assignment: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Each rank's batch cost for every global batch of the epoch, ``(batches, ranks)``."""
    a = sampler.assignment() if assignment is None else assignment
    return sampler.costs[a].sum(-1)


__all__ = ["LengthBalancedDistributedSampler", "balanced_assignment", "rank_costs"]
