# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Malformed jagged inputs through the SLA kernels on the GPU, for compute-sanitizer:

    compute-sanitizer --tool memcheck python benchmarks/sla_bad_offsets.py

Offsets past the end, negative, decreasing; num_targets above the lengths and negative.  The
kernels clamp what they read (``_sequence`` in kernels/sla_attention/triton_kernels.py), so
memcheck must report no error (set PYTORCH_NO_CUDA_MEMORY_CACHING=1, or the caching
allocator's pool hides out-of-tensor accesses).  Fixed tile configs: autotuning under the sanitizer is slow.
"""

import torch

from ultra_hstu_plugin.kernels.sla_attention import SLAMaskSpec
from ultra_hstu_plugin.kernels.sla_attention import triton_kernels as kernels

torch.manual_seed(0)
dev = "cuda"
total, H, D = 300, 2, 64
q, k, v, dout = (torch.randn(total, H, D, device=dev, dtype=torch.bfloat16) for _ in range(4))
cases = {
    "past the end, negative": (torch.tensor([0, 100, 100, 900, -7], device=dev), None),
    "decreasing": (torch.tensor([0, 200, 50, 300], device=dev), None),
    "targets above lengths": (
        torch.tensor([0, 120, 300], device=dev),
        torch.tensor([500, -3], device=dev),
    ),
}
specs = [SLAMaskSpec(k1=16, k2=4), SLAMaskSpec(k1=8, contextual_seq_len=3, target_mode="history")]
for name, (offsets, num_targets) in cases.items():
    for spec in specs:
        for cfg in ({"BLOCK_M": 64, "BLOCK_N": 64}, {"BLOCK_M": 32, "BLOCK_N": 64}):
            out = kernels.sla_attention_triton_fwd(
                q, k, v, offsets, 256, 0.5, spec, num_targets, config=cfg
            )
            grads = kernels.sla_attention_triton_bwd(
                dout, q, k, v, offsets, 256, 0.5, spec, num_targets, config=cfg
            )
            torch.cuda.synchronize()
            finite = all(bool(torch.isfinite(t).all()) for t in (out, *grads))
            print(f"{name:24s} {spec.k1:3d} {spec.target_mode:8s} {cfg} finite={finite}")
print("done")
