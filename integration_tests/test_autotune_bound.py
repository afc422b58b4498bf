# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The autotuning bound reaches GR's real kernels (and ours) without editing GR."""

import pytest

from ultra_hstu_plugin.autotune import SINGLE_CONFIG_WARNING, bound_autotuning, kernel_modules
from ultra_hstu_plugin.kernels.autotune_budget import find_autotuners


@pytest.fixture
def unbounded_after():
    yield
    bound_autotuning(None)


def test_bound_covers_grs_attention_layer_norm_and_ours(unbounded_after):
    rows = {r.name: r for r in bound_autotuning(3)}
    gr_fwd = rows["generative_recommenders.ops.triton.triton_hstu_attention._hstu_attn_fwd"]
    assert gr_fwd.configs > 3 and gr_fwd.kept == 3
    assert any(n.startswith("generative_recommenders.ops.triton.triton_layer_norm") for n in rows)
    ours = [n for n in rows if n.startswith("ultra_hstu_plugin.kernels.sla_attention")]
    assert ours and all(rows[n].kept <= 3 for n in ours)


def test_grs_own_pruning_still_runs_under_the_bound(unbounded_after):
    tuner = dict(find_autotuners(kernel_modules()))[
        "generative_recommenders.ops.triton.triton_hstu_attention._hstu_attn_fwd"
    ]
    original = tuner.early_config_prune
    assert original is not None  # GR prunes its attention configs by shape
    bound_autotuning(2)
    assert tuner.early_config_prune is not original
    bound_autotuning(None)
    assert tuner.early_config_prune is original


def test_a_single_config_bound_warns_of_its_steady_state_cost(unbounded_after, caplog):
    # A bound of 1 runs each kernel's first config untimed: 11x slower SLA attention was
    # measured at L=4096 in fp32, so a user choosing it for a fast first step is told.
    with caplog.at_level("WARNING", logger="ultra_hstu_plugin.autotune"):
        bound_autotuning(4)
        assert not caplog.records
        rows = bound_autotuning(1)
    assert all(r.kept == 1 for r in rows if r.configs > 1)
    assert [r.getMessage() for r in caplog.records] == [SINGLE_CONFIG_WARNING]
