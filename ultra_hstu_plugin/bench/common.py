# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""What every benchmark shares: the commit and machine it measured, a row writer that keeps
rows a cut-off run has already measured, a step timer, and ``ultra_hstu_plugin.kernels`` from
a bare copy.  Standard library at import (torch and triton are
imported where used): benchmarks run on GPU machines that have torch and triton but not the
rest of our dependencies."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Hashable, List, Optional, Sequence

if TYPE_CHECKING:
    import argparse


def latest_finished(
    rows: Sequence[Dict[str, Any]], key: Callable[[Dict[str, Any]], Hashable]
) -> List[Dict[str, Any]]:
    """Rows of several calls of one grid merged: per ``key`` the last row whose ``status`` is
    "ok", else the last attempt.  A run one call's budget cut and a later call finished counts
    once, as finished; a finished run is never replaced by a later unfinished one."""
    last: Dict[Hashable, Dict[str, Any]] = {}
    for r in rows:
        k = key(r)
        if k not in last or r.get("status") == "ok" or last[k].get("status") != "ok":
            last[k] = r
    return list(last.values())


def git_commit() -> Optional[str]:
    """``$GIT_COMMIT`` (set where the tree travels without .git), else ``git rev-parse HEAD``."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """The machine a benchmark ran on: device (CUDA if there is one, else the CPU), compute
    capability, torch / triton / CUDA / Python versions and the commit."""
    import torch
    import triton

    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "git_commit": git_commit(),
    }


def ensure_kernels_importable() -> None:
    """``ultra_hstu_plugin.kernels`` maps to ``kernels/`` only in an installed checkout;
    from a bare copy of the repository, load it from the path."""
    try:
        import ultra_hstu_plugin.kernels  # noqa: F401
    except ImportError:
        root = Path(__file__).resolve().parents[2] / "kernels"
        spec = importlib.util.spec_from_file_location(
            "ultra_hstu_plugin.kernels",
            root / "__init__.py",
            submodule_search_locations=[str(root)],
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["ultra_hstu_plugin.kernels"] = module
        spec.loader.exec_module(module)


class RowWriter:
    """Appends each row to ``<name>.jsonl`` at once (flushed) and keeps them for the end."""

    def __init__(self, out_dir: Path, name: str) -> None:
        self.rows: list[dict] = []
        self._f = open(Path(out_dir) / f"{name}.jsonl", "w")  # noqa: SIM115 (closed in close())

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()
        print(json.dumps(row), flush=True)

    def close(self) -> None:
        self._f.close()


def add_autotune_option(parser: argparse.ArgumentParser) -> None:
    """``--autotune-max-configs N``: the bound of ``ultra_hstu_plugin/autotune.py`` for a
    benchmark's GR and SLA kernels (default: none, every config tried, as GR does)."""
    parser.add_argument(
        "--autotune-max-configs",
        type=int,
        default=None,
        metavar="N",
        help="at most N configs benchmarked per Triton autotuner and shape (GR's kernels and "
        "ours): a shorter first call, perhaps a slower tile (default: all configs)",
    )

    parser.add_argument(
        "--autotune-table",
        default=None,
        metavar="auto|PATH",
        help="known-config table (ultra_hstu_plugin/autotune.py): a recorded shape compiles its "
        "one config, so its warm-up is compiles only; 'auto': this GPU's committed table "
        "(default: none, every shape searched)",
    )
    parser.add_argument(
        "--autotune-record",
        type=Path,
        default=None,
        metavar="PATH",
        help="merge this run's autotuning choices into PATH at its end (CUDA)",
    )


def apply_autotune_option(args: argparse.Namespace, notes: list, device: str) -> None:
    """Bound the kernels per ``--autotune-max-configs`` and load ``--autotune-table`` before
    any is launched; the run's notes say so, since every time measured depends on it."""
    table = args.autotune_table
    if table is not None and device != "cuda":
        notes.append(f"--autotune-table {table} ignored: tables are for CUDA devices")
        table = None
    if args.autotune_record is not None and device != "cuda":
        raise SystemExit("--autotune-record needs a CUDA device")
    if args.autotune_max_configs is None and table is None:
        return
    from ultra_hstu_plugin.autotune import bound_autotuning
    from ultra_hstu_plugin.kernels.autotune_budget import summary

    rows = bound_autotuning(args.autotune_max_configs, table)
    notes.append(f"Triton autotuning: {summary(rows)}; table: {table}")


def finish_autotune_option(args: argparse.Namespace) -> None:
    """At a benchmark's end: how many tunings the table served, and ``--autotune-record``."""
    if args.autotune_table is None and args.autotune_record is None:
        return
    from ultra_hstu_plugin.autotune import finish_autotuning

    record = None if args.autotune_record is None else str(args.autotune_record)
    print("\n".join(finish_autotuning(record, " ".join(sys.argv))))


def time_step(step: Callable[[], Any], device: str, reps: int) -> Dict[str, Any]:
    """One untimed call (autotuning, compilation: ``warmup_s``), then ``reps`` timed calls:
    their median ``ms`` and all of them (``ms_all``); CUDA events on a GPU, wall clock on CPU."""
    import torch

    t0 = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    return {"ms": sorted(times)[len(times) // 2], "warmup_s": warmup_s, "ms_all": times}
