# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Stand-ins for host pieces missing on the GPU benchmark machine (GR, no torchrec).

GR's layer code imports only ``torchrec.modules.sorted_index_select.
maybe_sorted_index_select`` from torchrec, and reaches it only in its jagged concat/split
ops, which an ULTRA-HSTU layer does not use.  Must be called before :mod:`.gr` is
imported; imports nothing of GR itself.
"""

from __future__ import annotations

import sys
import types
from typing import Optional


def stub_torchrec_if_missing() -> Optional[str]:
    """Register ``torch.index_select`` as torchrec's index select when torchrec is absent.

    Returns a note for the benchmark record when it stood in, None when torchrec is there.
    """
    try:
        import torchrec.modules.sorted_index_select  # noqa: F401

        return None
    except ImportError:
        import torch

        def maybe_sorted_index_select(values, index, use_sorted=False):  # noqa: ARG001
            return torch.index_select(values, 0, index)

        pkg = types.ModuleType("torchrec")
        modules = types.ModuleType("torchrec.modules")
        sis = types.ModuleType("torchrec.modules.sorted_index_select")
        sis.maybe_sorted_index_select = maybe_sorted_index_select
        pkg.modules = modules
        modules.sorted_index_select = sis
        sys.modules.update(
            {
                "torchrec": pkg,
                "torchrec.modules": modules,
                "torchrec.modules.sorted_index_select": sis,
            }
        )
        return "torchrec absent: maybe_sorted_index_select stood in for by torch.index_select"


__all__ = ["stub_torchrec_if_missing"]
