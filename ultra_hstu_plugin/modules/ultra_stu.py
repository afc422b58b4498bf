# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The ULTRA-HSTU layer: GR's ``STULayer`` with semi-local attention (SLA).

It subclasses GR's ``STULayer`` so that parameter names, initialisation, the uvqk and
output projections (``hstu_compute_uqvk`` / ``hstu_compute_output``), dtype handling and
``set_hammer_kernel`` / ``set_training_dtype`` / ``set_is_inference`` are GR's own.  Only
the attention changes: the SLA mask of :mod:`ultra_hstu_plugin.kernels.sla_attention.mask`, through
the dispatch in :mod:`ultra_hstu_plugin.modules.attention`.  With ``k1 = 0`` (full
causal) its outputs equal GR's ``STULayer`` with the same weights.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, Optional

import torch
from torch.utils.checkpoint import checkpoint

from ultra_hstu_plugin.dispatch import backend_for
from ultra_hstu_plugin.host import (
    HammerKernel,
    STULayer,
    STULayerConfig,
    hstu_compute_output,
    hstu_compute_uqvk,
    layer_norm,
    pytorch_norm_mul_dropout,
    triton_layer_norm_mul_dropout_bwd,
    triton_layer_norm_mul_dropout_fwd,
    triton_norm_mul_dropout,
)
from ultra_hstu_plugin.kernels.fp8_gemm import (
    VARIANTS,
    FP8LinearFunction,
    NormMulDropoutKernels,
    fp8_output,
    fp8_supported,
    fp8_uvqk,
    hstu_output,
)
from ultra_hstu_plugin.kernels.fp8_gemm.autograd import LayerNormFn
from ultra_hstu_plugin.kernels.jagged import check_jagged_offsets
from ultra_hstu_plugin.kernels.sla_attention import (
    SLAMaskSpec,
    delta_sla_attention_split,
    sla_attention,
)
from ultra_hstu_plugin.kernels.sla_attention.delta_reference import (
    delta_sla_attention_split_padded,
)
from ultra_hstu_plugin.modules.encoder_config import PROJECTION_GEMMS
from ultra_hstu_plugin.modules.kv_cache import (
    KVCacheError,
    SLAKVCache,
    append_rows,
    fill_cache,
)

logger = logging.getLogger(__name__)
# The projections' GEMM on HammerKernel.TRITON: "cublas" (torch.addmm, as GR itself does on
# AMD and Blackwell) or "gr_triton" (GR's Triton addmm).  On an H200, cuBLAS was faster at
# every encoder shape (1.2x at 65536 x 512 x 2048, 2-5x at the truncated layers' few thousand
# rows) and costs the host ~13 us a call against ~80 us (benchmarks/results/host_overhead*).
# The choices, PROJECTION_GEMMS, live with the (GR-free) encoder config.
# SiLU of u inside GR's LayerNorm-mul-dropout kernels (silu_u + mul_u_activation_type="silu"):
# one kernel and its backward fewer a layer.  Checked on an H200 against SiLU-before-the-norm
# and the whole layer on PYTORCH, forward and backward
# (integration_tests/test_fp8_layer.py::test_silu_u_inside_the_norm_equals_silu_before_it_on_gpu,
# ::test_triton_layer_matches_the_pytorch_layer_on_gpu).
FUSE_SILU_U = True
_fp8_fallback_logged = False

# GR's fused LayerNorm-mul-dropout pair, which the FP8 output block runs around its GEMM.
GR_NORM_MUL_DROPOUT = NormMulDropoutKernels(
    forward=triton_layer_norm_mul_dropout_fwd, backward=triton_layer_norm_mul_dropout_bwd
)


def gr_layer_norm(kernel: HammerKernel) -> LayerNormFn:
    """GR's ``layer_norm`` on ``kernel``, as the FP8 uvqk projection recomputes it in backward."""

    def norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        if kernel != HammerKernel.TRITON and weight.dtype != x.dtype:
            # GR's Triton LayerNorm reads fp32 norm parameters with bf16 activations;
            # PyTorch's wants one dtype (the cast is differentiable, gradients stay fp32).
            weight, bias = weight.to(x.dtype), bias.to(x.dtype)
        return layer_norm(x, weight=weight, bias=bias, eps=eps, kernel=kernel)

    return norm


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
    length); ``k1``, ``k2``, ``target_mode``, ``full_attn_tail`` and
    ``contextual_in_prefix`` (False: GR's convention, contextual tokens inside the window)
    set the SLA mask.
    ``config.max_attn_len`` must be unset or equal ``k1``: one window, one source.

    Recomputation: GR's flags keep their meaning.  ``recompute_normed_x`` or
    ``recompute_uvqk`` recompute the LayerNorm + uvqk projection in backward instead of
    storing them; ``recompute_y`` recomputes the output norm/gating (through GR's Triton
    kernel flag on TRITON, by activation checkpointing on PYTORCH).

    ``fp8=True`` runs the uvqk and output projections through the FP8 rowwise GEMM
    (``kernels/fp8_gemm``), with the residual ``x`` fused as the output GEMM's 2D bias
    and a bf16 backward.  Where there is no FP8 (CPU, pre-Hopper GPUs, dims not a
    multiple of 16) it falls back to the plain path with one logged notice.  Like the
    attention, the FP8 ops run on the backend the layer's ``HammerKernel`` selects
    (TRITON: the kernels; PYTORCH: their PyTorch references).  ``fp8_gemm_variant`` pins the
    Triton GEMM kernel (``"pointer"``/``"tma"``) or leaves it to the shape table (``"auto"``).
    ``projection_gemm`` (bf16 path on TRITON): the uvqk and output GEMMs through cuBLAS
    (``"cublas"``, with GR's Triton LayerNorm and LayerNorm-mul-dropout kernels around them)
    or through GR's ``hstu_compute_uqvk`` / ``hstu_compute_output`` as they are
    (``"gr_triton"``); see :data:`PROJECTION_GEMMS`.

    KV cache: GR's interface (``forward(..., kv_caching_lengths=...)`` fills it,
    ``cached_forward`` runs new rows against it), stored SLA-bounded: the prefix and the last
    ``k1`` history rows per user (:mod:`ultra_hstu_plugin.modules.kv_cache` has the layout and
    the size formula); ``kv_cache`` / ``set_kv_cache`` / ``kv_cache_bytes_per_user`` expose it.
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
        fp8_gemm_variant: str = "auto",
        contextual_in_prefix: bool = True,
        projection_gemm: str = "cublas",
    ) -> None:
        if not config.causal:
            raise ValueError("UltraHSTULayer supports causal attention only (config.causal=False)")
        if config.max_attn_len not in (None, 0, k1):
            raise ValueError(
                f"STULayerConfig.max_attn_len={config.max_attn_len} conflicts with k1={k1}; "
                "set the window through k1 only"
            )
        if fp8_gemm_variant not in VARIANTS:
            raise ValueError(
                f"fp8_gemm_variant must be one of {VARIANTS}, got {fp8_gemm_variant!r}"
            )
        if projection_gemm not in PROJECTION_GEMMS:
            raise ValueError(
                f"projection_gemm must be one of {PROJECTION_GEMMS}, got {projection_gemm!r}"
            )
        super().__init__(config=config, is_inference=is_inference)
        self.projection_gemm = projection_gemm
        # Public: the mask travels from here to the kernel as it is.
        self.sla = SLAMaskSpec(
            k1=k1,
            k2=k2,
            contextual_seq_len=config.contextual_seq_len,
            target_mode=target_mode,
            full_attn_tail=full_attn_tail,
            contextual_in_prefix=contextual_in_prefix,
        )
        self._max_attn_len = k1
        self._debug_checks = False
        self._fp8 = fp8
        self.fp8_gemm_variant = fp8_gemm_variant

    def extra_repr(self) -> str:
        s = self.sla
        return (
            f"heads={self._num_heads}, dim={self._embedding_dim}, k1={s.k1}, k2={s.k2}, "
            f"contextual={s.contextual_seq_len}, target_mode={s.target_mode}, "
            f"full_attn_tail={s.full_attn_tail}"
        )

    def _maybe_checkpoint(self, enabled: bool, fn: Callable[..., object], *args: object) -> object:
        if enabled and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _cublas_projections(self) -> bool:
        return self.hammer_kernel() == HammerKernel.TRITON and self.projection_gemm == "cublas"

    def _cublas_output(self) -> bool:
        """The output block through :func:`hstu_output`."""
        return self._cublas_projections() and not self._use_group_norm

    def _silu_in_norm(self) -> bool:
        """``u`` leaves ``_uvqk`` before its SiLU, which GR's norm kernels then apply (one
        kernel and its backward fewer a layer): see FUSE_SILU_U."""
        return FUSE_SILU_U and self._cublas_output()

    def _uvqk(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._cublas_projections():
            # hstu_compute_uqvk's steps, with the GEMM through cuBLAS
            normed = layer_norm(
                x,
                weight=self._input_norm_weight.to(x.dtype),
                bias=self._input_norm_bias.to(x.dtype),
                eps=1e-6,
                kernel=HammerKernel.TRITON,
            )
            uvqk = torch.addmm(self._uvqk_beta.to(x.dtype), normed, self._uvqk_weight.to(x.dtype))
            h, a, n = self._hidden_dim, self._attention_dim, self._num_heads
            u, v, q, k = torch.split(uvqk, [h * n, h * n, a * n, a * n], dim=1)
            return (
                u if self._silu_in_norm() else torch.nn.functional.silu(u),
                q.view(-1, n, a),
                k.view(-1, n, a),
                v.view(-1, n, h),
            )
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
        self, x: torch.Tensor, backend: str
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
            layer_norm=gr_layer_norm(self.hammer_kernel()),
            backend=backend,
            variant=self.fp8_gemm_variant,
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
        self, attn: torch.Tensor, u: torch.Tensor, x: torch.Tensor, backend: str
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
            norm_kernels=GR_NORM_MUL_DROPOUT,
            backend=backend,
            variant=self.fp8_gemm_variant,
        )

    def _output_fp8(
        self, attn: torch.Tensor, u: torch.Tensor, x: torch.Tensor, backend: str
    ) -> torch.Tensor:
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
        out = FP8LinearFunction.apply(
            y, self._output_weight.t(), None, x, backend, self.fp8_gemm_variant
        )
        return out.to(x.dtype)

    def _output(self, attn: torch.Tensor, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self._cublas_output():
            # GR's HSTUComputeOutputFunction step for step, the forward GEMM through cuBLAS
            # (and, with FUSE_SILU_U, the SiLU of u inside the norm kernel)
            return hstu_output(
                attn,
                u,
                x,
                self._output_norm_weight.to(x.dtype),
                self._output_norm_bias.to(x.dtype),
                self._output_weight.to(x.dtype),
                eps=1e-6,
                dropout_ratio=self._output_dropout_ratio,
                training=self.training,
                recompute_y=self._recompute_y,
                norm_kernels=GR_NORM_MUL_DROPOUT,
                gemm="cublas",
                silu_u=self._silu_in_norm(),
            )
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
        kernel = self.hammer_kernel()
        backend = backend_for(kernel, x.device)  # the one dispatch point, device check included
        self._check_inputs(x, x_lengths, x_offsets, max_seq_len, num_targets)
        fp8, uvqk = self._uvqk_for(x)
        u, q, k, v = self._maybe_checkpoint(
            self._recompute_uvqk or self._recompute_normed_x, uvqk, x
        )
        if kv_caching_lengths is not None:
            self._set_kv_cache(
                fill_cache(
                    self._cache_template(),
                    k,
                    v,
                    x_offsets,
                    num_targets if self._target_aware else None,
                    max_kv_caching_len,
                    kv_caching_lengths,
                )
            )
        attn = sla_attention(
            q,
            k,
            v,
            seq_offsets=x_offsets,
            max_seq_len=max_seq_len,
            alpha=self._attn_alpha,
            spec=self.sla,
            num_targets=num_targets if self._target_aware else None,
            backend=backend,
        ).reshape(-1, self._hidden_dim * self._num_heads)
        return self._finish(attn, u, x, fp8, backend)

    def _uvqk_for(self, x: torch.Tensor) -> tuple[bool, Callable[..., object]]:
        fp8 = self._use_fp8(x)
        if fp8:
            kernel = self.hammer_kernel()
            return fp8, functools.partial(
                self._uvqk_fp8, backend=backend_for(kernel, x.device, "fp8_gemm")
            )
        return fp8, self._uvqk

    def _finish(
        self, attn: torch.Tensor, u: torch.Tensor, x: torch.Tensor, fp8: bool, backend: str
    ) -> torch.Tensor:
        """The gated output block after the attention (shared by the full and cached paths)."""
        kernel = self.hammer_kernel()
        # GR's Triton output kernel recomputes y itself when asked; elsewhere checkpoint.
        if fp8 and self._fused_fp8_output():
            return self._output_fp8_fused(attn, u, x, backend)
        if fp8:
            return self._maybe_checkpoint(
                self._recompute_y, functools.partial(self._output_fp8, backend=backend), attn, u, x
            )
        recompute_y_here = self._recompute_y and kernel != HammerKernel.TRITON
        return self._maybe_checkpoint(recompute_y_here, self._output, attn, u, x)

    def _check_inputs(
        self,
        x: torch.Tensor,
        x_lengths: torch.Tensor,
        x_offsets: torch.Tensor,
        max_seq_len: int,
        num_targets: Optional[torch.Tensor],
    ) -> None:
        """Clear errors before any kernel runs.  The O(B) parts read offsets on the host,
        so on CUDA they run only in debug mode (``set_debug_checks(True)``)."""
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

    # ----------------------------------------------------------------------------------
    # KV cache (GR's interface; layout and size formula: modules/kv_cache.py)
    # ----------------------------------------------------------------------------------

    def reset_kv_cache(self) -> None:
        super().reset_kv_cache()
        self._sla_kv_cache: Optional[SLAKVCache] = None

    @property
    def kv_cache(self) -> Optional[SLAKVCache]:
        """This layer's cache (None until a forward with ``kv_caching_lengths``)."""
        return self._sla_kv_cache

    def set_kv_cache(self, cache: Optional[SLAKVCache]) -> None:
        """Install a cache (e.g. one saved from this layer earlier); refused when another
        mask or shape built it."""
        if cache is not None:
            self._check_cache_configuration(cache)
        self._set_kv_cache(cache)

    def kv_cache_bytes_per_user(self) -> torch.Tensor:
        """``[B]`` bytes of cached keys + values per user (modules/kv_cache.py's formula)."""
        return self._require_cache().bytes_per_user()

    def _cache_template(self) -> SLAKVCache:
        empty = torch.empty(0)
        return SLAKVCache(
            spec=self.sla, num_heads=self._num_heads, attention_dim=self._attention_dim,
            hidden_dim=self._hidden_dim, k=empty, v=empty, offsets=empty, lengths=empty,
            kept_ends=empty, max_len=0,
        )  # fmt: skip

    def _set_kv_cache(self, cache: Optional[SLAKVCache]) -> None:
        self._sla_kv_cache = cache
        # GR's attributes, for code that inspects them (rows are the kept rows)
        if cache is None:
            super().reset_kv_cache()
            return
        self.k_cache = cache.k.flatten(1, 2)
        self.v_cache = cache.v.flatten(1, 2)
        self.kv_caching_offsets = cache.offsets
        self.max_kv_caching_len = cache.max_len

    def _check_cache_configuration(self, cache: SLAKVCache) -> None:
        mine = self._cache_template().configuration()
        if cache.configuration() != mine:
            names = ("spec", "num_heads", "attention_dim", "hidden_dim")
            diffs = [
                f"{name}: cache {a} vs layer {b}"
                for name, a, b in zip(names, cache.configuration(), mine)
                if a != b
            ]
            raise KVCacheError(
                "the KV cache was built with another configuration (" + "; ".join(diffs) + "); "
                "call reset_kv_cache() and refill it with forward(..., kv_caching_lengths=...)"
            )

    def _require_cache(self) -> SLAKVCache:
        cache = self._sla_kv_cache
        if cache is None:
            raise KVCacheError(
                "cached_forward called with no KV cache: run forward(..., kv_caching_lengths=...) "
                "first to cache each user's rows"
            )
        self._check_cache_configuration(cache)
        return cache

    def cached_forward(
        self,
        delta_x: torch.Tensor,
        num_targets: torch.Tensor,
        max_kv_caching_len: int = 0,
        kv_caching_lengths: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """GR's ``cached_forward``: the new rows ``delta_x`` (``[B * delta, dim]``, ``delta``
        per user) against the cache; ``num_targets[b]`` counts candidates of the full sequence
        (cache + new rows).  With ``kv_caching_lengths``, the first ``kv_caching_lengths[b]``
        rows of cache + new rows become the cache (GR's ``update_kv_cache``)."""
        cache = self._require_cache()
        B = cache.batch_size
        if delta_x.dim() != 2 or delta_x.shape[1] != self._embedding_dim:
            raise ValueError(
                f"delta_x must be [rows, {self._embedding_dim}], got {tuple(delta_x.shape)}"
            )
        if B == 0 or delta_x.shape[0] % B:
            raise KVCacheError(
                f"delta_x has {delta_x.shape[0]} rows for the {B} cached users: cached_forward "
                "takes the same number of new rows per user (GR's padded delta)"
            )
        delta = delta_x.shape[0] // B
        if self._target_aware and (num_targets is None or num_targets.numel() != B):
            got = None if num_targets is None else tuple(num_targets.shape)
            raise KVCacheError(f"num_targets must be [B={B}] for the cached users, got {got}")
        # Offsets, lengths and their checks: once per cache and delta, shared by every layer
        # (the first layer builds it; it reads no device tensor, so the call never syncs).
        layout = cache.delta_layout(delta, self.sla)
        nt = num_targets if self._target_aware else None
        cpu = delta_x.device.type == "cpu"
        host_targets = layout.check_targets(nt, full=self._debug_checks or cpu)
        kernel = self.hammer_kernel()
        backend = backend_for(kernel, delta_x.device)
        fp8, uvqk = self._uvqk_for(delta_x)
        u, q, k, v = uvqk(delta_x)
        k_cache, v_cache = cache.k, cache.v
        if k_cache.dtype != q.dtype:
            k_cache, v_cache = k_cache.to(q.dtype), v_cache.to(q.dtype)
        if backend == "pytorch" and cpu and (nt is None or host_targets is not None):
            # eager CPU: the dense plan (padded rows, mask) is the layout's, built once a call
            cache_rows, scaled_mask = layout.dense_plan(nt, host_targets, q.dtype)
            attn = delta_sla_attention_split_padded(
                q, k, v, k_cache, v_cache, cache_rows, scaled_mask, self._attn_alpha
            )
        else:
            attn = delta_sla_attention_split(
                q,
                k,
                v,
                k_cache,
                v_cache,
                layout.q_offsets,
                layout.cache_offsets,
                layout.cache_lengths,
                layout.kept_ends,
                max_seq_len=layout.max_seq_len,  # GR's construct_full_kv
                max_delta_len=delta,
                alpha=self._attn_alpha,
                spec=self.sla,
                num_targets=nt,
                cache_prefix=layout.cache_prefix,
                backend=backend,
                checked=True,
            )
        attn = attn.reshape(-1, self._hidden_dim * self._num_heads)
        if kv_caching_lengths is not None:
            self._set_kv_cache(
                append_rows(cache, k, v, layout, nt, max_kv_caching_len, kv_caching_lengths)
            )
        return self._finish(attn, u, delta_x, fp8, backend)
