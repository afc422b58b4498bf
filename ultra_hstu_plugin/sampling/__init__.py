# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Load-balanced stochastic length (LBSL): per-rank sequence trimming toward a shared cost.

Pure torch (no GR, torchrec or fbgemm).  :mod:`.cost` estimates what a kept history length
costs in the encoder; :mod:`.lbsl` has GR's plain stochastic length (:func:`stochastic_length`),
the water-filling trim (:func:`choose_kept_lengths`) and the sampler (:class:`LBSLSampler`).

How it will plug into training (not wired yet): a step on the jagged batch *before* the
encoder.  The sampler takes the batch's per-user history lengths (the UIH lengths, without
contextual and candidate tokens, which are never dropped), returns kept lengths, and the
batch's jagged values/timestamps are sliced to the *most recent* ``kept`` events of each user
(``values[end - kept : end]`` for each user's ``[start, end)``), offsets rebuilt from the kept
lengths; the candidates and everything after the history are unchanged.  This takes the place
of GR's ``apply_sampling`` (stochastic length) in the input preprocessor.
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
