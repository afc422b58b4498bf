# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""One seam to the host, private names: no product file outside ``ultra_hstu_plugin/host/``
touches a private attribute that GR, torchrec or fbgemm define, nor GR's
``_embedding_collection.`` state-dict keys.

The private names are read from the installed libraries' own source (``self._x = ...``,
``def _x``, ...), so the check follows the pinned versions without a hand-kept list.
Runs where GR is importable (see conftest.py); torchrec/fbgemm are scanned where present.
"""

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

from integration_tests.conftest import REPO


def _seam_check():
    # tests/seam_check.py, the checker tests/test_seam.py uses (tests/ is not a package).
    if "seam_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "seam_check", REPO / "tests" / "seam_check.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["seam_check"] = module
        spec.loader.exec_module(module)
    return sys.modules["seam_check"]


sc = _seam_check()


@pytest.fixture(scope="module")
def private_names():
    # find_spec locates each package without importing it (torchrec's import takes seconds).
    dirs = []
    for name in sc.HOST_LIBRARIES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs += [Path(p) for p in spec.submodule_search_locations]
    names = sc.gather_private_names(dirs)
    # The names the plugin is known to reach into through host/: if the scan misses these,
    # it is broken and the check below would pass vacuously.
    known = {"_hstu_transducer", "_stu_module", "_embedding_collection", "_input_preprocessor"}
    if importlib.util.find_spec("torchrec") is not None:
        known |= {"_emb_modules", "_key_to_tables"}
    assert known <= names, known - names
    return names


def test_no_host_private_name_outside_the_seam(private_names):
    violations = sc.check_files(
        REPO, lambda src, path: sc.private_name_uses(src, path, private_names)
    )
    assert not violations, (
        "host private names used outside ultra_hstu_plugin/host/ (add a host accessor):\n"
        + "\n".join(map(str, violations))
    )


def test_checker_reports_private_names_and_state_keys():
    src = textwrap.dedent(
        """
        stu = model._hstu_transducer._stu_module
        tbe = qec._emb_modules[0]
        model._hstu_transducer = t
        if hasattr(qec, "_key_to_tables"):
            pass
        dense = [k for k in sd if not k.startswith("_embedding_collection.")]
        """
    )
    names = {"_hstu_transducer", "_stu_module", "_emb_modules", "_key_to_tables"}
    found = [(v.line, v.what) for v in sc.private_name_uses(src, "x.py", names)]
    assert sorted(found) == [
        (2, "private attribute ._hstu_transducer"),
        (2, "private attribute ._stu_module"),
        (3, "private attribute ._emb_modules"),
        (4, "private attribute ._hstu_transducer"),
        (5, "private attribute hasattr(..., '_key_to_tables')"),
        (7, "host state key '_embedding_collection.'"),
    ]


def test_checker_passes_own_attributes_and_other_names():
    src = textwrap.dedent(
        """
        class M(Base):
            def forward(self, x):
                self._stu_module = x
                super()._stu_module.forward(x)
                return cls._emb_modules, ctx._emb_modules
        kern._fwd_tuned  # our own module's private name, not a host's
        host.tbe_modules_by_table(qec)
        getattr(self, "_emb_modules")
        "embedding_collection." + "_embedding_collection"
        """
    )
    assert sc.private_name_uses(src, "x.py", {"_stu_module", "_emb_modules"}) == []


def test_gatherer_reads_every_way_a_library_defines_a_private_name():
    src = textwrap.dedent(
        """
        class A(torch.nn.Module):
            _registry = {}
            _typed: int = 0
            def __init__(self):
                self._a = 1
                self._b, self._c = 2, 3
                self._n: int = 4
                self.register_buffer("_buf", None)
                self.public = 5
                self.__dunder__ = 6
            def _helper(self):
                other._not_defined_here = 7
        def _module_helper():
            pass
        """
    )
    assert sc.defined_private_names(src) == {
        "_registry",
        "_typed",
        "_a",
        "_b",
        "_c",
        "_n",
        "_buf",
        "_helper",
        "_module_helper",
    }
