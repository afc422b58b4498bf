# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Public jagged HSTU attention under the SLA mask: one entry point, two backends.

``sla_attention(...)`` validates its inputs (one clear ``ValueError`` before any launch)
and calls the ``ultra_hstu::sla_attention_fwd`` custom op, whose backward is the
``ultra_hstu::sla_attention_bwd`` op.  Both have fake (meta) implementations, so
``torch.compile`` traces through them without graph breaks.

Backends: ``"pytorch"`` is the dense reference (any device, any float dtype);
``"triton"`` is the jagged kernel (CUDA, or CPU under ``TRITON_INTERPRET=1``); which
backend runs where is decided by :func:`ultra_hstu_plugin.kernels.ops.check_backend`.
The Triton module is imported lazily, so the PyTorch backend works where triton does not.
"""

from __future__ import annotations

from typing import Optional

import torch

from ultra_hstu_plugin.kernels.jagged import check_jagged_offsets
from ultra_hstu_plugin.kernels.ops import BACKENDS, check_backend, custom_op
from ultra_hstu_plugin.kernels.sla_attention.mask import SLAMaskSpec
from ultra_hstu_plugin.kernels.sla_attention.reference import sla_attention_reference

__all__ = ["BACKENDS", "sla_attention", "sla_attention_bwd", "sla_attention_fwd"]
TRITON_HEAD_DIMS = (16, 32, 64, 128, 256)
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _spec(
    k1: int,
    k2: int,
    contextual_seq_len: int,
    target_mode: str,
    full_attn_tail: int,
    contextual_in_prefix: bool,
) -> SLAMaskSpec:
    return SLAMaskSpec(
        k1, k2, contextual_seq_len, target_mode, full_attn_tail, contextual_in_prefix
    )


def _triton_module():
    from ultra_hstu_plugin.kernels.sla_attention import triton_kernels

    return triton_kernels


# --------------------------------------------------------------------------------------
# Custom ops (the mask spec travels as plain scalars: custom ops take no dataclasses)
# --------------------------------------------------------------------------------------

_SCALARS = (
    "max_seq_len",
    "alpha",
    "k1",
    "k2",
    "contextual_seq_len",
    "target_mode",
    "full_attn_tail",
    "contextual_in_prefix",
    "backend",
)


def _bwd_fake(
    dout,
    q,
    k,
    v,
    seq_offsets,
    num_targets,
    max_seq_len,
    alpha,
    k1,
    k2,
    ctx,
    mode,
    tail,
    in_prefix,
    backend,
):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


@custom_op("sla_attention_bwd", fake=_bwd_fake)
def sla_attention_bwd(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    num_targets: Optional[torch.Tensor],
    max_seq_len: int,
    alpha: float,
    k1: int,
    k2: int,
    contextual_seq_len: int,
    target_mode: str,
    full_attn_tail: int,
    contextual_in_prefix: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    spec = _spec(k1, k2, contextual_seq_len, target_mode, full_attn_tail, contextual_in_prefix)
    if backend == "triton":
        return _triton_module().sla_attention_triton_bwd(
            dout, q, k, v, seq_offsets, max_seq_len, alpha, spec, num_targets
        )

    # Reference backward: the vjp of the dense reference.  torch.func (not
    # torch.autograd) because a custom op's body runs below the autograd dispatch key.
    def ref(q_, k_, v_):
        return sla_attention_reference(
            q_, k_, v_, seq_offsets, max_seq_len, alpha, spec, num_targets
        )

    _, vjp = torch.func.vjp(ref, q, k, v)
    return tuple(g.contiguous() for g in vjp(dout))


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, seq_offsets, num_targets, *scalars = inputs
    ctx.save_for_backward(q, k, v, seq_offsets, num_targets)
    ctx.scalars = scalars


def _backward(ctx, dout):
    q, k, v, seq_offsets, num_targets = ctx.saved_tensors
    dq, dk, dv = sla_attention_bwd(dout, q, k, v, seq_offsets, num_targets, *ctx.scalars)
    return (dq, dk, dv) + (None,) * (2 + len(_SCALARS))


def _fwd_fake(
    q,
    k,
    v,
    seq_offsets,
    num_targets,
    max_seq_len,
    alpha,
    k1,
    k2,
    ctx,
    mode,
    tail,
    in_prefix,
    backend,
):
    return q.new_empty(q.shape[0], q.shape[1], v.shape[2])


@custom_op("sla_attention_fwd", fake=_fwd_fake, backward=_backward, setup_context=_setup_context)
def sla_attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    num_targets: Optional[torch.Tensor],
    max_seq_len: int,
    alpha: float,
    k1: int,
    k2: int,
    contextual_seq_len: int,
    target_mode: str,
    full_attn_tail: int,
    contextual_in_prefix: bool,
    backend: str,
) -> torch.Tensor:
    spec = _spec(k1, k2, contextual_seq_len, target_mode, full_attn_tail, contextual_in_prefix)
    if backend == "triton":
        return _triton_module().sla_attention_triton_fwd(
            q, k, v, seq_offsets, max_seq_len, alpha, spec, num_targets
        )
    return sla_attention_reference(q, k, v, seq_offsets, max_seq_len, alpha, spec, num_targets)


# --------------------------------------------------------------------------------------
# Validation and the user-facing function
# --------------------------------------------------------------------------------------


def _check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    spec: SLAMaskSpec,
    num_targets: Optional[torch.Tensor],
    backend: str,
    debug_checks: bool,
) -> None:
    check_backend("sla_attention", backend)
    if not isinstance(spec, SLAMaskSpec):
        raise ValueError(f"sla_attention: spec must be an SLAMaskSpec, got {type(spec).__name__}")
    if not isinstance(max_seq_len, int) or isinstance(max_seq_len, bool):
        raise ValueError(f"sla_attention: max_seq_len must be an int, got {max_seq_len!r}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 3:
            raise ValueError(
                f"sla_attention: {name} must be [sum L, H, dim], got shape {tuple(t.shape)}"
            )
    if q.shape != k.shape:
        raise ValueError(
            f"sla_attention: q and k shapes differ: {tuple(q.shape)} vs {tuple(k.shape)}"
        )
    if v.shape[:2] != q.shape[:2]:
        raise ValueError(
            f"sla_attention: v shape {tuple(v.shape)} does not match q's [sum L, H] = "
            f"{tuple(q.shape[:2])}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"sla_attention: q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    tensors = {"q": q, "k": k, "v": v, "seq_offsets": seq_offsets}
    if num_targets is not None:
        tensors["num_targets"] = num_targets
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"sla_attention: inputs must share one device, got {listing}")
    if num_targets is not None and (num_targets.dim() != 1 or num_targets.is_floating_point()):
        raise ValueError(
            f"sla_attention: num_targets must be a 1-D integer tensor, got "
            f"{num_targets.dtype} of shape {tuple(num_targets.shape)}"
        )
    check_backend("sla_attention", backend, q.device)
    if backend == "pytorch":
        if not q.is_floating_point():
            raise ValueError(f"sla_attention: q, k, v must be floating point, got {q.dtype}")
    else:
        if q.dtype not in TRITON_DTYPES:
            raise ValueError(
                f"sla_attention: the triton backend supports dtypes {TRITON_DTYPES}, got {q.dtype}"
            )
        for name, dim in (("D (q/k head dim)", q.shape[2]), ("Dv (v head dim)", v.shape[2])):
            if dim not in TRITON_HEAD_DIMS:
                raise ValueError(
                    f"sla_attention: the triton backend supports head dims {TRITON_HEAD_DIMS}, "
                    f"got {name} = {dim}"
                )
    if torch.compiler.is_compiling():
        # Reading offsets on the host cannot be traced; compiled graphs get the cheap
        # checks only (run once eagerly, or with debug_checks, to validate the data).
        if seq_offsets.dim() != 1 or seq_offsets.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"seq_offsets must be a 1-D int32/int64 tensor, got {seq_offsets.dtype} "
                f"of shape {tuple(seq_offsets.shape)}"
            )
        return
    check_jagged_offsets(
        seq_offsets, q.shape[0], max_seq_len, full=debug_checks, num_targets=num_targets
    )


def sla_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    alpha: float,
    spec: SLAMaskSpec,
    num_targets: Optional[torch.Tensor] = None,
    backend: str = "pytorch",
    debug_checks: bool = False,
) -> torch.Tensor:
    """Jagged HSTU attention ``silu(alpha Q K^T) / max_seq_len * M @ V`` under the SLA mask.

    q, k ``[sum L, H, D]``, v ``[sum L, H, Dv]``, seq_offsets ``[B + 1]`` (int32/int64),
    num_targets ``[B]`` candidates at the end of each sequence (or None).  Returns
    ``[sum L, H, Dv]`` in q's dtype, differentiable in q, k, v.

    ``debug_checks=True`` also runs the O(B) offsets / lengths / targets checks on CUDA
    (they synchronise the stream, so they are off by default there; on CPU they always run).
    """
    _check_inputs(q, k, v, seq_offsets, max_seq_len, spec, num_targets, backend, debug_checks)
    return sla_attention_fwd(
        q,
        k,
        v,
        seq_offsets,
        num_targets,
        max_seq_len,
        float(alpha),
        spec.k1,
        spec.k2,
        spec.contextual_seq_len,
        spec.target_mode,
        spec.full_attn_tail,
        spec.contextual_in_prefix,
        backend,
    )
