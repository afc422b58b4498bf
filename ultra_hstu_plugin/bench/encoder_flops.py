# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Analytic forward FLOPs of HSTU / ULTRA-HSTU encoders, counted the paper's Table-2 way.

Pure Python (no torch): the benchmarks and the tests share this one definition.

Per layer, with ``N`` the tokens the layer sees, ``D`` the embedding dim, ``H`` heads,
``hidden`` / ``attn`` the per-head value / query-key dims and ``pairs`` the unmasked
(row, key) pairs of the layer's mask, summed over the sequences:

* uvqk projection: ``2 * N * D * (2 * hidden + 2 * attn) * H``;
* output projection: ``2 * N * (3 * hidden * H) * D`` (GR concatenates u, the attention
  output and x before it: ``concat_u=True, concat_x=True``);
* attention: ``2 * pairs * attn * H`` (Q K^T) + ``2 * pairs * hidden * H`` (A V).

Norms, SiLU, dropout and the residual are not counted.  Pairs follow
:func:`count_pairs` (full causal: ``L (L + 1) / 2``); the candidates' own masking
(target-aware: a candidate sees itself, never another candidate) is not modelled, which
over-counts full causal layers by ``T (T - 1) / 2`` pairs per sequence (2016 of 134 M at
``L = 16384, T = 64``).  Truncated layers see per sequence ``min(L, L' + T + contextual)``
tokens (GR's ``L2STU`` keeps the contextual tokens, the last ``L'`` history tokens and the
``T`` candidates) under the upper layers' mask (``upper_k1 = 0``: full causal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict


def _sum_min(n: int, k: int) -> int:
    """``sum(min(j, k) for j in range(n))`` in O(1)."""
    if n <= 0:
        return 0
    m = min(n, k + 1)  # j < m: min(j, k) = j
    return m * (m - 1) // 2 + k * (n - m)


def causal_pairs(L: int) -> int:
    """Visible (row, key) pairs of one full causal sequence of length ``L``."""
    return L * (L + 1) // 2


def count_pairs(L: int, k1: int, k2: int, causal_prefix: bool = True) -> int:
    """Visible (row, key) pairs of one length-L sequence: ``prefix(k2) | window(k1) & causal``.

    Row ``i`` sees ``min(i, k1) + 1`` window keys (the diagonal and up to ``k1`` earlier
    keys) and ``min(max(i - k1, 0), k2)`` prefix keys before the window; ``k1 = 0`` is full
    causal.  Closed form, O(1).

    ``causal_prefix``: our SLA prefix is causal; FlexAttention's ``prefix(K2)`` of the issue
    is not (rows before K2 also see later prefix keys).
    """
    if L <= 0:
        return 0
    if k1 == 0:
        return causal_pairs(L)
    window = L + _sum_min(L, k1)
    prefix = _sum_min(L - k1, k2)  # row i = k1 + j sees min(j, k2) prefix keys
    total = window + prefix
    if not causal_prefix and k2 > 0:
        m = min(k2, L)  # row i < m also sees the m - 1 - i prefix keys after it
        total += m * (m - 1) // 2
    return total


@dataclass(frozen=True)
class LayerDims:
    """Widths of one HSTU layer (GR's ``STULayerConfig`` names)."""

    embedding_dim: int = 512
    num_heads: int = 4
    hidden_dim: int = 128
    attention_dim: int = 128


@dataclass(frozen=True)
class StackShape:
    """Depths and masks of an encoder: ``num_full_layers`` on the whole sequence under the
    SLA mask ``(k1, k2)`` (0, 0: full causal), then ``num_truncated_layers`` on the last
    ``truncated_seq_len`` history tokens (+ candidates and contextual) under
    ``(upper_k1, upper_k2)``.  GR's HSTU stack is ``StackShape(num_full_layers=n)``."""

    num_full_layers: int
    k1: int = 0
    k2: int = 0
    num_truncated_layers: int = 0
    truncated_seq_len: int = 0
    upper_k1: int = 0
    upper_k2: int = 0


def layer_flops(tokens: int, pairs: int, dims: LayerDims) -> Dict[str, int]:
    """Forward FLOPs of one layer that sees ``tokens`` tokens and ``pairs`` unmasked pairs."""
    D, H = dims.embedding_dim, dims.num_heads
    hidden, attn = dims.hidden_dim, dims.attention_dim
    uvqk = 2 * tokens * D * (2 * hidden + 2 * attn) * H
    output = 2 * tokens * (3 * hidden * H) * D
    attention = 2 * pairs * attn * H + 2 * pairs * hidden * H
    return {"uvqk": uvqk, "output": output, "attention": attention}


def truncated_len(L: int, truncated_seq_len: int, num_targets: int, contextual: int = 0) -> int:
    """Tokens per sequence of length ``L`` that a truncated layer sees."""
    return min(L, truncated_seq_len + num_targets + contextual)


def encoder_flops(
    shape: StackShape,
    L: int,
    B: int,
    dims: LayerDims = LayerDims(),
    num_targets: int = 0,
    contextual_seq_len: int = 0,
) -> Dict[str, int]:
    """Forward FLOPs of ``B`` sequences of length ``L`` through the stack.

    Returns ``total`` and its parts: ``gemm`` / ``attention`` (all layers) and
    ``full_layers`` / ``truncated_layers``.
    """

    def stack(n_layers: int, seq_len: int, k1: int, k2: int) -> Dict[str, int]:
        per = layer_flops(B * seq_len, B * count_pairs(seq_len, k1, k2), dims)
        return {k: n_layers * v for k, v in per.items()}

    full = stack(shape.num_full_layers, L, shape.k1, shape.k2)
    trunc = {"uvqk": 0, "output": 0, "attention": 0}
    if shape.num_truncated_layers > 0:
        n2 = truncated_len(L, shape.truncated_seq_len, num_targets, contextual_seq_len)
        trunc = stack(shape.num_truncated_layers, n2, shape.upper_k1, shape.upper_k2)
    gemm = full["uvqk"] + full["output"] + trunc["uvqk"] + trunc["output"]
    attention = full["attention"] + trunc["attention"]
    return {
        "total": gemm + attention,
        "gemm": gemm,
        "attention": attention,
        "full_layers": sum(full.values()),
        "truncated_layers": sum(trunc.values()),
    }
