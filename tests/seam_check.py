# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""AST checks of the design rule "one seam to the host".

Every import of GR (``generative_recommenders``), torchrec and fbgemm (``fbgemm_gpu``), and
every private name of theirs, lives in ``ultra_hstu_plugin/host/`` and nowhere else in the
product code (``ultra_hstu_plugin/``, ``kernels/``, ``examples/``).  Shared by
``tests/test_seam.py`` (imports, no GR needed) and
``integration_tests/test_seam_private_names.py`` (private names, read from the installed
host libraries).  Pure ``ast``: nothing checked is imported.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Sequence, Set

HOST_LIBRARIES = ("generative_recommenders", "torchrec", "fbgemm_gpu")
PRODUCT_DIRS = ("ultra_hstu_plugin", "kernels", "examples")
SEAM_DIR = "ultra_hstu_plugin/host"
# GR's DlrmHSTU state-dict prefix of its tables (host.EMBEDDING_COLLECTION_STATE_PREFIX).
FORBIDDEN_STRING_PREFIXES = ("_embedding_collection.",)
# Receivers whose private attributes are the object's own business, not a host's internals.
OWN_RECEIVERS = frozenset({"self", "cls", "ctx"})
_ATTRIBUTE_BUILTINS = frozenset({"getattr", "setattr", "hasattr", "delattr"})
_REGISTER_METHODS = frozenset(
    {"register_buffer", "register_parameter", "register_module", "add_module"}
)


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def product_files(repo: Path) -> List[Path]:
    """Every .py of the product code outside the seam, sorted."""
    out = []
    for d in PRODUCT_DIRS:
        for p in sorted((repo / d).rglob("*.py")):
            rel = p.relative_to(repo).as_posix()
            if rel.startswith(SEAM_DIR + "/") or "__pycache__" in p.parts:
                continue
            out.append(p)
    return out


def _is_host_module(name: str) -> bool:
    return name.split(".")[0] in HOST_LIBRARIES


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def _call_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def host_imports(source: str, path: str) -> List[Violation]:
    """Imports of a host library: ``import``/``from`` statements, and string module names
    given to ``importlib.import_module``/``__import__``."""
    out = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_host_module(alias.name):
                    out.append(Violation(path, node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and _is_host_module(node.module):
                names = ", ".join(alias.name for alias in node.names)
                out.append(Violation(path, node.lineno, f"from {node.module} import {names}"))
        elif isinstance(node, ast.Call) and _call_name(node.func) in (
            "import_module",
            "__import__",
        ):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                if _is_host_module(arg.value):
                    what = f"{_call_name(node.func)}({arg.value!r})"
                    out.append(Violation(path, node.lineno, what))
    return out


def _own_receiver(value: ast.expr) -> bool:
    if isinstance(value, ast.Name):
        return value.id in OWN_RECEIVERS
    # super()._x: the object's own (inherited) attribute
    return isinstance(value, ast.Call) and _call_name(value.func) == "super"


def private_name_uses(source: str, path: str, private_names: Set[str]) -> List[Violation]:
    """Reads/writes of a host's private names on objects other than self/cls/ctx/super(),
    and string literals starting with a host's private state-dict prefix."""
    out = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Attribute):
            if node.attr in private_names and not _own_receiver(node.value):
                out.append(Violation(path, node.lineno, f"private attribute .{node.attr}"))
        elif isinstance(node, ast.Call) and _call_name(node.func) in _ATTRIBUTE_BUILTINS:
            # getattr(obj, "_name"): the same access, spelled as a string
            if len(node.args) >= 2 and not _own_receiver(node.args[0]):
                arg = node.args[1]
                if isinstance(arg, ast.Constant) and arg.value in private_names:
                    what = f"private attribute {_call_name(node.func)}(..., {arg.value!r})"
                    out.append(Violation(path, node.lineno, what))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for prefix in FORBIDDEN_STRING_PREFIXES:
                if node.value.startswith(prefix):
                    out.append(Violation(path, node.lineno, f"host state key {node.value!r}"))
    return out


def defined_private_names(source: str) -> Set[str]:
    """Private names a library module defines: ``self._x = ...`` (and annotated/augmented
    forms), ``def _x``, class-body ``_x = ...``, and ``register_buffer("_x", ...)`` etc."""
    out: Set[str] = set()
    for node in ast.walk(ast.parse(source)):
        targets: Sequence[ast.expr] = ()
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = (node.target,)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if _is_private(node.name):
                out.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                    for t in stmt.targets if isinstance(stmt, ast.Assign) else (stmt.target,):
                        if isinstance(t, ast.Name) and _is_private(t.id):
                            out.add(t.id)
        elif isinstance(node, ast.Call) and _call_name(node.func) in _REGISTER_METHODS:
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                if _is_private(arg.value):
                    out.add(arg.value)
        for t in targets:
            for sub in ast.walk(t):  # tuple targets: self._a, self._b = ...
                if (
                    isinstance(sub, ast.Attribute)
                    and isinstance(sub.value, ast.Name)
                    and sub.value.id == "self"
                    and _is_private(sub.attr)
                ):
                    out.add(sub.attr)
    return out


def gather_private_names(package_dirs: Iterable[Path]) -> Set[str]:
    """Private names defined anywhere in the given installed packages' source."""
    out: Set[str] = set()
    for d in package_dirs:
        for p in d.rglob("*.py"):
            try:
                out |= defined_private_names(p.read_text(encoding="utf-8", errors="replace"))
            except SyntaxError:  # a template or py2 leftover: defines nothing we can read
                continue
    return out


def check_files(repo: Path, check) -> List[Violation]:
    """``check(source, relative_path)`` over every product file outside the seam."""
    out = []
    for p in product_files(repo):
        out += check(p.read_text(encoding="utf-8"), p.relative_to(repo).as_posix())
    return sorted(out, key=lambda v: (v.path, v.line, v.what))
