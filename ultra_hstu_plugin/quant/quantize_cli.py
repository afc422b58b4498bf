# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu quantize``: a trained checkpoint -> an inference model with INT4 embeddings.

    ultra-hstu quantize --gin GIN --checkpoint RUN_DIR/checkpoints/STEP --int4 --out OUT

Writes OUT/int4_model.pt (plain tensors + the operative gin config, see
:mod:`ultra_hstu_plugin.quant.int4_embeddings`; reload with ``load_quantized_model(OUT)``)
and OUT/manifest.json (tables, bytes before/after, source checkpoint).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

logger = logging.getLogger(__name__)
# CLI format flag -> registered quantizer (registry kind "quantizer").
FORMAT_QUANTIZERS = {"int4": "int4_embeddings"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "quantize",
        help="quantize a trained model's embedding tables for inference (INT4)",
        description="Load a trained GR checkpoint, quantize its embedding tables and write "
        "OUT/int4_model.pt + OUT/manifest.json (reload with load_quantized_model(OUT)).",
    )
    p.add_argument(
        "--gin", action="append", required=True, help="gin file of the trained run (repeatable)"
    )
    p.add_argument(
        "--checkpoint", required=True, help="GR checkpoint dir (RUN_DIR/checkpoints/STEP)"
    )
    p.add_argument(
        "--int4",
        action="store_true",
        help="INT4 rowwise tables (fbgemm int-n-bit TBE, fp16 scale/bias per row)",
    )
    p.add_argument("--out", required=True, help="output folder for int4_model.pt + manifest")
    p.add_argument(
        "--gin-param", action="append", help="extra gin binding (repeatable), as for train"
    )
    return p


def run(args: argparse.Namespace) -> int:
    import gin

    from ultra_hstu_plugin import config
    from ultra_hstu_plugin.quant import int4_embeddings as q
    from ultra_hstu_plugin.registry import discover

    if not args.int4:
        # INT4 is the only format so far; make the choice explicit so later ones can be added.
        raise ValueError("choose a format: --int4 (the only one supported so far)")
    # The registry is the table of contents and what runs: the format's registered quantizer.
    quantizer = discover().get("quantizer", FORMAT_QUANTIZERS["int4"]).load()
    model, _, _ = q.load_model_from_checkpoint(args.gin, args.checkpoint, args.gin_param or [])
    try:
        dataset = config.run_settings().dataset
        gin_config = gin.config_str()
        float_bytes = q.table_bytes(q.model_embedding_collection(model))
        q.quantize_model_embeddings(model, bits=4, quantizer=quantizer)
        path = q.save_quantized_model(
            model,
            args.out,
            gin_config=gin_config,
            dataset=dataset,
            extra={
                "source_checkpoint": str(args.checkpoint),
                "gin_files": list(args.gin),
                "float_table_bytes": float_bytes,
            },
        )
    finally:
        config.clear()
    qec = q.model_embedding_collection(model)
    qbytes, fp16 = q.table_bytes(qec), q.fp16_table_bytes(qec)
    print(
        f"wrote {path}: {len(qec.embedding_configs())} tables, {qbytes} bytes INT4 "
        f"(fp16 {fp16}, {fp16 / qbytes:.2f}x smaller; float checkpoint {float_bytes})"
    )
    return 0
