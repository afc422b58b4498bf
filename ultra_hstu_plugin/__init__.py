# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""ULTRA-HSTU components for meta-recsys/generative-recommenders (GR)."""

from ultra_hstu_plugin.compat import check_torch_fbgemm

__version__ = "0.1.0"

check_torch_fbgemm()
