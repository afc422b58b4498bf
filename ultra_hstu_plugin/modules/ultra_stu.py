# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The ULTRA-HSTU layer: GR's ``STULayer`` with semi-local attention (SLA).

It subclasses GR's ``STULayer`` so that parameter names, initialisation, the uvqk and
output projections (``hstu_compute_uqvk`` / ``hstu_compute_output``), dtype handling and
``set_hammer_kernel`` / ``set_training_dtype`` / ``set_is_inference`` are GR's own.  Only
the attention changes: the SLA mask of :mod:`ultra_hstu_plugin.kernels.sla_mask`, through
the dispatch in :mod:`ultra_hstu_plugin.modules.attention`.  With ``k1 = 0`` (full
causal) its outputs equal GR's ``STULayer`` with the same weights.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import torch
from torch.utils.checkpoint import checkpoint

from ultra_hstu_plugin.host import (
    HammerKernel,
    STULayer,
    STULayerConfig,
    hstu_compute_output,
    hstu_compute_uqvk,
    pytorch_norm_mul_dropout,
    triton_norm_mul_dropout,
)
from ultra_hstu_plugin.kernels.fp8_gemm import fp8_supported
from ultra_hstu_plugin.kernels.jagged_checks import check_jagged_offsets
from ultra_hstu_plugin.kernels.sla_mask import SLAMaskSpec
from ultra_hstu_plugin.modules.attention import sla_attention
from ultra_hstu_plugin.modules.fp8_projections import fp8_output, fp8_uvqk
from ultra_hstu_plugin.quant.fp8_linear import FP8LinearFunction

logger = logging.getLogger(__name__)
_fp8_fallback_logged = False


def _fp8_fallback_notice(device: torch.device) -> None:
    global _fp8_fallback_logged
    if not _fp8_fallback_logged:
        _fp8_fallback_logged = True
        logger.warning(
            "UltraHSTULayer(fp8=True): no FP8 GEMM on %s (needs CUDA sm89+); running the "
            "projections in the input dtype (logged once)",
            device,
        )


class UltraHSTULayer(STULayer):
    """One ULTRA-HSTU block: LayerNorm -> uvqk -> SLA attention -> gated output.

    ``config`` is GR's ``STULayerConfig`` (dims, dropout, recompute flags, contextual
    length); ``k1``, ``k2``, ``target_mode`` and ``full_attn_tail`` set the SLA mask.
    ``config.max_attn_len`` must be unset or equal ``k1``: one window, one source.

    Recomputation: GR's flags keep their meaning.  ``recompute_normed_x`` or
    ``recompute_uvqk`` recompute the LayerNorm + uvqk projection in backward instead of
    storing them; ``recompute_y`` recomputes the output norm/gating (through GR's Triton
    kernel flag on TRITON, by activation checkpointing on PYTORCH).

    ``fp8=True`` runs the uvqk and output projections through the FP8 rowwise GEMM
    (``kernels/fp8_gemm.py``), with the residual ``x`` fused as the output GEMM's 2D bias
    and a bf16 backward.  Where there is no FP8 (CPU, pre-Hopper GPUs, dims not a
    multiple of 16) it falls back to the plain path with one logged notice.
    """

    def __init__(
        self,
        config: STULayerConfig,
        k1: int = 0,
        k2: int = 0,
        target_mode: str = "window",
        full_attn_tail: int = 0,
        is_inference: bool = False,
        fp8: bool = False,
    ) -> None:
        if not config.causal:
            raise ValueError("UltraHSTULayer supports causal attention only (config.causal=False)")
        if config.max_attn_len not in (None, 0, k1):
            raise ValueError(
                f"STULayerConfig.max_attn_len={config.max_attn_len} conflicts with k1={k1}; "
                "set the window through k1 only"
            )
        super().__init__(config=config, is_inference=is_inference)
        self._sla = SLAMaskSpec(
            k1=k1,
            k2=k2,
            contextual_seq_len=config.contextual_seq_len,
            target_mode=target_mode,
            full_attn_tail=full_attn_tail,
        )
        self._max_attn_len = k1
        self._debug_checks = False
        self._fp8 = fp8
        # "triton" on GPUs; tests select the PyTorch reference of the same GEMM on CPU.
        self._fp8_backend = "triton"

    @property
    def sla(self) -> SLAMaskSpec:
        return self._sla

    def extra_repr(self) -> str:
        s = self._sla
        return (
            f"heads={self._num_heads}, dim={self._embedding_dim}, k1={s.k1}, k2={s.k2}, "
            f"contextual={s.contextual_seq_len}, target_mode={s.target_mode}, "
            f"full_attn_tail={s.full_attn_tail}"
        )

    def _maybe_checkpoint(self, enabled: bool, fn: Callable[..., object], *args: object) -> object:
        if enabled and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _uvqk(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return hstu_compute_uqvk(
            x=x,
            norm_weight=self._input_norm_weight.to(x.dtype),
            norm_bias=self._input_norm_bias.to(x.dtype),
            norm_eps=1e-6,
            num_heads=self._num_heads,
            attn_dim=self._attention_dim,
            hidden_dim=self._hidden_dim,
            uvqk_weight=self._uvqk_weight.to(x.dtype),
            uvqk_bias=self._uvqk_beta.to(x.dtype),
            kernel=self.hammer_kernel(),
        )

    def _use_fp8(self, x: torch.Tensor) -> bool:
        if not self._fp8:
            return False
        dims_ok = (
            self._embedding_dim % 16 == 0 and (3 * self._hidden_dim * self._num_heads) % 16 == 0
        )
        if fp8_supported(x.device) and dims_ok:
            return True
        _fp8_fallback_notice(x.device)
        return False

    def _uvqk_fp8(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # Norm parameters go in their own dtype: the kernels read them as fp32, and a cast
        # here would cost two launches forward and two in backward for ~KBs of data.
        uvqk = fp8_uvqk(
            x,
            self._input_norm_weight,
            self._input_norm_bias,
            self._uvqk_weight,
            self._uvqk_beta,
            eps=1e-6,
            kernel=self.hammer_kernel(),
            backend=self._fp8_backend,
        )
        h, a, n = self._hidden_dim, self._attention_dim, self._num_heads
        u, v, q, k = torch.split(uvqk, [h * n, h * n, a * n, a * n], dim=1)
        return (
            torch.nn.functional.silu(u),
            q.view(-1, n, a),
            k.view(-1, n, a),
            v.view(-1, n, h),
        )

    def _fused_fp8_output(self) -> bool:
        """GR's fused LayerNorm-mul-dropout kernel feeds the FP8 GEMM directly (TRITON kernel,
        LayerNorm); other configurations go through ``_output_fp8`` and checkpointing."""
        return self.hammer_kernel() == HammerKernel.TRITON and not self._use_group_norm

    def _output_fp8_fused(
        self, attn: torch.Tensor, u: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        return fp8_output(
            attn,
            u,
            x,
            self._output_norm_weight,  # in their own dtype, as in _uvqk_fp8
            self._output_norm_bias,
            self._output_weight,
            eps=1e-6,
            dropout_ratio=self._output_dropout_ratio,
            training=self.training,
            recompute_y=self._recompute_y,
            backend=self._fp8_backend,
        )

    def _output_fp8(self, attn: torch.Tensor, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        norm_mul_dropout = (
            triton_norm_mul_dropout
            if self.hammer_kernel() == HammerKernel.TRITON
            else pytorch_norm_mul_dropout
        )
        y = norm_mul_dropout(
            x=attn,
            u=u,
            weight=self._output_norm_weight.to(x.dtype),
            bias=self._output_norm_bias.to(x.dtype),
            eps=1e-6,
            dropout_ratio=self._output_dropout_ratio,
            training=self.training,
            concat_u=True,
            concat_x=True,
            group_norm=self._use_group_norm,
            num_heads=self._num_heads,
            linear_dim=self._hidden_dim,
        )
        # residual x fused into the GEMM epilogue as the 2D bias
        out = FP8LinearFunction.apply(y, self._output_weight.t(), None, x, self._fp8_backend)
        return out.to(x.dtype)

    def _output(self, attn: torch.Tensor, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return hstu_compute_output(
            attn=attn,
            u=u,
            x=x,
            norm_weight=self._output_norm_weight.to(x.dtype),
            norm_bias=self._output_norm_bias.to(x.dtype),
            norm_eps=1e-6,
            dropout_ratio=self._output_dropout_ratio,
            output_weight=self._output_weight.to(x.dtype),
            group_norm=self._use_group_norm,
            num_heads=self._num_heads,
            linear_dim=self._hidden_dim,
            concat_u=True,
            concat_x=True,
            mul_u_activation_type="none",
            training=self.training,
            kernel=self.hammer_kernel(),
            recompute_y_in_backward=self._recompute_y,
        )

    def forward(
        self,
        x: torch.Tensor,
        x_lengths: torch.Tensor,
        x_offsets: torch.Tensor,
        max_seq_len: int,
        num_targets: torch.Tensor,
        max_kv_caching_len: int = 0,
        kv_caching_lengths: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if kv_caching_lengths is not None or max_kv_caching_len != 0:
            raise NotImplementedError(
                "UltraHSTULayer does not support KV caching yet; use GR's STULayer for "
                "cached inference"
            )
        kernel = self.hammer_kernel()
        self._check_inputs(kernel, x, x_lengths, x_offsets, max_seq_len, num_targets)
        fp8 = self._use_fp8(x)
        u, q, k, v = self._maybe_checkpoint(
            self._recompute_uvqk or self._recompute_normed_x,
            self._uvqk_fp8 if fp8 else self._uvqk,
            x,
        )
        attn = sla_attention(
            kernel,
            q,
            k,
            v,
            seq_offsets=x_offsets,
            max_seq_len=max_seq_len,
            alpha=self._attn_alpha,
            spec=self._sla,
            num_targets=num_targets if self._target_aware else None,
        ).reshape(-1, self._hidden_dim * self._num_heads)
        # GR's Triton output kernel recomputes y itself when asked; elsewhere checkpoint.
        if fp8 and self._fused_fp8_output():
            return self._output_fp8_fused(attn, u, x)
        if fp8:
            return self._maybe_checkpoint(self._recompute_y, self._output_fp8, attn, u, x)
        recompute_y_here = self._recompute_y and kernel != HammerKernel.TRITON
        return self._maybe_checkpoint(recompute_y_here, self._output, attn, u, x)

    def _check_inputs(
        self,
        kernel: HammerKernel,
        x: torch.Tensor,
        x_lengths: torch.Tensor,
        x_offsets: torch.Tensor,
        max_seq_len: int,
        num_targets: Optional[torch.Tensor],
    ) -> None:
        """Clear errors before any kernel runs.  The O(B) parts read offsets on the host,
        so on CUDA they run only in debug mode (``set_debug_checks(True)``)."""
        if kernel != HammerKernel.PYTORCH and x.device.type != "cuda":
            raise ValueError(
                f"HammerKernel.{kernel.name} needs CUDA tensors, got x on {x.device}; on CPU call "
                "model.set_hammer_kernel(HammerKernel.PYTORCH)"
            )
        if x.dim() != 2 or x.shape[1] != self._embedding_dim:
            raise ValueError(
                f"x must be [sum L, {self._embedding_dim}], got shape {tuple(x.shape)}"
            )
        if x_lengths.numel() + 1 != x_offsets.numel():
            raise ValueError(
                f"x_lengths has {x_lengths.numel()} entries but x_offsets has {x_offsets.numel()} "
                "(expected one more offset than lengths)"
            )
        full = self._debug_checks or x_offsets.device.type == "cpu"
        check_jagged_offsets(
            x_offsets,
            x.shape[0],
            max_seq_len,
            full=full,
            num_targets=num_targets if self._target_aware else None,
        )
        if full and not torch.equal(
            x_lengths.to(torch.int64).cpu(), (x_offsets[1:] - x_offsets[:-1]).to(torch.int64).cpu()
        ):
            raise ValueError("x_lengths do not match the differences of x_offsets")

    def set_debug_checks(self, enabled: bool) -> None:
        self._debug_checks = enabled

    def cached_forward(
        self,
        delta_x: torch.Tensor,
        num_targets: torch.Tensor,
        max_kv_caching_len: int = 0,
        kv_caching_lengths: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        raise NotImplementedError("UltraHSTULayer does not support KV-cached inference yet")
