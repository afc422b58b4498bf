# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the ULTRA-HSTU stack; plain data, importable without GR."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from ultra_hstu_plugin.kernels.fp8_gemm.variants import VARIANTS as FP8_GEMM_VARIANTS
from ultra_hstu_plugin.kernels.sla_attention.mask import TARGET_MODES

# The bf16 layers' projection GEMM on HammerKernel.TRITON (see modules/ultra_stu.py).
PROJECTION_GEMMS = ("cublas", "gr_triton")

# With streams these fields would be ignored; the value each must keep (its default).
STREAM_IGNORED_FIELDS = {
    "num_truncated_layers": 0,
    "truncated_seq_len": 0,
    "num_full_layers": None,
    "upper_k1": 0,
    "upper_k2": 0,
    "recompute_truncated_layers": False,
}


@dataclass(frozen=True)
class UltraHSTUEncoderConfig:
    """Shape of the ULTRA-HSTU stack (bound from gin, see ``gin_configs/``).

    k1 / k2: SLA window and global prefix of the full-sequence layers (k1 = 0: causal).
    upper_k1 / upper_k2: the same for the truncated layers (their sequences are short, so
        full causal, 0 / 0, is the usual choice).
    target_mode: "window" (GR's local mask for candidates) or "history" (candidates see
        the whole history, as TorchEasyRec's SLA).
    full_attn_tail: rows this close to the candidates see everything causal (0 = off).
    fp8: run the uvqk and output projections as FP8 rowwise GEMMs (residual fused as the
        2D bias); falls back to the input dtype, with one notice, where there is no FP8.
    contextual_in_prefix: True (ours): contextual tokens are part of the SLA global prefix,
        every row sees them; False: GR's convention, they are seen from inside the window
        only (so ``k1 = max_attn_len, k2 = 0`` gives GR's local mask with contextual tokens).
    fp8_gemm_variant: which FP8 GEMM kernel: 'auto' = the benchmark-made table for the
        shape and device; 'pointer' or 'tma' to pin one.
    num_full_layers: N1; None = GR's ``hstu_attn_num_layers`` (resolved by the model, so
        a config that sets only k1/k2 keeps GR's depth).
    projection_gemm: the bf16 layers' uvqk/output GEMMs on TRITON: "cublas" (torch.addmm,
        faster on H100/H200) or "gr_triton" (GR's Triton addmm, GR's kernels as they are).
    recompute_truncated_layers: selective recomputation.  False (default): the truncated
        layers store their activations (they hold L'/L of a full layer's tokens) and only the
        full layers follow the ``recompute_*`` flags; recomputing the short layers saved
        little memory and cost their backward a second forward, host-bound on a GPU.  True:
        every layer follows the ``recompute_*`` flags (GR's behaviour).
    """

    num_full_layers: Optional[int] = None
    num_truncated_layers: int = 0
    truncated_seq_len: int = 0
    k1: int = 0
    k2: int = 0
    upper_k1: int = 0
    upper_k2: int = 0
    target_mode: str = "window"
    full_attn_tail: int = 0
    recompute_normed_x: bool = True
    recompute_uvqk: bool = True
    recompute_y: bool = True
    fp8: bool = False  # FP8 rowwise GEMMs for the uvqk/output projections (sm89+ GPUs)
    fp8_gemm_variant: str = "auto"
    contextual_in_prefix: bool = True
    recompute_truncated_layers: bool = False
    projection_gemm: str = "cublas"

    def with_default_depth(self, num_layers: int) -> UltraHSTUEncoderConfig:
        """This config with ``num_full_layers=None`` resolved to ``num_layers`` (GR's depth)."""
        if self.num_full_layers is not None:
            return self
        return dataclasses.replace(self, num_full_layers=num_layers)

    def validate(self, max_seq_len: Optional[int] = None, depth_from_streams: bool = False) -> None:
        """One clear error naming the bad value; called before any layer is built.

        With a mixture of transducers (``depth_from_streams``) each stream sets its own
        depth and length budget and every stream layer uses k1/k2, so the depth,
        truncation and upper-layer fields would be ignored: setting one is an error.
        ``num_full_layers=None`` passes (the model resolves it to GR's depth).
        """
        if depth_from_streams:
            for name in STREAM_IGNORED_FIELDS:
                value = getattr(self, name)
                if value != STREAM_IGNORED_FIELDS[name]:
                    raise ValueError(
                        f"ULTRA-HSTU encoder: {name}={value} conflicts with streams; "
                        "each stream's num_layers and max_len set its depth and length"
                        + (" (and its layers use k1/k2)" if name.startswith("upper_") else "")
                        + f"; unbind {name}"
                    )
            self = dataclasses.replace(self, num_full_layers=1)
        for name in (
            "num_full_layers",
            "num_truncated_layers",
            "truncated_seq_len",
            "k1",
            "k2",
            "upper_k1",
            "upper_k2",
            "full_attn_tail",
        ):
            value = getattr(self, name)
            if name == "num_full_layers" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(
                    f"ULTRA-HSTU encoder: {name} must be a non-negative int, got {value!r}"
                )
        if self.fp8_gemm_variant not in FP8_GEMM_VARIANTS:
            raise ValueError(
                f"ULTRA-HSTU encoder: fp8_gemm_variant must be one of {FP8_GEMM_VARIANTS}, "
                f"got {self.fp8_gemm_variant!r}"
            )
        if self.projection_gemm not in PROJECTION_GEMMS:
            raise ValueError(
                f"ULTRA-HSTU encoder: projection_gemm must be one of {PROJECTION_GEMMS}, got "
                f"{self.projection_gemm!r}"
            )
        if not isinstance(self.recompute_truncated_layers, bool):
            raise ValueError(
                "ULTRA-HSTU encoder: recompute_truncated_layers must be a bool, got "
                f"{self.recompute_truncated_layers!r}"
            )
        if not isinstance(self.contextual_in_prefix, bool):
            raise ValueError(
                "ULTRA-HSTU encoder: contextual_in_prefix must be a bool, got "
                f"{self.contextual_in_prefix!r}"
            )
        if self.target_mode not in TARGET_MODES:
            raise ValueError(
                f"ULTRA-HSTU encoder: target_mode must be one of {TARGET_MODES}, got {self.target_mode!r}"
            )
        if (
            self.num_full_layers is not None
            and self.num_full_layers + self.num_truncated_layers == 0
        ):
            raise ValueError(
                "ULTRA-HSTU encoder: num_full_layers + num_truncated_layers must be > 0"
            )
        if self.num_truncated_layers > 0 and self.truncated_seq_len == 0:
            raise ValueError(
                f"ULTRA-HSTU encoder: num_truncated_layers={self.num_truncated_layers} needs "
                "truncated_seq_len > 0 (the L' history tokens the upper layers keep)"
            )
        if self.num_truncated_layers == 0 and self.truncated_seq_len > 0:
            raise ValueError(
                f"ULTRA-HSTU encoder: truncated_seq_len={self.truncated_seq_len} is set but "
                "num_truncated_layers=0, so it would be ignored"
            )
        if self.num_truncated_layers == 0:
            for name in ("upper_k1", "upper_k2", "recompute_truncated_layers"):
                if getattr(self, name) != STREAM_IGNORED_FIELDS[name]:
                    raise ValueError(
                        f"ULTRA-HSTU encoder: {name}={getattr(self, name)} is set but "
                        "num_truncated_layers=0, so it would be ignored ("
                        + (
                            "it is the truncated layers' window; k1/k2 are the full layers'"
                            if name.startswith("upper_")
                            else "it applies to the truncated layers only"
                        )
                        + ")"
                    )
        if max_seq_len is not None:
            for name in ("k1", "k2", "truncated_seq_len", "full_attn_tail"):
                value = getattr(self, name)
                if value >= max_seq_len:
                    raise ValueError(
                        f"ULTRA-HSTU encoder: {name}={value} must be below max_seq_len={max_seq_len}"
                        + (" (use k1=0 for full causal attention)" if name == "k1" else "")
                    )
            for name in ("upper_k1", "upper_k2"):
                value = getattr(self, name)
                if self.num_truncated_layers > 0 and value >= max_seq_len:
                    raise ValueError(
                        f"ULTRA-HSTU encoder: {name}={value} must be below max_seq_len={max_seq_len}"
                    )
