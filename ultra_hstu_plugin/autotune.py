# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""How many configs each Triton autotuner tries: GR's kernels and ours, one bound.

``RunSettings.autotune_max_configs`` (gin) sets it for ``ultra-hstu train`` and everything
built on it (``bench quality``); ``None`` lets every kernel benchmark all of its configs, as GR
does.  The bound trades a little steady-state speed (a kernel may miss its best tile) for a
first step that does not stall on compilation: see ``benchmarks/results/first_step_h200.md``
for both sides measured.  The mechanism is :mod:`ultra_hstu_plugin.kernels.autotune_budget`.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import List, Optional

from ultra_hstu_plugin.host import HostNotInstalledError
from ultra_hstu_plugin.kernels.autotune_budget import (
    BoundedKernel,
    find_autotuners,
    limit_configs,
)

logger = logging.getLogger(__name__)

# Why a bound of 1 is warned about: the autotuner then runs each kernel's first (pruned)
# config untimed.  Measured on an H200 (benchmarks/results/autotune_bound_cost_h200.md):
# our SLA attention fwd+bwd at B=32, L=4106, fp32 took 87.9 ms with 1 config vs 7.9 ms with 4.
SINGLE_CONFIG_WARNING = (
    "autotune_max_configs=1: every Triton kernel runs its first config untimed; the first "
    "step compiles fastest, but steady-state kernels can be many times slower "
    "(benchmarks/results/autotune_bound_cost_h200.md); 4 is the default"
)

# Our kernels that autotune at import (the FP8 GEMM builds its autotuner on first use and is
# off the default path).
_OUR_KERNEL_MODULES = (
    "ultra_hstu_plugin.kernels.sla_attention.triton_kernels",
    "ultra_hstu_plugin.kernels.sla_attention.delta_triton",
)


def kernel_modules() -> List[ModuleType]:
    """The modules whose autotuners the bound covers: ours, then GR's where GR is installed."""
    modules = [importlib.import_module(name) for name in _OUR_KERNEL_MODULES]
    try:
        from ultra_hstu_plugin.host import gr_triton_kernel_modules

        modules += gr_triton_kernel_modules()
    except HostNotInstalledError:
        pass
    return modules


def bound_autotuning(max_configs: Optional[int]) -> List[BoundedKernel]:
    """Bound every autotuner of :func:`kernel_modules` to ``max_configs`` configs (``None``:
    unbounded).  Call before the first kernel launch: a shape already tuned keeps its choice.
    A bound of 1 logs :data:`SINGLE_CONFIG_WARNING`."""
    if max_configs == 1:
        logger.warning(SINGLE_CONFIG_WARNING)
    return limit_configs(find_autotuners(kernel_modules()), max_configs)
