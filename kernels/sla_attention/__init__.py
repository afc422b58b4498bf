# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Jagged HSTU attention under the semi-local (SLA) mask.

mask.py            the mask: SLAMaskSpec (k1 window, k2 prefix, targets) and sla_mask
reference.py       dense PyTorch reference (any device, differentiable)
triton_kernels.py  the jagged Triton kernels, forward and backward
op.py              custom ops ultra_hstu::sla_attention_fwd/bwd and sla_attention()
delta_reference.py delta-query attention for the KV cache: layout and PyTorch reference
delta_triton.py    its Triton forward kernel
delta_op.py        custom ops ultra_hstu::delta_sla_attention_fwd / _split_fwd (keys from
                   cache + new rows, no concatenation) and their checked callers
"""

from ultra_hstu_plugin.kernels.sla_attention.delta_op import (
    bounded_cache,
    cache_prefix_len,
    delta_sla_attention,
    delta_sla_attention_split,
)
from ultra_hstu_plugin.kernels.sla_attention.mask import (
    TARGET_MODES,
    SLAMaskSpec,
    sla_mask,
    sla_visible,
)
from ultra_hstu_plugin.kernels.sla_attention.op import (
    BACKENDS,
    TRITON_DTYPES,
    TRITON_HEAD_DIMS,
    sla_attention,
)
from ultra_hstu_plugin.kernels.sla_attention.reference import sla_attention_reference

__all__ = [
    "BACKENDS",
    "SLAMaskSpec",
    "TARGET_MODES",
    "TRITON_DTYPES",
    "TRITON_HEAD_DIMS",
    "bounded_cache",
    "cache_prefix_len",
    "delta_sla_attention",
    "delta_sla_attention_split",
    "sla_attention",
    "sla_attention_reference",
    "sla_mask",
    "sla_visible",
]
