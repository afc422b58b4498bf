# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""What the host libraries are pinned to, and the one error raised when one is missing.

Imports nothing of GR, torchrec or fbgemm, so every host submodule (and the package
itself) can name the error before trying its own imports.
"""

from __future__ import annotations

GR_PINNED_COMMIT = "db1bf8f"
GR_INSTALL_HINT = (
    "generative-recommenders (GR) is not importable. Install it from its repository, e.g.\n"
    "  git clone https://github.com/meta-recsys/generative-recommenders && "
    f"git -C generative-recommenders checkout {GR_PINNED_COMMIT} && "
    "pip install --no-deps -e generative-recommenders"
)
# The pair .ci/install uses: fbgemm 1.N pairs with torch 2.(N+5) (see compat.py), and
# torchrec declares the CUDA fbgemm package, hence --no-deps.
TORCHREC_INSTALL_HINT = (
    "torchrec and fbgemm_gpu are not importable (needed for embedding tables, sharding and "
    "GR's ranking stack). Install a pair matching torch, e.g.\n"
    "  pip install fbgemm-gpu-cpu==1.8.0 && pip install --no-deps torchrec==1.9.2"
)


class HostNotInstalledError(ImportError):
    """Raised when a host-facing part of the plugin is used without GR/torchrec installed."""
