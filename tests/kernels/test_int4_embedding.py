# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""INT4 rowwise embedding lookup: Triton kernel vs PyTorch reference, reference and quantiser vs
fbgemm's CPU ops (bit for bit), API checks.

Without a GPU the Triton kernel runs in triton's CPU interpreter: TRITON_INTERPRET must be set
before the kernel module is imported (tests/conftest.py does it; done here too for direct runs,
reloading the module if something imported it before).  With a GPU the kernel tests run on it
for real; the CPU-interpreter cases then skip.  The fbgemm and torchrec comparisons skip where
those packages are missing (our GPU machine); everything else needs only torch and triton.
"""

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from ultra_hstu_plugin.kernels import ops  # noqa: E402
from ultra_hstu_plugin.kernels.int4_embedding import (  # noqa: E402
    OUT_DTYPES,
    int4_lookup,
    int4_row_bytes,
    int4_triton_supported,
    quantize_int4_rowwise,
)
from ultra_hstu_plugin.kernels.int4_embedding import triton_kernels as kern  # noqa: E402
from ultra_hstu_plugin.kernels.int4_embedding.reference import (  # noqa: E402
    dequantize_int4_rows_reference,
    int4_lookup_reference,
    quantize_int4_rowwise_reference,
    split_int4_rows,
)

HAS_CUDA = torch.cuda.is_available()
# The Triton kernel runs on the GPU when there is one, else on CPU in the interpreter
# (tests/conftest.py sets TRITON_INTERPRET=1 on machines without a GPU).
KERNEL_DEVICES = ["cuda" if HAS_CUDA else "cpu"]
# PyTorch-only code (reference, quantiser) runs on every device there is.
DEVICES = ["cpu", "cuda"] if HAS_CUDA else ["cpu"]

# fbgemm's SparseType codes for FusedNBitRowwiseQuantizedSBHalfToFloatOrHalf's output_dtype.
FBGEMM_OUT = {torch.float32: 0, torch.float16: 1}


def _fbgemm_ops():
    """fbgemm's CPU quantise/dequantise ops (fbgemm-gpu-cpu or fbgemm-gpu); skip without them.

    (A function, not a fixture: hypothesis refuses function-scoped fixtures in @given tests.)"""
    pytest.importorskip("fbgemm_gpu", reason="fbgemm_gpu not installed: no fbgemm comparison")
    return torch.ops.fbgemm


def _weights(rows, dim, seed, kind="gauss", dtype=torch.float32):
    """Rows with different ranges and offsets (and, by kind, ties or constant rows)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "lattice":  # values on a 1/4 grid: many exact .5 ties in the codes
        w = torch.randint(-6, 7, (rows, dim), generator=g).float() * 0.25
    else:
        spread = 10.0 ** (torch.rand(rows, 1, generator=g) * 8 - 6)  # 1e-6 .. 1e2 a row
        offset = torch.randn(rows, 1, generator=g) * spread * 3
        w = torch.randn(rows, dim, generator=g) * spread + offset
        if kind == "constant_rows":
            w[::3] = w[::3, :1]  # every third row constant
    # -0.0 -> +0.0: fbgemm's sign of a zero minimum follows its SIMD order (tested apart)
    return (w + 0.0).to(dtype)


def _table(rows, dim, seed, row_alignment=1, scale_bias_last=True, device="cpu"):
    """Quantised rows, with the padding bytes filled with garbage the lookup must ignore."""
    w = _weights(rows, dim, seed, kind="constant_rows" if seed % 2 else "gauss")
    t = quantize_int4_rowwise_reference(w, row_alignment, scale_bias_last)
    used = int4_row_bytes(dim)
    if t.shape[1] > used:
        g = torch.Generator().manual_seed(seed + 1)
        t[:, used:] = torch.randint(0, 256, (rows, t.shape[1] - used), generator=g).to(t.dtype)
    return t.to(device)


def _poisoned(n, dim, dtype, device):
    return torch.full((n, dim), float("nan"), dtype=dtype, device=device)


def _check_kernel(table, ids, dim, out_dtype, scale_bias_last):
    """Kernel into a NaN-poisoned buffer == reference == public API, bit for bit."""
    n = ids.shape[0]
    out = _poisoned(n, dim, out_dtype, table.device)
    got = kern.int4_lookup_triton(table, ids, dim, out_dtype, scale_bias_last, out=out)
    ref = int4_lookup_reference(table, ids, dim, out_dtype, scale_bias_last)
    assert got.data_ptr() == out.data_ptr() and got.shape == (n, dim) and got.dtype == out_dtype
    assert not torch.isnan(got).any(), "unwritten (NaN-poisoned) outputs"
    assert torch.equal(got, ref)
    api = int4_lookup(table, ids, dim, out_dtype, scale_bias_last=scale_bias_last)
    assert torch.equal(api, ref)


# --------------------------------------------------------------------------------------------
# Triton kernel vs reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", KERNEL_DEVICES)
@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 64),
    dim4=st.integers(1, 64),
    out_dtype=st.sampled_from(OUT_DTYPES),
    scale_bias_last=st.booleans(),
    row_alignment=st.sampled_from([1, 2, 16]),
    id_dtype=st.sampled_from([torch.int32, torch.int64]),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_kernel_matches_reference(
    device, rows, dim4, out_dtype, scale_bias_last, row_alignment, id_dtype, seed, data
):
    dim = 4 * dim4
    table = _table(rows, dim, seed, row_alignment, scale_bias_last, device)
    ids = data.draw(st.lists(st.integers(0, rows - 1), max_size=70), label="ids")
    # Make the edges certain rather than likely: row 0, the last row, a repeated id.
    ids = ids + data.draw(st.sampled_from([[], [0], [rows - 1, 0], [rows - 1] * 3]), label="edge")
    ids = torch.tensor(ids, dtype=id_dtype, device=device)
    _check_kernel(table, ids, dim, out_dtype, scale_bias_last)


@pytest.mark.parametrize("device", KERNEL_DEVICES)
@pytest.mark.parametrize("dim", [4, 12, 64, 256])
def test_kernel_edges(device, dim):
    rows = 37
    table = _table(rows, dim, seed=dim, row_alignment=16, device=device)
    for ids in ([], [0], [rows - 1], [5] * 40, list(range(rows)) + list(range(rows))[::-1]):
        t = torch.tensor(ids, dtype=torch.int64, device=device)
        for out_dtype in OUT_DTYPES:
            _check_kernel(table, t, dim, out_dtype, True)
    # Several programs' worth of ids, with the default and pinned ids-per-program (the
    # interpreter pays ~10 ms a program, hence few ids for BLOCK_N = 1).
    ids = torch.randint(0, rows, (300,), generator=torch.Generator().manual_seed(dim)).to(device)
    for n, block_n in ((300, None), (300, 64), (12, 1)):
        ref = int4_lookup_reference(table, ids[:n], dim, torch.bfloat16)
        got = kern.int4_lookup_triton(table, ids[:n], dim, torch.bfloat16, block_n=block_n)
        assert torch.equal(got, ref)


@pytest.mark.parametrize("device", KERNEL_DEVICES)
def test_kernel_out_of_range_ids_give_nan_rows_without_reading(device):
    """The unchecked path (CUDA's default): bad ids read nothing and give NaN rows."""
    rows, dim = 10, 16
    table = _table(rows, dim, seed=3, device=device)
    ids = torch.tensor([0, -1, rows, 2**40, rows - 1], device=device)
    for out_dtype in OUT_DTYPES:
        got = int4_lookup(table, ids, dim, out_dtype, check_ids=False)
        assert torch.isnan(got[1:4]).all()
        good = torch.tensor([0, rows - 1], device=device)
        assert torch.equal(got[[0, 4]], int4_lookup_reference(table, good, dim, out_dtype))
    # An empty table: every id is out of range and nothing may be read.
    empty = torch.empty((0, int4_row_bytes(dim)), dtype=torch.uint8, device=device)
    got = int4_lookup(empty, torch.tensor([0, 3], device=device), dim, check_ids=False)
    assert torch.isnan(got).all()


# --------------------------------------------------------------------------------------------
# Reference and quantiser vs fbgemm (CPU ops)
# --------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 40),
    dim4=st.integers(1, 64),
    log_scale=st.floats(-8, 3),
    seed=st.integers(0, 2**16),
)
def test_reference_dequant_matches_fbgemm(rows, dim4, log_scale, seed):
    """Random codes and random finite fp16 scale/bias: every nibble, fp32/fp16/bf16 output.

    Scale/bias-last rows only: fbgemm's CPU op ignores its ``scale_bias_last=False`` (it reads
    the fused layout either way), so the TBE's scale/bias-first rows are checked against the
    TBE's own lookup in ``test_quantizer_matches_torchrec_tbe_rows``."""
    fbgemm_ops = _fbgemm_ops()
    dim = 4 * dim4
    g = torch.Generator().manual_seed(seed)
    table = torch.randint(0, 256, (rows, int4_row_bytes(dim)), generator=g).to(torch.uint8)
    sb = (torch.randn(rows, 2, generator=g) * 10.0**log_scale).half()
    table[:, dim // 2 :] = sb.view(torch.uint8)
    for out_dtype, code in FBGEMM_OUT.items():
        want = fbgemm_ops.FusedNBitRowwiseQuantizedSBHalfToFloatOrHalf(table, 4, code)
        got = dequantize_int4_rows_reference(table, dim, out_dtype)
        assert want.dtype == out_dtype and torch.equal(got, want)
    # bf16 (fbgemm's CPU op has none): fbgemm's fp32 values rounded once.
    want32 = fbgemm_ops.FusedNBitRowwiseQuantizedSBHalfToFloatOrHalf(table, 4, 0)
    assert torch.equal(
        dequantize_int4_rows_reference(table, dim, torch.bfloat16), want32.bfloat16()
    )


def test_nibble_order_matches_fbgemm():
    """Element 2k sits in the low nibble of byte k (what the reference assumes)."""
    fbgemm_ops = _fbgemm_ops()
    w = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 15.0]])  # codes = values, scale 1
    fused = fbgemm_ops.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(w, 4)
    assert fused[0, :4].tolist() == [0x10, 0x32, 0x54, 0xF6]
    codes, scale, bias = split_int4_rows(fused, 8)
    assert codes[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 15] and scale.item() == 1.0
    assert bias.item() == 0.0


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 40),
    dim4=st.integers(1, 64),
    kind=st.sampled_from(["gauss", "lattice", "constant_rows"]),
    dtype=st.sampled_from([torch.float32, torch.float16]),
    seed=st.integers(0, 2**16),
)
def test_quantizer_matches_fbgemm_bitwise(rows, dim4, kind, dtype, seed):
    fbgemm_ops = _fbgemm_ops()
    w = _weights(rows, 4 * dim4, seed, kind, dtype)
    want = fbgemm_ops.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(w, 4)
    assert torch.equal(quantize_int4_rowwise(w), want)


@pytest.mark.parametrize(
    "row",
    [
        [0.0, 1e6] + [0.5] * 14,  # scale past fp16's max: fbgemm stores inf
        [-1e6, 0.0] + [0.0] * 14,  # minimum past fp16's max
        [0.0, 1e-5] + [0.0] * 14,  # subnormal fp16 scale
        [0.0, 1e-9] + [0.0] * 14,  # scale rounds to 0 in fp16: scale 1
        [-65504.0, 65504.0] + [0.0] * 14,
        [0.0, 15.0, 0.5, 1.5, 2.5, 3.5, 7.5, 14.5] + [0.0] * 8,  # ties to even
        [3.0] * 16,  # constant row
    ],
)
def test_quantizer_edge_rows_match_fbgemm(row):
    fbgemm_ops = _fbgemm_ops()
    w = torch.tensor([row])
    want = fbgemm_ops.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(w, 4)
    assert torch.equal(quantize_int4_rowwise(w), want)


def test_quantizer_signed_zero_minimum():
    """Rows of mixed +-0.0 (minimum zero): only the sign of the stored zero bias may differ
    from fbgemm (its SIMD reduction order decides it); the decoded values are identical."""
    fbgemm_ops = _fbgemm_ops()
    g = torch.Generator().manual_seed(0)
    w = torch.where(torch.randint(0, 2, (64, 16), generator=g).bool(), -0.0, 0.0)
    w[1::2, 3] = torch.rand(32, generator=g) + 0.1  # half the rows with a positive maximum
    want = fbgemm_ops.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(w, 4)
    got = quantize_int4_rowwise(w)
    diff = got != want
    assert (diff.sum(dim=1) <= 1).all() and not diff[:, :-1].any()  # the bias' high byte only
    assert ((got ^ want)[:, -1] & 0x7F == 0).all()  # ... and in it the sign bit only
    deq = FBGEMM_OUT[torch.float32]
    assert torch.equal(
        dequantize_int4_rows_reference(got, 16),
        fbgemm_ops.FusedNBitRowwiseQuantizedSBHalfToFloatOrHalf(want, 4, deq),
    )


def test_quantizer_matches_torchrec_tbe_rows():
    """torchrec's quantised tables (TBE rows: scale/bias first, padded) are our layout with
    ``scale_bias_last=False``; ``int4_table_rows`` returns them in the fused layout, and the
    Triton lookup on those rows equals the TBE's own lookup."""
    pytest.importorskip("torchrec", reason="torchrec not installed: no TBE comparison")
    from torchrec import EmbeddingCollection, EmbeddingConfig

    from ultra_hstu_plugin.quant import int4_embeddings as q

    dim, rows = 36, 300
    ec = EmbeddingCollection(
        tables=[
            EmbeddingConfig(name="t", num_embeddings=rows, embedding_dim=dim, feature_names=["f"])
        ],
        device=torch.device("cpu"),
    )
    w = ec.embeddings["t"].weight
    with torch.no_grad():
        w.copy_(_weights(rows, dim, seed=5))
    for align in (2, 16):
        qec = q.quantize_embedding_collection(ec, bits=4, row_alignment=align)
        tbe = qec._emb_modules[0]
        tbe_rows = tbe.split_embedding_weights_with_scale_bias(split_scale_bias_mode=0)[0][0]
        ours = quantize_int4_rowwise(w, row_alignment=align, scale_bias_last=False)
        assert torch.equal(ours, tbe_rows)
        table, table_dim = q.int4_table_rows(qec)["t"]
        assert table_dim == dim and torch.equal(table, quantize_int4_rowwise(w))
        ids = torch.randint(0, rows, (200,), generator=torch.Generator().manual_seed(align))
        offsets = torch.tensor([0, 200])
        want = tbe(indices=ids.int(), offsets=offsets.int())  # fbgemm's lookup, fp32
        backends = ["pytorch"] + (["triton"] if ops.triton_interpreting() else [])
        for backend in backends:
            assert torch.equal(int4_lookup(table, ids, dim, backend=backend), want)
            # the TBE's own rows, read in place (scale/bias first, padded)
            got = int4_lookup(tbe_rows, ids, dim, scale_bias_last=False, backend=backend)
            assert torch.equal(got, want)
    with pytest.raises(ValueError, match="INT8, not INT4"):
        q.int4_table_rows(q.quantize_embedding_collection(ec, bits=8))


# --------------------------------------------------------------------------------------------
# Quantiser without fbgemm: error bound, layouts, devices
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 40), dim4=st.integers(1, 64), seed=st.integers(0, 2**16))
def test_quantizer_round_trip_within_half_a_step(device, rows, dim4, seed):
    dim = 4 * dim4
    w = _weights(rows, dim, seed).to(device)
    table = quantize_int4_rowwise(w)
    assert table.device.type == device and table.shape == (rows, int4_row_bytes(dim))
    if device != "cpu":  # the GPU quantiser must give the CPU's (hence fbgemm's) bytes
        assert torch.equal(table.cpu(), quantize_int4_rowwise(w.cpu()))
    deq = dequantize_int4_rows_reference(table, dim)
    step = (w.amax(1) - w.amin(1)) / 15

    def fp16_rounding(v):  # relative 2^-11, but absolute 2^-25 among fp16's subnormals
        return torch.maximum(v.abs() * 2.0**-11, torch.full_like(v, 2.0**-25))

    # Half a step, plus what rounding the stored scale (times 15 codes) and bias to fp16 moves.
    bound = 0.5 * step + 15 * fp16_rounding(step) + fp16_rounding(w.amin(1))
    assert ((deq - w).abs().amax(1) <= bound).all()


def test_quantizer_layouts_and_padding():
    w = _weights(9, 20, seed=1)
    fused = quantize_int4_rowwise(w)
    assert fused.shape == (9, 14)
    padded = quantize_int4_rowwise(w, row_alignment=16)
    assert padded.shape == (9, 16) and torch.equal(padded[:, :14], fused)
    assert not padded[:, 14:].any()
    first = quantize_int4_rowwise(w, row_alignment=16, scale_bias_last=False)
    assert torch.equal(first[:, :4], fused[:, 10:14]) and torch.equal(first[:, 4:14], fused[:, :10])
    assert quantize_int4_rowwise(torch.empty(0, 8)).shape == (0, 8)
    w16 = w.to(torch.bfloat16)  # widened exactly, so quantised as its fp32 copy
    assert torch.equal(quantize_int4_rowwise(w16), quantize_int4_rowwise(w16.float()))


# --------------------------------------------------------------------------------------------
# API checks: clear errors before launch
# --------------------------------------------------------------------------------------------


def _good(rows=10, dim=16):
    return {"table": _table(rows, dim, seed=0), "ids": torch.tensor([0, 3, 9]), "dim": dim}


BAD_INPUTS = [
    (lambda a: {**a, "dim": 18}, ValueError, "dim=18 must be a positive multiple of 4"),
    (lambda a: {**a, "dim": 0}, ValueError, "dim=0 must be a positive multiple of 4"),
    (lambda a: {**a, "dim": 16.0}, TypeError, "dim must be an int"),
    (lambda a: {**a, "dim": 24}, ValueError, "row_bytes=12 but dim=24 needs at least 16"),
    (lambda a: {**a, "table": a["table"].to(torch.int8)}, TypeError, "table must be torch.uint8"),
    (lambda a: {**a, "table": a["table"].reshape(-1)}, ValueError, "table must be 2-D"),
    (
        lambda a: {**a, "table": torch.cat([a["table"]] * 2, dim=1)[:, ::2]},
        ValueError,
        "table must be contiguous",
    ),
    (lambda a: {**a, "ids": a["ids"].float()}, TypeError, "ids must have a dtype in"),
    (lambda a: {**a, "ids": a["ids"].to(torch.int16)}, TypeError, "torch.int16"),
    (lambda a: {**a, "ids": a["ids"][None]}, ValueError, "ids must be 1-D"),
    (lambda a: {**a, "ids": a["ids"].to("meta")}, ValueError, "ids are on meta but table is on"),
    (lambda a: {**a, "out_dtype": torch.int32}, TypeError, "out_dtype must be one of"),
    (lambda a: {**a, "ids": torch.tensor([0, 10])}, IndexError, r"in \[0, 10\).*got id 10"),
    (lambda a: {**a, "ids": torch.tensor([-1, 2])}, IndexError, "got id -1"),
]


@pytest.mark.parametrize("mutate,exc,msg", BAD_INPUTS)
@pytest.mark.parametrize("backend", ["triton", "pytorch"])
def test_bad_inputs_raise_naming_the_value(mutate, exc, msg, backend):
    args = mutate(_good())
    with pytest.raises(exc, match=msg):
        int4_lookup(**args, backend=backend)


@pytest.mark.parametrize("device", DEVICES)
def test_check_ids_default_per_device(device):
    """CPU checks by default; CUDA only with check_ids=True (it syncs)."""
    table = _table(10, 16, seed=0, device=device)
    bad = torch.tensor([1, 10], device=device)
    if device == "cpu":
        with pytest.raises(IndexError, match="got id 10"):
            int4_lookup(table, bad, 16, backend="pytorch")
    with pytest.raises(IndexError, match="got id 10"):
        int4_lookup(table, bad, 16, check_ids=True)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of .* got 'cuda'"):
        int4_lookup(**_good(), backend="cuda")


def test_triton_backend_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setattr(ops, "triton_interpreting", lambda: False)
    assert int4_triton_supported("cpu") is False
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1.*backend='pytorch'"):
        int4_lookup(**_good(), backend="triton")


def test_triton_supported():
    assert int4_triton_supported(None) is False
    assert int4_triton_supported("meta") is False
    assert int4_triton_supported("cuda") is HAS_CUDA


@pytest.mark.parametrize(
    "weight,exc,msg",
    [
        (torch.zeros(4, 8, dtype=torch.int32), TypeError, "weight must have a dtype in"),
        (torch.zeros(2, 4, 8), ValueError, "weight must be 2-D"),
        (torch.zeros(4, 10), ValueError, "dim=10 must be a positive multiple of 4"),
    ],
)
def test_quantizer_bad_inputs(weight, exc, msg):
    with pytest.raises(exc, match=msg):
        quantize_int4_rowwise(weight)


def test_quantizer_bad_row_alignment():
    with pytest.raises(ValueError, match="row_alignment must be a positive int, got 0"):
        quantize_int4_rowwise(torch.zeros(4, 8), row_alignment=0)


def test_custom_op_registered_and_traceable():
    args = _good()
    op = torch.ops.ultra_hstu.int4_embedding_lookup.default
    torch.library.opcheck(
        op, (args["table"], args["ids"], args["dim"], torch.bfloat16, True, "pytorch", True)
    )
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        y = int4_lookup(mode.from_tensor(args["table"]), mode.from_tensor(args["ids"]), 16)
    assert y.shape == (3, 16) and y.dtype == torch.float32
