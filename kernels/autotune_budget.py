# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""A bound on how many configs each Triton autotuner benchmarks, set from outside the kernels.

Why: the first call of a model at a new shape compiles and benchmarks every config of every
autotuned kernel it uses, one after the other.  GR's kernels carry 8 to 48 configs each, so a
first training step on an H200 took 159 s with an empty cache (issues 10 and 11 ask for
<= 60 s).  Compilation dominates, so time falls roughly with the number of configs tried.

How: :func:`limit_configs` chains a pruning step after the autotuner's own
``early_config_prune`` (Triton's documented hook, called before benchmarking) that keeps at most
``max_configs`` of the configs still in play, spread evenly over the list so that small and
large tiles both stay.  Nothing in the kernels changes; ``max_configs=None`` restores them.
Triton's on-disk autotuning cache keys on the configs benchmarked, so bounded and full tunings
never read each other's results.

Known configs: a bound trades speed for compile time only where the best config is unknown.
:func:`record_choices` reads what full tunings chose (each autotuner's in-memory cache, keyed
as Triton keys a call); given those as :class:`KnownConfigs`, the pruning step hands a call
whose key was recorded exactly that one config, so it compiles one binary and benchmarks
nothing, and the bound applies to the other calls.  A recorded config that the kernel no longer
declares (or its own pruning drops) is ignored, never forced on it.

Knows nothing of GR: callers pass the modules whose autotuners to bound.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

# Marks an autotuner this module has wrapped, holding its own early_config_prune.
_ORIGINAL = "_ultra_hstu_original_early_config_prune"


@dataclass(frozen=True)
class BoundedKernel:
    """One autotuner under the bound: ``configs`` it declares, ``kept`` at most per tuning."""

    name: str
    configs: int
    kept: int


def spread(configs: List[Any], n: int) -> List[Any]:
    """At most ``n`` of ``configs``, evenly spaced over the list, first and last included."""
    if n < 1:
        raise ValueError(f"max_configs must be >= 1, got {n}")
    if len(configs) <= n:
        return list(configs)
    if n == 1:
        return [configs[0]]
    picks = sorted({round(i * (len(configs) - 1) / (n - 1)) for i in range(n)})
    return [configs[i] for i in picks]


def find_autotuners(modules: Iterable[ModuleType]) -> List[Tuple[str, Any]]:
    """Every Triton ``Autotuner`` defined at module level in ``modules``, as (qualified name,
    autotuner), also where a ``triton.heuristics`` wrapper sits outside it.  Each once."""
    from triton.runtime.autotuner import Autotuner

    found: List[Tuple[str, Any]] = []
    seen: set = set()
    for module in modules:
        for attr, value in sorted(vars(module).items()):
            fn = value
            while fn is not None and not isinstance(fn, Autotuner):
                fn = getattr(fn, "fn", None) if hasattr(fn, "run") else None
            if fn is not None and id(fn) not in seen:
                seen.add(id(fn))
                found.append((f"{module.__name__}.{attr}", fn))
    return found


# A tuning key as stored: Triton's key tuple (key arguments' values, then every tensor
# argument's dtype), each element as str() gives it.
TuningKey = Tuple[str, ...]


def tuning_key(tuner: Any, named_args: Mapping[str, Any], kwargs: Mapping[str, Any]) -> TuningKey:
    """The key ``Autotuner.run`` computes for a call, from what its pruning hook receives."""
    args = {k: v for k, v in {**named_args, **kwargs}.items() if k in tuner.arg_names}
    key = [args[k] for k in tuner.keys if k in args]
    key += [a.dtype for a in args.values() if hasattr(a, "dtype")]
    return tuple(str(x) for x in key)


def config_dict(config: Any) -> Dict[str, Any]:
    """A ``triton.Config`` as JSON-able data: its block sizes and launch options."""
    return dict(config.all_kwargs())


def record_choices(autotuners: Iterable[Tuple[str, Any]]) -> Dict[str, Dict[TuningKey, Dict]]:
    """What each autotuner chose so far in this process: name -> tuning key -> config.
    Only tunings that compared configs count (an autotuner with one config has no choice)."""
    out: Dict[str, Dict[TuningKey, Dict]] = {}
    for name, tuner in autotuners:
        if len(tuner.configs) < 2:
            continue
        for key, config in tuner.cache.items():
            out.setdefault(name, {})[tuple(str(x) for x in key)] = config_dict(config)
    return out


@dataclass
class KnownConfigs:
    """Configs an earlier full tuning chose (``choices``: name -> tuning key -> config), and
    how often this process used them: ``used`` (a recorded key, its config declared) and
    ``missed`` (no record for the key: the bound applies) per autotuner name."""

    choices: Mapping[str, Mapping[TuningKey, Mapping[str, Any]]]
    used: Counter = field(default_factory=Counter)
    missed: Counter = field(default_factory=Counter)

    def pick(self, name: str, key: TuningKey, configs: List[Any]) -> Optional[Any]:
        want = self.choices.get(name, {}).get(key)
        if want is not None:
            for c in configs:
                if config_dict(c) == dict(want):
                    self.used[name] += 1
                    return c
        self.missed[name] += 1
        return None


def _bounded_prune(
    original: Optional[Callable[..., list]],
    n: Optional[int],
    tuner: Any,
    name: str,
    known: Optional[KnownConfigs],
) -> Callable[..., list]:
    def prune(configs: list, named_args: dict, **kwargs: Any) -> list:
        if original is not None:
            configs = original(configs, named_args, **kwargs)
        if known is not None:
            hit = known.pick(name, tuning_key(tuner, named_args, kwargs), list(configs))
            if hit is not None:
                return [hit]
        return list(configs) if n is None else spread(list(configs), n)

    return prune


def check_max_configs(value: Any, what: str = "max_configs") -> None:
    """``value`` is a bound :func:`limit_configs` takes (an int >= 1, or None); else an error
    naming ``what`` (the setting it came from) and the value."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{what} must be an integer >= 1 or None, got {value!r}")


def limit_configs(
    autotuners: Iterable[Tuple[str, Any]],
    max_configs: Optional[int],
    known: Optional[KnownConfigs] = None,
) -> List[BoundedKernel]:
    """Bound each autotuner to ``max_configs`` benchmarked configs (``None``: no bound, the
    kernels' own pruning restored); calls whose key ``known`` recorded get that config alone.
    Idempotent: a second call replaces the first's bound."""
    check_max_configs(max_configs)
    rows = []
    for name, tuner in autotuners:
        if not hasattr(tuner, _ORIGINAL):
            setattr(tuner, _ORIGINAL, tuner.early_config_prune)
        original = getattr(tuner, _ORIGINAL)
        bounded = max_configs is not None and len(tuner.configs) > max_configs
        if bounded or (known is not None and name in known.choices):
            tuner.early_config_prune = _bounded_prune(
                original, max_configs if bounded else None, tuner, name, known
            )
        else:
            tuner.early_config_prune = original
        kept = max_configs if bounded else len(tuner.configs)
        rows.append(BoundedKernel(name=name, configs=len(tuner.configs), kept=kept))
    return rows


def summary(rows: List[BoundedKernel]) -> str:
    """One line for a run's log: how many kernels were bounded and configs before/after."""
    bounded = [r for r in rows if r.kept < r.configs]
    return (
        f"{len(bounded)} of {len(rows)} autotuned kernels bounded: at most "
        f"{sum(r.kept for r in rows)} of {sum(r.configs for r in rows)} configs benchmarked "
        f"per shape"
    )
