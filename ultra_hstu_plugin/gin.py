# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Imported by a gin file (``import ultra_hstu_plugin.gin``): registers every configurable.

After this import a gin file can bind GR's own configurables (``train_loop``,
``eval_loop``, the optimizer factories, ``MetricsLogger`` ...) and the plugin's
(``make_ultra_model``, ``make_dataloaders``, ``RunSettings``, ``UltraHSTUEncoderConfig``).
"""

from __future__ import annotations

import gin

from ultra_hstu_plugin import config, encoder_gin, host  # noqa: F401 - config registers RunSettings

host.import_ranking_stack()  # registers GR's configurables (train_loop, MetricsLogger, ...)
from ultra_hstu_plugin.modules.mixture_of_transducers import StreamConfig  # noqa: E402

gin.external_configurable(StreamConfig, module="ultra_hstu")

# Imported last: they use the registrations above.
from ultra_hstu_plugin import model  # noqa: E402,F401
from ultra_hstu_plugin.data import synthetic  # noqa: E402,F401
from ultra_hstu_plugin.train import dataloaders  # noqa: E402,F401
