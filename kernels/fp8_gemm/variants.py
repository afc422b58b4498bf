# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Which FP8 GEMM kernel runs a shape: a pure function of shape and device.

Two kernels compute the same GEMM: the one-program-a-tile ``"pointer"`` kernel
(``triton_kernels.py``) and the persistent ``"tma"`` kernel (``tma_kernels.py``, Hopper and
newer, 16-byte-aligned layouts).  The choice used to be made by timing both on the first call of
a shape, inside the first training step, so two ranks or two runs could pick differently.  Now
it is read from :data:`VARIANT_TABLE_FILE`, a table the benchmark writes
(``ultra-hstu bench fp8_gemm --variant-table``), keyed on the device's compute capability and
``(next_power_of_2(M), N, K)``; shapes the table does not hold take :func:`default_variant`.
Every rank sees the same shapes and the same file, so every rank runs the same kernel.  A caller
pins one with ``variant="pointer"`` or ``"tma"`` (``UltraHSTUEncoderConfig.fp8_gemm_variant``
in gin).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

VARIANTS = ("auto", "pointer", "tma")
VARIANT_TABLE_FILE = Path(__file__).with_name("variant_table.json")


def device_key(capability: tuple[int, int]) -> str:
    return f"sm{capability[0]}{capability[1]}"


def shape_key(M: int, N: int, K: int) -> str:
    # next power of two of M, as the autotune key buckets it
    return f"{1 << (max(M, 1) - 1).bit_length()}x{N}x{K}"


@functools.cache
def variant_table(path: Path = VARIANT_TABLE_FILE) -> dict[str, dict[str, str]]:
    """``{device key: {shape key: variant}}``; empty where no table was written."""
    if not path.exists():
        return {}
    table = json.loads(path.read_text())["table"]
    for device, shapes in table.items():
        for shape, variant in shapes.items():
            if variant not in VARIANTS[1:]:
                raise ValueError(f"{path}: {device} {shape} names unknown variant {variant!r}")
    return table


def default_variant(tma_applies: bool) -> str:
    """For shapes the table lacks: TMA where it applies (it won at every shape the benchmark
    measured on the H100 and H200, see benchmarks/results/fp8_gemm.md), else the pointer kernel."""
    return "tma" if tma_applies else "pointer"


def choose_variant(
    M: int, N: int, K: int, capability: tuple[int, int], tma_applies: bool, requested: str = "auto"
) -> str:
    """The kernel for a GEMM of ``[M, K] x [K, N]``: ``requested`` unless it is ``"auto"``."""
    if requested not in VARIANTS:
        raise ValueError(f"fp8 GEMM variant must be one of {VARIANTS}, got {requested!r}")
    if requested != "auto":
        return requested
    if not tma_applies:
        return "pointer"
    chosen = variant_table().get(device_key(capability), {}).get(shape_key(M, N, K))
    return chosen or default_variant(tma_applies)
