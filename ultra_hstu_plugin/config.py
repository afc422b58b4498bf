# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""gin is the one truth: loading a run's gin config, and the run-level settings in it.

Everything a run does comes from gin files plus ``--gin-param`` bindings; the CLI flags
``--mode``, ``--device`` and ``--nproc`` are shorthands for ``RunSettings.mode`` /
``.device`` / ``.nproc`` bindings (a flag that disagrees with a binding is an error
naming both).  :func:`load` parses a :class:`ConfigSource` (files + bindings + flags);
:func:`ensure_loaded` reuses this process's parse when it is of the same source, so the
launching process parses once and each spawned worker parses once.

Importable without GR (``gr_checkout_root`` is looked up only when a config is loaded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import gin

MODES = ("train", "eval", "train-eval")
DEVICES = ("cpu", "cuda")


@gin.configurable
@dataclass(frozen=True)
class RunSettings:
    """Run-level settings bound in gin (``RunSettings.batch_size = 32`` ...).

    ``dataset`` is the single binding naming the dataset: the model, the dataloaders and
    the quantized artifact all read it from here.  ``mode``/``device``/``nproc`` may also
    be given as ``ultra-hstu train`` flags, which become these bindings.
    """

    dataset: str = "movielens-100k"
    batch_size: int = 32
    output_dir: str = "runs/latest"
    seed: int = 0
    # "auto": PYTORCH on CPU, TRITON on CUDA; or any HammerKernel name.
    hammer_kernel: str = "auto"
    save_checkpoint: bool = True
    load_checkpoint: str = ""
    mode: str = "train-eval"  # "train", "eval" (needs load_checkpoint) or "train-eval"
    device: str = "cpu"  # "cpu" (gloo) or "cuda" (NCCL, one GPU a process)
    nproc: int = 1  # local processes; under torchrun the world size comes from torchrun
    # Check every batch's jagged structure and ids on the CPU before it reaches the device
    # (train/batch_checks.py); off only to save its cost on trusted data.
    check_batches: bool = True
    # Loss and every metric go to TensorBoard and curves.jsonl every this many steps (train
    # and eval); GR's own loop logs only when batch_idx % metric_log_frequency != 0.
    log_every_steps: int = 10
    # A sampler component of the registry ("lbsl", "sl") applied to every training batch
    # before the encoder (train/sampled_loader.py); its parameters are SamplerSettings'.
    # None: no sampling.  Eval batches are never sampled.
    sampler: Optional[str] = None
    # At most this many configs benchmarked per Triton autotuner and shape, GR's kernels and
    # ours (ultra_hstu_plugin/autotune.py): bounds the first step's compile time.  None: every
    # config, as GR does.
    autotune_max_configs: Optional[int] = 4
    # Configs full tunings chose, per kernel and shape (ultra_hstu_plugin/autotune.py): a
    # recorded shape compiles its one config, no search.  "auto": this GPU's committed table
    # (ultra_hstu_plugin/tuned_configs/), None: none, or a path.  autotune_record: a path
    # that this run's choices are merged into at its end (run it with autotune_max_configs =
    # None so they are the full search's).
    autotune_table: Optional[str] = "auto"
    autotune_record: Optional[str] = None
    # (start, count): profile training steps start .. start+count-1 inside GR's loop and write
    # step_profile.{txt,json} + a Chrome trace to output_dir (train/step_profile.py).
    profile_steps: Optional[Tuple[int, int]] = None
    # CUDA only: fp32 matmuls and attention products in TF32 (sets
    # torch.backends.cuda.matmul.allow_tf32 and cudnn's; GR's Triton kernels and ours read
    # the first).  False, PyTorch's and GR's research trainer's default (its enable_tf32):
    # exact fp32.  An exact fp32 dot has no tensor-core path: ~Nx slower kernels and slower
    # compiles on an H200 (benchmarks/results/tf32_sla_h200.md).
    allow_tf32: bool = False

    def dataset_spec(self) -> Any:
        """The registry's spec for ``dataset``: the one place the name is looked up."""
        from ultra_hstu_plugin.registry import discover

        spec = discover().get("dataset", self.dataset).load()
        if getattr(spec, "kind", "ranking") != "ranking":
            ranking = [
                c.name
                for c in discover().components("dataset")
                if not c.description.startswith("retrieval:")
            ]
            raise ValueError(
                f"RunSettings.dataset {self.dataset!r} is a retrieval dataset (GR's research "
                f"trainer: train_fn.dataset_name, `ultra-hstu retrieval-train`); ranking "
                f"datasets: {', '.join(ranking)}"
            )
        return spec

    def validate(self) -> None:
        """One clear error naming the bad field (device-independent checks only)."""
        if self.mode not in MODES:
            raise ValueError(f"RunSettings.mode (--mode) must be one of {MODES}, got {self.mode!r}")
        if self.device not in DEVICES:
            raise ValueError(
                f"RunSettings.device (--device) must be one of {DEVICES}, got {self.device!r}"
            )
        if isinstance(self.nproc, bool) or not isinstance(self.nproc, int) or self.nproc < 1:
            raise ValueError(f"--nproc must be >= 1, got {self.nproc}")
        if self.batch_size <= 0:
            raise ValueError(f"RunSettings.batch_size must be positive, got {self.batch_size}")
        if (
            isinstance(self.log_every_steps, bool)
            or not isinstance(self.log_every_steps, int)
            or self.log_every_steps < 1
        ):
            raise ValueError(
                f"RunSettings.log_every_steps must be an integer >= 1, got {self.log_every_steps!r}"
            )
        from ultra_hstu_plugin.autotune import check_settings

        check_settings(
            "RunSettings", self.autotune_max_configs, self.autotune_table, self.autotune_record
        )
        _check_profile_steps(self.profile_steps)
        if not isinstance(self.allow_tf32, bool):
            raise ValueError(
                f"RunSettings.allow_tf32 must be True or False, got {self.allow_tf32!r}"
            )
        if self.sampler is not None and not isinstance(self.sampler, str):
            raise ValueError(
                f"RunSettings.sampler must be a sampler's registry name or None, got "
                f"{self.sampler!r}"
            )


def _check_profile_steps(value: Any) -> None:
    """``(start, count)`` with ``start >= 0`` and ``1 <= count <= 100`` (a trace of more steps
    is large), or None."""
    if value is None:
        return
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and value[0] >= 0
        and 1 <= value[1] <= 100
    )
    if not ok:
        raise ValueError(
            "RunSettings.profile_steps must be (start, count) with start >= 0 and "
            f"1 <= count <= 100, or None; got {value!r}"
        )


@gin.configurable
@dataclass(frozen=True)
class SamplerSettings:
    """Parameters of the ``RunSettings.sampler`` (bound in gin: ``SamplerSettings.alpha``).

    ``alpha``: stochastic length's exponent, in (1, 2] (both samplers).  ``max_len``: SL's
    ``max_seq_len`` (GR's ``apply_sampling``), None = the longest history the dataset
    yields (``max_seq_len - max_num_candidates - #contextual features``).  LBSL only:
    ``floor`` (no history is cut below it), ``warmup_steps`` (plain SL steps that measure
    the target), ``refresh_every`` (steps between target refreshes, 0 = never),
    ``target_scale`` (target level = this times SL's mean cost over ranks), ``target_mode``
    ("rank_quantile": per step, the quantile of the ranks' batch costs that keeps that
    level on the recorded steps, one scalar all-gathered a step; "mean": the level itself,
    fixed between refreshes) and ``target_cost`` (a fixed target, in the cost model's
    units; skips the warm-up).  The sampler's
    generator is seeded from ``RunSettings.seed + rank``.  ``cost_calibration`` (both):
    a ``lbsl_cost_calibration*.json`` written by ``python -m
    ultra_hstu_plugin.sampling.calibration`` from an encoder benchmark; its per-pair and
    per-token costs replace the analytic FLOPs of the cost model (None: FLOPs).
    """

    alpha: float = 1.6
    max_len: Optional[int] = None
    floor: int = 64
    warmup_steps: int = 100
    refresh_every: int = 0
    target_scale: float = 1.0
    target_cost: Optional[float] = None
    target_mode: str = "rank_quantile"
    cost_calibration: Optional[str] = None


def metrics_file_name(mode: str) -> str:
    """The summary file a run of ``mode`` writes in ``RunSettings.output_dir``.

    An eval-only run usually evaluates another run's checkpoint, often into the same
    folder; its own name keeps the training run's ``metrics.json`` intact.
    """
    return "eval_metrics.json" if mode == "eval" else "metrics.json"


def curves_file_name(mode: str) -> str:
    """The per-logged-step JSONL file (``ultra-hstu plot`` reads it); see metrics_file_name."""
    return "eval_curves.jsonl" if mode == "eval" else "curves.jsonl"


# RunSettings field -> the CLI flag that is its shorthand.
FLAG_OF_FIELD = {"mode": "--mode", "device": "--device", "nproc": "--nproc"}


@dataclass(frozen=True)
class ConfigSource:
    """What a process parses: gin files, extra bindings, and CLI shorthand flags.

    Plain strings and ints, so it pickles into spawned workers, which parse it again.
    ``flags`` holds ``(RunSettings field, value)`` pairs for the flags that were given.
    """

    gin_files: Tuple[str, ...]
    gin_bindings: Tuple[str, ...] = ()
    flags: Tuple[Tuple[str, Any], ...] = ()
    skip_unknown: bool = False

    @staticmethod
    def of(
        gin_files: Sequence[str],
        gin_bindings: Sequence[str] = (),
        skip_unknown: bool = False,
        **flags: Any,
    ) -> ConfigSource:
        unknown = set(flags) - set(FLAG_OF_FIELD)
        if unknown:
            raise TypeError(f"not a RunSettings shorthand: {sorted(unknown)}")
        return ConfigSource(
            gin_files=tuple(str(f) for f in gin_files),
            gin_bindings=tuple(gin_bindings),
            flags=tuple((k, v) for k, v in flags.items() if v is not None),
            skip_unknown=skip_unknown,
        )


def add_gin_search_paths(gin_files: Sequence[str]) -> None:
    """Let includes name files relative to this repository's root or GR's checkout."""
    for f in gin_files:
        for parent in Path(f).resolve().parents:
            if parent.name == "gin_configs":
                gin.add_config_file_search_path(str(parent.parent))
                break
    # This checkout's root too, so `include 'gin_configs/common/...'` works from any cwd.
    gin.add_config_file_search_path(str(Path(__file__).resolve().parents[1]))
    from ultra_hstu_plugin.host import gr_checkout_root

    gin.add_config_file_search_path(gr_checkout_root())


def _bound(selector: str) -> Tuple[bool, Any]:
    try:
        return True, gin.query_parameter(selector)
    except ValueError:
        return False, None


def _apply_flags(flags: Sequence[Tuple[str, Any]]) -> None:
    for name, value in flags:
        selector = f"RunSettings.{name}"
        is_bound, bound = _bound(selector)
        if is_bound and bound != value:
            # Neither silently wins: a run whose file says eval and whose flag says train
            # is a mistake either way.
            raise ValueError(
                f"{FLAG_OF_FIELD[name]} {value} conflicts with the gin binding "
                f"{selector} = {bound!r}; drop one of them"
            )
        with gin.unlock_config():  # parsing locked it; the flags are part of the same parse
            gin.bind_parameter(selector, value)


# (source, gin.config_str() right after parsing it) of this process's last load.
_loaded: Optional[Tuple[ConfigSource, str]] = None


def load(source: ConfigSource) -> RunSettings:
    """Clear gin, parse ``source`` and return its validated :class:`RunSettings`.

    Leaves gin parsed (workers, the model and the dataloaders read it); ``clear`` undoes.
    """
    global _loaded
    import ultra_hstu_plugin.gin  # noqa: F401 - registers every configurable a file may bind

    for f in source.gin_files:
        if not os.path.exists(f):
            raise FileNotFoundError(f"gin file {f} does not exist")
    gin.clear_config()
    _loaded = None
    add_gin_search_paths(source.gin_files)
    gin.parse_config_files_and_bindings(
        list(source.gin_files), list(source.gin_bindings), skip_unknown=source.skip_unknown
    )
    _apply_flags(source.flags)
    settings = run_settings()
    _loaded = (source, gin.config_str())
    return settings


def ensure_loaded(source: ConfigSource) -> RunSettings:
    """:func:`load`, unless this process already holds exactly that parse."""
    if _loaded is not None and _loaded[0] == source and gin.config_str() == _loaded[1]:
        return run_settings()
    return load(source)


def clear() -> None:
    global _loaded
    gin.clear_config()
    _loaded = None


def run_settings() -> RunSettings:
    """The run's settings as gin resolves them now, validated."""
    settings = gin.get_configurable(RunSettings)()
    settings.validate()
    return settings


def bound_parameters(selector: str) -> Dict[Tuple[str, str], Any]:
    """Every ``(scope, parameter) -> value`` bound for a configurable, scoped ones included.

    gin's public ``get_bindings`` sees only the current scope; a binding under a scope
    (``consumption/ultra_hstu.StreamConfig.name``) that nothing references is exactly
    the kind that is silently ignored, so this reads gin's table of all bindings.
    """
    full = gin.config._REGISTRY.get_match(selector).selector  # the complete selector
    out: Dict[Tuple[str, str], Any] = {}
    for (scope, sel), params in gin.config._CONFIG.items():
        if sel == full:
            for name, value in params.items():
                out[(scope, name)] = value
    return out


__all__ = [
    "DEVICES",
    "FLAG_OF_FIELD",
    "MODES",
    "ConfigSource",
    "RunSettings",
    "SamplerSettings",
    "add_gin_search_paths",
    "bound_parameters",
    "clear",
    "curves_file_name",
    "ensure_loaded",
    "load",
    "metrics_file_name",
    "run_settings",
]
