# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Mixture of transducers (MoT): one encoder per behaviour stream, fused per candidate.

A *stream* is the subset of history events whose action bitmask intersects the stream's
``action_mask`` (e.g. "consumption" = any rating, "engagement" = 4-5 stars), cut to the
stream's last ``max_len`` events.  Every stream keeps the contextual tokens and the
candidates, and runs its own ULTRA-HSTU stack of ``num_layers`` layers.  The candidates'
outputs of all streams are concatenated and projected back to the model dimension;
that fused embedding replaces the candidate rows of the sequence, so GR's postprocessor
and multitask head see the layout they expect.

GR's STU interface carries no per-token payloads, so MoT sits one level up, as a
subclass of GR's ``HSTUTransducer`` that reads the action payload in ``forward``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ultra_hstu_plugin.host import HSTUTransducer, STULayerConfig, STUStack, transducer_parts
from ultra_hstu_plugin.kernels.jagged import jagged_index
from ultra_hstu_plugin.modules.encoder import ultra_layers
from ultra_hstu_plugin.modules.encoder_config import UltraHSTUEncoderConfig


@dataclass(frozen=True)
class StreamConfig:
    """One behaviour stream: which events, how many, how deep."""

    name: str
    action_mask: int
    num_layers: int = 1
    max_len: int = 256

    def validate(self) -> None:
        if self.action_mask <= 0:
            raise ValueError(
                f"stream {self.name!r}: action_mask must be a positive bitmask, got {self.action_mask}"
            )
        if self.num_layers <= 0:
            raise ValueError(
                f"stream {self.name!r}: num_layers must be positive, got {self.num_layers}"
            )
        if self.max_len <= 0:
            raise ValueError(f"stream {self.name!r}: max_len must be positive, got {self.max_len}")


def stream_token_mask(
    seq_lengths: torch.Tensor,
    num_targets: torch.Tensor,
    contextual_len: int,
    uih_actions: torch.Tensor,
    action_mask: int,
    max_len: int,
) -> torch.Tensor:
    """Boolean mask over the jagged ``[sum L]`` tokens that a stream keeps.

    Keeps contextual tokens, candidates, and the last ``max_len`` history events whose
    action intersects ``action_mask``.  ``uih_actions`` is jagged over history events only.
    """
    total = int(seq_lengths.sum())
    B = seq_lengths.numel()
    device = seq_lengths.device
    batch, pos = jagged_index(seq_lengths, total)
    n_uih = seq_lengths - num_targets - contextual_len
    is_uih = (pos >= contextual_len) & (pos < contextual_len + n_uih[batch])
    if uih_actions.numel() != int(n_uih.sum()):
        raise ValueError(
            f"action payload has {uih_actions.numel()} values but the batch has "
            f"{int(n_uih.sum())} history events"
        )
    in_stream = torch.zeros(total, dtype=torch.bool, device=device)
    in_stream[is_uih] = (uih_actions & action_mask) != 0
    # rank from the end among this sequence's in-stream events (0 = most recent)
    counts = torch.zeros(B, dtype=torch.long, device=device).index_add_(0, batch, in_stream.long())
    running = torch.cumsum(in_stream.long(), 0)
    before_seq = torch.cumsum(counts, 0) - counts
    rank_from_end = counts[batch] - (running - before_seq[batch])
    keep_event = in_stream & (rank_from_end < max_len)
    return ~is_uih | keep_event


class MixtureOfTransducers(HSTUTransducer):
    """GR's transducer with one ULTRA-HSTU stack per behaviour stream."""

    def __init__(
        self,
        base: HSTUTransducer,
        streams: Sequence[StreamConfig],
        layer_config: STULayerConfig,
        encoder_config: UltraHSTUEncoderConfig,
        action_feature_name: str,
        is_inference: bool,
    ) -> None:
        if len(streams) < 2:
            raise ValueError(
                f"mixture of transducers needs at least two streams, got {len(streams)}"
            )
        names = [s.name for s in streams]
        if len(set(names)) != len(names):
            raise ValueError(f"stream names must be unique, got {names}")
        for s in streams:
            s.validate()
        super().__init__(**transducer_parts(base), is_inference=is_inference)
        del self._stu_module  # replaced by one stack per stream
        self._streams: List[StreamConfig] = list(streams)
        self._action_feature_name = action_feature_name
        self._contextual_len = layer_config.contextual_seq_len
        self._stream_stacks = torch.nn.ModuleList(
            STUStack(
                stu_list=list(
                    ultra_layers(
                        s.num_layers,
                        layer_config,
                        encoder_config.k1,
                        encoder_config.k2,
                        encoder_config,
                        is_inference,
                    )
                ),
                is_inference=is_inference,
            )
            for s in streams
        )
        dim = layer_config.embedding_dim
        self._fusion = torch.nn.Linear(dim * len(streams), dim)
        self._payloads: Optional[Dict[str, torch.Tensor]] = None

    @property
    def streams(self) -> List[StreamConfig]:
        return list(self._streams)

    def forward(self, *args, **kwargs) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:  # type: ignore[override]
        payloads = kwargs.get("seq_payloads")
        if payloads is None or self._action_feature_name not in payloads:
            raise ValueError(
                f"mixture of transducers needs the action payload {self._action_feature_name!r}"
            )
        self._payloads = payloads
        try:
            return super().forward(*args, **kwargs)
        finally:
            self._payloads = None

    def _hstu_compute(
        self,
        max_seq_len: int,
        seq_lengths: torch.Tensor,
        seq_offsets: torch.Tensor,
        seq_timestamps: torch.Tensor,
        seq_embeddings: torch.Tensor,
        num_targets: torch.Tensor,
    ) -> torch.Tensor:
        assert self._payloads is not None
        actions = self._payloads[self._action_feature_name]
        batch, pos = jagged_index(seq_lengths, seq_embeddings.shape[0])
        # Candidates are the last num_targets rows of every sequence; a stream keeps them and
        # the order of rows, so is_candidate[keep] marks them in the stream's layout too.
        is_candidate = pos >= (seq_lengths - num_targets)[batch]
        candidate_outputs = []
        for stream, stack in zip(self._streams, self._stream_stacks):
            keep = stream_token_mask(
                seq_lengths,
                num_targets,
                self._contextual_len,
                actions,
                stream.action_mask,
                stream.max_len,
            )
            lengths = torch.bincount(batch[keep], minlength=seq_lengths.numel())
            offsets = torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0)])
            out = stack(
                x=seq_embeddings[keep],
                x_lengths=lengths,
                x_offsets=offsets,
                max_seq_len=int(lengths.max()) if lengths.numel() else 0,
                num_targets=num_targets,
            )
            candidate_outputs.append(out[is_candidate[keep]])
        fused = self._fusion(torch.cat(candidate_outputs, dim=-1))
        result = seq_embeddings.clone()
        result[is_candidate] = fused.to(result.dtype)
        return result


__all__ = [
    "MixtureOfTransducers",
    "StreamConfig",
    "stream_token_mask",
]
