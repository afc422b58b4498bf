# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Registers ``ultra_hstu.UltraHSTUEncoderConfig`` with gin, once per process.

Both gin imports (``ultra_hstu_plugin.gin`` for GR's ranking stack and
``ultra_hstu_plugin.retrieval.gin`` for its research trainer) bind the same encoder config;
gin refuses a second registration, so they share this module.  Needs no host library.
"""

from __future__ import annotations

import gin

from ultra_hstu_plugin.modules.encoder_config import UltraHSTUEncoderConfig

gin.external_configurable(UltraHSTUEncoderConfig, module="ultra_hstu")
