# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Full-corpus ranking for corpora smaller than GR's eval depth.

GR's ``eval_metrics_v2_from_tensors`` asks for the top ``k = min(2500, #items)`` items with
each user's seen items filtered out, and GR's ``CandidateIndex.get_top_k_outputs`` then
needs ``k`` unseen items among its ``min(k + #seen, #items)`` candidates.  With fewer than
``2500 + max_sequence_length`` items (MovieLens-100k: 1682) a row has fewer and GR's
reshape fails.  :class:`SmallCorpusCandidateIndex` returns, in that case only, the same
ranking of the unseen items followed by id 0 (never a target) in the places GR's filter
leaves empty: ranks, HR@K, NDCG@K and MRR are what GR computes for a corpus it can take.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from ultra_hstu_plugin.host import CandidateIndex


class SmallCorpusCandidateIndex(CandidateIndex):
    def get_top_k_outputs(
        self,
        query_embeddings: torch.Tensor,
        k: int,
        top_k_module: Any,
        invalid_ids: Optional[torch.Tensor],
        r: int = 1,
        return_embeddings: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        n_invalid = 0 if invalid_ids is None else invalid_ids.size(1)
        if invalid_ids is None or k + n_invalid <= self.num_objects or return_embeddings:
            return super().get_top_k_outputs(
                query_embeddings, k, top_k_module, invalid_ids, r, return_embeddings
            )
        scores, ids = top_k_module(query_embeddings=query_embeddings, k=self.num_objects)
        valid = ~((ids.unsqueeze(2) == invalid_ids.unsqueeze(1)).max(2)[0])
        # valid ids first, each group in score order (a stable sort keeps GR's order)
        order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices[:, :k]
        top_ids = torch.where(torch.gather(valid, 1, order), torch.gather(ids, 1, order), 0)
        return top_ids, torch.gather(scores, 1, order), None


def for_small_corpora(state: Any) -> Any:
    """GR's ``EvalState`` with its candidate index able to rank a small corpus."""
    ci = state.candidate_index
    state.candidate_index = SmallCorpusCandidateIndex(ids=ci.ids, embeddings=ci.embeddings)
    return state
