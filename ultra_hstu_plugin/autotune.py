# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""How many configs each Triton autotuner tries: GR's kernels and ours, one bound.

``RunSettings.autotune_max_configs`` (gin) sets it for ``ultra-hstu train`` and everything
built on it (``bench quality``); ``None`` lets every kernel benchmark all of its configs, as GR
does.  The bound trades a little steady-state speed (a kernel may miss its best tile) for a
first step that does not stall on compilation: see ``benchmarks/results/first_step_h200.md``
for both sides measured.  The mechanism is :mod:`ultra_hstu_plugin.kernels.autotune_budget`.

Known-config tables (``ultra_hstu_plugin/tuned_configs/<device>.json``, committed): what full
tunings chose on a device, per kernel and tuning key, written by a run with
``RunSettings.autotune_record``.  A call whose key is in the table for this device (and this
``allow_tf32``: GR's kernels do not key on it) compiles that config alone and benchmarks
nothing, so a first step at a recorded shape costs compiles only, at the full search's speed;
other calls fall back to the bound.  ``RunSettings.autotune_table``: ``"auto"`` (this device's
table where one is committed), ``None`` or a path.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple

from ultra_hstu_plugin.host import HostNotInstalledError
from ultra_hstu_plugin.kernels.autotune_budget import (
    BoundedKernel,
    KnownConfigs,
    check_max_configs,
    find_autotuners,
    limit_configs,
    record_choices,
)

logger = logging.getLogger(__name__)

# Why a bound of 1 is warned about: the autotuner then runs each kernel's first (pruned)
# config untimed.  Measured on an H200 (benchmarks/results/autotune_bound_cost_h200.md):
# our SLA attention fwd+bwd at B=32, L=4106, fp32 took 87.9 ms with 1 config vs 7.9 ms with 4.
SINGLE_CONFIG_WARNING = (
    "autotune_max_configs=1: every Triton kernel runs its first config untimed; the first "
    "step compiles fastest, but steady-state kernels can be many times slower "
    "(benchmarks/results/autotune_bound_cost_h200.md); 4 is the default"
)

# Our kernels that autotune at import (the FP8 GEMM builds its autotuner on first use and is
# off the default path).
_OUR_KERNEL_MODULES = (
    "ultra_hstu_plugin.kernels.sla_attention.triton_kernels",
    "ultra_hstu_plugin.kernels.sla_attention.delta_triton",
)


def kernel_modules() -> List[ModuleType]:
    """The modules whose autotuners the bound covers: ours, then GR's where GR is installed."""
    modules = [importlib.import_module(name) for name in _OUR_KERNEL_MODULES]
    try:
        from ultra_hstu_plugin.host import gr_triton_kernel_modules

        modules += gr_triton_kernel_modules()
    except HostNotInstalledError:
        pass
    return modules


TABLE_DIR = Path(__file__).parent / "tuned_configs"
_FORMAT = 1


def table_path_for(device_name: str) -> Path:
    """Where the committed table of ``device_name`` (``torch.cuda.get_device_name()``) is."""
    return TABLE_DIR / (re.sub(r"[^A-Za-z0-9]+", "_", device_name).strip("_") + ".json")


def _cuda_context() -> Tuple[str, bool]:
    import torch

    return torch.cuda.get_device_name(), bool(torch.backends.cuda.matmul.allow_tf32)


def _section_name(allow_tf32: bool) -> str:
    """A table keeps TF32 and exact-fp32 choices apart: GR's kernels do not key on the flag."""
    return "allow_tf32" if allow_tf32 else "exact_fp32"


def load_table(
    path: Path, device_name: str, allow_tf32: bool
) -> Tuple[Optional[KnownConfigs], str]:
    """The table's configs for this device and TF32 setting, and one line saying what was
    loaded (or why nothing was).  A file that is not a table is an error naming it."""
    try:
        data = json.loads(Path(path).read_text())
        if data.get("format") != _FORMAT or not isinstance(data.get("device"), str):
            raise ValueError(f"format {data.get('format')!r}, expected {_FORMAT}")
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"autotune table {path} cannot be read: {e}") from None
    if data["device"] != device_name:
        return None, f"autotune table {path} is for {data['device']}, not {device_name}: not used"
    kernels = data.get(_section_name(allow_tf32), {})
    if not kernels:
        return None, f"autotune table {path} has no entries with allow_tf32={allow_tf32}"
    choices = {
        name: {tuple(row["key"]): row["config"] for row in rows} for name, rows in kernels.items()
    }
    n = sum(len(v) for v in choices.values())
    return KnownConfigs(choices), f"{n} known configs of {len(choices)} kernels from {path}"


def _resolve_table(table: Optional[str], device_name: str) -> Optional[Path]:
    if table is None:
        return None
    if table == "auto":
        path = table_path_for(device_name)
        return path if path.exists() else None
    if not Path(table).exists():
        raise ValueError(f"autotune_table: no file {table!r}")
    return Path(table)


_ACTIVE: Optional[KnownConfigs] = None


def bound_autotuning(
    max_configs: Optional[int], table: Optional[str] = None
) -> List[BoundedKernel]:
    """Bound every autotuner of :func:`kernel_modules` to ``max_configs`` configs (``None``:
    unbounded), calls recorded in ``table`` (``"auto"``, a path, ``None``; CUDA only) getting
    their recorded config.  Call before the first kernel launch: a shape already tuned keeps
    its choice.  A bound of 1 logs :data:`SINGLE_CONFIG_WARNING`."""
    global _ACTIVE
    if max_configs == 1:
        logger.warning(SINGLE_CONFIG_WARNING)
    known = None
    if table is not None:
        device_name, allow_tf32 = _cuda_context()
        path = _resolve_table(table, device_name)
        if path is None:
            logger.info("no committed autotune table for %s", device_name)
        else:
            known, line = load_table(path, device_name, allow_tf32)
            logger.info(line)
    _ACTIVE = known
    return limit_configs(find_autotuners(kernel_modules()), max_configs, known)


def table_use() -> str:
    """How many tunings this process took from the table and how many it had to run."""
    if _ACTIVE is None:
        return "no autotune table in use"
    used, missed = sum(_ACTIVE.used.values()), sum(_ACTIVE.missed.values())
    top = ", ".join(f"{k.rsplit('.', 1)[-1]} x{n}" for k, n in _ACTIVE.missed.most_common(4))
    return f"autotune table: {used} tunings from the table, {missed} tuned" + (
        f" ({top})" if missed else ""
    )


def check_settings(owner: str, max_configs: Any, table: Any, record: Any) -> None:
    """The autotuning fields of a run's settings (``owner``: "RunSettings",
    "ultra_hstu.RetrievalRun"): one error naming the bad field and its value."""
    check_max_configs(max_configs, f"{owner}.autotune_max_configs")
    for name, value in (("autotune_table", table), ("autotune_record", record)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{owner}.{name} must be a path or None, got {value!r}")


def finish_autotuning(record: Optional[str], command: str) -> List[str]:
    """At a CUDA run's end: the lines to log, how many tunings the table served and, with
    ``record`` (a path), the choices merged into that table."""
    lines = [table_use()]
    if record:
        n = record_table(Path(record), command=command)
        lines.append(f"autotune choices merged into {record} ({n} entries)")
    return lines


def record_table(path: Path, command: str = "") -> int:
    """Merge what this process's autotuners chose into the table at ``path`` (this device and
    TF32 setting; made if missing); returns how many entries it now holds for them."""
    import triton

    device_name, allow_tf32 = _cuda_context()
    path = Path(path)
    data: Dict[str, Any] = {"format": _FORMAT, "device": device_name}
    if path.exists():
        data = json.loads(path.read_text())
        if data.get("device") != device_name:
            raise ValueError(f"{path} holds configs for {data.get('device')}, not {device_name}")
    kernels = data.setdefault(_section_name(allow_tf32), {})
    for name, rows in record_choices(find_autotuners(kernel_modules())).items():
        merged = {tuple(r["key"]): r["config"] for r in kernels.get(name, [])}
        merged.update(rows)
        kernels[name] = [{"key": list(k), "config": c} for k, c in sorted(merged.items())]
    data.setdefault("recorded_with", []).append({"triton": triton.__version__, "command": command})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return sum(len(v) for v in kernels.values())
