# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Working around the CPU interpreter's narrowing casts, for every kernel here.

triton 3.9's interpreter (``TRITON_INTERPRET=1``, how the tests run Triton kernels on CPU)
rounds fp32 -> e4m3 and fp32 -> bf16 wrongly (it maps 124.3 to 64 in e4m3, and truncates to
bf16).  Its cast of an already representable value is exact, so a kernel under it first rounds
to the target grid in fp32 (:func:`round_to_grid`) when :func:`casts_need_fixing` says so;
compiled kernels never take that branch.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl


@triton.jit
def round_to_grid(v, MANT_BITS: tl.constexpr, MIN_ULP_BIASED_EXP: tl.constexpr):
    """Round fp32 ``v`` to the nearest value with MANT_BITS mantissa bits, ties to even, in fp32
    (e4m3: ``3, 127 - 9``; bf16: ``7, 1``)."""
    biased_exp = (v.to(tl.int32, bitcast=True) >> 23) & 0xFF
    # Spacing 2^(e - MANT_BITS), but no finer than the format's smallest (subnormal) step.
    ulp_exp = tl.maximum(biased_exp - MANT_BITS, MIN_ULP_BIASED_EXP)
    ulp = (ulp_exp << 23).to(tl.float32, bitcast=True)
    # Adding and subtracting 1.5 * 2^23 rounds |t| < 2^22 to an integer, ties to even.  Done on
    # |v| and the sign put back, so tiny negatives round to -0 as the hardware cast does.
    t = tl.abs(v) / ulp
    r = ((t + 12582912.0) - 12582912.0) * ulp
    return tl.where(v < 0, -r, r)


@triton.jit
def _cast_probe_kernel(x_ptr, q_ptr, h_ptr):
    offs = tl.arange(0, 64)
    x = tl.load(x_ptr + offs)
    tl.store(q_ptr + offs, x.to(q_ptr.dtype.element_ty))
    tl.store(h_ptr + offs, x.to(h_ptr.dtype.element_ty))


@functools.cache
def casts_need_fixing() -> bool:
    """Whether the CPU interpreter's fp32 -> e4m3 or fp32 -> bf16 cast disagrees with PyTorch's
    (round to nearest even); probed once per process.  Call it only under the interpreter."""
    # Values just under a power of two (rounding carries into the exponent) and exact ties.
    x = torch.linspace(-440.0, 440.0, 64) + 0.37
    x[:8] = torch.tensor([124.33, -125.77, 7.86, 0.2471, 100.0, 336.0, -31.18, 1.0e-3])
    q = torch.empty(64, dtype=torch.float8_e4m3fn)
    h = torch.empty(64, dtype=torch.bfloat16)
    _cast_probe_kernel[(1,)](x, q, h)
    fp8_ok = torch.equal(q.float(), x.to(torch.float8_e4m3fn).float())
    return not (fp8_ok and torch.equal(h, x.to(torch.bfloat16)))
