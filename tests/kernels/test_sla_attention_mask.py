# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Properties of the SLA mask definition, and the picture in its docstring."""

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ultra_hstu_plugin.kernels.sla_attention import mask as sla_mask_module
from ultra_hstu_plugin.kernels.sla_attention.mask import SLAMaskSpec, sla_mask


def _picture_from_docstring() -> torch.Tensor:
    pattern = r"^\s+(?:row\s+)?\w+\s*:\s((?:[x.]\s+){8}[x.])"
    rows = re.findall(pattern, sla_mask_module.__doc__, re.M)
    assert len(rows) == 9, rows
    return torch.tensor([[c == "x" for c in r.split()] for r in rows])


def test_docstring_picture_is_the_mask():
    spec = SLAMaskSpec(k1=2, k2=2, contextual_seq_len=1, target_mode="window")
    mask = sla_mask(torch.tensor([9]), 9, spec, torch.tensor([2]))[0]
    assert torch.equal(mask, _picture_from_docstring())


@st.composite
def batches(draw):
    B = draw(st.integers(1, 4))
    c = draw(st.integers(0, 3))
    lengths = [draw(st.integers(0, 24)) for _ in range(B)]
    lengths = [max(n, c) if n > 0 else 0 for n in lengths]
    targets = [draw(st.integers(0, max(0, n - c))) if n > 0 else 0 for n in lengths]
    spec = SLAMaskSpec(
        k1=draw(st.integers(0, 6)),
        k2=draw(st.integers(0, 6)),
        contextual_seq_len=c,
        target_mode=draw(st.sampled_from(["window", "history"])),
        full_attn_tail=draw(st.integers(0, 3)),
    )
    return torch.tensor(lengths), torch.tensor(targets), spec


@settings(max_examples=150, deadline=None)
@given(batches())
def test_mask_invariants(batch):
    lengths, targets, spec = batch
    N = max(int(lengths.max()), 1)
    mask = sla_mask(lengths, N, spec, targets)
    for b in range(lengths.numel()):
        L, T, c = int(lengths[b]), int(targets[b]), spec.contextual_seq_len
        m = mask[b]
        assert not m[L:].any() and not m[:, L:].any(), "padding must be masked"
        for r in range(L):
            assert m[r, r], "every row sees itself"
            cand_r = r >= L - T
            for j in range(L):
                if j >= L - T and j != r:
                    assert not m[r, j], "nobody sees another candidate"
                if r >= c and not cand_r and j > r:
                    assert not m[r, j], "history rows are causal"
                if c <= j < L - T and j < spec.prefix_len and r > j:
                    assert m[r, j], "the global prefix is seen by every later row"
                if j < c and r >= c:
                    assert m[r, j], "contextual tokens are global"
            if r < c:
                assert m[r, : L - T].all(), "contextual rows see the whole history"
            if cand_r and spec.target_mode == "history":
                assert m[r, : L - T].all(), "history mode: candidates see all history"
        if spec.k1 == 0:
            causal = torch.ones(L, L, dtype=torch.bool).tril()
            hist = slice(c, L - T)
            assert torch.equal(m[hist, hist], causal[hist, hist]), "k1=0 is full causal"


def test_window_is_k1_earlier_tokens():
    spec = SLAMaskSpec(k1=3)
    m = sla_mask(torch.tensor([10]), 10, spec)[0]
    assert m[9].nonzero().flatten().tolist() == [6, 7, 8, 9]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k1": -1}, "k1"),
        ({"k2": -2}, "k2"),
        ({"contextual_seq_len": -1}, "contextual_seq_len"),
        ({"full_attn_tail": 1.5}, "full_attn_tail"),
        ({"target_mode": "all"}, "target_mode"),
    ],
)
def test_bad_spec_names_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SLAMaskSpec(**kwargs)
