# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The autotuning bound: which configs a bounded autotuner hands Triton to benchmark.

Asked of Triton's own ``Autotuner.prune_configs`` (what ``run`` calls before benchmarking),
so a Triton that stopped calling ``early_config_prune`` would fail here."""

import types

import pytest
import triton
import triton.language as tl
from hypothesis import given
from hypothesis import strategies as st

from ultra_hstu_plugin.kernels.autotune_budget import (
    KnownConfigs,
    config_dict,
    find_autotuners,
    limit_configs,
    record_choices,
    spread,
    summary,
    tuning_key,
)

CONFIGS = [triton.Config({"BLOCK": b}, num_warps=w) for b in (16, 32, 64, 128) for w in (2, 4, 8)]


def _only_small(configs, named_args, **kwargs):
    """The kernel's own pruning: drops BLOCK > n (must still run before the bound)."""
    return [c for c in configs if c.kwargs["BLOCK"] <= named_args["n"]]


@triton.autotune(configs=CONFIGS, key=["n"], prune_configs_by={"early_config_prune": _only_small})
@triton.jit
def _pruned_kernel(x_ptr, n, BLOCK: tl.constexpr):
    tl.store(x_ptr + tl.arange(0, BLOCK), tl.zeros([BLOCK], tl.float32))


@triton.autotune(configs=CONFIGS, key=["n"])
@triton.heuristics({"EVEN": lambda args: args["n"] % 2 == 0})
@triton.jit
def _plain_kernel(x_ptr, n, BLOCK: tl.constexpr, EVEN: tl.constexpr):
    tl.store(x_ptr + tl.arange(0, BLOCK), tl.zeros([BLOCK], tl.float32))


@triton.heuristics({"EVEN": lambda args: args["n"] % 2 == 0})
@triton.autotune(configs=CONFIGS, key=["n"])
@triton.jit
def _wrapped_kernel(x_ptr, n, BLOCK: tl.constexpr, EVEN: tl.constexpr):
    tl.store(x_ptr + tl.arange(0, BLOCK), tl.zeros([BLOCK], tl.float32))


_Module = types.ModuleType("fake_kernels")
_Module.pruned = _pruned_kernel
_Module.plain = _plain_kernel
_Module.wrapped = _wrapped_kernel
_Module.not_a_kernel = 3


def _tried(tuner, n):
    tuner.nargs = {"x_ptr": None, "n": n}
    try:
        return tuner.prune_configs({})
    finally:
        tuner.nargs = None


@pytest.fixture(autouse=True)
def _unbounded_after():
    yield
    limit_configs(find_autotuners([_Module]), None)


@given(n=st.integers(0, 40), k=st.integers(1, 40))
def test_spread_keeps_at_most_n_in_order_with_both_ends(n, k):
    items = list(range(n))
    got = spread(items, k)
    assert len(got) == min(n, k)
    assert got == sorted(set(got))
    if n and k > 1:
        assert got[0] == 0 and got[-1] == n - 1


def test_spread_rejects_zero():
    with pytest.raises(ValueError, match="max_configs must be >= 1"):
        spread([1, 2], 0)


def test_finds_autotuners_inside_and_outside_heuristics():
    names = [name for name, _ in find_autotuners([_Module])]
    assert names == ["fake_kernels.plain", "fake_kernels.pruned", "fake_kernels.wrapped"]


def test_bound_runs_after_the_kernels_own_pruning():
    tuners = dict(find_autotuners([_Module]))
    pruned = tuners["fake_kernels.pruned"]
    assert len(_tried(pruned, 32)) == 6  # BLOCK 16 and 32, 3 warp counts each
    rows = limit_configs(tuners.items(), 4)
    got = _tried(pruned, 32)
    assert len(got) == 4
    assert all(c.kwargs["BLOCK"] <= 32 for c in got)  # the kernel's own rule still holds
    kept = {r.name: (r.configs, r.kept) for r in rows}
    assert kept["fake_kernels.plain"] == (12, 4)
    assert "3 of 3 autotuned kernels bounded" in summary(rows)


def test_bound_on_a_kernel_without_pruning_spreads_over_tiles():
    tuner = dict(find_autotuners([_Module]))["fake_kernels.plain"]
    limit_configs([("plain", tuner)], 4)
    blocks = [c.kwargs["BLOCK"] for c in _tried(tuner, 1000)]
    assert blocks[0] == 16 and blocks[-1] == 128  # small and large tiles both stay


def test_rebounding_replaces_and_none_restores():
    tuners = find_autotuners([_Module])
    pruned = dict(tuners)["fake_kernels.pruned"]
    limit_configs(tuners, 2)
    limit_configs(tuners, 5)  # not 2 then 5 stacked
    assert len(_tried(pruned, 1000)) == 5
    rows = limit_configs(tuners, None)
    assert len(_tried(pruned, 1000)) == 12
    assert len(_tried(pruned, 16)) == 3  # its own pruning is back, not dropped
    assert all(r.kept == r.configs for r in rows)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4"])
def test_bad_bound_is_an_error_naming_the_value(bad):
    with pytest.raises(ValueError, match="max_configs must be an integer >= 1 or None"):
        limit_configs(find_autotuners([_Module]), bad)


# ---------------------------------------------------------------- known configs (tables)


def _run_for_real(tuner, monkeypatch, x, n, timing):
    """``tuner.run`` as Triton runs it (its own key, pruning and choice), with the benchmark
    and the launch replaced: ``timing(config)`` is what each config would measure.  Returns
    (configs benchmarked, config launched)."""
    benched, launched = [], []

    def bench(*args, config, **kwargs):
        benched.append(config)
        return [timing(config)]

    def launch(*args, **kwargs):
        launched.append({k: kwargs[k] for k in ("BLOCK", "num_warps")})

    monkeypatch.setattr(tuner, "_bench", bench)
    monkeypatch.setattr(tuner.fn, "run", launch)
    tuner.run(x, n)
    return benched, launched[0]


def _favour(block, warps):
    return lambda c: 1.0 if (c.kwargs["BLOCK"], c.num_warps) == (block, warps) else 2.0


def test_a_recorded_choice_is_replayed_alone_under_tritons_own_key(monkeypatch):
    import torch

    tuner = dict(find_autotuners([_Module]))["fake_kernels.plain"]
    x = torch.full((4,), float("nan"))
    tuner.cache.clear()
    limit_configs([("plain", tuner)], None)
    benched, launched = _run_for_real(tuner, monkeypatch, x, 100, _favour(64, 4))
    assert len(benched) == 12 and launched == {"BLOCK": 64, "num_warps": 4}
    table = record_choices([("plain", tuner)])
    (key,) = table["plain"]
    assert key == ("100", "torch.float32")  # the key argument, then each tensor's dtype

    # A new process: nothing tuned in memory, the table known, the bound at 2.
    tuner.cache.clear()
    known = KnownConfigs(table)
    limit_configs([("plain", tuner)], 2, known)
    benched, launched = _run_for_real(tuner, monkeypatch, x, 100, _favour(16, 2))
    assert launched == {"BLOCK": 64, "num_warps": 4}  # the recorded choice, not re-searched
    assert len(benched) <= 1  # one config: Triton >= 3.7 skips timing it, older ones time it
    assert known.used == {"plain": 1} and not known.missed

    # Another shape (another key): the bound applies, the table is not forced on it.
    benched, launched = _run_for_real(tuner, monkeypatch, x.double(), 100, _favour(128, 8))
    assert len(benched) == 2 and launched == {"BLOCK": 128, "num_warps": 8}
    assert known.missed == {"plain": 1}


def test_a_recorded_config_the_kernel_prunes_is_not_forced():
    tuner = dict(find_autotuners([_Module]))["fake_kernels.pruned"]
    # BLOCK=128 recorded for n=100, but the kernel's own pruning drops BLOCK > n for n=16.
    want = config_dict(next(c for c in CONFIGS if c.kwargs["BLOCK"] == 128))
    key_16 = tuning_key(tuner, {"x_ptr": None, "n": 16}, {})
    known = KnownConfigs({"fake_kernels.pruned": {key_16: want}})
    limit_configs([("fake_kernels.pruned", tuner)], None, known)
    got = _tried(tuner, 16)
    assert [c.kwargs["BLOCK"] for c in got] == [16, 16, 16]
    assert known.missed == {"fake_kernels.pruned": 1}


def test_tuning_key_matches_what_triton_stores(monkeypatch):
    import torch

    tuner = dict(find_autotuners([_Module]))["fake_kernels.plain"]
    tuner.cache.clear()
    limit_configs([("plain", tuner)], None)
    x = torch.full((4,), float("nan"), dtype=torch.bfloat16)
    _run_for_real(tuner, monkeypatch, x, 7, _favour(32, 8))
    (stored,) = tuner.cache
    assert tuple(str(k) for k in stored) == tuning_key(tuner, {"x_ptr": x, "n": 7}, {})
