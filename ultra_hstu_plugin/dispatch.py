# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The one dispatch point from GR's ``HammerKernel`` to a kernel backend, for every op.

GR selects implementations with ``model.set_hammer_kernel(HammerKernel.X)``.  The backends a
``HammerKernel`` can map to are registry components of kind ``"backend"`` (``ultra-hstu list
--kind backend``); :func:`backend_for` reads them, checks that the tensors' device can run the
layer on that backend (GR's kernels around ours have the same needs) and returns the name the
kernel packages take (``backend="pytorch"`` / ``"triton"``).  Errors say what to call instead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ultra_hstu_plugin.host import HammerKernel
from ultra_hstu_plugin.registry import Registry, discover

# The ops an ULTRA-HSTU layer dispatches (each kernel package implements both backends).
OPS = ("sla_attention", "fp8_gemm")


@dataclass(frozen=True)
class Backend:
    """A kernel backend as the registry lists it."""

    name: str  # what ``ultra_hstu_plugin.kernels`` ops take as ``backend=``
    hammer_kernel: str  # the ``HammerKernel`` member that selects it
    devices: tuple[str, ...]  # device types a GR layer can run it on
    ops: tuple[str, ...] = OPS


# Registered in registry.register_builtin_components.
PYTORCH = Backend("pytorch", "PYTORCH", ("cpu", "cuda"))
# GR's Triton kernels that surround ours in a layer need CUDA (ours alone also run in the CPU
# interpreter, which is for tests of the kernels, not for layers).
TRITON = Backend("triton", "TRITON", ("cuda",))


@functools.lru_cache(maxsize=4)
def _backends_by_kernel(registry: Registry) -> dict[str, Backend]:
    backends = [c.load() for c in registry.components("backend")]
    return {b.hammer_kernel: b for b in backends}


def backend_for(kernel: HammerKernel, device: torch.device, op: str = "sla_attention") -> str:
    """The kernel backend that ``kernel`` selects for ``op`` on tensors on ``device``."""
    backends = _backends_by_kernel(discover())
    backend = backends.get(kernel.name)
    if backend is None or op not in backend.ops:
        supported = ", ".join(k for k, b in backends.items() if op in b.ops)
        raise ValueError(
            f"ULTRA-HSTU {op} has no {kernel.name} backend (supported: {supported}). "
            "Call model.set_hammer_kernel(HammerKernel.PYTORCH) or HammerKernel.TRITON."
        )
    if device.type not in backend.devices:
        where = " or ".join(d.upper() for d in backend.devices)
        raise ValueError(
            f"HammerKernel.{kernel.name} needs {where} tensors, got x on {device}; on CPU call "
            "model.set_hammer_kernel(HammerKernel.PYTORCH)"
        )
    return backend.name
