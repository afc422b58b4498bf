# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""torch <-> fbgemm version lockstep, checked when the plugin is imported.

fbgemm ships compiled against one torch release: fbgemm 1.N pairs with torch 2.(N+5)
(1.6 <-> 2.11, 1.8 <-> 2.13, 1.9 <-> 2.14).  A mismatched pair fails later with an
obscure undefined-symbol or missing-operator error deep inside torchrec; this check
fails at import instead and says what to install.  Versions are read from package
metadata, so nothing heavy is imported.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Optional, Tuple

FBGEMM_DISTRIBUTIONS = (
    "fbgemm-gpu",
    "fbgemm-gpu-cpu",
    "fbgemm-gpu-nightly",
    "fbgemm-gpu-nightly-cpu",
)
_TORCH_MINOR_OFFSET = 5  # fbgemm 1.N <-> torch 2.(N + 5)


class FbgemmTorchMismatchError(ImportError):
    pass


def _major_minor(v: str) -> Tuple[int, int]:
    parts = v.split("+")[0].split(".")
    return int(parts[0]), int(parts[1])


def installed_fbgemm() -> Optional[Tuple[str, str]]:
    for dist in FBGEMM_DISTRIBUTIONS:
        try:
            return dist, version(dist)
        except PackageNotFoundError:
            continue
    return None


def expected_torch_for_fbgemm(fbgemm_version: str) -> str:
    major, minor = _major_minor(fbgemm_version)
    return f"{major + 1}.{minor + _TORCH_MINOR_OFFSET}"


def check_torch_fbgemm(
    torch_version: Optional[str] = None, fbgemm: Optional[Tuple[str, str]] = None
) -> None:
    """Raise FbgemmTorchMismatchError when installed torch and fbgemm disagree."""
    torch_version = torch_version or version("torch")
    fbgemm = fbgemm if fbgemm is not None else installed_fbgemm()
    if fbgemm is None:
        return  # kernels work without fbgemm; GR-facing parts report it on use
    dist, fb_version = fbgemm
    want_torch = expected_torch_for_fbgemm(fb_version)
    tmaj, tmin = _major_minor(torch_version)
    if f"{tmaj}.{tmin}" != want_torch:
        want_fbgemm = f"1.{tmin - _TORCH_MINOR_OFFSET}" if tmaj == 2 else "?"
        raise FbgemmTorchMismatchError(
            f"{dist} {fb_version} is built for torch {want_torch}, but torch {torch_version} is "
            f"installed. Install matching versions, e.g. `pip install '{dist}=={want_fbgemm}.*'` "
            f"for this torch, or `pip install 'torch=={want_torch}.*'` for this fbgemm."
        )
