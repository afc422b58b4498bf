# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""INT4 (rowwise scale/bias) embedding tables for inference, through torchrec's quant modules.

A trained GR ranking model keeps its sparse features in one torchrec ``EmbeddingCollection``
(``DlrmHSTU._embedding_collection``).  :func:`quantize_embedding_collection` turns it into
torchrec's quantized ``EmbeddingCollection`` (``torchrec.quant.embedding_modules``), i.e.
fbgemm's ``IntNBitTableBatchedEmbeddingBagsCodegen`` with ``SparseType.INT4`` rows: each
row stores ``dim/2`` bytes of 4-bit codes plus an fp16 scale and an fp16 bias, so a row
decodes as ``bias + scale * code`` with ``scale = (max - min) / 15`` of that row.  This is
the same torchrec path GR's inference uses for INT8 (``quantize_dynamic`` with a
``QuantConfig`` mapping ``EmbeddingCollection`` to its quantized twin); only the weight
dtype (``torch.quint4x2``) and the row alignment differ.

Checkpoints: GR's launcher saves sparse tables with torch.distributed.checkpoint (DCP) and
dense weights with ``torch.save``.  :func:`load_model_from_checkpoint` rebuilds the model
unsharded in one process and loads both with GR's own ``load_sparse_checkpoint`` /
``load_nonsparse_checkpoint``; DCP reshards into plain tensors and needs no process group.

Artifact (:func:`save_quantized_model` / :func:`load_quantized_model`): one ``torch.save``
file holding plain tensors and plain Python values only (no pickled modules), so it loads
with ``weights_only=True`` and does not break when class layouts move: the per-table INT4
codes and fp16 scale/bias as uint8, the table configs, the dense ``state_dict`` and the
operative gin config that rebuilds the model around them.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import quantization as quant

from ultra_hstu_plugin.host import torchrec as trec
from ultra_hstu_plugin.host.torchrec import (
    DataType,
    EmbeddingConfig,
    QuantConfig,
    QuantEmbeddingCollection,
)

logger = logging.getLogger(__name__)

ARTIFACT_FILE = "int4_model.pt"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1

# Weight dtypes torchrec maps to fbgemm's int-n-bit TBE (DataType.INT4/INT8/FP16).
BITS_TO_DTYPE: Dict[int, torch.dtype] = {4: torch.quint4x2, 8: torch.qint8, 16: torch.half}
# fbgemm's fused quantizer (FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf) puts the fp16
# scale/bias right after the codes, so the codes of a row must fill whole 2-byte words:
# dim * bits % 16 == 0, i.e. INT4 needs embedding_dim % 4 == 0 (INT8: % 2).
SCALE_BIAS_ALIGN_BITS = 16
# GPU kernels load rows with 16-byte vectors, so torchrec pads rows to 16 bytes.  fbgemm's
# CPU kernels read rows byte-wise; 2 keeps the fp16 scale/bias naturally aligned without
# padding a 36-byte INT4 row (dim 64) to 48, which would cost a third of the saving.
CUDA_ROW_ALIGNMENT = trec.QUANT_DEFAULT_ROW_ALIGNMENT
CPU_ROW_ALIGNMENT = 2


class UnsupportedEmbeddingTablesError(ValueError):
    """Some tables cannot be converted; the message lists every one and why."""

    def __init__(self, problems: Sequence[Tuple[str, str]]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {name}: {why}" for name, why in self.problems)
        super().__init__(
            f"cannot quantize {len(self.problems)} embedding table(s) to INT-n-bit:\n{lines}"
        )


def _bits_to_dtype(bits: int) -> torch.dtype:
    if bits not in BITS_TO_DTYPE:
        raise ValueError(f"bits must be one of {sorted(BITS_TO_DTYPE)}, got {bits}")
    return BITS_TO_DTYPE[bits]


def default_row_alignment(device: torch.device) -> int:
    return CUDA_ROW_ALIGNMENT if device.type == "cuda" else CPU_ROW_ALIGNMENT


def find_unsupported_tables(module: torch.nn.Module, bits: int = 4) -> List[Tuple[str, str]]:
    """(table or module name, reason) for everything the converter cannot take."""
    _bits_to_dtype(bits)
    if isinstance(module, QuantEmbeddingCollection):
        return [("<collection>", "already quantized (torchrec quant EmbeddingCollection)")]
    if not isinstance(module, trec.EmbeddingCollection):
        kind = type(module).__name__
        why = f"{kind} is not a torchrec EmbeddingCollection"
        if isinstance(module, trec.EmbeddingBagCollection):
            why += " (pooled EmbeddingBagCollection: use torchrec's quantize_embeddings)"
        names = [t.name for t in getattr(module, "embedding_bag_configs", lambda: [])()]
        return [(n, why) for n in names] or [(f"<{kind}>", why)]
    problems = []
    weights = dict(module.embeddings.named_parameters())
    for table in module.embedding_configs():
        weight = weights.get(f"{table.name}.weight")
        if (table.embedding_dim * bits) % SCALE_BIAS_ALIGN_BITS:
            step = SCALE_BIAS_ALIGN_BITS // bits
            problems.append(
                (
                    table.name,
                    f"embedding_dim={table.embedding_dim} is not a multiple of {step}: "
                    f"fbgemm's INT{bits} rows need dim*{bits} bits to end on a 2-byte "
                    "boundary before the fp16 scale/bias",
                )
            )
        if weight is None:
            problems.append((table.name, "has no weight parameter"))
        elif weight.is_meta:
            problems.append((table.name, "weights are on the meta device (never materialised)"))
        elif weight.dtype not in (torch.float32, torch.float16):
            problems.append((table.name, f"weight dtype {weight.dtype} is not float32/float16"))
    return problems


def quantize_embedding_collection(
    ec: torch.nn.Module,
    bits: int = 4,
    row_alignment: Optional[int] = None,
    output_dtype: torch.dtype = torch.float,
) -> QuantEmbeddingCollection:
    """torchrec's quantized ``EmbeddingCollection`` (fbgemm int-n-bit TBE) of a float one.

    ``bits=4`` gives INT4 rows with an fp16 scale and bias per row (8 and 16 = INT8 and
    FP16 through the same kernels, for comparison).  ``ec`` is left unchanged.  Lookups
    return ``output_dtype``.  Raises :class:`UnsupportedEmbeddingTablesError` listing every
    table it cannot convert.
    """
    dtype = _bits_to_dtype(bits)
    problems = find_unsupported_tables(ec, bits)
    if problems:
        raise UnsupportedEmbeddingTablesError(problems)
    # from_float reads the qconfig and row alignment off the float module; set them on a
    # shallow copy (shares the weights) so the caller's module is not modified.
    src = copy.copy(ec)
    src.qconfig = QuantConfig(
        activation=quant.PlaceholderObserver.with_args(dtype=output_dtype),
        weight=quant.PlaceholderObserver.with_args(dtype=dtype),
    )
    device = next(iter(ec.parameters())).device
    align = row_alignment if row_alignment is not None else default_row_alignment(device)
    setattr(src, trec.QUANT_ROW_ALIGNMENT_ATTR, align)
    with torch.no_grad():
        return QuantEmbeddingCollection.from_float(src)


def per_table_bytes(module: torch.nn.Module) -> Dict[str, int]:
    """Bytes of each table's stored rows (codes, scale/bias and row padding included)."""
    if isinstance(module, QuantEmbeddingCollection):
        out = {}
        for name, (tbe, i) in trec.tbe_modules_by_table(module).items():
            rows = tbe.split_embedding_weights_with_scale_bias(split_scale_bias_mode=0)[i][0]
            out[name] = rows.numel() * rows.element_size()
        return out
    if isinstance(module, trec.EmbeddingCollection):
        return {
            name.removesuffix(".weight"): p.numel() * p.element_size()
            for name, p in module.embeddings.named_parameters()
        }
    raise TypeError(f"table_bytes: expected a torchrec embedding collection, got {type(module)}")


def int4_table_rows(qec: QuantEmbeddingCollection) -> Dict[str, Tuple[torch.Tensor, int]]:
    """table name -> (uint8 rows ``[num_embeddings, dim/2 + 4]``, dim) of an INT4 collection.

    Rows are in fbgemm's fused layout (codes, then fp16 scale and bias; the default of
    ``ultra_hstu_plugin.kernels.int4_embedding.int4_lookup``), copied out of the TBE, which
    keeps scale/bias first and pads rows to its alignment.
    """
    out = {}
    configs = {t.name: t for t in qec.embedding_configs()}
    for name, (tbe, i) in trec.tbe_modules_by_table(qec).items():
        if configs[name].data_type != DataType.INT4:
            raise ValueError(f"table {name} is {configs[name].data_type.name}, not INT4")
        codes, scale_bias = tbe.split_embedding_weights(split_scale_shifts=True)[i]
        out[name] = (torch.cat([codes, scale_bias], dim=1), configs[name].embedding_dim)
    return out


def table_bytes(module: torch.nn.Module) -> int:
    """Total bytes of the embedding rows of a float or quantized torchrec collection."""
    return sum(per_table_bytes(module).values())


def fp16_table_bytes(module: torch.nn.Module) -> int:
    """What the same tables take as plain fp16 (rows * dim * 2): the baseline we compare to."""
    configs = module.embedding_configs()
    return sum(t.num_embeddings * t.embedding_dim * 2 for t in configs)


# --- checkpoint -> unsharded model ------------------------------------------------------


def load_model_from_checkpoint(
    gin_files: Sequence[str],
    checkpoint_dir: str,
    gin_bindings: Sequence[str] = (),
) -> Tuple[torch.nn.Module, Any, Dict[str, EmbeddingConfig]]:
    """GR's model (via ``make_ultra_model``) with a launcher checkpoint loaded, unsharded.

    Parses gin like ``ultra-hstu train`` (:func:`ultra_hstu_plugin.config.load`: same
    search paths, the dataset from ``RunSettings.dataset``), builds the model on CPU in
    float32 and loads ``checkpoint_dir`` (``RUN_DIR/checkpoints/STEP``): the DCP sparse
    part into plain tensors, the dense part with GR's strict key check.  Returns
    ``(model, hstu_config, tables)`` with the model in eval mode.  Leaves gin parsed (the
    caller may read the operative config); call ``gin.clear_config()`` when done.
    """
    from ultra_hstu_plugin import config

    ckpt = Path(checkpoint_dir)
    for needed in (ckpt / "sparse" / ".metadata", ckpt / "non_sparse.ckpt"):
        if not needed.exists():
            raise FileNotFoundError(
                f"{needed} not found: --checkpoint must be a GR checkpoint directory "
                "(RUN_DIR/checkpoints/STEP with sparse/ and non_sparse.ckpt)"
            )
    settings = config.load(config.ConfigSource.of(gin_files, gin_bindings))
    return _build_and_load(ckpt, settings)


def _build_and_load(
    ckpt: Path, settings: Any
) -> Tuple[torch.nn.Module, Any, Dict[str, EmbeddingConfig]]:
    from ultra_hstu_plugin import host
    from ultra_hstu_plugin.model import make_ultra_model

    model, hstu_config, tables = _make_cpu_model(settings, make_ultra_model)
    host.load_sparse_checkpoint(model=model, path=str(ckpt))
    host.load_nonsparse_checkpoint(model=model, device=torch.device("cpu"), path=str(ckpt))
    model.eval()
    return model, hstu_config, tables


def _make_cpu_model(settings: Any, make_ultra_model: Any) -> Tuple[torch.nn.Module, Any, Dict]:
    """``settings``: the run's ``RunSettings`` (its dataset names the model's tables)."""
    from ultra_hstu_plugin import host

    model, hstu_config, tables = make_ultra_model(settings=settings)
    model.set_hammer_kernel(host.HammerKernel.PYTORCH)
    model.set_training_dtype(torch.float32)  # GR's autocast targets CUDA
    # GR builds the collection on the meta device (DMP materialises it when sharding);
    # unsharded, we materialise it ourselves and let the checkpoint fill it.
    ec = host.embedding_collection_of(model)
    host.set_embedding_collection(
        model,
        trec.EmbeddingCollection(
            tables=ec.embedding_configs(),
            need_indices=ec.need_indices(),
            device=torch.device("cpu"),
        ),
    )
    return model, hstu_config, tables


# --- the inference artifact -------------------------------------------------------------


def model_embedding_collection(model: torch.nn.Module) -> torch.nn.Module:
    """The (float or quantized) embedding collection of GR's ranking model."""
    from ultra_hstu_plugin import host

    return host.embedding_collection_of(model)


def quantize_model_embeddings(
    model: torch.nn.Module,
    bits: int = 4,
    quantizer: Optional[Callable[[torch.nn.Module, int], torch.nn.Module]] = None,
) -> torch.nn.Module:
    """Replace the model's embedding collection by its quantized twin (in place).

    ``quantizer(collection, bits)`` makes the twin; ``None`` is
    :func:`quantize_embedding_collection` (the registered ``int4_embeddings`` quantizer, which
    ``ultra-hstu quantize`` looks up in the registry)."""
    from ultra_hstu_plugin import host

    quantize = quantizer or quantize_embedding_collection
    host.set_embedding_collection(model, quantize(host.embedding_collection_of(model), bits))
    return model


def _table_config_dict(t: EmbeddingConfig) -> Dict[str, Any]:
    return {
        "name": t.name,
        "num_embeddings": t.num_embeddings,
        "embedding_dim": t.embedding_dim,
        "feature_names": list(t.feature_names),
        "data_type": t.data_type.name,
    }


def _table_config(d: Dict[str, Any]) -> EmbeddingConfig:
    return EmbeddingConfig(
        name=d["name"],
        num_embeddings=d["num_embeddings"],
        embedding_dim=d["embedding_dim"],
        feature_names=list(d["feature_names"]),
        data_type=DataType[d["data_type"]],
    )


def quantized_tables_state(qec: QuantEmbeddingCollection) -> Dict[str, Any]:
    """Plain-tensor state of a quantized collection: per table (codes, scale_bias) as uint8."""
    weights = {}
    for name, (tbe, i) in trec.tbe_modules_by_table(qec).items():
        codes, scale_bias = tbe.split_embedding_weights(split_scale_shifts=True)[i]
        weights[name] = {"codes": codes.clone(), "scale_bias": scale_bias.clone()}
    return {
        "tables": [_table_config_dict(t) for t in qec.embedding_configs()],
        "weights": weights,
        "row_alignment": qec.row_alignment,
        "need_indices": qec.need_indices(),
        "output_dtype": str(qec.output_dtype()).removeprefix("torch."),
    }


def quantized_collection_from_state(
    state: Dict[str, Any], device: Optional[torch.device] = None
) -> QuantEmbeddingCollection:
    """Rebuild torchrec's quantized collection from :func:`quantized_tables_state`."""
    device = device or torch.device("cpu")
    tables = [_table_config(d) for d in state["tables"]]
    weights = {
        n: (w["codes"].to(device), w["scale_bias"].to(device)) for n, w in state["weights"].items()
    }
    return QuantEmbeddingCollection(
        tables=tables,
        device=device,
        need_indices=state["need_indices"],
        output_dtype=getattr(torch, state["output_dtype"]),
        table_name_to_quantized_weights=weights,
        row_alignment=state["row_alignment"],
    )


def save_quantized_model(
    model: torch.nn.Module,
    out_dir: str,
    gin_config: str,
    dataset: str,
    extra: Optional[Dict[str, Any]] = None,
) -> Path:
    """Write OUT/int4_model.pt (+ manifest.json) for a model whose tables are quantized."""
    from ultra_hstu_plugin import host

    qec = host.embedding_collection_of(model)
    if not isinstance(qec, QuantEmbeddingCollection):
        raise TypeError("save_quantized_model: quantize the model's embeddings first")
    _, dense = host.split_sparse_dense_state(model.state_dict())
    dense = {k: v.detach().clone() for k, v in dense.items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = per_table_bytes(qec)
    manifest = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "tables": [
            {**_table_config_dict(t), "quantized_bytes": sizes[t.name]}
            for t in qec.embedding_configs()
        ],
        "quantized_table_bytes": sum(sizes.values()),
        "fp16_table_bytes": fp16_table_bytes(qec),
        "row_alignment": qec.row_alignment,
        **(extra or {}),
    }
    torch.save(
        {
            "format_version": FORMAT_VERSION,
            "dataset": dataset,
            "gin_config": gin_config,
            "sparse": quantized_tables_state(qec),
            "dense_state_dict": dense,
            "manifest": json.dumps(manifest),
        },
        out / ARTIFACT_FILE,
    )
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return out / ARTIFACT_FILE


def load_quantized_model(out_dir: str) -> Tuple[torch.nn.Module, Any]:
    """Rebuild the inference model written by :func:`save_quantized_model` (CPU, eval mode).

    Returns ``(model, hstu_config)``.  Parses the stored gin config (clearing any gin
    state first) and leaves it parsed.
    """
    import gin

    import ultra_hstu_plugin.gin  # noqa: F401 - registers the configurables the config names
    from ultra_hstu_plugin import config, host
    from ultra_hstu_plugin.model import make_ultra_model

    path = Path(out_dir) / ARTIFACT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `ultra-hstu quantize ... --out {out_dir}`")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {blob.get('format_version')} != {FORMAT_VERSION}")
    config.clear()
    gin.parse_config(blob["gin_config"])
    settings = config.run_settings()
    if settings.dataset != blob["dataset"]:
        # The stored config is the truth the model is rebuilt from; a manifest naming
        # another dataset means the artifact was edited or is corrupt.
        raise ValueError(
            f"{path}: manifest dataset {blob['dataset']!r} but its gin config resolves "
            f"RunSettings.dataset = {settings.dataset!r}"
        )
    model, hstu_config, _ = _make_cpu_model(settings, make_ultra_model)
    host.set_embedding_collection(model, quantized_collection_from_state(blob["sparse"]))
    missing, unexpected = model.load_state_dict(blob["dense_state_dict"], strict=False)
    missing = [k for k in missing if not host.is_sparse_state_key(k)]
    if missing or unexpected:
        raise ValueError(f"{path}: dense weights do not match the model: {missing=} {unexpected=}")
    model.eval()
    return model, hstu_config


def table_summary(module: torch.nn.Module) -> List[Dict[str, Any]]:
    """Per-table name/rows/dim/bytes, for logs and manifests."""
    sizes = per_table_bytes(module)
    return [
        {"name": t.name, "rows": t.num_embeddings, "dim": t.embedding_dim, "bytes": sizes[t.name]}
        for t in module.embedding_configs()
    ]
