# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""GR's Triton HSTU attention on its own, for the attention benchmark's comparison column.

Separate from :mod:`.gr` because it needs less: GR's ``triton_hstu_attention`` imports
only torch, triton and GR helpers at module level (its fbgemm ``load_library`` is
guarded), so it loads on the GPU machine without torchrec and without any stand-in,
whereas GR's layer code imports torchrec's ``maybe_sorted_index_select``.
"""

from __future__ import annotations

from ultra_hstu_plugin.host.install import GR_INSTALL_HINT, HostNotInstalledError

try:
    from generative_recommenders.ops.triton.triton_hstu_attention import triton_hstu_mha
except ImportError as e:  # pragma: no cover - exercised without GR
    raise HostNotInstalledError(f"{GR_INSTALL_HINT}\n(import failed with: {e})") from e

__all__ = ["triton_hstu_mha"]
