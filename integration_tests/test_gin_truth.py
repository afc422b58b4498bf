# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Every binding shown in README.md and gin_configs/ takes effect on what the run builds.

Each source (every ```gin block of the README, every gin_configs/*.gin) is parsed the
way ``ultra-hstu train`` parses it; then the run's objects are built (RunSettings, the
model through ``make_ultra_model``, the dataloaders' inputs, GR's optimizer factories,
SyntheticConfig) and every binding written in the source, or in a file of this
repository that it includes, is looked up in ``CHECKS``: binding name -> a check that
the built object carries the bound value.  A binding with no entry fails the test, so
a new binding cannot pass through unverified.  Bindings of GR's own included files
(``kuairand_1k.gin``) are GR's and not checked here.

Also: one test per "ignored field" error, the flag shorthands, and parse-once.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import gin
import pytest
import torch
from gin import config_parser

import ultra_hstu_plugin.gin  # noqa: F401
from ultra_hstu_plugin import config, host
from ultra_hstu_plugin.config import ConfigSource, RunSettings
from ultra_hstu_plugin.data.synthetic import SyntheticConfig
from ultra_hstu_plugin.host import STUStack, stu_module_of
from ultra_hstu_plugin.model import make_ultra_model
from ultra_hstu_plugin.modules.encoder_config import UltraHSTUEncoderConfig
from ultra_hstu_plugin.modules.mixture_of_transducers import MixtureOfTransducers, StreamConfig
from ultra_hstu_plugin.modules.truncation import TruncatedSTU
from ultra_hstu_plugin.modules.ultra_stu import UltraHSTULayer
from ultra_hstu_plugin.train import dataloaders

from .conftest import REPO

README = REPO / "README.md"
# README fragments with no include of their own are shown as additions to a config that
# names the data and model size; this is that base.
FRAGMENT_BASE = "import ultra_hstu_plugin.gin\ninclude 'gin_configs/common/ml100k_cpu.gin'\n"


RETRIEVAL_IMPORT = "import ultra_hstu_plugin.retrieval.gin"


def readme_gin_blocks() -> List[str]:
    """The README's ranking gin blocks (retrieval ones: integration_tests/test_retrieval.py)."""
    text = README.read_text()
    blocks = re.findall(r"```gin\n(.*?)```", text, flags=re.S)
    return [b for b in blocks if RETRIEVAL_IMPORT not in b]


def sources() -> List[Tuple[str, str]]:
    """(id, gin text) of every config a user is shown."""
    out = []
    for i, block in enumerate(readme_gin_blocks()):
        text = block if "include " in block else FRAGMENT_BASE + block
        out.append((f"README-block{i}", text))
    for p in sorted((REPO / "gin_configs").glob("*.gin")):
        out.append((p.name, p.read_text()))
    return out


@dataclass(frozen=True)
class Binding:
    scope: str
    selector: str
    param: str

    @property
    def name(self) -> str:
        return f"{self.selector}.{self.param}"

    def __str__(self) -> str:
        return (f"{self.scope}/" if self.scope else "") + self.name


def _statements(text: str):
    return config_parser.ConfigParser(text, gin.config.ParserDelegate(skip_unknown=True))


def own_bindings(text: str) -> List[Binding]:
    """Bindings written in ``text`` and in this repository's files it includes."""
    out: List[Binding] = []
    for st in _statements(text):
        if isinstance(st, config_parser.BindingStatement):
            out.append(Binding(st.scope or "", st.selector, st.arg_name))
        elif isinstance(st, config_parser.IncludeStatement):
            included = REPO / st.filename
            if included.exists():  # GR's own files are GR's (see the module docstring)
                out += own_bindings(included.read_text())
    return out


@dataclass
class Built:
    """What a run built from one source."""

    settings: RunSettings
    model: Any
    hstu_config: Any
    dataloader_call: Dict[str, Any] = field(default_factory=dict)

    def stack(self) -> STUStack:
        return stu_module_of(self.model)

    def full_layers(self) -> List[UltraHSTULayer]:
        return [m for m in self.stack()._stu_layers if isinstance(m, UltraHSTULayer)]

    def truncated(self) -> Optional[TruncatedSTU]:
        l2 = [m for m in self.stack()._stu_layers if isinstance(m, TruncatedSTU)]
        return l2[0] if l2 else None

    def upper_layers(self) -> List[UltraHSTULayer]:
        l2 = self.truncated()
        return [m for m in l2.modules() if isinstance(m, UltraHSTULayer)] if l2 else []

    def mot(self) -> Optional[MixtureOfTransducers]:
        t = host.transducer_of(self.model)
        return t if isinstance(t, MixtureOfTransducers) else None

    def all_layers(self) -> List[UltraHSTULayer]:
        return [m for m in self.model.modules() if isinstance(m, UltraHSTULayer)]

    def layers_using_k(self) -> List[UltraHSTULayer]:
        # with streams every stream layer uses k1/k2; else only the full-sequence layers
        return self.all_layers() if self.mot() else self.full_layers()


def _stream(built: Built, scope: str) -> StreamConfig:
    with gin.config_scope(scope):
        name = gin.get_bindings("ultra_hstu.StreamConfig")["name"]
    mot = built.mot()
    assert mot is not None, f"{scope}/StreamConfig bound but the model has no streams"
    return next(s for s in mot.streams if s.name == name)


def _stream_stack(built: Built, scope: str) -> STUStack:
    mot = built.mot()
    s = _stream(built, scope)
    return mot._stream_stacks[mot.streams.index(s)]


def _resolved_depth(built: Built) -> int:
    return len(built.full_layers())


def _dataloader_args(built: Built, monkeypatch) -> Dict[str, Any]:
    """Call make_dataloaders with the run's settings; record what reaches the dataset."""
    seen: Dict[str, Any] = {}

    class Recorder:
        def dataset(self, hstu_config, data_dir, is_inference):
            seen["data_dir"] = data_dir
            raise _Stop

    def spec(self: RunSettings) -> Recorder:
        seen.update(dataset=self.dataset, batch_size=self.batch_size)
        return Recorder()

    with pytest.MonkeyPatch.context() as m, pytest.raises(_Stop):
        m.setattr(RunSettings, "dataset_spec", spec)
        dataloaders.make_dataloaders(
            hstu_config=built.hstu_config,
            settings=built.settings,
            cost_model=lambda lengths: lengths.double(),  # what a length_balanced run needs
        )
    return seen


class _Stop(Exception):
    pass


def _not_passed_by_caller(fn_name: str, param: str, caller: Path) -> None:
    """gin lets an explicit argument win over a binding: the caller must not pass it."""
    tree = ast.parse(caller.read_text())
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", None) == fn_name
    ]
    assert calls, f"{caller.name} never calls {fn_name}, so its bindings would be ignored"
    for c in calls:
        assert param not in {k.arg for k in c.keywords}, f"{caller.name} passes {fn_name}({param}=)"


LAUNCHER = REPO / "ultra_hstu_plugin" / "train" / "launcher.py"
SHARDING = REPO / "ultra_hstu_plugin" / "train" / "sharding.py"

Check = Callable[[Built, str, Any, Any], None]  # (built, scope, bound value, monkeypatch)


def _settings(name: str) -> Check:
    def check(b: Built, scope: str, v: Any, mp: Any) -> None:
        assert getattr(b.settings, name) == v
        if name in ("dataset", "batch_size"):  # they reach the dataloaders from settings
            assert _dataloader_args(b, mp)[name] == v
        if name == "dataset":
            assert b.hstu_config == b.settings.dataset_spec().hstu_config(
                gin.query_parameter("make_ultra_model.hstu_overrides")
                if _is_bound("make_ultra_model.hstu_overrides")
                else None
            )

    return check


def _built_sampler(b: Built) -> Any:
    from ultra_hstu_plugin.train.sampled_loader import make_train_sampler

    return make_train_sampler(b.settings, b.model, b.hstu_config, rank=0)


def _run_sampler(b: Built, scope: str, v: Any, mp: Any) -> None:
    assert b.settings.sampler == v
    s = _built_sampler(b)
    assert (s.name if s is not None else None) == v


def _sampler_field(name: str) -> Check:
    def check(b: Built, scope: str, v: Any, mp: Any) -> None:
        s = _built_sampler(b)
        assert s is not None, "SamplerSettings bound but no RunSettings.sampler"
        if name == "cost_calibration":  # shapes the cost model; not a sampler attribute
            data = json.loads(Path(v).read_text())
            assert (s.cost_model.quadratic, s.cost_model.linear) == (
                data["quadratic_ms"],
                data["linear_ms"],
            )
            return
        got = s.target if name == "target_cost" else getattr(s, name)
        assert got == v

    return check


def _is_bound(selector: str) -> bool:
    try:
        gin.query_parameter(selector)
        return True
    except ValueError:
        return False


def _encoder(b: Built, scope: str, v: Any, mp: Any) -> None:
    assert b.model.encoder_name == v
    assert bool(b.all_layers()) == (v == "ultra_hstu")


def _encoder_config(b: Built, scope: str, v: Any, mp: Any) -> None:
    assert isinstance(v, UltraHSTUEncoderConfig)
    enc = v.with_default_depth(b.hstu_config.hstu_attn_num_layers)
    assert len(b.full_layers()) == enc.num_full_layers
    assert len(b.upper_layers()) == enc.num_truncated_layers


def _merged(b: Built, scope: str, v: Any, mp: Any) -> None:
    pre = host.transducer_of(b.model)._input_preprocessor
    has_target_action = any("target_action" in n for n, _ in pre.named_parameters())
    assert has_target_action == (not v)


def _hstu_overrides(b: Built, scope: str, v: Any, mp: Any) -> None:
    for key, value in v.items():
        assert getattr(b.hstu_config, key) == value, key
    if "hstu_transducer_embedding_dim" in v:
        for layer in b.all_layers():
            assert layer._embedding_dim == v["hstu_transducer_embedding_dim"]
    if "hstu_num_heads" in v:
        for layer in b.all_layers():
            assert layer._num_heads == v["hstu_num_heads"]


def _bf16(b: Built, scope: str, v: Any, mp: Any) -> None:
    assert b.model._bf16_training == v


def _streams(b: Built, scope: str, v: Any, mp: Any) -> None:
    assert b.mot() is not None and b.mot().streams == list(v)


def _enc_field(name: str) -> Check:
    def check(b: Built, scope: str, v: Any, mp: Any) -> None:
        if name == "num_full_layers":
            assert len(b.full_layers()) == v
        elif name == "num_truncated_layers":
            assert len(b.upper_layers()) == v
        elif name == "truncated_seq_len":
            assert b.truncated().truncated_seq_len == v
        elif name in ("k1", "k2"):
            layers = b.layers_using_k()
            assert layers and all(getattr(m.sla, name) == v for m in layers)
        elif name in ("upper_k1", "upper_k2"):
            layers = b.upper_layers()
            assert layers and all(getattr(m.sla, name[len("upper_") :]) == v for m in layers)
        elif name in ("target_mode", "full_attn_tail"):
            assert all(getattr(m.sla, name) == v for m in b.all_layers())
        elif name == "fp8":
            assert b.all_layers() and all(m._fp8 == v for m in b.all_layers())
        elif name == "fp8_gemm_variant":
            assert b.all_layers() and all(m.fp8_gemm_variant == v for m in b.all_layers())
        else:  # pragma: no cover - the table below names only the fields above
            raise AssertionError(name)

    return check


def _stream_field(name: str) -> Check:
    def check(b: Built, scope: str, v: Any, mp: Any) -> None:
        assert getattr(_stream(b, scope), name) == v
        if name == "num_layers":
            assert len(_stream_stack(b, scope)._stu_layers) == v

    return check


def _data_dir(b: Built, scope: str, v: Any, mp: Any) -> None:
    assert _dataloader_args(b, mp)["data_dir"] == v


def _loader_sampler(b: Built, scope: str, v: Any, mp: Any) -> None:
    """The launcher leaves the binding to gin and hands make_dataloaders the cost model it
    needs (what the sampler does to batches: test_lbsl_training.py's 2-process run)."""
    from ultra_hstu_plugin.train.launcher import _balancing_cost_model

    _not_passed_by_caller("make_dataloaders", "sampler", LAUNCHER)
    cost = _balancing_cost_model(_built_sampler(b), b.model, b.hstu_config)
    assert (cost is not None) == (v == "length_balanced")


def _synthetic(name: str) -> Check:
    def check(b: Built, scope: str, v: Any, mp: Any) -> None:
        # what `ultra-hstu data prepare synthetic-long --gin` builds (datasets.prepare)
        assert getattr(SyntheticConfig(), name) == v

    return check


def _gr_loop(fn: str) -> Callable[[str], Check]:
    def for_param(param: str) -> Check:
        def check(b: Built, scope: str, v: Any, mp: Any) -> None:
            assert param in inspect.signature(getattr(host, fn)).parameters
            _not_passed_by_caller(fn, param, LAUNCHER)

        return check

    return for_param


def _optimizer(fn: str) -> Callable[[str], Check]:
    def for_param(param: str) -> Check:
        def check(b: Built, scope: str, v: Any, mp: Any) -> None:
            _not_passed_by_caller(fn, param, SHARDING)
            cls, kwargs, _ = getattr(host, fn)()
            name = gin.query_parameter(f"{fn}.optimizer_name")
            if param == "optimizer_name":
                assert cls.__name__ == v
            elif param == "learning_rate":
                assert kwargs["lr"] == v
            elif param == "betas":
                got = kwargs.get("betas", (kwargs.get("beta1"), kwargs.get("beta2")))
                assert tuple(got) == tuple(v) or name == "RowWiseAdagrad" and "betas" not in kwargs
            elif param == "momentum" and name != "SGD":
                # GR reads momentum for SGD only, yet its signature has no default, so the
                # binding is required (and would be an error if left out), not ignored.
                assert inspect.signature(getattr(host, fn)).parameters[param].default is (
                    inspect.Parameter.empty
                )
            else:
                assert kwargs[param] == v

        return check

    return for_param


_ENC = (
    "num_full_layers",
    "num_truncated_layers",
    "truncated_seq_len",
    "k1",
    "k2",
    "upper_k1",
    "upper_k2",
    "target_mode",
    "full_attn_tail",
    "fp8",
    "fp8_gemm_variant",
)
_OPT = ("learning_rate", "optimizer_name", "momentum", "weight_decay", "eps", "betas")

# binding name (selector.param, as written in gin) -> check.  Explicit: a binding missing
# here fails test_every_shown_binding_takes_effect.
CHECKS: Dict[str, Check] = {
    **{f"RunSettings.{f}": _settings(f) for f in config.RunSettings.__dataclass_fields__},
    "RunSettings.sampler": _run_sampler,
    **{
        f"SamplerSettings.{f}": _sampler_field(f)
        for f in config.SamplerSettings.__dataclass_fields__
    },
    "make_ultra_model.encoder": _encoder,
    "make_ultra_model.encoder_config": _encoder_config,
    "make_ultra_model.merged_item_action_tokens": _merged,
    "make_ultra_model.hstu_overrides": _hstu_overrides,
    "make_ultra_model.bf16_training": _bf16,
    "make_ultra_model.streams": _streams,
    **{f"ultra_hstu.UltraHSTUEncoderConfig.{f}": _enc_field(f) for f in _ENC},
    **{f"ultra_hstu.StreamConfig.{f}": _stream_field(f) for f in ("name", "action_mask")},
    **{f"ultra_hstu.StreamConfig.{f}": _stream_field(f) for f in ("num_layers", "max_len")},
    "make_dataloaders.data_dir": _data_dir,
    "make_dataloaders.sampler": _loader_sampler,
    **{
        f"ultra_hstu.SyntheticConfig.{f}": _synthetic(f)
        for f in ("num_users", "num_items", "min_len", "max_len")
    },
    **{f"train_loop.{p}": _gr_loop("train_loop")(p) for p in ("num_epochs", "num_batches")},
    **{f"train_loop.{p}": _gr_loop("train_loop")(p) for p in ("metric_log_frequency",)},
    "train_loop.output_trace": _gr_loop("train_loop")("output_trace"),
    "eval_loop.output_trace": _gr_loop("eval_loop")("output_trace"),
    "eval_loop.num_batches": _gr_loop("eval_loop")("num_batches"),
    **{
        f"{fn}.{p}": _optimizer(fn)(p)
        for fn in ("dense_optimizer_factory_and_class", "sparse_optimizer_factory_and_class")
        for p in _OPT
    },
}


def _write(tmp_path: Path, sid: str, text: str) -> Path:
    # inside gin_configs/ so includes resolve as for the shipped files
    d = tmp_path / "gin_configs"
    d.mkdir(exist_ok=True)
    p = d / f"{sid}.gin"
    p.write_text(text)
    return p


def _build(path: Path) -> Built:
    settings = config.load(ConfigSource.of([str(path)]))
    model, hstu_config, _ = make_ultra_model(settings=settings)
    return Built(settings=settings, model=model, hstu_config=hstu_config)


@pytest.fixture(autouse=True)
def _clean_gin():
    config.clear()
    yield
    config.clear()


SOURCES = sources()


def test_readme_shows_the_configs():
    blocks = readme_gin_blocks()
    assert len(blocks) >= 2 and any("StreamConfig" in b for b in blocks)


@pytest.mark.parametrize("sid,text", SOURCES, ids=[s for s, _ in SOURCES])
def test_every_shown_binding_takes_effect(tmp_path, monkeypatch, sid, text):
    bindings = own_bindings(text)
    assert bindings, sid
    unmapped = sorted({b.name for b in bindings} - set(CHECKS))
    assert not unmapped, f"{sid}: no check says what these bindings do: {unmapped}"
    torch.manual_seed(0)
    built = _build(_write(tmp_path, sid, text))
    for b in bindings:
        with gin.config_scope(b.scope or None):
            value = gin.get_bindings(b.selector)[b.param]
        try:
            CHECKS[b.name](built, b.scope, value, monkeypatch)
        except AssertionError as e:
            raise AssertionError(f"{sid}: {b} = {value!r} did not take effect: {e}") from e


def test_fragment_bindings_are_the_readme_ones():
    # the streams fragment is checked on top of FRAGMENT_BASE; its own bindings all count
    streams_block = next(b for b in readme_gin_blocks() if "StreamConfig" in b)
    names = {b.name for b in own_bindings(streams_block)}
    assert "ultra_hstu.UltraHSTUEncoderConfig.fp8" in names
    assert "make_ultra_model.streams" in names


# --- "ignored field" errors -----------------------------------------------------------


SMOKE = REPO / "gin_configs" / "ml100k_smoke_cpu.gin"
STREAMS = [
    "make_ultra_model.streams = [@a/ultra_hstu.StreamConfig(), @b/ultra_hstu.StreamConfig()]",
    "a/ultra_hstu.StreamConfig.name = 'a'",
    "a/ultra_hstu.StreamConfig.action_mask = 31",
    "b/ultra_hstu.StreamConfig.name = 'b'",
    "b/ultra_hstu.StreamConfig.action_mask = 24",
]
ML100K = REPO / "gin_configs" / "common" / "ml100k_cpu.gin"


def _model(files, bindings):
    settings = config.load(ConfigSource.of([str(f) for f in files], bindings))
    return make_ultra_model(settings=settings)


def test_encoder_config_bindings_apply_without_encoder_config():
    # (a) the default config is built through gin, so the binding takes effect
    model, _, _ = _model([ML100K], ["ultra_hstu.UltraHSTUEncoderConfig.k1 = 32"])
    layers = [m for m in model.modules() if isinstance(m, UltraHSTULayer)]
    assert layers and all(m.sla.k1 == 32 for m in layers)
    assert len(layers) == 2  # num_full_layers=None -> hstu_attn_num_layers (ml100k_cpu.gin)


def test_fp8_binding_applies_to_streams_without_encoder_config():
    model, _, _ = _model([ML100K], [*STREAMS, "ultra_hstu.UltraHSTUEncoderConfig.fp8 = True"])
    layers = [m for m in model.modules() if isinstance(m, UltraHSTULayer)]
    assert layers and all(m._fp8 for m in layers)


@pytest.mark.parametrize(
    "binding",
    [
        "num_full_layers = 1",
        "num_truncated_layers = 1",
        "truncated_seq_len = 8",
        "upper_k1 = 4",
        "upper_k2 = 4",
    ],
)
def test_streams_reject_fields_they_ignore(binding):
    # (b) the streams set depth and length; each of these would be dropped
    name = binding.split(" ")[0]
    with pytest.raises(ValueError, match=f"{name}=.* conflicts with streams"):
        _model([ML100K], [*STREAMS, f"ultra_hstu.UltraHSTUEncoderConfig.{binding}"])


@pytest.mark.parametrize("name", ["upper_k1", "upper_k2"])
def test_upper_window_without_truncated_layers(name):
    # (c) the upper window belongs to the truncated layers
    with pytest.raises(ValueError, match=f"{name}=8 is set but num_truncated_layers=0"):
        UltraHSTUEncoderConfig(**{name: 8}).validate(256)
    with pytest.raises(ValueError, match=f"{name}=8 is set but num_truncated_layers=0"):
        _model([ML100K], [f"ultra_hstu.UltraHSTUEncoderConfig.{name} = 8"])


def test_gr_encoder_rejects_ultra_hstu_bindings():
    # (d) GR's stack is built from DlrmHSTUConfig and never reads these
    with pytest.raises(ValueError, match=r"UltraHSTUEncoderConfig.fp8 is bound but encoder 'hstu'"):
        _model(
            [REPO / "gin_configs" / "ml100k_hstu_baseline_cpu.gin"],
            ["ultra_hstu.UltraHSTUEncoderConfig.fp8 = True"],
        )


def test_gr_encoder_keeps_merged_tokens():
    # (d) merged item+action tokens rewire GR's preprocessor: not ignored by "hstu"
    model, _, _ = _model(
        [REPO / "gin_configs" / "ml100k_hstu_baseline_cpu.gin"],
        ["make_ultra_model.merged_item_action_tokens = True"],
    )
    pre = host.transducer_of(model)._input_preprocessor
    assert not any("target_action" in n for n, _ in pre.named_parameters())


def test_stream_bindings_without_streams():
    with pytest.raises(ValueError, match=r"a/ultra_hstu.StreamConfig.action_mask is bound but"):
        _model([SMOKE], STREAMS[1:])


def test_unknown_fp8_gemm_variant():
    with pytest.raises(
        ValueError, match=r"fp8_gemm_variant must be one of \('auto', 'pointer', 'tma'\)"
    ):
        UltraHSTUEncoderConfig(fp8_gemm_variant="cutlass").validate()
    UltraHSTUEncoderConfig(fp8_gemm_variant="tma").validate()


# --- flags, parse once -----------------------------------------------------------------


def test_flags_become_run_settings():
    s = config.load(ConfigSource.of([str(SMOKE)], mode="eval", device="cpu", nproc=2))
    assert (s.mode, s.device, s.nproc) == ("eval", "cpu", 2)
    assert config.run_settings().nproc == 2  # a binding: anything reading gin sees it


def test_flag_conflicting_with_binding_names_both():
    with pytest.raises(
        ValueError, match=r"--mode train conflicts with the gin binding RunSettings.mode = 'eval'"
    ):
        config.load(ConfigSource.of([str(SMOKE)], ["RunSettings.mode = 'eval'"], mode="train"))
    # the same value twice is no conflict
    config.load(ConfigSource.of([str(SMOKE)], ["RunSettings.nproc = 2"], nproc=2))


def test_gin_is_parsed_once_per_process(monkeypatch, ml100k_dir, tmp_path):
    from ultra_hstu_plugin.train import launcher

    calls = []
    real = gin.parse_config_files_and_bindings
    monkeypatch.setattr(
        gin, "parse_config_files_and_bindings", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    trained = []

    def fake_train_loop(**kw):
        trained.append(kw)
        raise _Stop  # the run got as far as training: the model and data were built

    monkeypatch.setattr(launcher, "train_loop", fake_train_loop)
    request = launcher.RunRequest(
        gin_files=[str(SMOKE)],
        gin_bindings=[
            f"make_dataloaders.data_dir = '{ml100k_dir}'",
            f"RunSettings.output_dir = '{tmp_path}'",
            "RunSettings.save_checkpoint = False",
        ],
        mode="train",
    )
    with pytest.raises(_Stop):
        launcher.run(request)
    assert len(calls) == 1 and trained


def test_length_balanced_rejects_a_model_it_cannot_price():
    from ultra_hstu_plugin.train.launcher import _balancing_cost_model

    bindings = [*STREAMS, "make_dataloaders.sampler = 'length_balanced'"]
    model, cfg, _ = _model([ML100K], bindings)
    with pytest.raises(ValueError, match=r"'length_balanced' cannot price rows: .*streams"):
        _balancing_cost_model(None, model, cfg)
