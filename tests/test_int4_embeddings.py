# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""INT4 embedding tables on CPU (fbgemm's CPU kernels), without GR: plain torchrec collections."""

import io

import pytest
import torch
import torchrec
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor

from ultra_hstu_plugin.quant import int4_embeddings as q

CPU = torch.device("cpu")


def make_ec(dims=(64, 64), rows=(300, 200), seed=0, device=CPU, spread=1.0):
    """Tables t0, t1, ...; t1 serves two features (like GR's movie_id / item_movie_id)."""
    tables = []
    for i, (d, n) in enumerate(zip(dims, rows)):
        feats = [f"f{i}"] + ([f"f{i}_item"] if i == 1 else [])
        tables.append(
            EmbeddingConfig(name=f"t{i}", num_embeddings=n, embedding_dim=d, feature_names=feats)
        )
    ec = EmbeddingCollection(tables=tables, device=device)
    if device.type != "meta":
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in ec.parameters():
                # rows with different ranges and offsets, so a per-table scale would fail
                scale = torch.rand(p.shape[0], 1, generator=gen) * spread
                p.copy_(torch.randn(p.shape, generator=gen) * scale + scale)
    return ec


def all_rows_kjt(ec):
    """A KJT asking every feature for every row of its table, in one jagged batch of 2."""
    keys, values, lengths = [], [], []
    for t in ec.embedding_configs():
        for f in t.feature_names:
            idx = torch.arange(t.num_embeddings)
            keys.append(f)
            values.append(idx)
            half = t.num_embeddings // 2
            lengths.append(torch.tensor([half, t.num_embeddings - half]))
    return KeyedJaggedTensor.from_lengths_sync(
        keys=keys, values=torch.cat(values), lengths=torch.cat(lengths)
    )


def rowwise_step(w):
    return (w.max(dim=1).values - w.min(dim=1).values) / 15


def error_bound(w):
    """Half a quantisation step, plus the fp16 rounding of the stored scale and bias.

    fp16 rounding is relative (2^-11) for normal values but absolute below 2^-14, where
    subnormals sit on a 2^-24 grid: a subnormal scale (times a code up to 15) and bias can be
    off by 15 + 1 half-spacings of that grid, 2^-21 in all (hypothesis found a row with
    spread 1e-3 at dim 4 that needed it)."""
    step = rowwise_step(w)
    fp16_eps = 2.0**-11
    subnormal_floor = 16 * 2.0**-25
    relative = 15 * step * fp16_eps + w.min(dim=1).values.abs() * fp16_eps
    return 0.5 * step + relative + subnormal_floor


def dequantize_stored(qec, name):
    """Decode a table from its stored codes + fp16 scale/bias with fbgemm's own op."""
    state = q.quantized_tables_state(qec)["weights"][name]
    fused = torch.cat([state["codes"], state["scale_bias"]], dim=1)  # fbgemm: codes, then SB
    return torch.ops.fbgemm.FusedNBitRowwiseQuantizedSBHalfToFloat(fused, 4)


@pytest.mark.parametrize("dim", [32, 64, 128])
def test_round_trip_error_per_row_is_within_the_quantisation_step(dim):
    ec = make_ec(dims=(dim, dim), rows=(300, 200))
    qec = q.quantize_embedding_collection(ec, bits=4)
    for t in ec.embedding_configs():
        w = ec.embeddings[t.name].weight.detach()
        deq = dequantize_stored(qec, t.name)[:, : t.embedding_dim]
        err = (deq - w).abs().max(dim=1).values
        assert (err <= rowwise_step(w)).all()  # the contract: within one step per row
        assert (err <= error_bound(w)).all()  # and in fact round-to-nearest: half a step
        assert err.max() > 0  # it did quantize


@settings(max_examples=15, deadline=None)
@given(
    dim=st.sampled_from([4, 8, 12, 32, 64, 96, 128]),
    rows=st.integers(1, 70),
    spread=st.sampled_from([0.0, 1e-3, 1.0, 50.0]),
    seed=st.integers(0, 2**16),
)
@example(dim=4, rows=27, spread=1e-3, seed=68)  # a subnormal fp16 scale (see error_bound)
def test_lookups_match_the_float_module_within_the_step(dim, rows, spread, seed):
    ec = make_ec(dims=(dim, dim), rows=(rows, rows + 3), seed=seed, spread=spread)
    qec = q.quantize_embedding_collection(ec, bits=4)
    kjt = all_rows_kjt(ec)
    got, ref = qec(kjt), ec(kjt)
    assert set(got) == set(ref)
    for t in ec.embedding_configs():
        w = ec.embeddings[t.name].weight.detach()
        for f in t.feature_names:
            assert torch.equal(got[f].lengths(), ref[f].lengths())
            assert got[f].values().dtype == torch.float32
            err = (got[f].values() - ref[f].values()).abs().max(dim=1).values
            assert (err <= error_bound(w)).all(), (f, (err - error_bound(w)).max())


def test_random_jagged_lookups_match_too():
    ec = make_ec(dims=(64, 64), rows=(500, 100))
    qec = q.quantize_embedding_collection(ec)
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(0, 20, (3 * 4,), generator=gen)  # 3 features x batch 4, some empty
    sizes = [500] * 4 + [100] * 8
    values = torch.cat(
        [torch.randint(0, n, (int(n_),), generator=gen) for n, n_ in zip(sizes, lengths)]
    )
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["f0", "f1", "f1_item"], values=values, lengths=lengths
    )
    got, ref = qec(kjt), ec(kjt)
    for f, table in (("f0", "t0"), ("f1", "t1"), ("f1_item", "t1")):
        w = ec.embeddings[table].weight.detach()
        bound = error_bound(w)[kjt[f].values()]
        err = (got[f].values() - ref[f].values()).abs().max(dim=1).values
        assert (err <= bound).all()


@pytest.mark.parametrize("dim", [64, 128, 256])
def test_int4_tables_are_at_least_3_5x_smaller_than_fp16(dim):
    ec = make_ec(dims=(dim, dim), rows=(1000, 3000))
    qec = q.quantize_embedding_collection(ec)
    fp16 = q.fp16_table_bytes(ec)
    assert fp16 == 4000 * dim * 2
    # dim/2 code bytes + 4 bytes fp16 scale/bias per row, rows padded to CPU_ROW_ALIGNMENT
    assert q.table_bytes(qec) == 4000 * (dim // 2 + 4)
    assert fp16 / q.table_bytes(qec) >= 3.5
    # the float32 training tables are twice the fp16 baseline
    assert q.table_bytes(ec) == 2 * fp16
    assert q.per_table_bytes(qec) == {"t0": 1000 * (dim // 2 + 4), "t1": 3000 * (dim // 2 + 4)}


def test_gpu_row_alignment_pads_rows_to_16_bytes():
    ec = make_ec(dims=(64, 64), rows=(10, 10))
    qec = q.quantize_embedding_collection(ec, row_alignment=q.CUDA_ROW_ALIGNMENT)
    assert q.table_bytes(qec) == 20 * 48  # 36 bytes rounded up to 48: why CPU uses 2
    kjt = all_rows_kjt(ec)
    for f, v in qec(kjt).items():
        assert torch.allclose(v.values(), q.quantize_embedding_collection(ec)(kjt)[f].values())


def test_the_float_module_is_left_unchanged():
    ec = make_ec()
    before = {k: v.clone() for k, v in ec.state_dict().items()}
    q.quantize_embedding_collection(ec)
    assert not hasattr(ec, "qconfig")
    assert all(torch.equal(before[k], v) for k, v in ec.state_dict().items())


def test_other_bit_widths_go_through_the_same_path():
    ec = make_ec(dims=(64, 64))
    kjt = all_rows_kjt(ec)
    ref = ec(kjt)
    errs = {}
    for bits in (4, 8, 16):
        qec = q.quantize_embedding_collection(ec, bits=bits)
        errs[bits] = max((qec(kjt)[f].values() - ref[f].values()).abs().max() for f in ref)
    assert errs[16] < errs[8] < errs[4]
    with pytest.raises(ValueError, match="bits must be one of"):
        q.quantize_embedding_collection(ec, bits=3)


def test_artifact_state_round_trips_through_torch_save_weights_only():
    ec = make_ec(dims=(32, 32))
    qec = q.quantize_embedding_collection(ec)
    buf = io.BytesIO()
    torch.save(q.quantized_tables_state(qec), buf)
    buf.seek(0)
    rebuilt = q.quantized_collection_from_state(torch.load(buf, weights_only=True))
    kjt = all_rows_kjt(ec)
    a, b = qec(kjt), rebuilt(kjt)
    assert all(torch.equal(a[f].values(), b[f].values()) for f in a)
    assert q.table_bytes(rebuilt) == q.table_bytes(qec)


def test_unsupported_tables_are_all_listed():
    tables = [
        EmbeddingConfig(name="ok", num_embeddings=10, embedding_dim=8, feature_names=["a"]),
        EmbeddingConfig(name="odd6", num_embeddings=10, embedding_dim=6, feature_names=["b"]),
        EmbeddingConfig(name="odd6b", num_embeddings=10, embedding_dim=6, feature_names=["c"]),
    ]
    # torchrec's EC needs one dim for all tables, so test dims on an all-6 collection
    ec = EmbeddingCollection(tables=tables[1:], device=CPU)
    with pytest.raises(q.UnsupportedEmbeddingTablesError) as e:
        q.quantize_embedding_collection(ec)
    msg = str(e.value)
    assert "2 embedding table(s)" in msg and "odd6:" in msg and "odd6b:" in msg
    assert "not a multiple of 4" in msg
    assert [name for name, _ in e.value.problems] == ["odd6", "odd6b"]
    # dim 6 is fine for INT8 (6 bytes of codes end on a 2-byte boundary)
    q.quantize_embedding_collection(ec, bits=8)


def test_meta_tables_and_other_modules_are_rejected_by_name():
    with pytest.raises(q.UnsupportedEmbeddingTablesError, match="t0: weights are on the meta"):
        q.quantize_embedding_collection(make_ec(device=torch.device("meta")))
    ebc = torchrec.EmbeddingBagCollection(
        tables=[
            torchrec.EmbeddingBagConfig(
                name="bag", num_embeddings=10, embedding_dim=8, feature_names=["x"]
            )
        ],
        device=CPU,
    )
    with pytest.raises(q.UnsupportedEmbeddingTablesError, match="bag: EmbeddingBagCollection"):
        q.quantize_embedding_collection(ebc)
    with pytest.raises(q.UnsupportedEmbeddingTablesError, match="Linear is not a torchrec"):
        q.quantize_embedding_collection(torch.nn.Linear(4, 4))
    qec = q.quantize_embedding_collection(make_ec())
    with pytest.raises(q.UnsupportedEmbeddingTablesError, match="already quantized"):
        q.quantize_embedding_collection(qec)


def test_quantizer_is_registered():
    from ultra_hstu_plugin.registry import discover

    comp = discover().get("quantizer", "int4_embeddings")
    assert comp.load() is q.quantize_embedding_collection


def test_quantize_cli_bad_input_is_one_line(tmp_path, capsys):
    from ultra_hstu_plugin.cli import main

    base = ["quantize", "--gin", "gin_configs/ml100k_smoke_cpu.gin", "--out", str(tmp_path / "o")]
    assert main([*base, "--checkpoint", str(tmp_path)]) == 2
    assert "choose a format: --int4" in capsys.readouterr().err
    assert main([*base, "--checkpoint", str(tmp_path), "--int4"]) == 2
    err = capsys.readouterr().err
    assert "must be a GR checkpoint directory" in err and "Traceback" not in err
