# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
import pytest

from ultra_hstu_plugin.modules.encoder_config import UltraHSTUEncoderConfig


@pytest.mark.parametrize(
    "kwargs, max_seq_len, message",
    [
        ({"k1": -1}, None, "k1 must be a non-negative int, got -1"),
        ({"k2": -3}, None, "k2 must be a non-negative int, got -3"),
        ({"num_full_layers": -1}, None, "num_full_layers"),
        ({"num_full_layers": 0}, None, "must be > 0"),
        ({"num_truncated_layers": 2}, None, "needs truncated_seq_len > 0"),
        ({"truncated_seq_len": 16}, None, "truncated_seq_len=16 is set but num_truncated_layers=0"),
        ({"k1": 512}, 256, "k1=512 must be below max_seq_len=256"),
        ({"num_truncated_layers": 1, "truncated_seq_len": 300}, 256, "truncated_seq_len=300"),
        ({"target_mode": "candidates"}, None, "target_mode"),
        ({"k2": 2.5}, None, "k2 must be a non-negative int, got 2.5"),
        ({"recompute_truncated_layers": True}, None, "applies to the truncated layers only"),
        ({"recompute_truncated_layers": 1}, None, "recompute_truncated_layers must be a bool"),
    ],
)
def test_bad_values_name_themselves(kwargs, max_seq_len, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        UltraHSTUEncoderConfig(**kwargs).validate(max_seq_len)


def test_good_config_validates():
    UltraHSTUEncoderConfig(
        num_full_layers=2, num_truncated_layers=2, truncated_seq_len=64, k1=32, k2=8
    ).validate(256)
