# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""INT4 rowwise embedding lookup over fbgemm's INT4 row format, without fbgemm.

reference.py       the row format, a PyTorch quantiser (fbgemm's bytes) and lookup
triton_kernels.py  the gather-and-dequantise Triton kernel
op.py              custom op ultra_hstu::int4_embedding_lookup and the public functions
"""

from ultra_hstu_plugin.kernels.int4_embedding.op import (
    BACKENDS,
    OUT_DTYPES,
    int4_lookup,
    int4_row_bytes,
    int4_triton_supported,
    quantize_int4_rowwise,
)

__all__ = [
    "BACKENDS",
    "OUT_DTYPES",
    "int4_lookup",
    "int4_row_bytes",
    "int4_triton_supported",
    "quantize_int4_rowwise",
]
