# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""ULTRA-HSTU for GR's research (retrieval) trainer: GR's research ``HSTU`` with SLA attention.

GR's research HSTU (``generative_recommenders/research/modeling/sequential/hstu.py``) runs
padded ``[B, N, D]`` inputs with ``past_lengths`` through jagged layers
(``SequentialTransductionUnitJagged``): LayerNorm -> one ``uvqk`` projection with SiLU ->
pointwise attention ``silu(Q K^T + rab) / N`` under a causal mask -> ``u * LayerNorm(attn)``
-> dropout -> output projection + residual.  Here:

* :class:`SLAResearchLayer` subclasses that layer and keeps all of it (parameters, their
  init, norms, gating, dropout) except the attention, which is the ranking path's own op,
  :func:`ultra_hstu_plugin.kernels.sla_attention.sla_attention` under an
  :class:`SLAMaskSpec` (``k1`` window, ``k2`` global prefix), on the same jagged
  ``[sum L, H, D]`` + offsets layout, with GR's normalisation (``alpha = 1``, divided by
  the padded ``N``).  ``k1 = k2 = 0`` is GR's causal mask: the layer then equals GR's
  with its relative attention bias at zero (``integration_tests/test_retrieval.py``).
* the SLA kernels take no attention bias, so ULTRA-HSTU has no relative attention bias
  (``rab``: GR's ``hstu_encoder.enable_relative_attention_bias``).
* truncation: the upper ``num_truncated_layers`` layers run on each sequence's last
  ``truncated_seq_len`` tokens, chosen by the ranking path's rule
  (:func:`~ultra_hstu_plugin.modules.truncation.truncation_plan`, GR's ``L2STU``); the earlier
  tokens keep the lower layers' output.  The research loss supervises every position, so
  those positions are trained on the N1-layer embeddings; evaluation reads the last
  position, which always passes through every layer.
* :class:`UltraResearchHSTU` subclasses GR's research ``HSTU`` (its input/output
  processing, embeddings, similarity, ``encode``) and swaps in these layers.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import gin
import torch
import torch.nn.functional as F

from ultra_hstu_plugin.host import (
    ResearchHSTU,
    ResearchHSTUJagged,
    ResearchSTULayer,
    configurable_defaults,
    hstu_encoder,
)
from ultra_hstu_plugin.kernels.sla_attention import (
    TRITON_DTYPES,
    TRITON_HEAD_DIMS,
    SLAMaskSpec,
    sla_attention,
)
from ultra_hstu_plugin.modules.encoder_config import UltraHSTUEncoderConfig
from ultra_hstu_plugin.modules.truncation import truncation_plan

MAIN_MODULE = "ULTRA-HSTU"  # train_fn.main_module
BACKENDS = ("auto", "pytorch", "triton")
# UltraHSTUEncoderConfig fields the research encoder reads; every other field must keep
# its default (they configure GR's ranking STULayer: FP8, recomputation, candidates).
RESEARCH_FIELDS = (
    "num_full_layers",
    "num_truncated_layers",
    "truncated_seq_len",
    "k1",
    "k2",
    "upper_k1",
    "upper_k2",
    "full_attn_tail",
)
POINTWISE_NORMALIZATIONS = ("rel_bias", "hstu_rel_bias")  # GR's silu(QK)/N attention


class SLAResearchLayer(ResearchSTULayer):
    """GR's research HSTU layer with its attention replaced by SLA attention."""

    def __init__(
        self, k1: int = 0, k2: int = 0, full_attn_tail: int = 0, backend: str = "auto", **gr: Any
    ) -> None:
        if gr.get("normalization", "rel_bias") not in POINTWISE_NORMALIZATIONS:
            raise ValueError(
                f"ULTRA-HSTU: normalization {gr['normalization']!r} is not HSTU's pointwise "
                f"attention; use one of {POINTWISE_NORMALIZATIONS}"
            )
        if backend not in BACKENDS:
            raise ValueError(f"ULTRA-HSTU backend must be one of {BACKENDS}, got {backend!r}")
        super().__init__(relative_attention_bias_module=None, **gr)
        self.sla = SLAMaskSpec(k1=k1, k2=k2, full_attn_tail=full_attn_tail)
        self.backend = backend

    def extra_repr(self) -> str:
        s = self.sla
        return f"heads={self._num_heads}, k1={s.k1}, k2={s.k2}, backend={self.backend}"

    def _backend(self, q: torch.Tensor) -> str:
        if self.backend != "auto":
            return self.backend
        triton_ok = (
            q.device.type == "cuda"
            and self._attention_dim in TRITON_HEAD_DIMS
            and self._linear_dim in TRITON_HEAD_DIMS
            and q.dtype in TRITON_DTYPES
        )
        return "triton" if triton_ok else "pytorch"

    def forward(  # pyre-ignore [3]
        self,
        x: torch.Tensor,
        x_offsets: torch.Tensor,
        all_timestamps: Optional[torch.Tensor],
        invalid_attn_mask: torch.Tensor,
        delta_x_offsets: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        cache: Optional[Any] = None,
        return_cache_states: bool = False,
    ):
        """GR's layer forward (``x`` jagged ``[sum L, D]``), attention through SLA.

        ``invalid_attn_mask`` only gives the padded length ``N`` (GR's normaliser); the mask
        itself is the layer's :class:`SLAMaskSpec`.  ``all_timestamps`` fed GR's relative
        bias, which SLA has not.  No KV cache (GR's incremental decoding path).
        """
        del all_timestamps
        if delta_x_offsets is not None or cache is not None:
            raise NotImplementedError("ULTRA-HSTU (retrieval) has no KV-cached decoding")
        n = invalid_attn_mask.size(-1)
        h, dqk, dv = self._num_heads, self._attention_dim, self._linear_dim
        mm = torch.mm(self._norm_input(x), self._uvqk)
        if self._linear_activation == "silu":
            mm = F.silu(mm)
        u, v, q, k = torch.split(mm, [dv * h, dv * h, dqk * h, dqk * h], dim=1)
        attn = sla_attention(
            q.reshape(-1, h, dqk),
            k.reshape(-1, h, dqk),
            v.reshape(-1, h, dv),
            seq_offsets=x_offsets,
            max_seq_len=n,
            alpha=1.0,
            spec=self.sla,
            num_targets=None,
            backend=self._backend(q),
        ).reshape(-1, h * dv)
        if self._concat_ua:
            a = self._norm_attn_output(attn)
            o_input = torch.cat([u, a, u * a], dim=-1)
        else:
            o_input = u * self._norm_attn_output(attn)
        out = self._o(F.dropout(o_input, p=self._dropout_ratio, training=self.training)) + x
        return out, (v, None, None, out)


class TruncatedResearchStack(ResearchHSTUJagged):
    """GR's research layer stack: ``n_full`` layers on the whole sequence, the rest on the
    last ``truncated_seq_len`` tokens (the ranking path's truncation rule)."""

    def __init__(self, layers: List[SLAResearchLayer], n_full: int, truncated_seq_len: int) -> None:
        super().__init__(modules=layers, autocast_dtype=None)
        self.n_full = n_full
        self.truncated_seq_len = truncated_seq_len

    def jagged_forward(
        self,
        x: torch.Tensor,
        x_offsets: torch.Tensor,
        all_timestamps: Optional[torch.Tensor],
        invalid_attn_mask: torch.Tensor,
        delta_x_offsets: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        cache: Optional[List[Any]] = None,
        return_cache_states: bool = False,
    ) -> Tuple[torch.Tensor, List[Any]]:
        if delta_x_offsets is not None or cache is not None or return_cache_states:
            raise NotImplementedError("ULTRA-HSTU (retrieval) has no KV-cached decoding")
        layers = list(self._attention_layers)
        for layer in layers[: self.n_full]:
            x, _ = layer(x, x_offsets, None, invalid_attn_mask)
        upper = layers[self.n_full :]
        if upper:
            lengths = x_offsets[1:] - x_offsets[:-1]
            plan = truncation_plan(lengths, x_offsets, None, self.truncated_seq_len)
            y = x.index_select(0, plan.rows)
            for layer in upper:
                y, _ = layer(y, plan.offsets, None, invalid_attn_mask)
            x = x.index_copy(0, plan.rows, y)
        return x, []


class UltraResearchHSTU(ResearchHSTU):
    """GR's research ``HSTU`` whose layers are :class:`SLAResearchLayer` (see the module doc).

    Takes GR's ``HSTU`` arguments (without ``enable_relative_attention_bias``) plus the
    ULTRA-HSTU ``encoder_config`` (``num_full_layers`` None = ``num_blocks``) and the SLA
    ``backend`` ("auto": Triton on CUDA where the head dims allow, else PyTorch).
    """

    def __init__(
        self,
        encoder_config: UltraHSTUEncoderConfig,
        backend: str = "auto",
        **hstu: Any,
    ) -> None:
        enc = encoder_config.with_default_depth(hstu["num_blocks"])
        check_research_encoder_config(enc, hstu["max_sequence_len"])
        n1, n2 = enc.num_full_layers, enc.num_truncated_layers
        super().__init__(**{**hstu, "num_blocks": n1 + n2}, enable_relative_attention_bias=False)
        gr = dict(
            embedding_dim=self._embedding_dim,
            linear_hidden_dim=hstu["linear_dim"],
            attention_dim=hstu["attention_dim"],
            dropout_ratio=hstu["linear_dropout_rate"],
            attn_dropout_ratio=hstu["attn_dropout_rate"],
            num_heads=hstu["num_heads"],
            linear_activation=hstu["linear_activation"],
            normalization=hstu["normalization"],
            linear_config=hstu["linear_config"],
            concat_ua=hstu.get("concat_ua", False),
        )
        tail = enc.full_attn_tail
        layers = [SLAResearchLayer(enc.k1, enc.k2, tail, backend, **gr) for _ in range(n1)]
        layers += [
            SLAResearchLayer(enc.upper_k1, enc.upper_k2, tail, backend, **gr) for _ in range(n2)
        ]
        self._hstu = TruncatedResearchStack(layers, n1, enc.truncated_seq_len)
        self.encoder_config = enc

    def debug_str(self) -> str:
        e = self.encoder_config
        s = f"ULTRA-HSTU-b{e.num_full_layers}-k{e.k1}p{e.k2}"
        if e.num_truncated_layers:
            s += f"+t{e.num_truncated_layers}L{e.truncated_seq_len}-k{e.upper_k1}p{e.upper_k2}"
        return s + f"-h{self._num_heads}-dqk{self._dqk}-dv{self._dv}-d{self._linear_dropout_rate}"


def check_research_encoder_config(enc: UltraHSTUEncoderConfig, max_seq_len: int) -> None:
    """The ranking config's checks, plus: fields the retrieval encoder would not read."""
    enc.validate(max_seq_len)
    defaults = UltraHSTUEncoderConfig()
    for f in dataclasses.fields(UltraHSTUEncoderConfig):
        if f.name not in RESEARCH_FIELDS and getattr(enc, f.name) != getattr(defaults, f.name):
            raise ValueError(
                f"ultra_hstu.UltraHSTUEncoderConfig.{f.name} = {getattr(enc, f.name)!r} does not "
                "apply to the retrieval encoder (train_fn.main_module = 'ULTRA-HSTU'); it reads "
                f"only {', '.join(RESEARCH_FIELDS)}"
            )


def hstu_encoder_settings() -> Dict[str, Any]:
    """GR's ``hstu_encoder`` arguments as gin resolves them now (bindings over defaults)."""
    return {**configurable_defaults(hstu_encoder), **gin.get_bindings(hstu_encoder)}


@gin.configurable(module="ultra_hstu")
def ultra_hstu_encoder(
    max_sequence_length: int,
    max_output_length: int,
    embedding_module: torch.nn.Module,
    similarity_module: torch.nn.Module,
    input_preproc_module: torch.nn.Module,
    output_postproc_module: torch.nn.Module,
    activation_checkpoint: bool,
    verbose: bool,
    encoder_config: Optional[UltraHSTUEncoderConfig] = None,
    backend: str = "auto",
) -> UltraResearchHSTU:
    """``train_fn.main_module = "ULTRA-HSTU"``: what ``get_sequential_encoder`` builds.

    Same arguments as GR's ``hstu_encoder``, whose gin bindings (``hstu_encoder.num_blocks``,
    ``.num_heads``, ``.dqk``, ``.dv``, ``.linear_dropout_rate``, ...) set the dims here too,
    so switching GR's config from "HSTU" to "ULTRA-HSTU" keeps them.  ``encoder_config``:
    None = ``ultra_hstu.UltraHSTUEncoderConfig()`` as gin binds it.  GR's HSTU, too, takes
    ``activation_checkpoint`` and ignores it.
    """
    del activation_checkpoint
    s = hstu_encoder_settings()
    if gin.get_bindings(hstu_encoder).get("enable_relative_attention_bias") is True:
        raise ValueError(
            "hstu_encoder.enable_relative_attention_bias = True is bound, but ULTRA-HSTU has no "
            "relative attention bias (the SLA kernels take none); unbind it"
        )
    if encoder_config is None:
        encoder_config = gin.get_configurable(UltraHSTUEncoderConfig)()
    return UltraResearchHSTU(
        encoder_config=encoder_config,
        backend=backend,
        embedding_module=embedding_module,
        similarity_module=similarity_module,
        input_features_preproc_module=input_preproc_module,
        output_postproc_module=output_postproc_module,
        max_sequence_len=max_sequence_length,
        max_output_len=max_output_length,
        embedding_dim=embedding_module.item_embedding_dim,
        num_blocks=s["num_blocks"],
        num_heads=s["num_heads"],
        attention_dim=s["dqk"],
        linear_dim=s["dv"],
        linear_dropout_rate=s["linear_dropout_rate"],
        attn_dropout_rate=s["attn_dropout_rate"],
        linear_config=s["linear_config"],
        linear_activation=s["linear_activation"],
        normalization=s["normalization"],
        concat_ua=s["concat_ua"],
        verbose=verbose,
    )
