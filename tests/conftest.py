# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Test-session setup: on machines without a GPU, Triton kernels run in its interpreter.

``TRITON_INTERPRET`` is read when triton and each ``@triton.jit`` kernel are imported,
so it has to be set here, before any test module imports triton.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
