# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Carry Triton's autotuning results from one GPU machine to the next.

Why: a cold first training step on an H200 takes ~160 s (``results/first_step_h200.md``),
nearly all of it autotuning GR's and our kernels over their config spaces; with the
results cached (``TRITON_CACHE_AUTOTUNING=1``, set by the CLI) it takes ~4 s.  The lent GPU
machine starts bare every session, so the cache is lost.  Triton keeps each kernel's
timings in ``<cache>/<hash>/<kernel>.autotune.json``, where the hash covers the Triton
version, the GPU target, the kernel's source and the tuning key: a file is only ever reused
by the same kernel on the same kind of GPU.  Those files are a few KB each, so they fit in
a device call's returned files, unlike the compiled binaries (which recompile in seconds).

    python benchmarks/triton_autotune_cache.py pack   [--cache DIR] OUT.tgz
    python benchmarks/triton_autotune_cache.py unpack [--cache DIR] IN.tgz

``--cache`` defaults to ``$TRITON_CACHE_DIR`` or ``~/.triton/cache``.
"""

import argparse
import os
import re
import sys
import tarfile
from pathlib import Path
from typing import List, Optional

SUFFIX = ".autotune.json"
# <hash>/<kernel>.autotune.json and nothing else: no "..", no absolute paths, no links
MEMBER = re.compile(r"[0-9A-Za-z_-]+/[0-9A-Za-z_.-]+\.autotune\.json")


def default_cache_dir() -> Path:
    return Path(os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")


def autotune_files(cache: Path) -> List[Path]:
    """Every ``<hash>/<kernel>.autotune.json`` below ``cache``, relative to it, sorted."""
    return sorted(p.relative_to(cache) for p in cache.glob(f"*/*{SUFFIX}") if p.is_file())


def pack(cache: Path, archive: Path) -> int:
    files = autotune_files(cache)
    with tarfile.open(archive, "w:gz") as tar:
        for rel in files:
            tar.add(cache / rel, arcname=str(rel))
    return len(files)


def unpack(archive: Path, cache: Path) -> int:
    """Extract only well-formed members (``<hash>/<name>.autotune.json``); anything else in
    the archive is an error, not silently skipped, so a wrong file is noticed."""
    cache.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for m in members:
            if not (m.isfile() and MEMBER.fullmatch(m.name) and ".." not in m.name):
                raise ValueError(
                    f"{archive}: unexpected member {m.name!r}; expected <hash>/<kernel>{SUFFIX}"
                )
        tar.extractall(cache, members=members, filter="data")
    return len(members)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["pack", "unpack"])
    p.add_argument("archive", type=Path)
    p.add_argument("--cache", type=Path, default=None, help="Triton cache dir")
    a = p.parse_args(argv)
    cache = a.cache or default_cache_dir()
    if a.action == "pack":
        if not cache.is_dir():
            raise SystemExit(f"no Triton cache at {cache}")
        n = pack(cache, a.archive)
        print(f"packed {n} autotuning results from {cache} into {a.archive}")
    else:
        n = unpack(a.archive, cache)
        print(f"unpacked {n} autotuning results into {cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
