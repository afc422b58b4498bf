# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""One seam to the host: no product file outside ``ultra_hstu_plugin/host/`` imports GR,
torchrec or fbgemm, and the host package loads only the library each path needs.

Static (ast) and without GR; the private-name half is in
``integration_tests/test_seam_private_names.py`` (it reads the installed libraries).
"""

import ast
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import seam_check

REPO = Path(__file__).resolve().parents[1]


def test_product_files_cover_the_product_and_skip_the_seam():
    files = {p.relative_to(REPO).as_posix() for p in seam_check.product_files(REPO)}
    for expected in (
        "ultra_hstu_plugin/quant/int4_embeddings.py",
        "ultra_hstu_plugin/train/sharding.py",
        "ultra_hstu_plugin/bench/sla_attention.py",
        "kernels/int4_embedding/op.py",
        "examples/swap_encoder.py",
    ):
        assert expected in files
    assert not [f for f in files if f.startswith("ultra_hstu_plugin/host/")]


def test_no_host_library_imported_outside_the_seam():
    violations = seam_check.check_files(REPO, seam_check.host_imports)
    assert not violations, "host libraries imported outside ultra_hstu_plugin/host/:\n" + "\n".join(
        map(str, violations)
    )


def test_checker_reports_every_kind_of_host_import():
    src = textwrap.dedent(
        """
        import os
        import torchrec
        import fbgemm_gpu.sparse_ops as ops
        from generative_recommenders.modules.stu import STU
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from torchrec.distributed import types
        def f():
            import importlib
            importlib.import_module("generative_recommenders.dlrm_v3.utils")
            return __import__("fbgemm_gpu")
        """
    )
    found = [(v.line, v.what) for v in seam_check.host_imports(src, "x.py")]
    assert found == [
        (3, "import torchrec"),
        (4, "import fbgemm_gpu.sparse_ops"),
        (5, "from generative_recommenders.modules.stu import STU"),
        (8, "from torchrec.distributed import types"),
        (11, "import_module('generative_recommenders.dlrm_v3.utils')"),
        (12, "__import__('fbgemm_gpu')"),
    ]
    assert str(seam_check.host_imports(src, "pkg/x.py")[0]) == "pkg/x.py:3: import torchrec"


def test_checker_passes_clean_source():
    src = textwrap.dedent(
        """
        import importlib
        import torchrec_like_name
        from ultra_hstu_plugin.host import torchrec as trec
        from ultra_hstu_plugin.host.torchrec import KeyedJaggedTensor
        from ultra_hstu_plugin import host
        from . import torchrec
        importlib.import_module(name)
        importlib.import_module("ultra_hstu_plugin.host.gr")
        print("torchrec", "generative_recommenders")
        """
    )
    assert seam_check.host_imports(src, "x.py") == []


def _module_all(path: Path) -> list:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__all__":
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path} has no literal __all__")


def test_host_package_forwards_exactly_its_submodules_names():
    import ultra_hstu_plugin.host as host  # imports no host library (see below)

    by_submodule: dict = {}
    for name, sub in host._SUBMODULE_OF.items():
        by_submodule.setdefault(sub, set()).add(name)
    for sub, names in by_submodule.items():
        assert set(_module_all(REPO / "ultra_hstu_plugin" / "host" / f"{sub}.py")) == names, sub
    own = {"GR_INSTALL_HINT", "GR_PINNED_COMMIT", "TORCHREC_INSTALL_HINT", "HostNotInstalledError"}
    assert set(host.__all__) == own | set(host._SUBMODULE_OF)
    assert len(host.__all__) == len(set(host.__all__))


# Runs a snippet in a fresh interpreter where the named libraries cannot be imported
# (as on the GPU benchmark machine: GR, no torchrec) and prints what it finds.
_BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} blocked by the test")
sys.meta_path.insert(0, _Block())
"""


def _run(snippet: str, blocked=()) -> str:
    code = _BLOCKER.format(blocked=set(blocked)) + textwrap.dedent(snippet)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


_LOADED = "print(sorted({m.split('.')[0] for m in sys.modules} & set(HOST)))"
_HOST = "HOST = ('generative_recommenders', 'torchrec', 'fbgemm_gpu')\n"


def test_importing_the_host_package_imports_no_host_library():
    assert _run(_HOST + "import ultra_hstu_plugin.host\n" + _LOADED) == "[]"


def test_missing_gr_is_one_clear_error_naming_the_install():
    snippet = """
        from ultra_hstu_plugin.host import HostNotInstalledError
        try:
            from ultra_hstu_plugin.host import STULayer
        except HostNotInstalledError as e:
            print("checkout db1bf8f" in str(e))
        """
    assert _run(snippet, blocked=["generative_recommenders"]) == "True"


@pytest.mark.skipif(importlib.util.find_spec("torchrec") is None, reason="torchrec not installed")
def test_int4_tables_need_torchrec_but_not_gr():
    snippet = (
        _HOST + "import ultra_hstu_plugin.quant.int4_embeddings\n"
        "from ultra_hstu_plugin.host import tbe_modules_by_table\n" + _LOADED
    )
    assert _run(snippet, blocked=["generative_recommenders"]) == "['fbgemm_gpu', 'torchrec']"


def test_missing_torchrec_is_one_clear_error_naming_the_install():
    snippet = """
        from ultra_hstu_plugin.host import HostNotInstalledError
        try:
            import ultra_hstu_plugin.host.torchrec
        except HostNotInstalledError as e:
            print("torchrec==" in str(e))
        """
    assert _run(snippet, blocked=["torchrec", "fbgemm_gpu"]) == "True"


@pytest.mark.skipif(
    importlib.util.find_spec("generative_recommenders") is None, reason="GR not installed"
)
def test_gpu_benchmark_paths_load_gr_without_torchrec():
    # bench attention: GR's Triton attention alone; bench layer: GR's layer API once the
    # torchrec stand-in is registered.  Neither may import the real torchrec or fbgemm.
    snippet = (
        _HOST + "from ultra_hstu_plugin.host import triton_hstu_mha\n"
        "from ultra_hstu_plugin.host.stubs import stub_torchrec_if_missing\n"
        "assert stub_torchrec_if_missing()\n"
        "from ultra_hstu_plugin.host import STULayer, HammerKernel\n"
        "import ultra_hstu_plugin.modules.ultra_stu\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'fbgemm_gpu'),"
        " sys.modules['torchrec'].__spec__ is None)"
    )
    assert _run(snippet, blocked=["torchrec", "fbgemm_gpu"]) == "[] True"


def test_every_subpackage_ships():
    # pyproject lists packages explicitly (kernels/ installs under another name), so a new
    # subpackage such as host/ is missing from a non-editable install unless listed.
    tomllib = pytest.importorskip("tomllib")
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]
    found = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "ultra_hstu_plugin").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert found <= set(packages), found - set(packages)
