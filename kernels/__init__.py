# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Kernels for ULTRA-HSTU: plain tensors in, tensors out; nothing here imports GR.

Installed as ``ultra_hstu_plugin.kernels`` (a PyPI package named ``kernels`` exists).
Each kernel sits beside its PyTorch reference and is registered as a torch custom op.
"""
