# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Trimming GR's jagged ranking batch to the kept history lengths a sampler chose.

GR's dlrm_v3 batch (``Samples``) holds two torchrec ``KeyedJaggedTensor``s:

* ``uih_features_kjt``: per user, the contextual features (``user_id``, ``sex`` ...: one
  value each), the history (UIH) sequence features (``movie_id``, ``movie_rating``,
  ``action_timestamp``, ``item_weights``, ``dummy_watch_time`` for MovieLens: one value per
  event each, oldest first, all of the same length), and ``dummy_query_time`` (one value).
  GR's model reads ``uih_seq_lengths`` as the lengths of ``uih_post_id_feature_name``.
* ``candidates_features_kjt``: the candidates (``num_candidates`` = its lengths).

:func:`trim_samples` keeps the *most recent* ``kept[b]`` events of user ``b`` in every
history feature (``values[end - kept : end]`` of each ``[start, end)``), leaving every other
key of the history KJT and the whole candidates KJT untouched; lengths (hence offsets) are
rebuilt.  Only the KJTs' public methods are used and the new KJT is built by the input's
own class, so nothing here imports the host libraries.
"""

from __future__ import annotations

import copy
from typing import Any, Collection, Optional

import torch


def keep_most_recent_mask(lengths: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """Boolean mask over the values of a jagged tensor with segment ``lengths`` that drops
    the first ``drop[j]`` values of segment ``j`` (keeps its last ``lengths[j] - drop[j]``)."""
    lengths = lengths.to(torch.int64)
    n = int(lengths.sum())
    starts = torch.cumsum(lengths, 0) - lengths
    segment = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)
    position = torch.arange(n, device=lengths.device) - starts[segment]
    return position >= drop.to(torch.int64)[segment]


def trim_kjt(kjt: Any, kept: torch.Tensor, sequence_keys: Collection[str]) -> Any:
    """The KJT with each ``sequence_keys`` feature of sample ``b`` cut to its last
    ``kept[b]`` values (other keys unchanged); ``kept[b]`` must not exceed those lengths."""
    keys = list(kjt.keys())
    batch = kjt.stride()
    lengths = kjt.lengths().to(torch.int64).view(len(keys), batch)
    kept = torch.as_tensor(kept, dtype=torch.int64, device=lengths.device)
    drop = torch.zeros_like(lengths)
    for i, key in enumerate(keys):
        if key in sequence_keys:
            if bool((kept > lengths[i]).any()):
                b = int(torch.nonzero(kept > lengths[i])[0, 0])
                raise ValueError(
                    f"sample {b}: kept length {int(kept[b])} is above the {int(lengths[i, b])} "
                    f"values of {key}"
                )
            drop[i] = lengths[i] - kept.clamp(min=0)
    if not bool(drop.any()):
        return kjt
    flat_drop = drop.reshape(-1)
    mask = keep_most_recent_mask(lengths.reshape(-1), flat_drop)
    weights: Optional[torch.Tensor] = kjt.weights_or_none()
    return type(kjt)(
        keys=keys,
        values=kjt.values()[mask],
        weights=None if weights is None else weights[mask],
        lengths=(lengths.reshape(-1) - flat_drop).to(kjt.lengths().dtype),
        stride=batch,
    )


def trim_samples(sample: Any, kept: torch.Tensor, sequence_keys: Collection[str]) -> Any:
    """A shallow copy of GR's ``Samples`` whose history features keep the most recent
    ``kept`` events per user; contextual features and candidates are unchanged."""
    uih = trim_kjt(sample.uih_features_kjt, kept, sequence_keys)
    if uih is sample.uih_features_kjt:
        return sample
    out = copy.copy(sample)
    out.uih_features_kjt = uih
    return out


__all__ = ["keep_most_recent_mask", "trim_kjt", "trim_samples"]
