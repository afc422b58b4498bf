# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Build GR's ranking model with the ULTRA-HSTU encoder from Python instead of gin.

python examples/swap_encoder.py
"""

import gin

import ultra_hstu_plugin.gin  # noqa: F401 - registers configurables
from ultra_hstu_plugin.config import RunSettings
from ultra_hstu_plugin.host import HammerKernel, transducer_of
from ultra_hstu_plugin.model import make_ultra_model
from ultra_hstu_plugin.modules.encoder_config import UltraHSTUEncoderConfig

gin.parse_config_file("gin_configs/common/ranking_optimizers.gin")
model, hstu_config, tables = make_ultra_model(
    settings=RunSettings(dataset="movielens-100k"),  # in gin: RunSettings.dataset = "..."
    encoder="ultra_hstu",
    encoder_config=UltraHSTUEncoderConfig(
        num_full_layers=2, num_truncated_layers=1, truncated_seq_len=64, k1=64, k2=16
    ),
    merged_item_action_tokens=True,
)
model.set_hammer_kernel(HammerKernel.PYTORCH)  # CPU; TRITON on GPUs
print(transducer_of(model))  # GR's transducer, our STU stack inside
