# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The padded reference equals a per-sequence loop written straight from the formula."""

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ultra_hstu_plugin.kernels.sla_attention.mask import SLAMaskSpec, sla_mask
from ultra_hstu_plugin.kernels.sla_attention.reference import sla_attention_reference


def _loop_reference(q, k, v, offsets, N, alpha, spec, targets):
    out = torch.full((q.shape[0], q.shape[1], v.shape[2]), float("nan"), dtype=torch.float64)
    for b in range(offsets.numel() - 1):
        s, e = int(offsets[b]), int(offsets[b + 1])
        if e == s:
            continue
        L = e - s
        m = sla_mask(torch.tensor([L]), L, spec, targets[b : b + 1])[0].double()
        for h in range(q.shape[1]):
            a = F.silu(q[s:e, h].double() @ k[s:e, h].double().T * alpha) / N
            out[s:e, h] = (a * m) @ v[s:e, h].double()
    return out


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 20), min_size=1, max_size=4),
    k1=st.integers(0, 5),
    k2=st.integers(0, 4),
    mode=st.sampled_from(["window", "history"]),
    seed=st.integers(0, 2**16),
)
def test_reference_matches_loop(lengths, k1, k2, mode, seed):
    g = torch.Generator().manual_seed(seed)
    lengths_t = torch.tensor(lengths)
    targets = torch.minimum(torch.randint(0, 4, (len(lengths),), generator=g), lengths_t)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths_t.cumsum(0)])
    total, H, D = int(offsets[-1]), 2, 4
    q, k, v = (torch.randn(total, H, D, generator=g) for _ in range(3))
    N = max(lengths) + 2
    spec = SLAMaskSpec(k1=k1, k2=k2, target_mode=mode)
    got = sla_attention_reference(q, k, v, offsets, N, 0.5, spec, targets)
    want = _loop_reference(q, k, v, offsets, N, 0.5, spec, targets)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
