# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""FP8 rowwise GEMM (fused 2D/1D bias), its quantiser, API checks and FP8Linear.

Without a GPU the Triton kernels run in triton's CPU interpreter: TRITON_INTERPRET must be set
before the kernel module is imported (tests/conftest.py does it; done here too for direct runs,
reloading the module if something imported it before).  With an FP8 GPU they run for real.
"""

import logging
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from ultra_hstu_plugin.kernels import ops  # noqa: E402
from ultra_hstu_plugin.kernels.fp8_gemm import (  # noqa: E402
    fp8_addmm,
    fp8_supported,
    layer_norm_quantize_rowwise,
    quantize_rowwise,
    quantize_weight,
    quantize_weight_in_out,
)
from ultra_hstu_plugin.kernels.fp8_gemm import linear as fp8_linear  # noqa: E402
from ultra_hstu_plugin.kernels.fp8_gemm import triton_kernels as kern  # noqa: E402
from ultra_hstu_plugin.kernels.fp8_gemm.linear import FP8Linear, FP8LinearFunction  # noqa: E402
from ultra_hstu_plugin.kernels.fp8_gemm.reference import (  # noqa: E402
    fp8_addmm_reference,
    layer_norm_quantize_rowwise_reference,
    quantize_rowwise_reference,
    quantize_weight_in_out_reference,
)

DEVICE = "cuda" if fp8_supported("cuda") else "cpu"
needs_kernel = pytest.mark.skipif(
    DEVICE == "cpu" and not ops.triton_interpreting(),
    reason="needs an FP8 GPU or TRITON_INTERPRET=1",
)

FP8 = torch.float8_e4m3fn
BF16_ULP = 2.0**-7  # bf16 relative spacing (8 significant bits)


def _rand(*shape, dtype=torch.bfloat16, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype).to(DEVICE)


def _operands(M, K, N, seed=0, zero_rows=(), huge_rows=()):
    x = _rand(M, K, seed=seed, scale=3.0)
    for r in zero_rows:
        x[r] = 0.0
    for r in huge_rows:
        x[r] *= 1e30  # far past e4m3's range: must clamp, never inf
    w = _rand(N, K, seed=seed + 1, scale=K**-0.5)
    return x, w


def _poisoned(M, N):
    return torch.full((M, N), float("nan"), dtype=torch.bfloat16, device=DEVICE)


def _rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


# --------------------------------------------------------------------------------------------
# Quantiser
# --------------------------------------------------------------------------------------------


@needs_kernel
@pytest.mark.parametrize("M,K", [(1, 16), (37, 64), (64, 200), (5, 1024)])
def test_quantize_matches_reference_bitwise(M, K):
    x = _rand(M, K, scale=5.0, seed=M + K)
    x[0] = 0.0
    q, s = quantize_rowwise(x)
    q_ref, s_ref = quantize_rowwise_reference(x)
    assert q.dtype == FP8 and s.dtype == torch.float32 and s.shape == (M,)
    assert torch.equal(s, s_ref)
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))


@needs_kernel
def test_quantize_zero_and_huge_rows():
    x = _rand(6, 64, seed=3)
    x[0] = 0.0
    x[1] *= 1e30
    x[2] = 1e-30  # tiny but non-zero
    q, s = quantize_rowwise(x)
    assert (s > 0).all() and torch.isfinite(s).all()
    qf = q.float()
    assert torch.isfinite(qf).all()
    assert (qf[0] == 0).all()
    assert qf.abs().max() <= 448.0
    # Each row's amax maps to the top of the e4m3 range.
    assert torch.equal(qf[1].abs().max(), torch.tensor(448.0, device=DEVICE))


@needs_kernel
@settings(max_examples=10, deadline=None)
@given(
    M=st.integers(1, 40),
    k16=st.integers(1, 8),
    log_scale=st.floats(-20, 20),
    seed=st.integers(0, 2**16),
)
def test_quantize_property(M, k16, log_scale, seed):
    x = _rand(M, 16 * k16, scale=10.0**log_scale, seed=seed)
    q, s = quantize_rowwise(x)
    q_ref, s_ref = quantize_rowwise_reference(x)
    assert torch.equal(s, s_ref)
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))
    # Dequantised values are within e4m3's half-spacing (2^-4 relative) of the input.
    deq = q.float() * s[:, None]
    err = (deq - x.float()).abs()
    assert (err <= 2.0**-4 * x.float().abs() + 2.0**-9 * 448 * s[:, None]).all()


@needs_kernel
def test_quantize_long_rows_take_the_looped_kernel(monkeypatch):
    # Rows longer than MAX_REGISTER_ROW are quantised in two passes; shrink the limit so a
    # small row exercises that kernel, including a K tail that is not a multiple of BLOCK_K.
    monkeypatch.setattr(kern, "MAX_REGISTER_ROW", 32)
    monkeypatch.setattr(kern, "LOOPED_BLOCK_K", 32)
    x = _rand(9, 80, scale=4.0, seed=11)
    x[3] = 0.0
    q, s = quantize_rowwise(x)
    q_ref, s_ref = quantize_rowwise_reference(x)
    assert torch.equal(s, s_ref)
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("K,N", [(64, 40), (100, 17), (16, 130)])
@pytest.mark.parametrize("layout", ["in_out", "linear_transposed"])
def test_quantize_weight_in_out_matches_reference_bitwise(K, N, dtype, layout):
    # GR's [in, out] weight -> bf16 copy, per-output-channel fp8 [out, in] and scales, in one
    # kernel: bit for bit the cast, transpose and quantiser done separately.  Also for an
    # nn.Linear [out, in] weight passed as its transposed view (FP8Linear does that).
    if layout == "in_out":
        w = _rand(K, N, dtype=dtype, scale=0.3, seed=K * N)
    else:
        w = _rand(N, K, dtype=dtype, scale=0.3, seed=K * N).t()
    w[:, 3] = 0.0  # an all-zero output channel
    q, s, w_bf16 = quantize_weight_in_out(w)
    q_ref, s_ref, w_bf16_ref = quantize_weight_in_out_reference(w)
    assert q.shape == (N, K) and q.is_contiguous() and s.shape == (N,)
    assert torch.equal(w_bf16, w_bf16_ref)
    assert torch.equal(s, s_ref)
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))
    assert (q[3].float() == 0).all()
    if dtype == torch.bfloat16:
        assert w_bf16.data_ptr() == w.data_ptr()  # no copy when the weight is bf16 already
    # and it is the quantiser applied to the transposed bf16 weight
    q2, s2 = quantize_rowwise_reference(w.to(torch.bfloat16).t().contiguous())
    assert torch.equal(q.view(torch.uint8), q2.view(torch.uint8)) and torch.equal(s, s2)


# --------------------------------------------------------------------------------------------
# LayerNorm fused with the quantiser
# --------------------------------------------------------------------------------------------


def _ln_params(K, seed):
    return _rand(K, scale=1.0, seed=seed) + 1.0, _rand(K, scale=0.5, seed=seed + 1)


def _assert_ln_quant_close(q, s, q_ref, s_ref):
    """Fused kernel vs reference: the LayerNorm statistics are summed in a different order,
    so scales agree to fp32 rounding and a code may sit one e4m3 step away, rarely."""
    torch.testing.assert_close(s, s_ref, rtol=1e-5, atol=0)
    deq, deq_ref = q.float() * s[:, None], q_ref.float() * s_ref[:, None]
    step = 2.0**-3 * deq_ref.abs() + 2.0**-9 * s_ref[:, None] * 448  # one e4m3 spacing
    assert ((deq - deq_ref).abs() <= step * 1.01).all()
    assert (q.view(torch.uint8) != q_ref.view(torch.uint8)).float().mean() < 0.01


@needs_kernel
@settings(max_examples=12, deadline=None)
@given(M=st.integers(1, 40), K=st.sampled_from([16, 48, 64, 96, 256]), seed=st.integers(0, 999))
def test_layer_norm_quantize_matches_reference(M, K, seed):
    x = _rand(M, K, scale=3.0, seed=seed) + 0.5
    w, b = _ln_params(K, seed)
    q, s = layer_norm_quantize_rowwise(x, w, b, 1e-6)
    assert q.dtype == FP8 and s.shape == (M,)
    q_ref, s_ref = layer_norm_quantize_rowwise_reference(x, w, b, 1e-6)
    _assert_ln_quant_close(q, s, q_ref, s_ref)
    # and the reference is a LayerNorm: dequantised rows are within e4m3 error of F.layer_norm
    ln = torch.nn.functional.layer_norm(x.float(), (K,), w.float(), b.float(), 1e-6)
    deq = q.float() * s[:, None]
    assert ((deq - ln).abs() <= 2.0**-4 * ln.abs() + 2.0**-9 * 448 * s[:, None] + 1e-6).all()


@needs_kernel
def test_layer_norm_quantize_constant_rows_give_the_bias():
    # A constant row normalises to exactly 0, so it quantises to the bias alone; zero weight
    # and bias give an all-zero row, which must not produce NaN.
    K = 64
    x = _rand(4, K, seed=5)
    x[1] = 7.0
    w, b = _ln_params(K, 5)
    q, s = layer_norm_quantize_rowwise(x, w, b, 1e-6)
    deq = q.float() * s[:, None]
    assert torch.isfinite(deq).all()
    b_q, b_s = quantize_rowwise_reference(b.float()[None, :])
    torch.testing.assert_close(deq[1], (b_q.float() * b_s[:, None])[0], rtol=1e-5, atol=1e-6)
    q0, s0 = layer_norm_quantize_rowwise(x, torch.zeros_like(w), torch.zeros_like(b), 1e-6)
    assert (q0.float() == 0).all() and (s0 > 0).all()


@needs_kernel
def test_layer_norm_quantize_bad_inputs():
    x = _rand(4, 64)
    w, b = _ln_params(64, 0)
    with pytest.raises(ValueError, match=r"LayerNorm weight must have shape \(64,\)"):
        layer_norm_quantize_rowwise(x, w[:32], b)
    with pytest.raises(TypeError, match="LayerNorm bias must have a dtype"):
        layer_norm_quantize_rowwise(x, w, b.to(torch.int32))
    with pytest.raises(ValueError, match="x must be 2-D"):
        layer_norm_quantize_rowwise(x[None], w, b)


# --------------------------------------------------------------------------------------------
# GEMM vs reference
# --------------------------------------------------------------------------------------------


@needs_kernel
@pytest.mark.parametrize("M,K,N", [(1, 16, 8), (33, 48, 17), (100, 64, 72), (130, 128, 96)])
@pytest.mark.parametrize("has_bias2d", [False, True])
@pytest.mark.parametrize("has_bias1d", [False, True])
@pytest.mark.parametrize("variant", ["auto", "pointer", "tma"])
def test_gemm_matches_reference(M, K, N, has_bias2d, has_bias1d, variant):
    x, w = _operands(M, K, N, seed=M * N)
    xq, sx = quantize_rowwise(x)
    wq, sw = quantize_weight(w)
    b2 = _rand(M, N, seed=7) if has_bias2d else None
    b1 = _rand(N, dtype=torch.float32, seed=8) if has_bias1d else None

    if variant == "tma" and N % 8:
        # TMA needs 16-byte-aligned rows; "auto" falls back to the pointer kernel there.
        with pytest.raises(ValueError, match="TMA GEMM needs"):
            kern.fp8_addmm_triton(xq, sx, wq, sw, b2, b1, variant=variant)
        return
    y = kern.fp8_addmm_triton(xq, sx, wq, sw, b2, b1, out=_poisoned(M, N), variant=variant)
    assert y.dtype == torch.bfloat16 and y.shape == (M, N)
    assert torch.isfinite(y).all(), "unwritten (NaN-poisoned) or non-finite outputs"
    if variant == "auto":
        assert torch.equal(y, fp8_addmm(xq, sx, wq, sw, bias2d=b2, bias1d=b1))

    # Tight vs the dequantised reference: summation order and one bf16 rounding differ.  On
    # Hopper the fp8 MMA accumulates with reduced precision (about 2^-13 of the sum of |terms|,
    # measured failing a 1e-3 absolute bound at K=128), so the bound scales with that sum.
    ref = fp8_addmm_reference(xq, sx, wq, sw, bias2d=b2, bias1d=b1).float()
    terms = (xq.float().abs() * sx[:, None]) @ (wq.float().abs() * sw[:, None]).t()
    accumulation = 2.0**-13 * terms if DEVICE == "cuda" else 0.0
    assert ((y.float() - ref).abs() <= BF16_ULP * ref.abs() + 1e-3 + accumulation).all()
    # Loose vs the unquantised fp32 product: two e4m3 roundings (3 mantissa bits, ~2.5% rms
    # each) give ~2.6-3.5% relative error on Gaussian data (2.6% measured at K >= 512 on H100).
    exact = x.float() @ w.float().t()
    if b1 is not None:
        exact += b1.float()
    if b2 is not None:
        exact += b2.float()
    assert _rel(y, exact) < 5e-2


@needs_kernel
@pytest.mark.parametrize(
    "variant,option",
    [("pointer", False), ("pointer", True), ("tma", False), ("tma", True)],
    ids=["pointer", "pointer-prefetch-bias", "tma", "tma-epilogue-subtile"],
)
def test_gemm_zero_and_huge_rows(variant, option):
    M, K, N = 40, 64, 24
    x, w = _operands(M, K, N, seed=11, zero_rows=(0, 17, 39), huge_rows=(3,))
    xq, sx = quantize_rowwise(x)
    wq, sw = quantize_weight(w)
    b2 = _rand(M, N, seed=12)
    b1 = _rand(N, dtype=torch.float32, seed=13)
    if variant == "pointer":
        cfg = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 64, "GROUP_M": 4, "PREFETCH_BIAS": option}
    else:  # 64-row tiles (Hopper MMAs) over 40 rows: TMA zero-fills and clips the rest
        cfg = {"BLOCK_M": 64, "BLOCK_N": 16 if option else 32, "BLOCK_K": 64}
        cfg.update(EPILOGUE_SUBTILE=option, num_warps=4, num_stages=3)
    y = kern.fp8_addmm_triton(
        xq, sx, wq, sw, b2, b1, config=cfg, out=_poisoned(M, N), variant=variant
    )
    assert torch.isfinite(y).all()
    for r in (0, 17, 39):  # an all-zero row gives exactly the bias
        assert torch.equal(y[r], (b1 + b2[r].float()).to(torch.bfloat16))
    ref = fp8_addmm_reference(xq, sx, wq, sw, bias2d=b2, bias1d=b1).float()
    assert ref[3].abs().max() > 1e29
    assert _rel(y[3], ref[3]) < 1e-2
    assert _rel(y, ref) < 1e-2


# --------------------------------------------------------------------------------------------
# API checks: clear errors before launch
# --------------------------------------------------------------------------------------------


def _good_args(M=8, K=32, N=16):
    x, w = _operands(M, K, N)
    xq, sx = quantize_rowwise_reference(x)
    wq, sw = quantize_rowwise_reference(w)
    return {
        "x_fp8": xq,
        "x_scale": sx,
        "w_fp8": wq,
        "w_scale": sw,
        "bias2d": _rand(M, N),
        "bias1d": _rand(N, dtype=torch.float32),
    }


BAD_INPUTS = [
    ("x_fp8", lambda a: a["x_fp8"].to(torch.bfloat16), TypeError, "x_fp8 must be"),
    ("w_fp8", lambda a: a["w_fp8"][:, :16].contiguous(), ValueError, "has K=16"),
    ("x_fp8", lambda a: a["x_fp8"].t(), ValueError, "x_fp8 must be"),
    ("x_scale", lambda a: a["x_scale"][:, None], ValueError, "x_scale must have shape (8,)"),
    ("w_scale", lambda a: a["w_scale"].half(), TypeError, "w_scale must be torch.float32"),
    ("w_scale", lambda a: a["w_scale"][:5], ValueError, "w_scale must have shape (16,), got (5,)"),
    ("bias2d", lambda a: a["bias2d"][:, :8], ValueError, "bias2d must have shape (8, 16)"),
    ("bias2d", lambda a: a["bias2d"].t().contiguous().t(), ValueError, "bias2d must be contig"),
    ("bias2d", lambda a: a["bias2d"].to(torch.int32), TypeError, "torch.int32"),
    ("bias1d", lambda a: a["bias1d"][:3], ValueError, "bias1d must have shape (16,), got (3,)"),
    ("bias1d", lambda a: a["bias1d"].double(), TypeError, "torch.float64"),
    ("bias1d", lambda a: a["bias1d"].to("meta"), ValueError, "bias1d on meta"),
]


@pytest.mark.parametrize("name,mutate,exc,msg", BAD_INPUTS)
@pytest.mark.parametrize("backend", ["triton", "pytorch"])
def test_bad_inputs_raise_naming_the_value(name, mutate, exc, msg, backend):
    args = _good_args()
    args[name] = mutate(args)
    with pytest.raises(exc, match=msg.replace("(", r"\(").replace(")", r"\)")):
        fp8_addmm(**args, backend=backend)


def test_k_not_multiple_of_16():
    x = _rand(4, 40)
    xq, sx = quantize_rowwise_reference(x)
    with pytest.raises(ValueError, match="K=40 is not a multiple of 16"):
        fp8_addmm(xq, sx, xq, sx, backend="pytorch")


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of .* got 'cutlass'"):
        fp8_addmm(**_good_args(), backend="cutlass")


def test_cuda_without_fp8_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(ops, "fp8_supported", lambda device: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(RuntimeError, match=r"compute capability >= 8\.9.*has compute capa.*8\.0"):
        ops.check_backend("fp8_addmm", "triton", torch.device("cuda", 0), needs_fp8=True)


def test_triton_backend_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setattr(ops, "triton_interpreting", lambda: False)
    args = {k: v.cpu() for k, v in _good_args().items()}
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        fp8_addmm(**args, backend="triton")


def test_fp8_supported():
    assert fp8_supported("cpu") is False
    assert fp8_supported(None) is False
    if torch.cuda.is_available():
        assert fp8_supported("cuda") == (torch.cuda.get_device_capability() >= (8, 9))


def test_custom_op_registered_and_traceable():
    args = _good_args()
    op = torch.ops.ultra_hstu.fp8_addmm.default
    # (opcheck's schema test multiplies the inputs, which PyTorch can't do on CPU fp8 tensors.)
    utils = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(op, (*args.values(), "pytorch", "auto"), test_utils=utils)
    quant = torch.ops.ultra_hstu.quantize_rowwise.default
    torch.library.opcheck(quant, (_rand(8, 32), "pytorch"), test_utils=utils)
    # Under a fake mode the public function goes through the op and its fake implementation.
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake = {k: mode.from_tensor(v) for k, v in args.items()}
        y = fp8_addmm(**fake)
    assert y.shape == (8, 16) and y.dtype == torch.bfloat16


# --------------------------------------------------------------------------------------------
# FP8Linear
# --------------------------------------------------------------------------------------------


@pytest.fixture
def fresh_notice(monkeypatch):
    monkeypatch.setattr(fp8_linear, "_fallback_logged", False)


def test_fp8_linear_fallback_matches_nn_linear_and_logs_once(caplog, fresh_notice):
    torch.manual_seed(0)
    ref = torch.nn.Linear(32, 24)
    mod = FP8Linear(32, 24)
    mod.load_state_dict(ref.state_dict())  # same parameter names: state dicts interchange
    ref.load_state_dict(mod.state_dict())
    x = torch.randn(3, 5, 32)
    with caplog.at_level(logging.WARNING, logger=fp8_linear.__name__):
        y1 = mod(x)
        y2 = mod(x, residual=torch.ones(3, 5, 24))
    assert torch.equal(y1, ref(x))
    assert torch.equal(y2, ref(x) + 1)
    notices = [r for r in caplog.records if "FP8Linear" in r.getMessage()]
    assert len(notices) == 1 and "plain dtype path" in notices[0].getMessage()


def test_fp8_linear_no_bias_state_dict():
    mod = FP8Linear(16, 8, bias=False)
    assert set(mod.state_dict()) == {"weight"}
    assert set(torch.nn.Linear(16, 8, bias=False).state_dict()) == set(mod.state_dict())


def _linear_inputs(seed=0, B=24, K=64, N=40):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, K, generator=g, requires_grad=True)
    w = torch.nn.Parameter(torch.randn(N, K, generator=g) / K**0.5)
    b = torch.nn.Parameter(torch.randn(N, generator=g))
    r = torch.randn(B, N, generator=g, requires_grad=True)
    return x, w, b, r


def test_fp8_linear_function_gradients_vs_fp32_linear():
    """Drive the autograd Function through the pytorch backend on CPU."""
    x, w, b, r = _linear_inputs()
    y = FP8LinearFunction.apply(x, w, b, r, "pytorch", "auto")
    gy = torch.randn_like(y, dtype=torch.float32)
    y.float().backward(gy)
    got = (x.grad, w.grad, b.grad, r.grad)
    gy_bf16 = gy.bfloat16().float()  # what reaches the Function through its bf16 output

    x2, w2, b2, r2 = (t.detach().clone().requires_grad_(True) for t in (x, w, b, r))
    y2 = r2 + torch.nn.functional.linear(x2, w2, b2)
    y2.backward(gy)
    assert _rel(y, y2) < 5e-2  # forward: e4m3 operands
    # Backward: bf16 matmuls on bf16 copies -> bf16-level agreement.
    assert _rel(got[0], x2.grad) < 1e-2
    assert _rel(got[1], w2.grad) < 1e-2
    assert _rel(got[2], b2.grad) < 1e-2
    torch.testing.assert_close(got[2], gy_bf16.sum(0))  # grad of the 1D bias: sum of grad_out
    assert torch.equal(got[3], gy_bf16)  # grad of the 2D bias is grad_out
    assert got[0].dtype == x.dtype and got[1].dtype == w.dtype


@needs_kernel
def test_fp8_linear_fp8_path(monkeypatch, fresh_notice, caplog):
    """The module's FP8 path end to end (interpreted on CPU): 3-D input, residual, backward."""
    monkeypatch.setattr(fp8_linear, "fp8_supported", lambda device: True)
    torch.manual_seed(1)
    mod = FP8Linear(64, 48).to(DEVICE)
    ref = torch.nn.Linear(64, 48).to(DEVICE)
    ref.load_state_dict(mod.state_dict())
    x = torch.randn(2, 9, 64, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    res = torch.randn(2, 9, 48, device=DEVICE, dtype=torch.bfloat16)
    with caplog.at_level(logging.WARNING, logger=fp8_linear.__name__):
        y = mod(x, residual=res)
    assert not caplog.records
    assert y.shape == (2, 9, 48) and y.dtype == torch.bfloat16
    y_ref = res.float() + ref(x.detach().float())
    assert _rel(y, y_ref) < 5e-2
    y.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert mod.weight.grad.shape == (48, 64) and mod.bias.grad.shape == (48,)
