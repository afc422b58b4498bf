# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Run-level settings of ``ultra-hstu train``, bound in gin."""

from __future__ import annotations

from dataclasses import dataclass

import gin


@gin.configurable
@dataclass(frozen=True)
class RunSettings:
    """Run-level settings bound in gin (``RunSettings.batch_size = 32`` ...)."""

    dataset: str = "movielens-100k"
    batch_size: int = 32
    output_dir: str = "runs/latest"
    seed: int = 0
    # "auto": PYTORCH on CPU, TRITON on CUDA; or any HammerKernel name.
    hammer_kernel: str = "auto"
    save_checkpoint: bool = True
    load_checkpoint: str = ""
