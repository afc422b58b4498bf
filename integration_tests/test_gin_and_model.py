# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""gin files parse with GR's gin and build our encoder inside GR's ranking model."""

from pathlib import Path

import gin
import pytest
import torch

import ultra_hstu_plugin.gin  # noqa: F401
from ultra_hstu_plugin.host import DlrmHSTU, STUStack, gr_checkout_root, stu_module_of
from ultra_hstu_plugin.model import make_ultra_model
from ultra_hstu_plugin.modules.truncation import TruncatedSTU
from ultra_hstu_plugin.modules.ultra_stu import UltraHSTULayer

from .conftest import REPO

GIN_FILES = sorted(p for p in (REPO / "gin_configs").glob("*.gin"))


@pytest.fixture(autouse=True)
def _clean_gin():
    gin.clear_config()
    gin.add_config_file_search_path(str(REPO))
    gin.add_config_file_search_path(gr_checkout_root())
    yield
    gin.clear_config()


def test_every_gin_config_is_covered():
    names = {p.name for p in GIN_FILES}
    assert {
        "ml100k_smoke_cpu.gin",
        "ml100k_hstu_baseline_cpu.gin",
        "kuairand_1k_ultra_hstu.gin",
        "synthetic_long_gpu.gin",
    } <= names


@pytest.mark.parametrize("path", GIN_FILES, ids=lambda p: p.name)
def test_gin_file_parses_with_grs_gin(path: Path):
    gin.parse_config_file(str(path))
    assert gin.query_parameter("RunSettings.dataset")


def test_kuairand_config_includes_grs_own_gin():
    gin.parse_config_file(str(REPO / "gin_configs" / "kuairand_1k_ultra_hstu.gin"))
    # bound by GR's kuairand_1k.gin, which our file includes
    assert gin.query_parameter("%dataset") == "kuairand-1k"
    assert gin.query_parameter("%batch_size") == 16
    assert gin.query_parameter("make_ultra_model.encoder") == "ultra_hstu"


def test_smoke_gin_builds_ultra_hstu_inside_grs_model():
    gin.parse_config_file(str(REPO / "gin_configs" / "ml100k_smoke_cpu.gin"))
    model, hstu_config, tables = make_ultra_model()
    assert isinstance(model, DlrmHSTU)
    stack = stu_module_of(model)
    assert isinstance(stack, STUStack)
    layers = [m for m in stack.modules() if isinstance(m, UltraHSTULayer)]
    enc = gin.query_parameter("ultra_hstu.UltraHSTUEncoderConfig.num_full_layers")
    assert len(layers) == enc + 1
    assert layers[0].sla.k1 == 64 and layers[0].sla.k2 == 16
    assert layers[0].sla.contextual_seq_len == 5  # user_id, sex, age_group, occupation, zip_code
    assert any(isinstance(m, TruncatedSTU) for m in stack.modules())
    assert tables["movie_id"].num_embeddings >= 1683


def test_set_hammer_kernel_reaches_our_layers():
    from ultra_hstu_plugin.host import HammerKernel

    gin.parse_config_file(str(REPO / "gin_configs" / "ml100k_smoke_cpu.gin"))
    model, _, _ = make_ultra_model()
    model.set_hammer_kernel(HammerKernel.PYTORCH)
    layers = [m for m in model.modules() if isinstance(m, UltraHSTULayer)]
    assert layers and all(m.hammer_kernel() == HammerKernel.PYTORCH for m in layers)
    model.set_training_dtype(torch.bfloat16)
    assert all(m._training_dtype == torch.bfloat16 for m in layers)


def test_unknown_encoder_fails_with_known_names():
    from ultra_hstu_plugin.registry import UnknownComponentError

    gin.parse_config_file(str(REPO / "gin_configs" / "ml100k_smoke_cpu.gin"))
    with pytest.raises(UnknownComponentError, match="known encoders: hstu, ultra_hstu"):
        make_ultra_model(encoder="ultra")


def test_unknown_hstu_override_is_an_error():
    gin.parse_config_file(str(REPO / "gin_configs" / "ml100k_smoke_cpu.gin"))
    with pytest.raises(ValueError, match="hstu_num_head"):
        make_ultra_model(hstu_overrides={"hstu_num_head": 2})


def test_swap_encoder_example_runs():
    # examples/swap_encoder.py as written: GR's ranking model with our encoder, built in Python.
    import subprocess
    import sys

    from integration_tests.conftest import REPO

    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "swap_encoder.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "UltraHSTULayer" in out.stdout, out.stdout[-2000:]
