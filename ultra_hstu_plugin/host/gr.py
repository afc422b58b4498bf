# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""GR's layer API (STU layers, transducer, layer kernels) and the GR attributes we reach into.

Imported eagerly: importing this module imports GR's layer code, or raises
:class:`HostNotInstalledError` with the install hint.  GR's layer code needs torch and,
of torchrec, only ``maybe_sorted_index_select`` (which :mod:`.stubs` can stand in for on
a machine without torchrec).  Every private GR attribute the plugin touches (``model.
_hstu_transducer``, the ``_embedding_collection.`` state-dict prefix, ...) is named in
this file only, so that when GR renames one, one function changes.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Dict, Iterator, Mapping, Optional, Tuple

import torch

from ultra_hstu_plugin.host.install import GR_INSTALL_HINT, HostNotInstalledError

if TYPE_CHECKING:  # ranking-stack types in annotations; importing them needs torchrec
    from generative_recommenders.modules.dlrm_hstu import DlrmHSTU
    from generative_recommenders.modules.preprocessors import ContextualPreprocessor

# The layer-level API: GR's STU layers, transducer and kernels.  Needs GR and torch only
# (plus torchrec's maybe_sorted_index_select, which GPU benchmark scripts may stub).
try:
    from generative_recommenders.common import HammerKernel, HammerModule
    from generative_recommenders.modules.dynamic_stu import L2STU
    from generative_recommenders.modules.hstu_transducer import HSTUTransducer
    from generative_recommenders.modules.stu import STU, STULayer, STULayerConfig, STUStack
    from generative_recommenders.ops.hstu_compute import (
        hstu_compute_output,
        hstu_compute_uqvk,
    )
    from generative_recommenders.ops.layer_norm import layer_norm
    from generative_recommenders.ops.mm import addmm as gr_addmm
    from generative_recommenders.ops.pytorch.pt_hstu_linear import pytorch_norm_mul_dropout
    from generative_recommenders.ops.triton.triton_hstu_linear import (
        triton_layer_norm_mul_dropout_bwd,
        triton_layer_norm_mul_dropout_fwd,
        triton_norm_mul_dropout,
    )
except ImportError as e:  # pragma: no cover - exercised by tests without GR
    raise HostNotInstalledError(f"{GR_INSTALL_HINT}\n(import failed with: {e})") from e


def gr_checkout_root() -> str:
    """The folder holding GR's ``generative_recommenders`` package (its repository root)."""
    import os

    import generative_recommenders

    return os.path.dirname(os.path.dirname(os.path.abspath(generative_recommenders.__file__)))


def gr_triton_kernel_modules() -> list:
    """GR's Triton kernel modules (``generative_recommenders.ops.triton.*``), imported: where
    its autotuned kernels live, for :mod:`ultra_hstu_plugin.autotune`.  A module that cannot
    be imported on this machine (a GPU-only dependency) is left out; it autotunes nothing."""
    import importlib
    import pkgutil

    import generative_recommenders.ops.triton as gr_triton

    modules = []
    for info in pkgutil.iter_modules(gr_triton.__path__, gr_triton.__name__ + "."):
        try:
            modules.append(importlib.import_module(info.name))
        except Exception:  # noqa: BLE001 - e.g. a kernel needing a newer triton: not ours to fix
            continue
    return modules


# --- GR's KV cache (STULayer.forward(kv_caching_lengths=...) / cached_forward) ---


def gr_kv_cache_unavailable(device: str) -> Optional[str]:
    """Why GR's KV cache cannot run on ``device``, or None.  GR's ``_update_kv_cache`` and
    ``_construct_full_kv`` call fbgemm's ``asynchronous_complete_cumsum`` and (through GR's
    PyTorch jagged split/concat, whatever the layer's kernel) ``jagged_to_padded_dense`` on
    the cache's device: a GPU machine without CUDA fbgemm has neither."""
    try:
        import fbgemm_gpu  # noqa: F401 - registers torch.ops.fbgemm
    except Exception:  # noqa: BLE001 - absent, or a build that does not load: probed below
        pass
    try:
        lengths = torch.tensor([2, 3], dtype=torch.int64, device=device)
        offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(lengths)
        torch.ops.fbgemm.jagged_to_padded_dense(
            values=torch.zeros(5, 2, device=device),
            offsets=[offsets],
            max_lengths=[3],
            padding_value=0.0,
        )
        if device == "cuda":
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - any failure means the same: no GR cache here
        first = (str(e).splitlines() or [""])[0][:200]
        return (
            "GR's KV cache calls fbgemm's asynchronous_complete_cumsum / jagged_to_padded_dense, "
            f"not usable on {device}: {type(e).__name__}: {first}"
        )
    return None


@contextlib.contextmanager
def contiguous_gr_cached_attention() -> Iterator[None]:
    """GR's ``STULayer.cached_forward`` with its attention output made contiguous.

    Why: on HammerKernel.PYTORCH with one user (B = 1), GR's ``pytorch_cached_hstu_mha``
    returns ``einsum(...).transpose(1, 2).reshape(...)``, which for B = 1 is a strided view,
    and ``cached_forward`` then calls ``.view(-1, H * V)`` on it, which raises.  A copy
    changes no value; GR's Triton path returns a fresh tensor (a no-op there)."""
    from generative_recommenders.modules import stu

    original = stu.delta_hstu_mha

    def contiguous(*args: object, **kwargs: object) -> torch.Tensor:
        return original(*args, **kwargs).contiguous()

    stu.delta_hstu_mha = contiguous
    try:
        yield
    finally:
        stu.delta_hstu_mha = original


# --- The GR attributes the plugin reaches into, named in this file only. ---

# GR's DlrmHSTU keeps its tables in ``self._embedding_collection``, so their state-dict keys
# (the sparse part of a checkpoint) start with this; everything else is dense.
EMBEDDING_COLLECTION_STATE_PREFIX = "_embedding_collection."


def stu_module_of(model: DlrmHSTU) -> STU:
    """The STU stack inside GR's ranking model (``DlrmHSTU._hstu_transducer._stu_module``)."""
    return model._hstu_transducer._stu_module


def stu_output_dropout_ratio(module: torch.nn.Module) -> float:
    """The output dropout of a GR ``STULayer`` (``_output_dropout_ratio``); 0.0 for a module
    that has none."""
    ratio = getattr(module, "_output_dropout_ratio", 0.0)
    return float(ratio) if isinstance(ratio, (int, float)) else 0.0


def set_stu_module(model: DlrmHSTU, stu: STU) -> None:
    """Swap the encoder of GR's ranking model, keeping GR's transducer around it."""
    model._hstu_transducer._stu_module = stu


def input_preprocessor_of(model: DlrmHSTU) -> ContextualPreprocessor:
    return model._hstu_transducer._input_preprocessor


def action_encoder_of(pre: ContextualPreprocessor) -> Optional[torch.nn.Module]:
    """The ActionEncoder of GR's ContextualPreprocessor, or None without action features."""
    if getattr(pre, "_action_weights", None) is None:
        return None
    return pre._action_encoder


def set_action_mlp(pre: ContextualPreprocessor, mlp: torch.nn.Module) -> None:
    pre._action_embedding_mlp = mlp


def zero_target_action_table(action_encoder: torch.nn.Module) -> None:
    """Make GR's ActionEncoder emit zeros at candidate positions.

    GR gives candidates a learned "target action" embedding; ULTRA-HSTU's merged tokens
    carry no action at candidates at all.  The table becomes a zero buffer (not a
    parameter), so nothing can learn a value into it.
    """
    table = action_encoder._target_action_embedding_table
    del action_encoder._target_action_embedding_table
    action_encoder.register_buffer(
        "_target_action_embedding_table", torch.zeros_like(table.data), persistent=False
    )


def transducer_of(model: DlrmHSTU) -> HSTUTransducer:
    return model._hstu_transducer


def set_transducer(model: DlrmHSTU, transducer: HSTUTransducer) -> None:
    model._hstu_transducer = transducer


def transducer_parts(t: HSTUTransducer) -> dict:
    """Constructor arguments that rebuild GR's ``HSTUTransducer`` around new encoders."""
    return {
        "stu_module": t._stu_module,
        "input_preprocessor": t._input_preprocessor,
        "output_postprocessor": t._output_postprocessor,
        "input_dropout_ratio": t._input_dropout_ratio,
        "positional_encoder": t._positional_encoder,
        "return_full_embeddings": t._return_full_embeddings,
    }


def embedding_collection_of(model: DlrmHSTU) -> torch.nn.Module:
    """The torchrec ``EmbeddingCollection`` of GR's ranking model (``_embedding_collection``)."""
    return model._embedding_collection


def set_embedding_collection(model: DlrmHSTU, ec: torch.nn.Module) -> None:
    """Swap the embedding tables of GR's ranking model (e.g. for a quantized collection)."""
    model._embedding_collection = ec


def is_sparse_state_key(key: str) -> bool:
    """Whether a state-dict key of GR's ranking model belongs to its embedding tables."""
    return key.startswith(EMBEDDING_COLLECTION_STATE_PREFIX)


def split_sparse_dense_state(
    state: Mapping[str, torch.Tensor],
) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """(sparse, dense) parts of a GR ranking model's state dict, keys unchanged.

    GR checkpoints the two apart (DCP for tables, ``torch.save`` for the rest); so does the
    INT4 artifact, which stores its own quantized tables instead of the sparse part.
    """
    sparse: Dict[str, torch.Tensor] = {}
    dense: Dict[str, torch.Tensor] = {}
    for k, v in state.items():
        (sparse if is_sparse_state_key(k) else dense)[k] = v
    return sparse, dense


__all__ = [
    "EMBEDDING_COLLECTION_STATE_PREFIX",
    "HSTUTransducer",
    "HammerKernel",
    "HammerModule",
    "L2STU",
    "STU",
    "STULayer",
    "STULayerConfig",
    "STUStack",
    "action_encoder_of",
    "contiguous_gr_cached_attention",
    "embedding_collection_of",
    "gr_addmm",
    "gr_checkout_root",
    "gr_kv_cache_unavailable",
    "gr_triton_kernel_modules",
    "hstu_compute_output",
    "hstu_compute_uqvk",
    "input_preprocessor_of",
    "is_sparse_state_key",
    "layer_norm",
    "pytorch_norm_mul_dropout",
    "set_action_mlp",
    "set_embedding_collection",
    "set_stu_module",
    "set_transducer",
    "split_sparse_dense_state",
    "stu_module_of",
    "stu_output_dropout_ratio",
    "transducer_of",
    "transducer_parts",
    "triton_layer_norm_mul_dropout_bwd",
    "triton_layer_norm_mul_dropout_fwd",
    "triton_norm_mul_dropout",
    "zero_target_action_table",
]
