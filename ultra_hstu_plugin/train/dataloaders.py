# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Train/test dataloaders over GR's datasets, for any dataset in the registry.

GR's ``make_train_test_dataloaders`` only knows GR's own dataset names; this is the same
recipe (GR's ``HammerToTorchDataset``, ``collate_fn`` and ``ChunkDistributedSampler``, the
first ``train_split_percentage`` of rows for training) with the dataset looked up in the
registry.  ``sampler="interleaved"`` uses torch's ``DistributedSampler`` without shuffling,
so N processes see exactly the global batches one process would (used by the
multi-process agreement test).  ``sampler="length_balanced"`` (training split only; eval
stays "chunk") hands each global batch's users to ranks by their estimated encoder cost
(:class:`~ultra_hstu_plugin.sampling.balance.LengthBalancedDistributedSampler`, the rows'
history lengths read off GR's dataset without converting rows), so the ranks' batches cost
about the same before any LBSL trim; it needs the launcher's ``cost_model``.  The eval loader shows a progress bar per pass; the train
loader draws none, since the launcher shows one bar for the whole run (all epochs), and
``progress=False`` turns both off.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Tuple

import gin
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from ultra_hstu_plugin.config import RunSettings, run_settings
from ultra_hstu_plugin.host import (
    ChunkDistributedSampler,
    HammerToTorchDataset,
    collate_fn,
    movielens_history_lengths,
)
from ultra_hstu_plugin.sampling.balance import LengthBalancedDistributedSampler

SAMPLERS = ("chunk", "interleaved", "length_balanced")


class ProgressDataLoader:
    """A DataLoader that shows a progress bar; keeps ``sampler``/``batch_size`` for GR's loops.

    ``show``: a bar is wanted for this loader's batches (``progress`` and rank 0);
    ``per_pass``: this loader draws it, one per pass over the data.
    """

    def __init__(self, loader: DataLoader, desc: str, show: bool, per_pass: bool = True) -> None:
        self.loader = loader
        self.sampler = loader.sampler
        self.batch_size = loader.batch_size
        self.desc = desc
        self.show = show
        self.per_pass = per_pass

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        show = self.show and self.per_pass
        yield from tqdm(self.loader, desc=self.desc, disable=not show, leave=False)


def _world() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


# ``settings`` is not bindable: dataset and batch size are RunSettings' bindings, once;
# ``cost_model`` is the launcher's (read off the built encoder).
@gin.configurable(denylist=["settings", "cost_model"])
def make_dataloaders(
    hstu_config: Any,
    settings: Optional[RunSettings] = None,
    data_dir: str = "data",
    train_split_percentage: float = 0.75,
    sampler: str = "chunk",
    shuffle: bool = True,
    num_workers: int = 0,
    progress: bool = True,
    rank: int = 0,
    cost_model: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> Tuple[ProgressDataLoader, ProgressDataLoader]:
    """Train and eval loaders of ``settings.dataset`` (default: gin's ``RunSettings``).

    ``cost_model``: per-row cost of a history length, needed by ``sampler="length_balanced"``
    (ignored otherwise)."""
    settings = settings if settings is not None else run_settings()
    dataset, batch_size = settings.dataset, settings.batch_size
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not 0.0 < train_split_percentage < 1.0:
        raise ValueError(f"train_split_percentage must be in (0, 1), got {train_split_percentage}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if sampler == "length_balanced" and cost_model is None:
        raise ValueError("make_dataloaders.sampler='length_balanced' needs a cost_model")
    spec = settings.dataset_spec()
    data = HammerToTorchDataset(dataset=spec.dataset(hstu_config, data_dir, is_inference=False))
    total = data.dataset.get_item_count()
    n_train = round(train_split_percentage * total)
    splits = (Subset(data, range(0, n_train)), Subset(data, range(n_train, total)))

    def loader(subset: Subset, desc: str) -> ProgressDataLoader:
        if sampler == "length_balanced" and desc == "train":
            assert cost_model is not None
            lengths = movielens_history_lengths(data.dataset)[: len(subset)]
            s: torch.utils.data.Sampler = LengthBalancedDistributedSampler(
                lengths,
                batch_size,
                cost_model,
                num_replicas=_world(),
                rank=rank,
                shuffle=shuffle,
                seed=settings.seed,
            )
        elif sampler in ("chunk", "length_balanced"):
            s = ChunkDistributedSampler(subset, drop_last=True, shuffle=shuffle)
        else:
            s = DistributedSampler(subset, shuffle=False, drop_last=True)
        dl = DataLoader(
            subset,
            batch_size=batch_size,
            sampler=s,
            collate_fn=collate_fn,
            drop_last=True,
            num_workers=num_workers,
            # Workers live for the whole run, so what a dataset keeps between epochs (the
            # synthetic set's parsed rows) survives them.
            persistent_workers=num_workers > 0,
        )
        if len(dl) == 0:
            raise ValueError(
                f"{desc} split of {dataset!r} has {len(subset)} rows: too few for batch_size={batch_size}"
            )
        # A train bar per epoch restarts each epoch; the launcher draws one for the run.
        return ProgressDataLoader(
            dl, desc=desc, show=progress and rank == 0, per_pass=desc != "train"
        )

    return loader(splits[0], "train"), loader(splits[1], "eval")
