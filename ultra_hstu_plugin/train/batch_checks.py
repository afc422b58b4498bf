# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Every batch checked on the CPU before it reaches the device.

On a GPU the kernels do not validate jagged structure (reading offsets back would
synchronise the stream every layer), so a malformed batch, e.g. decreasing offsets, runs to
a finite, wrong result.  Here the launcher checks each batch while it is still on the host,
where the checks cost a pass over the batch's index tensors (measured in the closing
numbers of README): offsets start at 0, never decrease and end at the value count; every
sequence fits ``max_seq_len`` (contextual + history + candidates); candidates within
``max_num_candidates``; the features of one sequence agree on its length; ids within their
embedding tables.  Errors name the split, the batch, the sample and the feature.

Before that, the first batch's feature names are compared with every name the model's
configuration reads (:class:`FeatureNames`): a dataset or a gin binding that renames a
feature fails there, naming it, instead of as a ``KeyError`` deep in GR's preprocessor.

Batches are GR's ``Samples`` (two torchrec ``KeyedJaggedTensor``s); only their public
methods (``keys``, ``lengths``, ``offsets``, ``values``) are used, so nothing here imports
the host libraries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import torch


class BatchCheckError(ValueError):
    """A batch whose jagged structure or ids are invalid; the message names where."""


@dataclass(frozen=True)
class BatchLimits:
    """What a batch must satisfy, read once from GR's ``DlrmHSTUConfig`` and tables."""

    max_seq_len: int
    max_num_candidates: int
    contextual_max_lengths: Dict[str, int] = field(default_factory=dict)
    uih_sequence_features: Tuple[str, ...] = ()
    candidate_features: Tuple[str, ...] = ()
    table_rows: Dict[str, int] = field(default_factory=dict)  # feature -> rows of its table

    @classmethod
    def from_config(cls, hstu_config: Any, tables: Mapping[str, Any]) -> BatchLimits:
        contextual = dict(hstu_config.contextual_feature_to_max_length)
        uih = tuple(f for f in hstu_config.hstu_uih_feature_names if f not in contextual)
        rows = {f: int(t.num_embeddings) for t in tables.values() for f in t.feature_names}
        return cls(
            max_seq_len=int(hstu_config.max_seq_len),
            max_num_candidates=int(hstu_config.max_num_candidates),
            contextual_max_lengths=contextual,
            uih_sequence_features=uih,
            candidate_features=tuple(hstu_config.hstu_candidate_feature_names),
            table_rows=rows,
        )


def _per_feature_lengths(kjt: Any, where: str) -> Dict[str, torch.Tensor]:
    """The KJT's offsets checked, then its lengths split per feature ``[B]``."""
    keys: List[str] = list(kjt.keys())
    values = kjt.values()
    offsets = kjt.offsets().detach().to("cpu", torch.int64)
    if offsets.numel() == 0 or int(offsets[0]) != 0:
        first = int(offsets[0]) if offsets.numel() else "nothing"
        raise BatchCheckError(f"{where}: offsets must start at 0, got {first}")
    steps = offsets[1:] - offsets[:-1]
    if bool((steps < 0).any()):
        i = int(torch.nonzero(steps < 0)[0, 0])
        raise BatchCheckError(
            f"{where}: offsets decrease at position {i + 1} ({int(offsets[i])} -> "
            f"{int(offsets[i + 1])})"
        )
    if int(offsets[-1]) != values.numel():
        raise BatchCheckError(
            f"{where}: offsets end at {int(offsets[-1])} but there are {values.numel()} values"
        )
    if keys and steps.numel() % len(keys):
        raise BatchCheckError(
            f"{where}: {steps.numel()} lengths do not split over {len(keys)} features"
        )
    per = steps.view(len(keys), -1) if keys else steps.view(0, 0)
    return {k: per[i] for i, k in enumerate(keys)}


def _check_ids(kjt: Any, lengths: Dict[str, torch.Tensor], limits: BatchLimits, where: str) -> None:
    values = kjt.values().detach().to("cpu")
    start = 0
    for key, lens in lengths.items():
        n = int(lens.sum())
        rows = limits.table_rows.get(key)
        if rows is not None and n:
            ids = values[start : start + n]
            # One pass (aminmax) on the good path; the elementwise search only on a failure.
            # Four passes and two bool temporaries per feature cost the GPU quality runs
            # ~20 ms a step on an oversubscribed host (results/step_profile_h200.md).
            lo, hi = torch.aminmax(ids)
            if int(lo) < 0 or int(hi) >= rows:
                j = int(torch.nonzero((ids < 0) | (ids >= rows))[0, 0])
                sample = int(torch.searchsorted(torch.cumsum(lens, 0), j, right=True))
                raise BatchCheckError(
                    f"{where}, sample {sample}: {key} id {int(ids[j])} is outside its table's "
                    f"[0, {rows})"
                )
        start += n


def _same_lengths(
    lengths: Dict[str, torch.Tensor], names: Tuple[str, ...], what: str, where: str
) -> torch.Tensor:
    present = [n for n in names if n in lengths]
    if not present:
        raise BatchCheckError(f"{where}: none of the {what} features {list(names)} is present")
    ref = lengths[present[0]]
    for n in present[1:]:
        if not torch.equal(lengths[n], ref):
            s = int(torch.nonzero(lengths[n] != ref)[0, 0])
            raise BatchCheckError(
                f"{where}, sample {s}: {what} feature {n} has {int(lengths[n][s])} values but "
                f"{present[0]} has {int(ref[s])}"
            )
    return ref


def check_batch(sample: Any, limits: BatchLimits, where: str) -> None:
    """Raise :class:`BatchCheckError` if GR's ``Samples`` batch ``sample`` is malformed."""
    uih = _per_feature_lengths(sample.uih_features_kjt, f"{where}, history features")
    cand = _per_feature_lengths(sample.candidates_features_kjt, f"{where}, candidate features")
    for kjt, lengths, part in (
        (sample.uih_features_kjt, uih, "history features"),
        (sample.candidates_features_kjt, cand, "candidate features"),
    ):
        _check_ids(kjt, lengths, limits, f"{where}, {part}")
    history = _same_lengths(uih, limits.uih_sequence_features, "history", where)
    candidates = _same_lengths(cand, limits.candidate_features, "candidate", where)
    contextual = torch.zeros_like(history)
    for name, most in limits.contextual_max_lengths.items():
        if name in uih:
            over = uih[name] > most
            if bool(over.any()):
                s = int(torch.nonzero(over)[0, 0])
                raise BatchCheckError(
                    f"{where}, sample {s}: contextual feature {name} has {int(uih[name][s])} "
                    f"values, above its maximum {most}"
                )
            contextual = contextual + most  # GR pads every contextual feature to its maximum
    if bool((candidates > limits.max_num_candidates).any()):
        s = int(torch.nonzero(candidates > limits.max_num_candidates)[0, 0])
        raise BatchCheckError(
            f"{where}, sample {s}: {int(candidates[s])} candidates, above max_num_candidates="
            f"{limits.max_num_candidates}"
        )
    total = contextual + history + candidates
    if bool((total > limits.max_seq_len).any()):
        s = int(torch.nonzero(total > limits.max_seq_len)[0, 0])
        raise BatchCheckError(
            f"{where}, sample {s}: {int(contextual[s])} contextual + {int(history[s])} history + "
            f"{int(candidates[s])} candidate tokens = {int(total[s])}, above max_seq_len="
            f"{limits.max_seq_len}"
        )


class FeatureMismatchError(BatchCheckError):
    """The batches' feature names differ from those the model's configuration reads."""


@dataclass(frozen=True)
class FeatureNames:
    """Every feature name the model reads, per KJT, with what reads it.

    ``uih``/``candidates``: name -> the ``DlrmHSTUConfig`` fields (or embedding tables) that
    name it; ``tables``: names an embedding table looks up, found in either KJT (GR merges
    the two before the lookup).  ``source`` says where the names came from (dataset, gin
    bindings), for the error message.
    """

    uih: Dict[str, Tuple[str, ...]]
    candidates: Dict[str, Tuple[str, ...]]
    tables: Dict[str, Tuple[str, ...]]
    source: str = ""

    @classmethod
    def from_config(
        cls, hstu_config: Any, tables: Mapping[str, Any], source: str = ""
    ) -> FeatureNames:
        uih: Dict[str, List[str]] = {}
        cand: Dict[str, List[str]] = {}

        def need(where: Dict[str, List[str]], name: str, reader: str) -> None:
            if name:  # GR leaves optional names empty
                where.setdefault(name, []).append(reader)

        for n in hstu_config.hstu_uih_feature_names:
            need(uih, n, "hstu_uih_feature_names")
        for n in dict(hstu_config.contextual_feature_to_max_length):
            need(uih, n, "contextual_feature_to_max_length")
        for field_name in (
            "uih_post_id_feature_name",
            "uih_action_time_feature_name",
            "uih_weight_feature_name",
        ):
            need(uih, getattr(hstu_config, field_name, ""), field_name)
        for n in hstu_config.hstu_candidate_feature_names:
            need(cand, n, "hstu_candidate_feature_names")
        for field_name in (
            "candidates_querytime_feature_name",
            "candidates_weight_feature_name",
            "candidates_watchtime_feature_name",
        ):
            need(cand, getattr(hstu_config, field_name, ""), field_name)
        for left, right in getattr(hstu_config, "merge_uih_candidate_feature_mapping", ()) or ():
            need(uih, left, "merge_uih_candidate_feature_mapping")
            need(cand, right, "merge_uih_candidate_feature_mapping")
        table_readers: Dict[str, List[str]] = {}
        for name, t in tables.items():
            for f in t.feature_names:
                table_readers.setdefault(f, []).append(f"embedding table {name!r}")

        def frozen(d: Dict[str, List[str]]) -> Dict[str, Tuple[str, ...]]:
            return {k: tuple(dict.fromkeys(v)) for k, v in d.items()}

        return cls(frozen(uih), frozen(cand), frozen(table_readers), source)


def check_feature_names(sample: Any, names: FeatureNames, where: str) -> None:
    """Raise :class:`FeatureMismatchError` naming every feature the model reads that the
    batch lacks, and, as the likely other half of a rename, the batch's features that only
    a feature list (or nothing) names.  Extra features alone are fine: GR's own MovieLens
    dataset yields ``dummy_query_time``, which nothing reads."""
    uih_keys = list(sample.uih_features_kjt.keys())
    cand_keys = list(sample.candidates_features_kjt.keys())
    missing: Dict[str, List[str]] = {}
    for part, keys, wanted in (
        ("history", uih_keys, names.uih),
        ("candidate", cand_keys, names.candidates),
    ):
        for name, readers in wanted.items():
            if name not in keys:
                missing.setdefault(f"{part} feature {name!r}", []).extend(readers)
    for name, readers in names.tables.items():
        if name not in uih_keys and name not in cand_keys:
            key = next((k for k in missing if k.endswith(f" {name!r}")), f"feature {name!r}")
            missing.setdefault(key, []).extend(readers)
    if not missing:
        return
    lists = ("hstu_uih_feature_names", "hstu_candidate_feature_names")
    readers_of: Dict[str, List[str]] = {}
    for d in (names.uih, names.candidates, names.tables):
        for k, v in d.items():
            readers_of.setdefault(k, []).extend(v)
    unused = [k for k in uih_keys + cand_keys if set(readers_of.get(k, ())) <= set(lists)]
    msg = (
        f"{where}: the batches lack {len(missing)} feature(s) the model reads: "
        + "; ".join(f"{k} (read by {', '.join(dict.fromkeys(v))})" for k, v in missing.items())
        + f". The batch has history features {uih_keys} and candidate features {cand_keys}"
    )
    if unused:
        msg += f"; of these no embedding table or other field reads {unused}"
    if names.source:
        msg += f". Feature names come from {names.source}"
    raise FeatureMismatchError(msg)


class CheckedLoader:
    """A dataloader whose batches are checked on the CPU before GR's loop moves them.

    ``limits`` None: only the first batch's feature names are checked (``names``; cheap,
    so the launcher does it even with ``RunSettings.check_batches = False``).  Keeps the
    wrapped loader's attributes (GR's loops read ``sampler`` and ``batch_size``)."""

    def __init__(
        self,
        loader: Any,
        limits: Optional[BatchLimits],
        split: str,
        names: Optional[FeatureNames] = None,
    ) -> None:
        self._loader = loader
        self._limits = limits
        self._split = split
        self._names = names
        self._names_checked = False

    def __len__(self) -> int:
        return len(self._loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def __iter__(self) -> Iterator[Any]:
        for i, sample in enumerate(self._loader):
            if self._names is not None and not self._names_checked:
                check_feature_names(sample, self._names, f"{self._split} batch {i}")
                self._names_checked = True
            if self._limits is not None:
                check_batch(sample, self._limits, f"{self._split} batch {i}")
            yield sample
