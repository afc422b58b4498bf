# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Where ``.ci/install`` gets a CPU torch from; run by the venv's python, prints one line.

    skip <version>     the venv already has a torch of the pinned minor release (any build)
    pip <version>      pip's own choice for ``torch==<pin>`` is a CPU build: install that
    index <url>        $ULTRA_HSTU_TORCH_INDEX is set (then no probe), or pip's own choice
                       is a CUDA/ROCm build (PyPI's Linux wheels pull several GB of
                       nvidia-* wheels) or pip found none: install torch from <url>,
                       the variable's value or PyTorch's CPU index

The reason goes to stderr.  The probe is ``pip install --dry-run --no-deps --report``:
pip resolves exactly what it would install (its own indexes, find-links, constraints,
platform tags) and reads only the wheel's metadata, not the wheel.

Usage: ``python .ci/torch_choice.py 2.13.0``.  Standard library (plus pip) only: it runs
before anything else is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Callable, Dict, Optional, Tuple

PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
INDEX_ENV = "ULTRA_HSTU_TORCH_INDEX"
# Distributions whose presence among torch's requirements means a GPU build.
_GPU_REQUIREMENT_PREFIXES = ("nvidia-", "cuda-", "pytorch-triton-rocm")


def _minor(v: str) -> Tuple[str, ...]:
    return tuple(v.split("+")[0].split(".")[:2])


def installed_torch() -> Optional[str]:
    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def _requirement_applies(requirement: str) -> Optional[str]:
    """The requirement's distribution name if its marker holds on this machine, else None."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # a bare venv: pip's vendored copy is the same library
        from pip._vendor.packaging.requirements import Requirement
    req = Requirement(requirement)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        return None
    return req.name.lower()


def is_cpu_build(item: Dict) -> bool:
    """Whether one ``install`` entry of pip's report is a CPU-only torch.

    A local version label says it outright (``+cpu``; ``+cu130``/``+rocm6.4`` are not);
    without one (PyPI) the build is a GPU one exactly when it requires CUDA/ROCm wheels
    on this machine (Linux x86_64/aarch64 today; macOS and Windows wheels do not).
    """
    meta = item["metadata"]
    local = meta["version"].partition("+")[2]
    if local:
        return local == "cpu"
    for requirement in meta.get("requires_dist") or []:
        name = _requirement_applies(requirement)
        if name and name.startswith(_GPU_REQUIREMENT_PREFIXES):
            return False
    return True


def probe_pip_choice(pin: str) -> Tuple[Optional[Dict], str]:
    """pip's choice for ``torch==pin`` (the report entry), or None and pip's complaint."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",  # what pip would pick, whatever the venv holds now
        "--no-deps",  # the wheel's own metadata is enough; no nvidia-* metadata fetched
        "--quiet",
        "--report",
        "-",
        f"torch=={pin}",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return None, (res.stderr.strip().splitlines() or ["pip failed"])[-1]
    for item in json.loads(res.stdout)["install"]:
        if item["metadata"]["name"].lower() == "torch":
            return item, ""
    return None, "pip's report names no torch"


def decide(
    pin: str,
    installed: Optional[str],
    probe: Callable[[str], Tuple[Optional[Dict], str]],
    env: Dict[str, str],
) -> Tuple[str, str]:
    """(action line, reason).  Pure apart from ``probe``, so tests give it fake reports."""
    if installed is not None and _minor(installed) == _minor(pin):
        # fbgemm pairs with a torch minor release, so any build of it (CPU or CUDA) fits.
        return f"skip {installed}", f"torch {installed} is already in the venv"
    if env.get(INDEX_ENV):
        # Asked for by name (a mirror, an air-gapped copy): no probe, no second guess.
        return f"index {env[INDEX_ENV]}", f"${INDEX_ENV} is set: torch from {env[INDEX_ENV]}"
    index = PYTORCH_CPU_INDEX
    item, complaint = probe(pin)
    if item is None:
        return f"index {index}", f"pip finds no torch=={pin} ({complaint}); using {index}"
    chosen = item["metadata"]["version"]
    if is_cpu_build(item):
        return f"pip {chosen}", f"pip's own choice, torch {chosen}, is a CPU build"
    return (
        f"index {index}",
        f"pip's own choice, torch {chosen}, is a GPU build (CUDA/ROCm wheels); "
        f"a CPU build from {index} instead",
    )


def main(argv: Optional[list] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: torch_choice.py TORCH_VERSION", file=sys.stderr)
        return 2
    action, reason = decide(args[0], installed_torch(), probe_pip_choice, dict(os.environ))
    print(reason, file=sys.stderr)
    print(action)
    return 0


if __name__ == "__main__":
    sys.exit(main())
