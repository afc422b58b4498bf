# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Kernels for ULTRA-HSTU: plain tensors in, tensors out; nothing here imports GR.

Installed as ``ultra_hstu_plugin.kernels`` (a PyPI package named ``kernels`` exists).
One package per concept, each with its PyTorch reference, Triton kernels and op
registration side by side:

    sla_attention/    jagged HSTU attention under the semi-local mask, fwd + bwd
    fp8_gemm/         FP8 rowwise GEMM with a fused 2D bias, its autograd, FP8Linear
    int4_embedding/   INT4 rowwise embedding lookup (fbgemm's row format)

Shared by all three: ``ops.py`` (backends and where they run, custom-op registration),
``jagged.py`` (the jagged layout and its checks), ``interpreter_casts.py``.
"""
