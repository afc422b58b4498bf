# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The two FP8 projections of an ULTRA-HSTU layer, as autograd functions.

``fp8_uvqk``: ``uvqk = LayerNorm(x) @ W + b``.  The LayerNorm is fused into the rowwise
quantiser (``layer_norm_quantize_rowwise``), so the normalised activations are never written
in bf16 and read back; the GEMM is the FP8 rowwise kernel.

``fp8_output``: ``out = x + norm_mul_dropout(attn, u) @ W``, GR's output block, with GR's
fused LayerNorm-mul-dropout kernel (``triton_layer_norm_mul_dropout_fwd``) producing ``y``,
which is quantised and multiplied in FP8 with the residual ``x`` as the GEMM's 2D bias.

Backward, for both: bf16 GEMMs (as ``FP8LinearFunction``; see there why), and the same
recomputation GR's bf16 path does, no more:

* ``fp8_uvqk`` recomputes the LayerNorm from ``x`` (with GR's ``layer_norm`` and the layer's
  kernel) for the weight gradient and the LayerNorm backward, instead of storing it.
* ``fp8_output`` mirrors GR's ``HSTUComputeOutputFunction``: it stores ``attn``, ``u`` and
  the norm statistics, and with ``recompute_y`` rebuilds ``y`` inside GR's backward kernel.
  Wrapping the block in activation checkpointing instead would re-run the quantiser and the
  GEMM in backward only to throw their output away.
"""

from __future__ import annotations

from typing import Optional

import torch

from ultra_hstu_plugin.host import (
    HammerKernel,
    layer_norm,
    triton_layer_norm_mul_dropout_bwd,
    triton_layer_norm_mul_dropout_fwd,
)
from ultra_hstu_plugin.kernels.fp8_gemm import (
    fp8_addmm,
    layer_norm_quantize_rowwise,
    quantize_rowwise,
    quantize_weight_in_out,
)


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
        kernel: HammerKernel,
        backend: str,
    ) -> torch.Tensor:
        x_fp8, x_scale = layer_norm_quantize_rowwise(
            x.contiguous(), norm_weight.detach(), norm_bias.detach(), eps, backend=backend
        )
        # GR keeps projections as [in, out]; the GEMM takes [out, in] rows, one scale each.
        w_fp8, w_scale, w_bf16 = quantize_weight_in_out(weight, backend=backend)
        b = bias.detach().contiguous() if bias is not None else None
        out = fp8_addmm(x_fp8, x_scale, w_fp8, w_scale, None, b, backend=backend)
        ctx.save_for_backward(x, norm_weight, norm_bias, w_bf16)
        ctx.eps, ctx.kernel = eps, kernel
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
            if ctx.kernel != HammerKernel.TRITON and weight.dtype != x_leaf.dtype:
                # GR's Triton LayerNorm reads fp32 norm parameters with bf16 activations;
                # PyTorch's wants one dtype (the cast is differentiable, gradients stay fp32).
                weight, bias = weight.to(x_leaf.dtype), bias.to(x_leaf.dtype)
            normed = layer_norm(x_leaf, weight=weight, bias=bias, eps=ctx.eps, kernel=ctx.kernel)
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
        return grad_x, grad_nw, grad_nb, grad_w, grad_b, None, None, None


def fp8_uvqk(
    x: torch.Tensor,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    eps: float,
    kernel: HammerKernel,
    backend: str = "triton",
) -> torch.Tensor:
    """``LayerNorm(x; norm_weight, norm_bias, eps) @ weight + bias`` with ``weight [in, out]``
    (GR's layout), in ``x``'s dtype.  ``kernel`` runs the LayerNorm recomputed in backward."""
    return FP8LayerNormLinearFunction.apply(
        x, norm_weight, norm_bias, weight, bias, eps, kernel, backend
    )


class FP8ComputeOutputFunction(torch.autograd.Function):
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
        backend: str,
    ) -> torch.Tensor:
        if dropout_ratio == 0.0:
            training = False
        y, mean, rstd, block_d, num_warps, seed, random_mask = triton_layer_norm_mul_dropout_fwd(
            x=attn,
            u=u,
            weight=norm_weight,
            bias=norm_bias,
            eps=eps,
            dropout_ratio=dropout_ratio,
            training=training,
            concat_u=True,
            concat_x=True,
            seed=seed,
        )
        y_fp8, y_scale = quantize_rowwise(y, backend=backend)
        w_fp8, w_scale, w_bf16 = quantize_weight_in_out(output_weight, backend=backend)
        out = fp8_addmm(y_fp8, y_scale, w_fp8, w_scale, x.contiguous(), None, backend=backend)
        saved = [attn, u, norm_weight, norm_bias, mean, rstd, w_bf16]
        saved += [] if recompute_y else [y]
        saved += [] if random_mask is None else [random_mask]
        ctx.save_for_backward(*saved)
        ctx.recompute_y, ctx.has_random_mask = recompute_y, random_mask is not None
        ctx.block_d, ctx.num_warps, ctx.seed = block_d, num_warps, seed
        ctx.eps, ctx.dropout_ratio, ctx.training = eps, dropout_ratio, training
        ctx.weight_dtype = output_weight.dtype
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        attn, u, norm_weight, norm_bias, mean, rstd, w_bf16 = ctx.saved_tensors[:7]
        extra = list(ctx.saved_tensors[7:])
        saved_y = None if ctx.recompute_y else extra.pop(0)
        random_mask = extra.pop(0) if ctx.has_random_mask else None
        g = dout.to(torch.bfloat16)
        dy = (g @ w_bf16.t()).to(attn.dtype)
        dattn, du, d_norm_weight, d_norm_bias, y = triton_layer_norm_mul_dropout_bwd(
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
            concat_u=True,
            concat_x=True,
            compute_y=ctx.recompute_y,
            random_mask=random_mask,
        )
        if not ctx.recompute_y:
            y = saved_y
        d_output_weight = (y.to(torch.bfloat16).t() @ g).to(ctx.weight_dtype)
        return (dattn, du, dout, d_norm_weight, d_norm_bias, d_output_weight) + (None,) * 6


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
    seed: Optional[int] = None,
    backend: str = "triton",
) -> torch.Tensor:
    """``x + dropout(LayerNorm(attn) * u ++ u ++ attn) @ output_weight`` (GR's output block
    with ``concat_u = concat_x = True`` and a LayerNorm, not a group norm), FP8 GEMM forward.
    ``seed`` fixes the dropout mask (tests); ``None`` draws one as GR does."""
    return FP8ComputeOutputFunction.apply(
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
        backend,
    )
