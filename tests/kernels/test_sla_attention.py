# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""SLA attention: Triton kernel vs the PyTorch reference, and checks.

On a GPU the kernel runs on the device; elsewhere under the interpreter, and
TRITON_INTERPRET must then be set before triton is imported (tests/conftest.py does it for
the session; it is repeated here so that this file also runs on its own).
"""

import os

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ultra_hstu_plugin.kernels import ops  # noqa: E402
from ultra_hstu_plugin.kernels.sla_attention import sla_attention  # noqa: E402
from ultra_hstu_plugin.kernels.sla_attention import triton_kernels as kernels  # noqa: E402
from ultra_hstu_plugin.kernels.sla_attention.mask import SLAMaskSpec  # noqa: E402
from ultra_hstu_plugin.kernels.sla_attention.reference import sla_attention_reference  # noqa: E402

pytestmark = pytest.mark.skipif(
    DEVICE == "cpu" and not ops.triton_interpreting(),
    reason="needs a GPU or TRITON_INTERPRET=1 set before triton import",
)

TOL = 1e-4  # relative to the reference's norm, float32


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / (want.double().norm() + 1e-30))


def _batch(lengths, H, D, Dv, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)
    total = int(offsets[-1])
    q = torch.randn(total, H, D, generator=g).to(dtype)
    k = torch.randn(total, H, D, generator=g).to(dtype)
    v = torch.randn(total, H, Dv, generator=g).to(dtype)
    dout = torch.randn(total, H, Dv, generator=g).to(dtype)
    return tuple(t.to(DEVICE) for t in (q, k, v, dout, offsets))


def _reference_with_grads(q, k, v, dout, offsets, N, alpha, spec, num_targets):
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = sla_attention_reference(*leaves, offsets, N, alpha, spec, num_targets)
    grads = torch.autograd.grad(out, leaves, dout)
    return out.detach(), grads


def _nan_like(t: torch.Tensor) -> torch.Tensor:
    return torch.full_like(t, float("nan"))


def _check_parity(lengths, spec, num_targets, H, D, Dv, config, alpha=0.4, slack=0):
    q, k, v, dout, offsets = _batch(lengths, H, D, Dv)
    N = max([1, *lengths]) + slack
    nt = None if num_targets is None else torch.tensor(num_targets, device=DEVICE)
    want, (gq, gk, gv) = _reference_with_grads(q, k, v, dout, offsets, N, alpha, spec, nt)
    # Poisoned buffers: a row the kernel forgets to write stays NaN and fails the test.
    out = kernels.sla_attention_triton_fwd(
        q, k, v, offsets, N, alpha, spec, nt, config=config, out=_nan_like(want)
    )
    grads = kernels.sla_attention_triton_bwd(
        dout, q, k, v, offsets, N, alpha, spec, nt, config=config,
        grads=(_nan_like(q), _nan_like(k), _nan_like(v)),
    )  # fmt: skip
    for name, got, ref in (("out", out, want), ("dq", grads[0], gq), ("dk", grads[1], gk),
                           ("dv", grads[2], gv)):  # fmt: skip
        assert not torch.isnan(got).any(), f"{name} has unwritten (NaN) entries"
        err = _rel_err(got, ref)
        assert err < TOL, f"{name}: relative error {err:.2e} (lengths={lengths}, {spec}, nt={nt})"


@st.composite
def _cases(draw):
    B = draw(st.integers(1, 4))
    lengths = draw(st.lists(st.sampled_from([0, 1, 2, 7, 16, 17, 31, 40, 64]) | st.integers(0, 64),
                            min_size=B, max_size=B))  # fmt: skip
    spec = SLAMaskSpec(
        k1=draw(st.sampled_from([0, 1, 3, 8, 16, 33])),
        k2=draw(st.sampled_from([0, 1, 5, 16, 20])),
        contextual_seq_len=draw(st.sampled_from([0, 0, 1, 4])),
        target_mode=draw(st.sampled_from(["window", "history"])),
        full_attn_tail=draw(st.sampled_from([0, 0, 2, 9])),
        contextual_in_prefix=draw(st.booleans()),
    )
    num_targets = None
    if draw(st.booleans()):
        num_targets = [draw(st.integers(0, min(length, 12))) for length in lengths]
    config = {
        "BLOCK_M": draw(st.sampled_from([16, 32])),
        "BLOCK_N": draw(st.sampled_from([16, 32])),
    }
    heads = draw(st.sampled_from([(1, 16, 16), (2, 16, 32), (1, 32, 16)]))
    return lengths, spec, num_targets, heads, config


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases())
def test_triton_matches_reference(case):
    lengths, spec, num_targets, (H, D, Dv), config = case
    _check_parity(lengths, spec, num_targets, H, D, Dv, config)


@pytest.mark.parametrize(
    "lengths, spec, num_targets",
    [
        ([64, 0, 33], SLAMaskSpec(k1=8, k2=16), None),  # window + prefix, empty sequence
        ([0, 0], SLAMaskSpec(k1=4), None),  # every sequence empty
        ([1], SLAMaskSpec(), None),  # L = 1
        ([50, 9], SLAMaskSpec(k1=5, k2=3, contextual_seq_len=6), [12, 9]),  # all candidates
        # More targets than history: ids collapse (max_id < 0 once contextual is counted).
        ([20], SLAMaskSpec(k1=2, contextual_seq_len=8, target_mode="history"), [17]),
        # Candidates overlap the contextual tokens (num_targets > L - c): every row still sees
        # itself (GR's pytorch_hstu_mha gives 1.2471 for this one-token case; we gave 0).
        ([1], SLAMaskSpec(contextual_seq_len=1), [1]),
        ([5, 3], SLAMaskSpec(k1=1, contextual_seq_len=4), [3, 3]),
        # GR's contextual convention: contextual keys reached through the window only.
        ([64, 40], SLAMaskSpec(k1=8, contextual_seq_len=6, contextual_in_prefix=False), [4, 0]),
        ([70], SLAMaskSpec(k1=3, k2=20, contextual_seq_len=5, contextual_in_prefix=False), [2]),
        ([48], SLAMaskSpec(k1=3, k2=2, full_attn_tail=6, target_mode="window"), [10]),
    ],
)
def test_triton_edge_cases(lengths, spec, num_targets):
    _check_parity(lengths, spec, num_targets, 2, 16, 16, {"BLOCK_M": 16, "BLOCK_N": 32}, slack=3)


def test_no_sequences():
    q, k, v, dout, _ = _batch([], 2, 16, 16)
    out = sla_attention(q, k, v, torch.zeros(1, dtype=torch.int64, device=DEVICE), 4, 0.5, SLAMaskSpec(k1=2),
                        backend="triton")  # fmt: skip
    assert out.shape == (0, 2, 16)


@pytest.mark.parametrize("backend", ["pytorch", "triton"])
def test_public_op_autograd(backend):
    lengths, spec, nt = [30, 0, 21], SLAMaskSpec(k1=6, k2=4, contextual_seq_len=2), [3, 0, 5]
    nt = torch.tensor(nt, dtype=torch.int32, device=DEVICE)
    q, k, v, dout, offsets = _batch(lengths, 2, 32, 32, seed=3)
    offsets = offsets.to(torch.int32)
    want, grads_want = _reference_with_grads(q, k, v, dout, offsets, 32, 0.7, spec, nt)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = sla_attention(*leaves, offsets, 32, 0.7, spec, nt, backend=backend, debug_checks=True)
    out.backward(dout)
    assert _rel_err(out.detach(), want) < TOL
    for leaf, g in zip(leaves, grads_want):
        assert _rel_err(leaf.grad, g) < TOL


def test_strided_qkv_from_a_fused_projection():
    # The layer hands q, k, v over as column slices of one [N, H*(2D + Dv)] projection:
    # the kernels read them in place (no copies), so every stride must be honoured.
    lengths, spec, nt = [37, 5, 20], SLAMaskSpec(k1=6, k2=3, contextual_seq_len=2), [4, 1, 0]
    nt = torch.tensor(nt, device=DEVICE)
    H, D, Dv = 2, 16, 32
    g = torch.Generator().manual_seed(11)
    fused = torch.randn(sum(lengths), H * (2 * D + Dv), generator=g).to(DEVICE)
    q, k, v = torch.split(fused, [H * D, H * D, H * Dv], dim=1)
    q, k, v = q.view(-1, H, D), k.view(-1, H, D), v.view(-1, H, Dv)
    assert not q.is_contiguous() and q.stride(-1) == 1
    _, _, _, dout, offsets = _batch(lengths, H, D, Dv, seed=12)
    want, (gq, gk, gv) = _reference_with_grads(q, k, v, dout, offsets, 40, 0.5, spec, nt)
    config = {"BLOCK_M": 16, "BLOCK_N": 16}
    out = kernels.sla_attention_triton_fwd(
        q, k, v, offsets, 40, 0.5, spec, nt, config=config, out=_nan_like(want)
    )
    grads = kernels.sla_attention_triton_bwd(
        dout, q, k, v, offsets, 40, 0.5, spec, nt, config=config,
        grads=(_nan_like(gq), _nan_like(gk), _nan_like(gv)),
    )  # fmt: skip
    for got, ref in zip((out, *grads), (want, gq, gk, gv)):
        assert not torch.isnan(got).any()
        assert _rel_err(got, ref) < TOL


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_fp32_reference(dtype):
    q, k, v, dout, offsets = _batch([40, 24], 1, 32, 32, seed=5)
    spec = SLAMaskSpec(k1=8, k2=4)
    want, grads_want = _reference_with_grads(q, k, v, dout, offsets, 40, 0.3, spec, None)
    leaves = [t.to(dtype).requires_grad_(True) for t in (q, k, v)]
    got = sla_attention(*leaves, offsets, 40, 0.3, spec, backend="triton")
    got.backward(dout.to(dtype))
    assert got.dtype == dtype
    assert _rel_err(got.float(), want) < 2e-2
    for leaf, g in zip(leaves, grads_want):
        assert leaf.grad.dtype == dtype and _rel_err(leaf.grad.float(), g) < 2e-2


def test_fake_impl_opcheck():
    """Schema, fake (meta) impl, autograd registration and AOT dispatch of the op."""
    q, k, v, _, offsets = _batch([5, 0, 7], 2, 16, 16, dtype=torch.float64)
    nt = torch.tensor([1, 0, 2], device=DEVICE)
    for t in (q, k, v):
        t.requires_grad_(True)
    args = (q, k, v, offsets, nt, 8, 0.5, 2, 1, 1, "window", 0, True, "pytorch")
    torch.library.opcheck(torch.ops.ultra_hstu.sla_attention_fwd.default, args)


def test_torch_compile_triton_backend():
    q, k, v, dout, offsets = _batch([12, 0, 20], 2, 16, 16, seed=7)
    spec = SLAMaskSpec(k1=3, k2=2)

    def f(a, b, c):
        return sla_attention(a, b, c, offsets, 20, 0.5, spec, backend="triton")

    compiled = torch.compile(f, backend="eager", fullgraph=True)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = compiled(*leaves)
    out.backward(dout)
    want, grads_want = _reference_with_grads(q, k, v, dout, offsets, 20, 0.5, spec, None)
    assert _rel_err(out.detach(), want) < TOL
    assert _rel_err(leaves[0].grad, grads_want[0]) < TOL


# --------------------------------------------------------------------------------------
# Bad inputs: one clear ValueError naming the bad value, before any launch
# --------------------------------------------------------------------------------------


def _good(**overrides):
    q, k, v, _, offsets = _batch([5, 3], 2, 16, 16)
    args = {"q": q, "k": k, "v": v, "seq_offsets": offsets, "max_seq_len": 8, "alpha": 0.5,
            "spec": SLAMaskSpec(k1=2), "num_targets": None, "backend": "triton",
            # the O(B) offsets checks read offsets on the host: always on CPU, debug mode on CUDA
            "debug_checks": True}  # fmt: skip
    args.update(overrides)
    return args


def _bad_cases():
    q, k, v, _, offsets = _batch([5, 3], 2, 16, 16)
    return [
        ({"seq_offsets": torch.tensor([0, 9, 8], device=DEVICE)}, "decreases at index 2"),
        ({"seq_offsets": torch.tensor([0, 5, 7], device=DEVICE)}, "ends at 7"),
        ({"seq_offsets": torch.tensor([1, 5, 8], device=DEVICE)}, "start at 0, got 1"),
        ({"seq_offsets": torch.tensor([0.0, 5.0, 8.0], device=DEVICE)}, "torch.float32"),
        ({"max_seq_len": 4}, "length 5, above max_seq_len=4"),
        ({"num_targets": torch.tensor([6, 0], device=DEVICE)}, "num_targets[0]=6"),
        ({"num_targets": torch.tensor([1, 0, 0], device=DEVICE)}, "num_targets has 3 entries"),
        ({"q": q[..., :8], "k": k[..., :8]}, "D (q/k head dim) = 8"),
        ({"v": torch.randn(8, 2, 48, device=DEVICE)}, "Dv (v head dim) = 48"),
        ({"q": q.double(), "k": k.double(), "v": v.double()}, "torch.float64"),
        ({"k": k.half()}, "torch.float16"),
        ({"q": q.to("meta")}, "q on meta"),
        ({"k": k[:, :1]}, "(8, 1, 16)"),
        ({"v": v[:7]}, "(7, 2, 16)"),
        ({"q": q[0]}, "(2, 16)"),
        ({"backend": "cuda"}, "'cuda'"),
        ({"spec": (2, 0)}, "tuple"),
    ]


@pytest.mark.parametrize("overrides, message", _bad_cases())
def test_bad_inputs(overrides, message):
    with pytest.raises(ValueError) as err:
        sla_attention(**_good(**overrides))
    assert message in str(err.value)


def test_negative_window_rejected():
    with pytest.raises(ValueError, match="k1 must be a non-negative int, got -1"):
        SLAMaskSpec(k1=-1)
    with pytest.raises(ValueError, match="k2 must be a non-negative int, got -3"):
        SLAMaskSpec(k2=-3)


@pytest.mark.skipif(DEVICE == "cuda", reason="about CPU tensors on a machine without a GPU")
def test_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setattr(ops, "triton_interpreting", lambda: False)
    with pytest.raises(ValueError, match="backend='pytorch'.*TRITON_INTERPRET=1"):
        sla_attention(**_good())


def test_malformed_offsets_never_read_outside_the_tensors():
    """The kernels clamp offsets to [0, total] and lengths to max_seq_len: a batch whose
    offsets run past the end or go negative is computed as if cut at the tensors' edges, and
    one whose offsets decrease gives wrong (finite) numbers, never an access outside
    q/k/v/out (such batches are rejected on the CPU before the device, see
    train/batch_checks.py; on the GPU compute-sanitizer checks these calls:
    benchmarks/sla_bad_offsets.py, benchmarks/results/sanitizer_h200.txt)."""
    q, k, v, dout, _ = _batch([12], 1, 16, 16, seed=3)
    spec = SLAMaskSpec(k1=3, k2=2)
    # past the end (40 > 12 rows) then negative: as if the offsets were [0, 9, 9, 12, 12]
    past = torch.tensor([0, 9, 9, 40, -5], device=DEVICE)
    out = kernels.sla_attention_triton_fwd(q, k, v, past, 16, 0.4, spec, out=_nan_like(q))
    dq, dk, dv = kernels.sla_attention_triton_bwd(dout, q, k, v, past, 16, 0.4, spec)
    cut = torch.tensor([0, 9, 9, 12, 12], device=DEVICE)
    want, want_grads = _reference_with_grads(q, k, v, dout, cut, 16, 0.4, spec, None)
    assert _rel_err(out, want) < TOL
    for got, ref in zip((dq, dk, dv), want_grads):
        assert _rel_err(got, ref) < TOL
    # decreasing offsets: sequences overlap, the numbers are wrong but finite
    down = torch.tensor([0, 9, 4, 12], device=DEVICE)
    out = kernels.sla_attention_triton_fwd(q, k, v, down, 16, 0.4, spec)
    grads = kernels.sla_attention_triton_bwd(dout, q, k, v, down, 16, 0.4, spec)
    assert all(torch.isfinite(t).all() for t in (out, *grads))


def test_fp32_dot_precision_follows_grs_tf32_flag_on_cuda_only():
    """GR's kernels pass torch.backends.cuda.matmul.allow_tf32 as ALLOW_TF32; ours do the same
    on CUDA, and stay exact where the reference comparison runs (CPU, the interpreter)."""
    from ultra_hstu_plugin.kernels.sla_attention.triton_kernels import dot_precision

    # set and restored by hand: the flag is a property of torch's cuBLAS module object, which
    # pytest's monkeypatch cannot always read back (it then tries to delete it)
    matmul = torch.backends.cuda.matmul
    saved = matmul.allow_tf32
    try:
        matmul.allow_tf32 = True
        assert dot_precision(torch.zeros(2, 1, 16)) == "ieee"
        assert dot_precision(torch.zeros(2, 1, 16, dtype=torch.bfloat16)) == "tf32"
        if torch.cuda.is_available():
            q = torch.zeros(2, 1, 16, device="cuda")
            assert dot_precision(q) == "tf32"
            matmul.allow_tf32 = False
            assert dot_precision(q) == "ieee"
    finally:
        matmul.allow_tf32 = saved
