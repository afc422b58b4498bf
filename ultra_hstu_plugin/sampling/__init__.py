# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Load-balanced stochastic length (LBSL): per-rank sequence trimming toward a shared cost.

Pure torch (no GR, torchrec or fbgemm imports).  :mod:`.cost` estimates what a kept history
length costs in the encoder; :mod:`.lbsl` has GR's plain stochastic length
(:func:`stochastic_length`), the water-filling trim (:func:`choose_kept_lengths`) and the two
samplers, :class:`StochasticLengthSampler` (registry ``sampler`` "sl") and
:class:`LBSLSampler` ("lbsl"), which share one per-step protocol: ``sampler(lengths) ->
(kept, stats)``, collective over a ``torch.distributed`` group when there is one (the
configuration all-gathered and compared on the first step; per step one all-gather of each
rank's cost, giving the max/mean imbalance and letting a bad batch raise on every rank);
:mod:`.batch` trims GR's jagged batch to the kept lengths; :mod:`.balance` hands a global
batch's users to ranks by cost (``make_dataloaders.sampler = "length_balanced"``), which
raises the light ranks that no trim can.

How it plugs into training (``RunSettings.sampler = "lbsl"`` or ``"sl"``, parameters in
``SamplerSettings``; :mod:`ultra_hstu_plugin.train.sampled_loader`): a step on the jagged
batch *before* the encoder, as a wrapper of the training dataloader, so GR's ``train_loop``
and model run unchanged.  For each training batch the sampler takes the per-user history
lengths (GR's ``uih_seq_lengths``: the lengths of ``uih_post_id_feature_name``, without
contextual and candidate tokens, which are never dropped) and returns kept lengths; every
history feature of the batch's UIH ``KeyedJaggedTensor`` (ids, ratings, timestamps, action
weights, watch times) is sliced to the *most recent* ``kept`` events of each user
(``values[end - kept : end]`` for each user's ``[start, end)``) and the lengths rebuilt; the
contextual features, ``dummy_query_time`` and the candidates' KJT are unchanged.  This takes
the place of GR's ``apply_sampling`` (stochastic length), which GR applies only in an
attention benchmark.  The cost model comes from the built encoder, the generator is seeded
with ``RunSettings.seed + rank``, and the load statistics go to TensorBoard (``load/*``) each
step.  Eval batches are never sampled.
"""

from ultra_hstu_plugin.sampling.cost import AttentionCostModel
from ultra_hstu_plugin.sampling.lbsl import (
    LBSLSampler,
    StochasticLengthSampler,
    choose_kept_lengths,
    stochastic_length,
)

__all__ = [
    "AttentionCostModel",
    "LBSLSampler",
    "StochasticLengthSampler",
    "choose_kept_lengths",
    "stochastic_length",
]
