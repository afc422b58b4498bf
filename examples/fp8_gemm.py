# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The FP8 rowwise GEMM with a fused 2D bias (the residual), and FP8Linear, with no GR involved.

python examples/fp8_gemm.py

On an FP8 GPU (sm89+) this runs the Triton kernels; elsewhere the PyTorch reference
(``backend="pytorch"``), which computes the same function.
"""

import torch

from ultra_hstu_plugin.kernels.fp8_gemm import (
    fp8_addmm,
    fp8_supported,
    layer_norm_quantize_rowwise,
    quantize_rowwise,
    quantize_weight,
)
from ultra_hstu_plugin.kernels.fp8_gemm.linear import FP8Linear

device = "cuda" if fp8_supported("cuda") else "cpu"
backend = "triton" if device == "cuda" else "pytorch"
M, K, N = 1000, 256, 512
x = torch.randn(M, K, device=device, dtype=torch.bfloat16)
w = torch.randn(N, K, device=device, dtype=torch.bfloat16) / K**0.5  # nn.Linear layout [out, in]
residual = torch.randn(M, N, device=device, dtype=torch.bfloat16)

x_fp8, x_scale = quantize_rowwise(x, backend=backend)  # one fp32 scale a row
w_fp8, w_scale = quantize_weight(w)  # one scale an output channel
y = fp8_addmm(x_fp8, x_scale, w_fp8, w_scale, bias2d=residual, backend=backend)
exact = residual.float() + x.float() @ w.float().t()
print(
    f"fp8_addmm: {tuple(y.shape)} {y.dtype}, rel. error vs fp32 {float((y - exact).norm() / exact.norm()):.3f}"
)

# LayerNorm fused into the quantiser (what the layer's uvqk projection uses)
ln_w, ln_b = torch.ones(K, device=device), torch.zeros(K, device=device)
q, s = layer_norm_quantize_rowwise(x, ln_w, ln_b, eps=1e-6, backend=backend)
print(f"layer_norm_quantize_rowwise: codes {tuple(q.shape)} {q.dtype}, scales {tuple(s.shape)}")

# FP8Linear: a drop-in nn.Linear whose forward runs the FP8 GEMM where the GPU has FP8
# (elsewhere it says so once and runs the plain path); backward in bf16.
lin = FP8Linear(K, N, device=device, dtype=torch.bfloat16)
out = lin(x, residual=residual)
out.float().sum().backward()
print(f"FP8Linear: {tuple(out.shape)}, weight grad {tuple(lin.weight.grad.shape)}")
