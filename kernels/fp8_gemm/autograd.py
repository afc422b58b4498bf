# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Autograd for everything that runs the FP8 GEMM: one place, beside its kernels.

Forward in FP8 (rowwise scales), backward in bf16 for all three: e4m3 gradients would need
per-tensor scaling with delayed (history-based) amax to be safe (gradients have a far wider
dynamic range than activations).

``FP8LinearFunction`` (``FP8Linear``): ``residual + x @ W^T + b``.

``fp8_uvqk``: ``uvqk = LayerNorm(x) @ W + b``.  The LayerNorm is fused into the rowwise
quantiser (``layer_norm_quantize_rowwise``), so the normalised activations are never written
in bf16 and read back; the GEMM is the FP8 rowwise kernel.

``fp8_output``: ``out = x + norm_mul_dropout(attn, u) @ W``, an HSTU output block: a fused
LayerNorm-mul-dropout kernel produces ``y``, which is quantised and multiplied in FP8 with the
residual ``x`` as the GEMM's 2D bias.  ``hstu_output`` is the same block with the GEMM chosen
(``"cublas"``: ``torch.addmm`` in the inputs' dtype), so the bf16 layer shares this autograd.

Both projections recompute what a bf16 path would, no more:

* ``fp8_uvqk`` recomputes the LayerNorm from ``x`` (with the caller's ``layer_norm``) for the
  weight gradient and the LayerNorm backward, instead of storing it.
* ``fp8_output`` stores ``attn``, ``u`` and the norm statistics, and with ``recompute_y``
  rebuilds ``y`` inside the norm kernel's backward.  Wrapping the block in activation
  checkpointing instead would re-run the quantiser and the GEMM in backward only to throw
  their output away.

Kernels know nothing of GR: the LayerNorm and the LayerNorm-mul-dropout pair come in as
arguments (``NormMulDropoutKernels``).  The ULTRA-HSTU layer passes GR's (its
``triton_layer_norm_mul_dropout_fwd/bwd`` and ``layer_norm``), so its backward is GR's
``HSTUComputeOutputFunction`` step for step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ultra_hstu_plugin.kernels.fp8_gemm.op import (
    fp8_addmm,
    layer_norm_quantize_rowwise,
    quantize_rowwise,
    quantize_weight_in_out,
)

# ``layer_norm(x, weight, bias, eps) -> normed``, differentiable (recomputed in backward).
LayerNormFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class NormMulDropoutKernels:
    """A fused LayerNorm-mul-dropout forward/backward pair with the calling convention of GR's
    ``triton_layer_norm_mul_dropout_fwd`` / ``_bwd`` (``concat_u = concat_x = True``)."""

    forward: Callable[..., tuple]
    backward: Callable[..., tuple]


class FP8LinearFunction(torch.autograd.Function):
    """``residual2d + x2d @ weight^T + bias``: FP8 forward; the backward multiplies bf16 copies
    of ``x`` and ``W`` kept from the forward."""

    @staticmethod
    def forward(
        ctx,
        x2d: torch.Tensor,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor],
        residual2d: Optional[torch.Tensor],
        backend: str,
        variant: str,
    ) -> torch.Tensor:
        x_bf16 = x2d.to(torch.bfloat16).contiguous()
        x_fp8, x_scale = quantize_rowwise(x_bf16, backend=backend)
        # weight [out, in] seen as [in, out]: quantised from its bf16 rounding, which is what
        # the backward multiplies by too (w_t_bf16 [in, out]).
        w_fp8, w_scale, w_t_bf16 = quantize_weight_in_out(weight.t(), backend=backend)
        if residual2d is not None:
            residual2d = residual2d.contiguous()
        b = bias.detach().contiguous() if bias is not None else None
        y = fp8_addmm(
            x_fp8, x_scale, w_fp8, w_scale, residual2d, b, backend=backend, variant=variant
        )
        ctx.save_for_backward(x_bf16, w_t_bf16)
        ctx.dtypes = (
            x2d.dtype,
            weight.dtype,
            bias.dtype if bias is not None else None,
            residual2d.dtype if residual2d is not None else None,
        )
        return y

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x_bf16, w_t_bf16 = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype, r_dtype = ctx.dtypes
        g = grad_out.to(torch.bfloat16)
        grad_x = grad_w = grad_b = grad_r = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ w_t_bf16.t()).to(x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = (g.t() @ x_bf16).to(w_dtype)
        if ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(0, dtype=torch.float32).to(b_dtype)
        if ctx.needs_input_grad[3]:
            grad_r = grad_out.to(r_dtype)
        return grad_x, grad_w, grad_b, grad_r, None, None


class FP8LayerNormLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        norm_weight: torch.Tensor,
        norm_bias: torch.Tensor,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor],
        eps: float,
        layer_norm: LayerNormFn,
        backend: str,
        variant: str,
    ) -> torch.Tensor:
        x_fp8, x_scale = layer_norm_quantize_rowwise(
            x.contiguous(), norm_weight.detach(), norm_bias.detach(), eps, backend=backend
        )
        # GR keeps projections as [in, out]; the GEMM takes [out, in] rows, one scale each.
        w_fp8, w_scale, w_bf16 = quantize_weight_in_out(weight, backend=backend)
        b = bias.detach().contiguous() if bias is not None else None
        out = fp8_addmm(x_fp8, x_scale, w_fp8, w_scale, None, b, backend=backend, variant=variant)
        ctx.save_for_backward(x, norm_weight, norm_bias, w_bf16)
        ctx.eps, ctx.layer_norm = eps, layer_norm
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, norm_weight, norm_bias, w_bf16 = ctx.saved_tensors
        need_x, need_nw, need_nb, need_w, need_b = ctx.needs_input_grad[:5]
        g = grad_out.to(torch.bfloat16)
        leaves = [
            t.detach().requires_grad_(need)
            for t, need in ((x, need_x), (norm_weight, need_nw), (norm_bias, need_nb))
        ]
        with torch.enable_grad():
            x_leaf, weight, bias = leaves
            normed = ctx.layer_norm(x_leaf, weight, bias, ctx.eps)
        grad_w = (
            (normed.detach().to(torch.bfloat16).t() @ g).to(ctx.weight_dtype) if need_w else None
        )
        grad_b = grad_out.sum(0, dtype=torch.float32).to(ctx.bias_dtype) if need_b else None
        grad_x = grad_nw = grad_nb = None
        if need_x or need_nw or need_nb:
            grad_normed = (g @ w_bf16.t()).to(normed.dtype)
            wanted = [t for t, need in zip(leaves, (need_x, need_nw, need_nb)) if need]
            grads = iter(torch.autograd.grad(normed, wanted, grad_normed))
            grad_x, grad_nw, grad_nb = (
                next(grads) if n else None for n in (need_x, need_nw, need_nb)
            )
        return grad_x, grad_nw, grad_nb, grad_w, grad_b, None, None, None, None


def fp8_uvqk(
    x: torch.Tensor,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    eps: float,
    layer_norm: LayerNormFn,
    backend: str = "triton",
    variant: str = "auto",
) -> torch.Tensor:
    """``LayerNorm(x; norm_weight, norm_bias, eps) @ weight + bias`` with ``weight [in, out]``
    (GR's layout), in ``x``'s dtype.  ``layer_norm`` is the LayerNorm recomputed in backward:
    it must compute what the fused forward kernel does (an fp32 LayerNorm)."""
    return FP8LayerNormLinearFunction.apply(
        x, norm_weight, norm_bias, weight, bias, eps, layer_norm, backend, variant
    )


OUTPUT_GEMMS = ("fp8", "cublas")


class ComputeOutputFunction(torch.autograd.Function):
    """GR's ``HSTUComputeOutputFunction`` with the forward GEMM chosen: ``"fp8"`` (the rowwise
    kernel) or ``"cublas"`` (``torch.addmm`` in the inputs' dtype: on H100/H200 it beats GR's
    Triton addmm at every encoder shape measured, ``benchmarks/results/host_overhead_h200.md``,
    and costs the host ~13 us a call against ~80 us)."""

    @staticmethod
    def forward(
        ctx,
        attn: torch.Tensor,
        u: torch.Tensor,
        x: torch.Tensor,
        norm_weight: torch.Tensor,
        norm_bias: torch.Tensor,
        output_weight: torch.Tensor,
        eps: float,
        dropout_ratio: float,
        training: bool,
        recompute_y: bool,
        seed: Optional[int],
        norm_kernels: NormMulDropoutKernels,
        backend: str,
        variant: str,
        gemm: str,
        silu_u: bool,
    ) -> torch.Tensor:
        if dropout_ratio == 0.0:
            training = False
        y, mean, rstd, block_d, num_warps, seed, random_mask = norm_kernels.forward(
            x=attn,
            u=u,
            weight=norm_weight,
            bias=norm_bias,
            eps=eps,
            dropout_ratio=dropout_ratio,
            training=training,
            silu_u=silu_u,
            concat_u=True,
            concat_x=True,
            # silu_u alone would only SiLU the concatenated copy of u; the product needs it too
            mul_u_activation_type="silu" if silu_u else "none",
            seed=seed,
        )
        if gemm == "fp8":
            y_fp8, y_scale = quantize_rowwise(y, backend=backend)
            w_fp8, w_scale, w_mm = quantize_weight_in_out(output_weight, backend=backend)
            out = fp8_addmm(
                y_fp8, y_scale, w_fp8, w_scale, x.contiguous(), None, backend=backend,
                variant=variant,
            )  # fmt: skip
        else:
            w_mm = output_weight.to(y.dtype)
            out = torch.addmm(x, y, w_mm)
        saved = [attn, u, norm_weight, norm_bias, mean, rstd, w_mm]
        saved += [] if recompute_y else [y]
        saved += [] if random_mask is None else [random_mask]
        ctx.save_for_backward(*saved)
        ctx.recompute_y, ctx.has_random_mask = recompute_y, random_mask is not None
        ctx.block_d, ctx.num_warps, ctx.seed = block_d, num_warps, seed
        ctx.eps, ctx.dropout_ratio, ctx.training = eps, dropout_ratio, training
        ctx.weight_dtype = output_weight.dtype
        ctx.silu_u = silu_u
        ctx.norm_backward = norm_kernels.backward
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        attn, u, norm_weight, norm_bias, mean, rstd, w_mm = ctx.saved_tensors[:7]
        extra = list(ctx.saved_tensors[7:])
        saved_y = None if ctx.recompute_y else extra.pop(0)
        random_mask = extra.pop(0) if ctx.has_random_mask else None
        g = dout.to(w_mm.dtype)  # bf16 backward (fp8 forward) / the inputs' dtype (cublas)
        dy = (g @ w_mm.t()).to(attn.dtype)
        dattn, du, d_norm_weight, d_norm_bias, y = ctx.norm_backward(
            dy=dy,
            x=attn,
            u=u,
            weight=norm_weight,
            bias=norm_bias,
            mean=mean,
            rstd=rstd,
            BLOCK_D=ctx.block_d,
            num_warps=ctx.num_warps,
            eps=ctx.eps,
            training=ctx.training,
            dropout_ratio=ctx.dropout_ratio,
            seed=ctx.seed,
            silu_u=ctx.silu_u,
            concat_u=True,
            concat_x=True,
            mul_u_activation_type="silu" if ctx.silu_u else "none",
            compute_y=ctx.recompute_y,
            random_mask=random_mask,
        )
        if not ctx.recompute_y:
            y = saved_y
        d_output_weight = (y.to(w_mm.dtype).t() @ g).to(ctx.weight_dtype)
        return (dattn, du, dout, d_norm_weight, d_norm_bias, d_output_weight) + (None,) * 10


def fp8_output(
    attn: torch.Tensor,
    u: torch.Tensor,
    x: torch.Tensor,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    output_weight: torch.Tensor,
    eps: float,
    dropout_ratio: float,
    training: bool,
    recompute_y: bool,
    norm_kernels: NormMulDropoutKernels,
    seed: Optional[int] = None,
    backend: str = "triton",
    variant: str = "auto",
) -> torch.Tensor:
    """``x + dropout(LayerNorm(attn) * u ++ u ++ attn) @ output_weight`` (GR's output block
    with ``concat_u = concat_x = True`` and a LayerNorm, not a group norm), FP8 GEMM forward.
    ``norm_kernels`` produce ``y`` and its backward; ``seed`` fixes the dropout mask (tests),
    ``None`` draws one as GR does."""
    return hstu_output(
        attn, u, x, norm_weight, norm_bias, output_weight, eps, dropout_ratio, training,
        recompute_y, norm_kernels, seed, gemm="fp8", backend=backend, variant=variant,
    )  # fmt: skip


def hstu_output(
    attn: torch.Tensor,
    u: torch.Tensor,
    x: torch.Tensor,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    output_weight: torch.Tensor,
    eps: float,
    dropout_ratio: float,
    training: bool,
    recompute_y: bool,
    norm_kernels: NormMulDropoutKernels,
    seed: Optional[int] = None,
    gemm: str = "cublas",
    backend: str = "triton",
    variant: str = "auto",
    silu_u: bool = False,
) -> torch.Tensor:
    """The HSTU output block of :func:`fp8_output` with its forward GEMM chosen by ``gemm``
    (one of :data:`OUTPUT_GEMMS`; ``backend``/``variant`` apply to ``"fp8"`` only).
    ``silu_u``: ``u`` arrives before its SiLU, which the norm kernels apply (forward and
    backward) instead of a kernel of its own."""
    if gemm not in OUTPUT_GEMMS:
        raise ValueError(f"gemm must be one of {OUTPUT_GEMMS}, got {gemm!r}")
    return ComputeOutputFunction.apply(
        attn,
        u,
        x,
        norm_weight,
        norm_bias,
        output_weight,
        eps,
        dropout_ratio,
        training,
        recompute_y,
        seed,
        norm_kernels,
        backend,
        variant,
        gemm,
        silu_u,
    )
