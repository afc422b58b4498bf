# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Persistent, TMA-based variant of the FP8 rowwise GEMM with fused 2D/1D bias (Hopper+).

Same contract as ``_fp8_addmm_kernel`` in ``triton_kernels.py``; what differs is how the
epilogue is hidden.  A 2D bias makes the epilogue as heavy as the operands: for each output tile
the bias tile is read and the output tile written (at (65536, 1024, 4096) that is 1 GiB, against
72 MiB of fp8 operands).  In the one-program-per-tile kernel a program's epilogue overlaps only
with other programs' main loops.  Here one program per SM walks tiles in a loop, and:

* operands, bias and output move through host-built TMA descriptors (the copy engine, no address
  arithmetic in registers; out-of-range rows/columns are zero-filled on load, clipped on store);
* the output is stored through TMA, which is asynchronous: the store of tile i drains while the
  main loop of tile i+1 runs;
* ``EPILOGUE_SUBTILE`` splits the epilogue into two column halves, halving the registers and
  shared memory the bias and output tiles need.

Descriptors need 16-byte-aligned row strides: ``K % 16 == 0`` (fp8) and ``N % 8 == 0`` (bf16
output; the bias likewise for its dtype).  The launcher in ``triton_kernels.py`` falls back to
the pointer kernel elsewhere.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from ultra_hstu_plugin.kernels.fp8_gemm.triton_kernels import tile_coords
from ultra_hstu_plugin.kernels.interpreter_casts import round_to_grid
from ultra_hstu_plugin.kernels.ops import autotune, cuda_capability


@triton.jit
def _epilogue_part(
    acc,
    sx,
    w_scale_ptr,
    bias1d_ptr,
    bias_desc,
    out_desc,
    off_m,
    off_n,
    N,
    HAS_BIAS2D: tl.constexpr,
    HAS_BIAS1D: tl.constexpr,
    FIX_INTERPRETER_CASTS: tl.constexpr,
    WIDTH: tl.constexpr,
):
    cols = off_n + tl.arange(0, WIDTH)
    col_mask = cols < N
    sw = tl.load(w_scale_ptr + cols, mask=col_mask, other=0.0)
    y = acc * sx[:, None] * sw[None, :]
    if HAS_BIAS1D:
        y += tl.load(bias1d_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS2D:
        y += bias_desc.load([off_m, off_n]).to(tl.float32)
    if FIX_INTERPRETER_CASTS:
        y = round_to_grid(y, 7, 1)  # bf16
    out_desc.store([off_m, off_n], y.to(out_desc.dtype))


@triton.jit
def _fp8_addmm_tma_kernel(
    x_desc,
    w_desc,
    out_desc,
    bias_desc,
    x_scale_ptr,
    w_scale_ptr,
    bias1d_ptr,
    M,
    N,
    K,
    M_BUCKET,  # only an autotune key
    HAS_BIAS2D: tl.constexpr,
    HAS_BIAS1D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    NUM_SMS: tl.constexpr,
    EPILOGUE_SUBTILE: tl.constexpr,
    FIX_INTERPRETER_CASTS: tl.constexpr,
):
    start_pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    num_tiles = num_pid_m * num_pid_n
    # flatten: the tile loop and the K loop form one software pipeline, so the next tile's
    # first operand loads are in flight while this tile's epilogue runs.
    for tile_id in tl.range(start_pid, num_tiles, NUM_SMS, flatten=True):
        pid_m, pid_n = tile_coords(tile_id, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):
            a = x_desc.load([off_m, ki * BLOCK_K])
            b = w_desc.load([off_n, ki * BLOCK_K])
            acc = tl.dot(a, b.T, acc)

        rows = off_m + tl.arange(0, BLOCK_M)
        sx = tl.load(x_scale_ptr + rows, mask=rows < M, other=0.0)
        if EPILOGUE_SUBTILE:
            halves = tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1))
            acc0, acc1 = tl.split(halves)
            _epilogue_part(
                acc0, sx, w_scale_ptr, bias1d_ptr, bias_desc, out_desc, off_m, off_n, N,
                HAS_BIAS2D, HAS_BIAS1D, FIX_INTERPRETER_CASTS, BLOCK_N // 2,
            )  # fmt: skip
            _epilogue_part(
                acc1, sx, w_scale_ptr, bias1d_ptr, bias_desc, out_desc, off_m,
                off_n + BLOCK_N // 2, N, HAS_BIAS2D, HAS_BIAS1D, FIX_INTERPRETER_CASTS, BLOCK_N // 2,
            )  # fmt: skip
        else:
            _epilogue_part(
                acc, sx, w_scale_ptr, bias1d_ptr, bias_desc, out_desc, off_m, off_n, N,
                HAS_BIAS2D, HAS_BIAS1D, FIX_INTERPRETER_CASTS, BLOCK_N,
            )  # fmt: skip


def _cfg(bm: int, bn: int, bk: int, warps: int, stages: int, subtile: bool) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "EPILOGUE_SUBTILE": subtile},
        num_warps=warps,
        num_stages=stages,
        pre_hook=_set_block_shapes,
    )


def _set_block_shapes(nargs: dict) -> None:
    # Descriptors are built before the config is known; the chosen tiles are set here.
    bm, bn, bk = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["BLOCK_K"]
    epi_n = bn // 2 if nargs["EPILOGUE_SUBTILE"] else bn
    nargs["x_desc"].block_shape = [bm, bk]
    nargs["w_desc"].block_shape = [bn, bk]
    nargs["out_desc"].block_shape = [bm, epi_n]
    nargs["bias_desc"].block_shape = [bm, epi_n]


# H100 sweep (benchmarks/results/gemm.md): 128x256x128 with a split epilogue won all three issue
# shapes; 128x256x128 with 4 stages needs 256 KB of shared memory and does not fit.
TMA_CONFIGS: list[triton.Config] = [
    _cfg(128, 256, 128, 8, 3, True),
    _cfg(128, 128, 128, 8, 4, False),
    _cfg(128, 128, 128, 8, 4, True),
    _cfg(128, 128, 128, 4, 4, False),
    _cfg(256, 128, 128, 8, 3, True),
    _cfg(128, 256, 64, 8, 4, True),
]


def tma_layout_ok(
    x_fp8: torch.Tensor, w_fp8: torch.Tensor, out: torch.Tensor, bias2d: torch.Tensor | None
) -> bool:
    """TMA descriptors need 16-byte-aligned base addresses and row strides."""
    tensors = [x_fp8, w_fp8, out] + ([bias2d] if bias2d is not None else [])
    return all(
        t.data_ptr() % 16 == 0 and (t.shape[1] * t.element_size()) % 16 == 0 for t in tensors
    )


def tma_supported(
    x_fp8: torch.Tensor, w_fp8: torch.Tensor, out: torch.Tensor, bias2d: torch.Tensor | None
) -> bool:
    """Whether the TMA kernel applies on the GPU: Hopper or newer, and a TMA-able layout."""
    device = x_fp8.device
    if device.type != "cuda" or cuda_capability(device) < (9, 0):
        return False
    return tma_layout_ok(x_fp8, w_fp8, out, bias2d)


@functools.cache
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


_AUTOTUNED = None


def autotuned_kernel():
    global _AUTOTUNED
    if _AUTOTUNED is None:
        _AUTOTUNED = autotune(
            configs=TMA_CONFIGS, key=["M_BUCKET", "N", "K", "HAS_BIAS2D", "HAS_BIAS1D"]
        )(_fp8_addmm_tma_kernel)
    return _AUTOTUNED


def fp8_addmm_tma(
    x_fp8: torch.Tensor,
    x_scale: torch.Tensor,
    w_fp8: torch.Tensor,
    w_scale: torch.Tensor,
    bias2d: torch.Tensor | None,
    bias1d: torch.Tensor | None,
    out: torch.Tensor,
    config: dict | None = None,
    fix_interpreter_casts: bool = False,
    num_sms: int | None = None,
) -> torch.Tensor:
    """Launch on validated inputs (see ``fp8_addmm_triton``); ``config`` pins one config,
    ``num_sms`` the number of persistent programs (default: the GPU's SM count)."""
    M, K = x_fp8.shape
    N = w_fp8.shape[0]
    dummy = [1, 1]  # block shapes are set per config by the pre-hook
    x_desc = TensorDescriptor(x_fp8, [M, K], [K, 1], dummy)
    w_desc = TensorDescriptor(w_fp8, [N, K], [K, 1], dummy)
    out_desc = TensorDescriptor(out, [M, N], [N, 1], dummy)
    bias_src = bias2d if bias2d is not None else out  # never read without HAS_BIAS2D
    bias_desc = TensorDescriptor(bias_src, [M, N], [N, 1], dummy)
    if num_sms is None:
        num_sms = _num_sms(x_fp8.device.index or 0)

    def grid(meta: dict) -> tuple[int]:
        tiles = triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])
        return (min(num_sms, tiles),)

    args = (
        x_desc,
        w_desc,
        out_desc,
        bias_desc,
        x_scale,
        w_scale,
        bias1d if bias1d is not None else x_scale,
        M,
        N,
        K,
        triton.next_power_of_2(M),
    )
    flags = {
        "HAS_BIAS2D": bias2d is not None,
        "HAS_BIAS1D": bias1d is not None,
        "FIX_INTERPRETER_CASTS": fix_interpreter_casts,
    }
    if config is None:
        autotuned_kernel()[grid](*args, **flags, NUM_SMS=num_sms)
    else:
        cfg = dict(config)
        warps, stages = cfg.pop("num_warps", 8), cfg.pop("num_stages", 3)
        cfg.setdefault("GROUP_M", 8)
        cfg.setdefault("EPILOGUE_SUBTILE", False)
        _set_block_shapes({"x_desc": x_desc, "w_desc": w_desc, "out_desc": out_desc,
                           "bias_desc": bias_desc, **cfg})  # fmt: skip
        _fp8_addmm_tma_kernel[grid](
            *args, **flags, NUM_SMS=num_sms, **cfg, num_warps=warps, num_stages=stages
        )
    return out
