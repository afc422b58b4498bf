# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""ULTRA-HSTU in GR's research (retrieval) trainer: the seam, the layer against GR's, every
retrieval gin config, and a CPU training run on MovieLens-100k that beats popularity.

Retrieval gin files (``gin_configs/retrieval/``) are their own family: they bind GR's
``train_fn`` and encoders, not the ranking stack's, so ``test_gin_truth.py`` (which globs
``gin_configs/*.gin``) leaves them to this file's parse test, which has its own table of
what each binding must do.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any, Callable, Dict

import gin
import pytest
import torch

from ultra_hstu_plugin import host
from ultra_hstu_plugin.data import retrieval as rdata
from ultra_hstu_plugin.retrieval import trainer
from ultra_hstu_plugin.retrieval.baseline import popularity_metrics
from ultra_hstu_plugin.retrieval.encoder import SLAResearchLayer, UltraResearchHSTU

from .conftest import REPO
from .test_gin_truth import Binding, _statements

RETRIEVAL_GIN = REPO / "gin_configs" / "retrieval"
ML100K_ULTRA = RETRIEVAL_GIN / "ml100k_ultra_hstu_cpu.gin"


@pytest.fixture(autouse=True)
def _clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture(scope="session")
def retrieval_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("retrieval")
    rdata.prepare(rdata.ML_100K, out)
    return out


def _gr_layer_kwargs(d=16, h=2, dqk=8, dv=8):
    return dict(
        embedding_dim=d,
        linear_hidden_dim=dv,
        attention_dim=dqk,
        dropout_ratio=0.0,
        attn_dropout_ratio=0.0,
        num_heads=h,
        linear_activation="silu",
    )


def _jagged(lengths, d):
    off = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    off[1:] = torch.tensor(lengths).cumsum(0)
    return torch.randn(int(off[-1]), d), off


def test_sla_layer_with_causal_mask_equals_grs_layer_without_bias():
    # k1 = k2 = 0 is GR's causal mask; GR's relative bias at zero adds nothing
    torch.manual_seed(0)
    n = 12
    from generative_recommenders.research.modeling.sequential.hstu import (  # noqa: PLC0415
        RelativeBucketedTimeAndPositionBasedBias,
    )

    rab = RelativeBucketedTimeAndPositionBasedBias(n, 8, lambda x: x.abs().clamp(max=8).long())
    torch.nn.init.zeros_(rab._ts_w)
    torch.nn.init.zeros_(rab._pos_w)
    gr = host.ResearchSTULayer(relative_attention_bias_module=rab, **_gr_layer_kwargs()).eval()
    ours = SLAResearchLayer(k1=0, k2=0, backend="pytorch", **_gr_layer_kwargs()).eval()
    ours.load_state_dict({k: v for k, v in gr.state_dict().items() if "_rel_attn_bias" not in k})
    x, off = _jagged([5, 12, 1], 16)
    mask = 1.0 - torch.triu(torch.ones(n, n), diagonal=1)
    ts = torch.zeros(3, n, dtype=torch.int64)
    want, _ = gr(x=x, x_offsets=off, all_timestamps=ts, invalid_attn_mask=mask)
    got, _ = ours(x=x, x_offsets=off, all_timestamps=ts, invalid_attn_mask=mask)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_sla_window_changes_only_rows_beyond_it():
    torch.manual_seed(0)
    causal = SLAResearchLayer(k1=0, backend="pytorch", **_gr_layer_kwargs()).eval()
    local = SLAResearchLayer(k1=3, backend="pytorch", **_gr_layer_kwargs()).eval()
    local.load_state_dict(causal.state_dict())
    x, off = _jagged([10], 16)
    mask = torch.ones(10, 10)
    a, _ = causal(x, off, None, mask)
    b, _ = local(x, off, None, mask)
    torch.testing.assert_close(a[:4], b[:4])  # rows 0..3 see at most 3 earlier tokens
    assert not torch.allclose(a[4:], b[4:])


def _encoder(**enc):
    from ultra_hstu_plugin.modules.encoder_config import UltraHSTUEncoderConfig

    d = 16
    emb = host.LocalEmbeddingModule(num_items=50, item_embedding_dim=d)
    sim, _ = host.get_similarity_function("DotProduct", d, d)
    return UltraResearchHSTU(
        encoder_config=UltraHSTUEncoderConfig(**enc),
        backend="pytorch",
        embedding_module=emb,
        similarity_module=sim,
        input_features_preproc_module=host.LearnablePositionalEmbeddingInputFeaturesPreprocessor(
            max_sequence_len=20 + 2, embedding_dim=d, dropout_rate=0.0
        ),
        output_postproc_module=host.L2NormEmbeddingPostprocessor(embedding_dim=d, eps=1e-6),
        max_sequence_len=20,
        max_output_len=2,
        embedding_dim=d,
        num_blocks=2,
        num_heads=2,
        attention_dim=8,
        linear_dim=8,
        linear_dropout_rate=0.0,
        attn_dropout_rate=0.0,
        linear_config="uvqk",
        linear_activation="silu",
        normalization="rel_bias",
        verbose=False,
    ).eval()


def test_truncated_layers_touch_only_the_last_tokens():
    torch.manual_seed(0)
    full = _encoder(num_full_layers=1)
    trunc = _encoder(num_full_layers=1, num_truncated_layers=1, truncated_seq_len=4)
    trunc.load_state_dict(full.state_dict(), strict=False)  # layer 0 and the rest shared
    lengths = torch.tensor([9, 3])
    ids = torch.randint(1, 50, (2, 22)) * (torch.arange(22) < lengths.view(-1, 1))
    kw = dict(past_lengths=lengths, past_ids=ids, past_payloads={})
    a = full(past_embeddings=full.get_item_embeddings(ids), **kw)
    b = trunc(past_embeddings=trunc.get_item_embeddings(ids), **kw)
    torch.testing.assert_close(a[0, :5], b[0, :5])  # before the last 4 of 9
    assert not torch.allclose(a[0, 5:9], b[0, 5:9])
    assert not torch.allclose(a[1, :3], b[1, :3])  # 3 <= L': all upper


def test_gin_import_puts_ultra_hstu_into_grs_train_fn(retrieval_dir):
    trainer.load_config(
        [str(ML100K_ULTRA)], [f"ultra_hstu.RetrievalData.data_dir = '{retrieval_dir}'"]
    )
    assert host.research_hooks_installed()
    # what GR's train_fn itself calls, by name, in its own module
    data = host.trainer_get_reco_dataset()(
        dataset_name="ml-100k", max_sequence_length=200, chronological=True
    )
    assert (data.max_item_id, len(data.all_item_ids), len(data.train_dataset)) == (1682, 1682, 943)
    model, _, _ = trainer._build(trainer.train_fn_settings(), data, torch.device("cpu"))
    assert isinstance(model, UltraResearchHSTU)
    with pytest.raises(ValueError, match="known main modules: HSTU, SASRec, ULTRA-HSTU"):
        host.trainer_get_sequential_encoder()(module_type="ULTRA", interaction_module=None)
    with pytest.raises(ValueError, match=r"unknown train_fn.dataset_name 'ml-1k'.*ml-100k"):
        host.trainer_get_reco_dataset()(
            dataset_name="ml-1k", max_sequence_length=50, chronological=True
        )


def test_other_models_encoder_bindings_are_errors():
    trainer.load_config(
        [str(RETRIEVAL_GIN / "ml100k_sasrec_cpu.gin")], ["hstu_encoder.num_blocks = 3"]
    )
    with pytest.raises(ValueError, match="hstu_encoder.num_blocks bound, but .*'SASRec'"):
        trainer.train_fn_settings()


def test_bindings_the_retrieval_encoder_would_not_read_are_errors(retrieval_dir):
    trainer.load_config([str(ML100K_ULTRA)], ["ultra_hstu.UltraHSTUEncoderConfig.fp8 = True"])
    data = _stub_dataset("ml-100k")
    with pytest.raises(ValueError, match="UltraHSTUEncoderConfig.fp8 = True does not apply"):
        trainer._build(trainer.train_fn_settings(), data, torch.device("cpu"))
    trainer.load_config([str(ML100K_ULTRA)], ["hstu_encoder.enable_relative_attention_bias = True"])
    with pytest.raises(ValueError, match="no relative attention bias"):
        trainer._build(trainer.train_fn_settings(), data, torch.device("cpu"))


# --- every retrieval gin file: each binding takes effect ----------------------------


def own_bindings(text: str):
    from gin import config_parser

    out = []
    for st in _statements(text):
        if isinstance(st, config_parser.BindingStatement):
            out.append(Binding(st.scope or "", st.selector, st.arg_name))
        elif isinstance(st, config_parser.IncludeStatement):
            out += own_bindings((REPO / st.filename).read_text())
    return out


class _Stub:
    def __init__(self, spec, max_sequence_length):
        self.max_item_id = spec.num_items
        self.all_item_ids = list(range(1, spec.num_items + 1))
        self.max_sequence_length = max_sequence_length


def _stub_dataset(name: str) -> _Stub:
    spec = next(s for s in rdata.RETRIEVAL_SOURCES if s.name == name)
    return _Stub(spec, trainer.train_fn_settings()["max_sequence_length"])


def _layers(model):
    return list(model._hstu._attention_layers)


def _train_fn(b: Dict[str, Any], param: str, v: Any) -> None:
    p = trainer.train_fn_settings()
    assert p[param] == v
    assert param in inspect.signature(host.research_train_fn).parameters
    if param == "main_module":
        assert (
            type(b["model"]).__name__
            == {
                "SASRec": "SASRec",
                "HSTU": "HSTU",
                "ULTRA-HSTU": "UltraResearchHSTU",
            }[v]
        )
    elif param == "item_embedding_dim":
        assert host.item_embedding_table(b["model"]).embedding_dim == v
    elif param == "dataset_name":
        assert v in {s.name for s in rdata.RETRIEVAL_SOURCES}
    elif param == "num_negatives" and p["loss_module"] == "SampledSoftmaxLoss":
        assert b["loss"]._num_to_sample == v
    elif param == "sampling_strategy":
        assert (
            type(b["sampler"]).__name__
            == {
                "local": "LocalNegativesSampler",
                "in-batch": "InBatchNegativesSampler",
            }[v]
        )


def _hstu_encoder(b: Dict[str, Any], param: str, v: Any) -> None:
    model = b["model"]
    assert type(model).__name__ in ("HSTU", "UltraResearchHSTU")
    layers = _layers(model)
    if param == "num_blocks":
        enc = getattr(model, "encoder_config", None)
        if enc is None:
            assert len(layers) == v
        elif not gin.get_bindings("ultra_hstu.UltraHSTUEncoderConfig").get("num_full_layers"):
            assert enc.num_full_layers == v
    elif param in ("num_heads", "dqk", "dv", "linear_dropout_rate"):
        attr = {
            "num_heads": "_num_heads",
            "dqk": "_attention_dim",
            "dv": "_linear_dim",
            "linear_dropout_rate": "_dropout_ratio",
        }[param]
        assert all(getattr(m, attr) == v for m in layers)
    else:
        raise AssertionError(param)


def _sasrec_encoder(b: Dict[str, Any], param: str, v: Any) -> None:
    assert type(b["model"]).__name__ == "SASRec"
    assert param in inspect.signature(host.sasrec_encoder).parameters
    assert gin.get_bindings(host.sasrec_encoder)[param] == v


def _ultra(b: Dict[str, Any], param: str, v: Any) -> None:
    model = b["model"]
    enc = model.encoder_config
    n1 = enc.num_full_layers
    full, upper = _layers(model)[:n1], _layers(model)[n1:]
    if param == "num_full_layers":
        assert len(full) == v
    elif param == "num_truncated_layers":
        assert len(upper) == v
    elif param == "truncated_seq_len":
        assert model._hstu.truncated_seq_len == v
    elif param in ("k1", "k2"):
        assert full and all(getattr(m.sla, param) == v for m in full)
    else:
        raise AssertionError(param)


def _create_data_loader(b: Dict[str, Any], param: str, v: Any) -> None:
    assert param in inspect.signature(host.create_data_loader).parameters
    tree = ast.parse((REPO / "ultra_hstu_plugin" / "retrieval" / "trainer.py").read_text())
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "create_data_loader"
    ]
    assert calls and all(param not in {k.arg for k in c.keywords} for c in calls)


def _run(b: Dict[str, Any], param: str, v: Any) -> None:
    assert getattr(b["settings"], param) == v


def _data(b: Dict[str, Any], param: str, v: Any) -> None:
    from ultra_hstu_plugin.retrieval.datasets import retrieval_data

    assert getattr(retrieval_data(), param) == v


Check = Callable[[Dict[str, Any], str, Any], None]
RETRIEVAL_CHECKS: Dict[str, Check] = {
    "train_fn": _train_fn,
    "hstu_encoder": _hstu_encoder,
    "sasrec_encoder": _sasrec_encoder,
    "ultra_hstu.UltraHSTUEncoderConfig": _ultra,
    "create_data_loader": _create_data_loader,
    "ultra_hstu.RetrievalRun": _run,
    "ultra_hstu.RetrievalData": _data,
}
FILES = sorted(RETRIEVAL_GIN.glob("*.gin"))


def test_every_dataset_and_model_has_a_config():
    names = {p.stem for p in FILES}
    for ds in ("beauty", "sports", "toys", "games"):
        for m in ("sasrec", "hstu", "ultra_hstu"):
            assert f"amzn_{ds}_{m}" in names
        assert f"amzn_{ds}_ultra_hstu_smoke_cpu" in names
    assert {"ml100k_sasrec_cpu", "ml100k_hstu_cpu", "ml100k_ultra_hstu_cpu"} <= names


def _readme_retrieval_blocks():
    import re

    from .test_gin_truth import README, RETRIEVAL_IMPORT

    blocks = re.findall(r"```gin\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in blocks if RETRIEVAL_IMPORT in b]


def test_readme_shows_the_retrieval_switch(tmp_path):
    blocks = _readme_retrieval_blocks()
    assert blocks and any('main_module = "ULTRA-HSTU"' in b for b in blocks)
    for i, block in enumerate(blocks):
        path = tmp_path / f"readme{i}.gin"
        path.write_text(block)
        test_every_retrieval_binding_takes_effect(path)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_retrieval_binding_takes_effect(path: Path):
    bindings = own_bindings(path.read_text())
    assert bindings
    unmapped = sorted({b.selector for b in bindings} - set(RETRIEVAL_CHECKS))
    assert not unmapped, f"{path.name}: no check for bindings of {unmapped}"
    settings = trainer.load_config([str(path)])
    p = trainer.train_fn_settings()
    torch.manual_seed(0)
    model, loss, sampler = trainer._build(p, _stub_dataset(p["dataset_name"]), torch.device("cpu"))
    built = {"model": model, "loss": loss, "sampler": sampler, "settings": settings}
    for b in bindings:
        value = gin.get_bindings(b.selector)[b.param]
        try:
            RETRIEVAL_CHECKS[b.selector](built, b.param, value)
        except AssertionError as e:
            raise AssertionError(f"{path.name}: {b} = {value!r} did not take effect: {e}") from e


# --- training --------------------------------------------------------------------------


def test_ultra_hstu_beats_popularity_on_movielens_100k(retrieval_dir, tmp_path):
    """A few CPU epochs of GR's research training with ULTRA-HSTU (SLA + truncation)."""
    L = 100
    settings = trainer.load_config(
        [str(ML100K_ULTRA)],
        [
            f"ultra_hstu.RetrievalData.data_dir = '{retrieval_dir}'",
            f"ultra_hstu.RetrievalRun.output_dir = '{tmp_path}'",
            "ultra_hstu.RetrievalRun.save_checkpoint = False",
            f"train_fn.max_sequence_length = {L}",
            "train_fn.num_epochs = 2",
            "train_fn.local_batch_size = 32",
            "train_fn.learning_rate = 4e-3",
            "train_fn.eval_interval = 1000",
            "ultra_hstu.UltraHSTUEncoderConfig.k1 = 32",
            "ultra_hstu.UltraHSTUEncoderConfig.k2 = 8",
            "ultra_hstu.UltraHSTUEncoderConfig.truncated_seq_len = 32",
        ],
    )
    summary = trainer.train(settings)
    pop = popularity_metrics(
        str(rdata.ML_100K.csv_path(retrieval_dir)), max_sequence_length=L, num_items=1682
    )
    ours = summary["eval"]
    assert summary["model"].startswith("ULTRA-HSTU-b2-k32p8+t1L32")
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "curves.jsonl").exists()
    print(f"HR@10 ULTRA-HSTU {ours['hr@10']:.4f} vs popularity {pop['hr@10']:.4f}")
    assert ours["hr@10"] > pop["hr@10"], (ours, pop)


def test_progress_lines_between_grs_train_loss_lines(retrieval_dir, tmp_path, capsys):
    """GR logs the train loss every eval_interval steps, epochs apart on a CPU; our progress
    line fills the gap (here: every step), and a negative period is an error."""
    base = [
        f"ultra_hstu.RetrievalData.data_dir = '{retrieval_dir}'",
        f"ultra_hstu.RetrievalRun.output_dir = '{tmp_path}'",
        "ultra_hstu.RetrievalRun.save_checkpoint = False",
        "train_fn.max_sequence_length = 20",
        "train_fn.num_epochs = 1",
        "train_fn.local_batch_size = 256",
        "ultra_hstu.UltraHSTUEncoderConfig.k1 = 8",
        "ultra_hstu.UltraHSTUEncoderConfig.k2 = 2",
        "ultra_hstu.UltraHSTUEncoderConfig.truncated_seq_len = 8",
        "train_fn.eval_interval = 1000",
    ]
    with pytest.raises(ValueError, match="progress_every_seconds must be >= 0"):
        trainer.load_config(
            [str(ML100K_ULTRA)], [*base, "ultra_hstu.RetrievalRun.progress_every_seconds = -1"]
        )
    settings = trainer.load_config(
        [str(ML100K_ULTRA)], [*base, "ultra_hstu.RetrievalRun.progress_every_seconds = 1e-9"]
    )
    trainer.train(settings)
    lines = [
        x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("epoch 0 step")
    ]
    steps = [int(x.split("step ")[1].split("/")[0]) for x in lines]
    total = int(lines[0].split("/")[1].split(":")[0])
    assert steps == list(range(1, total + 1)) and total >= 2, lines
    assert all("train loss" in x and "steps/s" in x for x in lines)
