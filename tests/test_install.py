# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``.ci/torch_choice.py``: which torch ``.ci/install`` installs, without any network.

The decision is tested on pip-report entries shaped like PyPI's and PyTorch's wheels;
the probe itself runs once against a local folder holding fake torch wheels, so pip's
real resolver and report are exercised offline.
"""

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("torch_choice", REPO / ".ci" / "torch_choice.py")
tc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tc)

PYPI_LINUX_CUDA = {
    "metadata": {
        "name": "torch",
        "version": "2.13.0",
        "requires_dist": [
            "filelock",
            'nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"',
            'cuda-bindings<14,>=13.0.3; platform_system == "Linux" and python_version < "3.15"',
        ],
    }
}
PYTORCH_CPU = {"metadata": {"name": "torch", "version": "2.13.0+cpu", "requires_dist": ["sympy"]}}


def _item(version, requires=()):
    return {"metadata": {"name": "torch", "version": version, "requires_dist": list(requires)}}


@pytest.mark.parametrize(
    "item,cpu",
    [
        (PYTORCH_CPU, True),
        (_item("2.13.0+cu130"), False),
        (_item("2.13.0+rocm6.4"), False),
        (_item("2.13.0", ["filelock", "sympy"]), True),  # macOS/Windows wheels on PyPI
        (_item("2.13.0", ['nvidia-nccl-cu13; platform_system == "Windows"']), True),
    ],
)
def test_cpu_build_is_read_from_the_version_label_or_the_requirements(item, cpu):
    assert tc.is_cpu_build(item) is cpu


@pytest.mark.skipif(sys.platform != "linux", reason="the CUDA requirements' marker is Linux")
def test_pypi_linux_wheel_counts_as_gpu():
    assert tc.is_cpu_build(PYPI_LINUX_CUDA) is False


def _never(pin):
    raise AssertionError("probed although the answer was known")


def test_a_torch_of_the_pinned_minor_in_the_venv_is_kept():
    action, _ = tc.decide("2.13.0", "2.13.1+cu130", _never, {})
    assert action == "skip 2.13.1+cu130"


def test_the_index_variable_is_used_without_probing():
    action, reason = tc.decide("2.13.0", "2.12.0", _never, {tc.INDEX_ENV: "file:///mirror"})
    assert action == "index file:///mirror" and tc.INDEX_ENV in reason


def test_pips_choice_is_used_when_it_is_a_cpu_build():
    action, _ = tc.decide("2.13.0", None, lambda pin: (PYTORCH_CPU, ""), {})
    assert action == "pip 2.13.0+cpu"


@pytest.mark.skipif(sys.platform != "linux", reason="the CUDA requirements' marker is Linux")
def test_a_cuda_choice_means_pytorchs_cpu_index():
    action, reason = tc.decide("2.13.0", None, lambda pin: (PYPI_LINUX_CUDA, ""), {})
    assert action == f"index {tc.PYTORCH_CPU_INDEX}" and "GPU build" in reason


def test_no_torch_from_pip_means_pytorchs_cpu_index():
    action, _ = tc.decide("2.13.0", None, lambda pin: (None, "no matching distribution"), {})
    assert action == f"index {tc.PYTORCH_CPU_INDEX}"


def _fake_wheel(folder: Path, version: str, requires=()) -> None:
    tag = "py3-none-any"
    info = f"torch-{version}.dist-info"
    meta = "Metadata-Version: 2.1\nName: torch\nVersion: " + version + "\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(folder / f"torch-{version}-{tag}.whl", "w") as z:
        z.writestr("torch/__init__.py", f"__version__ = {version!r}\n")
        z.writestr(f"{info}/METADATA", meta)
        z.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n")
        z.writestr(f"{info}/RECORD", "")


@pytest.mark.parametrize(
    "version,requires,expect",
    [
        ("2.13.0+cpu", (), "pip 2.13.0+cpu"),
        ("2.13.0", ("nvidia-cublas",), f"index {tc.PYTORCH_CPU_INDEX}"),
    ],
)
def test_probe_asks_pips_resolver(tmp_path, version, requires, expect):
    _fake_wheel(tmp_path, version, requires)
    # pip sees only the folder; no config file, index or constraint of this machine.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path))
    code = (
        "import importlib.util, sys;"
        f"s = importlib.util.spec_from_file_location('tc', {str(REPO / '.ci' / 'torch_choice.py')!r});"
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m);"
        "print(m.decide('2.13.0', None, m.probe_pip_choice, {})[0])"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == expect
