# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""FP8 (e4m3) rowwise GEMM with a fused 2D bias: the one home of FP8 in the plugin.

reference.py       PyTorch reference of every op (any device)
triton_kernels.py  quantisers and the one-program-a-tile GEMM ("pointer")
tma_kernels.py     the persistent TMA GEMM (Hopper+, "tma")
variants.py        which GEMM kernel a shape runs (a table, the same on every rank)
op.py              custom ops ultra_hstu::fp8_addmm / quantize_rowwise /
                   layer_norm_quantize_rowwise and the public functions
autograd.py        FP8 forward, bf16 backward: FP8LinearFunction, fp8_uvqk, fp8_output, hstu_output
linear.py          FP8Linear, a drop-in nn.Linear
"""

from ultra_hstu_plugin.kernels.fp8_gemm.autograd import (
    FP8LinearFunction,
    NormMulDropoutKernels,
    fp8_output,
    fp8_uvqk,
    hstu_output,
)
from ultra_hstu_plugin.kernels.fp8_gemm.linear import FP8Linear
from ultra_hstu_plugin.kernels.fp8_gemm.op import (
    BACKENDS,
    VARIANTS,
    cuda_capability,
    fp8_addmm,
    fp8_supported,
    layer_norm_quantize_rowwise,
    quantize_rowwise,
    quantize_weight,
    quantize_weight_in_out,
)
from ultra_hstu_plugin.kernels.fp8_gemm.reference import FP8_DTYPE

__all__ = [
    "BACKENDS",
    "FP8Linear",
    "FP8LinearFunction",
    "FP8_DTYPE",
    "NormMulDropoutKernels",
    "VARIANTS",
    "cuda_capability",
    "fp8_addmm",
    "fp8_output",
    "fp8_supported",
    "fp8_uvqk",
    "hstu_output",
    "layer_norm_quantize_rowwise",
    "quantize_rowwise",
    "quantize_weight",
    "quantize_weight_in_out",
]
