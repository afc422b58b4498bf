# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""ULTRA-HSTU encoder: SLA layers on the full sequence, then truncated upper layers.

``num_full_layers`` (N1) layers see the whole sequence; the next ``num_truncated_layers``
(N2) see only the contextual tokens + the last ``truncated_seq_len`` (L') history tokens +
the candidates.  Truncation (:class:`~ultra_hstu_plugin.modules.truncation.TruncatedSTU`)
keeps GR's ``L2STU`` rule for which tokens those are, gathers them, runs the upper stack on
them and writes the results back in place, so GR's transducer and postprocessing see the
layout they expect.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

from ultra_hstu_plugin.host import STU, STULayerConfig, STUStack
from ultra_hstu_plugin.modules.encoder_config import UltraHSTUEncoderConfig
from ultra_hstu_plugin.modules.truncation import TruncatedSTU
from ultra_hstu_plugin.modules.ultra_stu import UltraHSTULayer


def ultra_layers(
    n: int,
    layer_config: STULayerConfig,
    k1: int,
    k2: int,
    enc: UltraHSTUEncoderConfig,
    is_inference: bool,
) -> List[UltraHSTULayer]:
    """``n`` ULTRA-HSTU layers with window ``k1``, prefix ``k2`` and ``enc``'s other settings."""
    return [
        UltraHSTULayer(
            config=layer_config,
            k1=k1,
            k2=k2,
            target_mode=enc.target_mode,
            full_attn_tail=enc.full_attn_tail,
            is_inference=is_inference,
            fp8=enc.fp8,
            fp8_gemm_variant=enc.fp8_gemm_variant,
            contextual_in_prefix=enc.contextual_in_prefix,
            projection_gemm=enc.projection_gemm,
        )
        for _ in range(n)
    ]


def build_ultra_hstu_encoder(
    enc: UltraHSTUEncoderConfig,
    layer_config: STULayerConfig,
    is_inference: bool,
    max_seq_len: Optional[int] = None,
) -> STU:
    """An ``STU`` (GR's interface) made of ULTRA-HSTU layers, truncation included."""
    enc.validate(max_seq_len)
    full = ultra_layers(enc.num_full_layers, layer_config, enc.k1, enc.k2, enc, is_inference)
    stack: List[STU] = list(full)
    if enc.num_truncated_layers > 0:
        upper_config = layer_config
        if not enc.recompute_truncated_layers:  # selective recomputation: see the config
            upper_config = dataclasses.replace(
                layer_config, recompute_normed_x=False, recompute_uvqk=False, recompute_y=False
            )
        upper = STUStack(
            stu_list=list(
                ultra_layers(
                    enc.num_truncated_layers,
                    upper_config,
                    enc.upper_k1,
                    enc.upper_k2,
                    enc,
                    is_inference,
                )
            ),
            is_inference=is_inference,
        )
        stack.append(
            TruncatedSTU(
                stu=upper,
                truncated_seq_len=enc.truncated_seq_len,
                is_inference=is_inference,
                contextual_seq_len=layer_config.contextual_seq_len,
            )
        )
    return STUStack(stu_list=stack, is_inference=is_inference)
