# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Semi-local attention on a jagged batch, with no GR involved.

python examples/sla_attention.py
"""

import torch

from ultra_hstu_plugin.kernels.sla_attention import sla_attention
from ultra_hstu_plugin.kernels.sla_attention.mask import SLAMaskSpec

lengths = torch.tensor([7, 0, 12])
offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
q, k, v = (torch.randn(int(offsets[-1]), 2, 32) for _ in range(3))
spec = SLAMaskSpec(k1=4, k2=2, target_mode="history")
backend = "triton" if torch.cuda.is_available() else "pytorch"
if backend == "triton":
    q, k, v, offsets = (
        t.cuda().to(torch.bfloat16) if t.is_floating_point() else t.cuda()
        for t in (q, k, v, offsets)
    )
out = sla_attention(
    q,
    k,
    v,
    offsets,
    max_seq_len=16,
    alpha=1 / 32**0.5,
    spec=spec,
    num_targets=torch.tensor([2, 0, 3], device=q.device),
    backend=backend,
)
print(backend, out.shape)
