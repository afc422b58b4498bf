# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Bad input gives one clear message naming the bad value, no deep traceback."""

import pytest
import torch

from ultra_hstu_plugin.host import HammerKernel, STULayerConfig
from ultra_hstu_plugin.modules.ultra_stu import UltraHSTULayer

from .conftest import run_cli

SMOKE = "gin_configs/ml100k_smoke_cpu.gin"


@pytest.mark.parametrize(
    "binding, message",
    [
        ("ultra_hstu.UltraHSTUEncoderConfig.k1=-4", "k1 must be a non-negative int, got -4"),
        ("ultra_hstu.UltraHSTUEncoderConfig.truncated_seq_len=0", "needs truncated_seq_len > 0"),
        ("ultra_hstu.UltraHSTUEncoderConfig.k2=100000", "k2=100000 must be below max_seq_len=256"),
        ("RunSettings.dataset='movielens-1b'", "unknown dataset 'movielens-1b'; known datasets:"),
        (
            "make_ultra_model.encoder='sasrec'",
            "unknown encoder 'sasrec'; known encoders: hstu, ultra_hstu",
        ),
        ("make_dataloaders.data_dir='/nonexistent'", "ultra-hstu data prepare movielens-100k"),
        ("RunSettings.hammer_kernel='CUTLASS'", "hammer_kernel='CUTLASS' is unknown"),
        (
            "RunSettings.autotune_max_configs=0",
            "RunSettings.autotune_max_configs must be an integer >= 1 or None, got 0",
        ),
        ("RunSettings.allow_tf32=1", "RunSettings.allow_tf32 must be True or False, got 1"),
        ("RunSettings.autotune_table=''", "RunSettings.autotune_table must be a path or None"),
        ("RunSettings.autotune_record=3", "RunSettings.autotune_record must be a path or None"),
        ("RunSettings.profile_steps=(5, 0)", "RunSettings.profile_steps must be (start, count)"),
    ],
)
def test_bad_gin_values(tmp_path, ml100k_dir, binding, message):
    """Checked in the launching process, before any worker or model exists."""
    from ultra_hstu_plugin.model import make_ultra_model
    from ultra_hstu_plugin.train.launcher import RunRequest, preflight

    request = RunRequest(
        gin_files=[SMOKE],
        gin_bindings=[
            f"make_dataloaders.data_dir='{ml100k_dir}'",
            binding,
            f"RunSettings.output_dir='{tmp_path}'",
        ],
    )
    with pytest.raises((ValueError, FileNotFoundError, KeyError)) as err:
        settings = preflight(request)  # parses gin once and leaves it parsed
        make_ultra_model(settings=settings)  # model-level values are checked when it is built
    assert message in str(err.value)


def test_cli_reports_bad_values_in_one_line(tmp_path, ml100k_dir):
    args = ["train", "--gin", SMOKE, "--gin-param", f"make_dataloaders.data_dir='{ml100k_dir}'"]
    args += ["--gin-param", "ultra_hstu.UltraHSTUEncoderConfig.k1=-4"]
    args += ["--gin-param", f"RunSettings.output_dir='{tmp_path}'"]
    res = run_cli(*args, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    assert (
        "ultra-hstu: error: ULTRA-HSTU encoder: k1 must be a non-negative int, got -4" in res.stderr
    )
    assert "Traceback" not in res.stderr


def test_missing_gin_file():
    from ultra_hstu_plugin.train.launcher import RunRequest, preflight

    with pytest.raises(FileNotFoundError, match="gin file gin_configs/nope.gin does not exist"):
        preflight(RunRequest(gin_files=["gin_configs/nope.gin"]))


def _layer():
    cfg = STULayerConfig(
        embedding_dim=8, num_heads=1, hidden_dim=4, attention_dim=4, output_dropout_ratio=0.0
    )
    layer = UltraHSTULayer(cfg, k1=2)
    layer.set_hammer_kernel(HammerKernel.PYTORCH)
    return layer


def test_lengths_over_max_seq_len():
    x = torch.randn(10, 8)
    with pytest.raises(ValueError, match="above max_seq_len=4"):
        _layer()(
            x=x,
            x_lengths=torch.tensor([10]),
            x_offsets=torch.tensor([0, 10]),
            max_seq_len=4,
            num_targets=torch.tensor([1]),
        )


def test_offsets_not_matching_lengths():
    x = torch.randn(10, 8)
    with pytest.raises(ValueError, match="seq_offsets ends at 9 but the jagged tensor has 10 rows"):
        _layer()(
            x=x,
            x_lengths=torch.tensor([9]),
            x_offsets=torch.tensor([0, 9]),
            max_seq_len=16,
            num_targets=torch.tensor([1]),
        )
    with pytest.raises(ValueError, match="x_lengths"):
        _layer()(
            x=x,
            x_lengths=torch.tensor([4, 5]),
            x_offsets=torch.tensor([0, 5, 10]),
            max_seq_len=16,
            num_targets=torch.tensor([1, 1]),
        )


def test_conflicting_window_settings():
    cfg = STULayerConfig(
        embedding_dim=8, num_heads=1, hidden_dim=4, attention_dim=4, max_attn_len=8
    )
    with pytest.raises(ValueError, match="max_attn_len=8 conflicts with k1=2"):
        UltraHSTULayer(cfg, k1=2)


def test_triton_kernel_on_cpu_tensors_says_what_to_do():
    layer = _layer()
    layer.set_hammer_kernel(HammerKernel.TRITON)
    x = torch.randn(6, 8)
    with pytest.raises(ValueError, match="HammerKernel.TRITON needs CUDA tensors"):
        layer(
            x=x,
            x_lengths=torch.tensor([6]),
            x_offsets=torch.tensor([0, 6]),
            max_seq_len=8,
            num_targets=torch.tensor([1]),
        )
