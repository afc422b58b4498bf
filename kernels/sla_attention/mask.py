# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The semi-local attention (SLA) mask: the one definition every backend follows.

Layout of one sequence of length ``L`` (GR's jagged convention)::

    [ c contextual tokens | history tokens ... | T candidate (target) tokens ]

Positions are first mapped to *ids*, exactly as GR's ``_get_valid_attn_mask`` does, so
that ``k1 = max_attn_len, k2 = 0, target_mode="window"`` reproduces GR bit for bit:

* all contextual tokens share id 0 (``id = max(pos - c + 1, 0)`` when ``c > 0``);
* all candidates share the id of the first candidate (``id <= max_id``, with
  ``max_id = L - num_targets - c + 1``; ``L - num_targets`` without contextual tokens).

With ``d = id(row) - id(col)``, row ``r`` sees column ``j`` (both ``< L``) when::

    causal   = (j == r) or d > 0
    local    = k1 == 0 or d <= k1                     # k1 = 0: full causal
    prefix   = j < P and d > 0                        # global prefix
    tail     = full_attn_tail > 0 and id(r) >= max_id - full_attn_tail
    M[r, j]  = causal and (local or prefix or tail)

``P = max(k2, c)`` with ``contextual_in_prefix=True`` (ours: contextual tokens are part of
the global prefix, every row sees them) or ``P = k2`` with ``contextual_in_prefix=False``
(GR's convention: contextual tokens, all of id 0, are seen only from inside the window).
Two kinds of rows are special:

* contextual rows (``id(r) == 0`` when ``c > 0``) see themselves and every column with
  ``id < max_id``: every contextual and history token (GR's behaviour: they summarise the
  user, so they are not causal), never a candidate.  Stated on ids, as GR does, so that a
  sequence with more candidates than non-contextual tokens (``num_targets > L - c``: the
  ids collapse) still gives every row its diagonal, exactly as GR's mask;
* candidate rows see themselves and never another candidate (``d == 0`` between
  candidates); with ``target_mode="history"`` they see the whole history (TorchEasyRec's
  choice; cheap, candidates are few), with ``target_mode="window"`` only what the SLA
  rule above gives them (GR's local mask).

Picture: c=1, 6 history tokens, T=2 candidates, k1=2, k2=2 (so the prefix is the
contextual token and the first history token), target_mode="window"::

          col: C h0 h1 h2 h3 h4 h5 t0 t1
      row C  : x  x  x  x  x  x  x  .  .     contextual: whole history
          h0 : x  x  .  .  .  .  .  .  .
          h1 : x  x  x  .  .  .  .  .  .
          h2 : x  x  x  x  .  .  .  .  .     window of k1=2 plus the diagonal
          h3 : x  x  x  x  x  .  .  .  .     (h3 sees C and h0 through the prefix)
          h4 : x  x  .  x  x  x  .  .  .
          h5 : x  x  .  .  x  x  x  .  .
          t0 : x  x  .  .  .  x  x  x  .     candidates: prefix + window, self only
          t1 : x  x  .  .  .  x  x  .  x

Differences from other SLA definitions worth knowing:

* TorchEasyRec's SLA window holds ``k1`` tokens *including* the row and its candidates
  see all history but not themselves; ours (GR's) holds ``k1`` earlier tokens plus the
  diagonal, and candidates always see themselves.
* GR's local mask lets history rows see contextual tokens only inside the window; ours
  counts them in the global prefix by default, so every row sees them.  With
  ``contextual_in_prefix=False``, ``k2 = 0`` and ``k1 = max_attn_len`` the mask is GR's
  ``_get_valid_attn_mask`` exactly, contextual tokens included; with ``k1 = 0`` (full
  causal) or no contextual tokens the two conventions agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

TARGET_MODES = ("window", "history")


@dataclass(frozen=True)
class SLAMaskSpec:
    """Scalar parameters of the SLA mask (see the module docstring).

    k1: local causal window (earlier tokens seen besides the diagonal); 0 = full causal.
    k2: global prefix length in tokens; the effective prefix is ``max(k2, contextual_seq_len)``.
    contextual_seq_len: contextual tokens at the start of every sequence.
    target_mode: "window" (candidates follow the SLA rule) or "history" (they see all history).
    full_attn_tail: rows whose id is within this many of the candidates' id see everything
        causal (GR's ``min_full_attn_seq_len``); 0 = off.
    contextual_in_prefix: True (ours): contextual tokens belong to the global prefix;
        False (GR's convention): they are seen from inside the window only.
    """

    k1: int = 0
    k2: int = 0
    contextual_seq_len: int = 0
    target_mode: str = "window"
    full_attn_tail: int = 0
    contextual_in_prefix: bool = True

    def __post_init__(self) -> None:
        for name in ("k1", "k2", "contextual_seq_len", "full_attn_tail"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"SLA mask: {name} must be a non-negative int, got {value!r}")
        if self.target_mode not in TARGET_MODES:
            raise ValueError(
                f"SLA mask: target_mode must be one of {TARGET_MODES}, got {self.target_mode!r}"
            )
        if not isinstance(self.contextual_in_prefix, bool):
            raise ValueError(
                f"SLA mask: contextual_in_prefix must be a bool, got {self.contextual_in_prefix!r}"
            )

    @property
    def prefix_len(self) -> int:
        """Tokens every later row sees: the global prefix (contextual tokens included unless
        ``contextual_in_prefix`` is False)."""
        if self.contextual_in_prefix:
            return max(self.k2, self.contextual_seq_len)
        return self.k2


def sla_visible(
    rows: torch.Tensor,
    cols: torch.Tensor,
    lengths: torch.Tensor,
    spec: SLAMaskSpec,
    num_targets: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The SLA mask at given positions: whether row ``rows`` attends to column ``cols``.

    ``rows``, ``cols``: int64 positions ``[B, R, 1]`` / ``[B, 1, C]`` (any broadcastable
    ``[B, ., .]`` shapes), ``lengths`` / ``num_targets``: ``[B]`` of the sequences they belong
    to.  Positions at or beyond a sequence's length give False.  :func:`sla_mask` is this
    function on all positions; the delta-query attention (KV cache) evaluates it on the new
    rows and the cached columns only, so both follow one definition.
    """
    device = lengths.device
    B = lengths.numel()
    c = spec.contextual_seq_len
    L = lengths.to(torch.int64).view(B, 1, 1)
    T = (
        num_targets.to(device=device, dtype=torch.int64).view(B, 1, 1)
        if num_targets is not None
        else torch.zeros(B, 1, 1, dtype=torch.int64, device=device)
    )
    rows = rows.to(torch.int64)
    cols = cols.to(torch.int64)
    num_non_targets = L - T  # contextual + history
    max_id = num_non_targets - (c - 1 if c > 0 else 0)

    def ids(pos: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.clamp(pos - c + 1, min=0) if c > 0 else pos, max_id)

    row_ids, col_ids = ids(rows), ids(cols)
    d = row_ids - col_ids
    diag = rows == cols
    causal = diag | (d > 0)
    visible = d > 0 if spec.k1 == 0 else (d > 0) & (d <= spec.k1)
    if spec.prefix_len > 0:
        visible = visible | ((cols < spec.prefix_len) & (d > 0))
    if spec.full_attn_tail > 0:
        tail_rows = row_ids >= (max_id - spec.full_attn_tail)
        visible = visible | (tail_rows & (d > 0))
    mask = causal & (visible | diag)

    is_history_col = cols < num_non_targets
    if c > 0:
        contextual_row = row_ids == 0
        sees_user = (col_ids < max_id) | diag
        mask = torch.where(contextual_row, sees_user, mask)
    if spec.target_mode == "history":
        candidate_row = rows >= num_non_targets
        mask = torch.where(candidate_row, is_history_col | diag, mask)
    in_seq = (rows >= 0) & (rows < L) & (cols >= 0) & (cols < L)
    return mask & in_seq


def sla_mask(
    lengths: torch.Tensor,
    max_len: int,
    spec: SLAMaskSpec,
    num_targets: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Dense boolean SLA mask ``[B, max_len, max_len]`` (row attends to column).

    Rows and columns at or beyond a sequence's length are False.  Simple and dense on
    purpose: this is the definition the kernels are tested against.
    """
    B = lengths.numel()
    pos = torch.arange(max_len, device=lengths.device, dtype=torch.int64)
    rows = pos.view(1, -1, 1).expand(B, -1, -1)
    cols = pos.view(1, 1, -1).expand(B, -1, -1)
    return sla_visible(rows, cols, lengths, spec, num_targets)
