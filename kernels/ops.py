# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The op layer every kernel package shares: backends, where Triton runs, op registration.

* :data:`BACKENDS` and :func:`check_backend`: the one place that decides whether an op's
  ``backend`` can run on a tensor's device, with one family of error messages.
* :func:`triton_interpreting`: whether Triton kernels run in its CPU interpreter
  (``TRITON_INTERPRET=1``), asked of Triton itself, the same way for every op.
* :func:`autotune`: ``triton.autotune`` with the chosen configs cached on disk, so a new
  process at a shape seen before skips the benchmarking.
* :func:`custom_op`: registers an implementation as ``ultra_hstu::NAME`` with its fake
  (meta) implementation and optional autograd, and returns the public caller, which skips
  the dispatcher in plain eager mode (see :func:`plain_eager`).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional, Union

import torch

BACKENDS = ("pytorch", "triton")
NAMESPACE = "ultra_hstu"
# Ada / Hopper: the first GPUs with e4m3 tensor cores.
MIN_FP8_CAPABILITY = (8, 9)


class BackendUnavailableError(RuntimeError, ValueError):
    """An op's backend cannot run on the tensors' device.  Both a ``RuntimeError`` (the kernel
    packages raised that) and a ``ValueError`` (SLA attention raised that), so existing
    ``except`` clauses keep working."""


_INTERPRETING: Optional[bool] = None


def autotune(configs: list, key: list, **kwargs: Any) -> Callable[[Any], Any]:
    """``triton.autotune`` that keeps its timings in Triton's cache directory
    (``TRITON_CACHE_DIR``, default ``~/.triton/cache``) where this Triton can
    (``cache_results``, Triton >= 3.3): the first call at a new shape benchmarks the
    configs once per machine, not once per process.  GR's kernels do the same when
    ``TRITON_CACHE_AUTOTUNING=1`` is set before they are imported (the CLI sets it)."""
    import triton

    if "cache_results" in inspect.signature(triton.autotune).parameters:
        kwargs.setdefault("cache_results", True)
    return triton.autotune(configs=configs, key=key, **kwargs)


def triton_interpreting() -> bool:
    """Whether ``@triton.jit`` builds interpreted kernels in this process (``TRITON_INTERPRET=1``
    when triton first decorated a kernel).  Asked once, of Triton, through a probe kernel: the
    environment can change later, the kernels already built do not."""
    global _INTERPRETING
    if _INTERPRETING is None:
        _INTERPRETING = _probe_interpreter()
    return _INTERPRETING


# torch.compile cannot trace triton's decorator; the answer is fixed per process anyway, and a
# graph is traced after eager code has asked (or asks here, outside the trace).
@torch.compiler.disable
def _probe_interpreter() -> bool:
    import triton
    from triton.runtime.interpreter import InterpretedFunction

    @triton.jit
    def _probe(x_ptr):
        pass

    return isinstance(_probe, InterpretedFunction)


@functools.cache
def _cuda_capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """``device``'s compute capability, cached: the query costs microseconds of host time, and
    the FP8 path asks on every call (a launch-bound train step feels it)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _cuda_capability(index)


def fp8_supported(device: Union[torch.device, str, None]) -> bool:
    """Whether the Triton FP8 kernels can run on ``device`` (CUDA, compute capability >= 8.9)."""
    if device is None:
        return False
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return cuda_capability(device) >= MIN_FP8_CAPABILITY


def triton_supported(device: Union[torch.device, str, None], needs_fp8: bool = False) -> bool:
    """Whether a Triton kernel can run on ``device``: a CUDA GPU (with FP8 tensor cores when
    ``needs_fp8``), or the CPU under Triton's interpreter (tests)."""
    if device is None:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return fp8_supported(device) if needs_fp8 else torch.cuda.is_available()
    return device.type == "cpu" and triton_interpreting()


def check_backend(
    op: str, backend: str, device: Optional[torch.device] = None, *, needs_fp8: bool = False
) -> None:
    """Raise, naming the op, when ``backend`` is unknown or cannot run on ``device``.

    ``"pytorch"`` runs anywhere; ``"triton"`` on CUDA (capability >= 8.9 with ``needs_fp8``)
    or on CPU under ``TRITON_INTERPRET=1``.  ``device=None`` checks the name only (fake
    implementations, which see no real device)."""
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "pytorch" or device is None or triton_supported(device, needs_fp8):
        return
    if device.type == "cuda" and needs_fp8:
        cap = torch.cuda.get_device_capability(device)
        raise BackendUnavailableError(
            f"{op}(backend='triton') needs a CUDA device with FP8 (compute capability >= "
            f"{MIN_FP8_CAPABILITY[0]}.{MIN_FP8_CAPABILITY[1]}); {device} has compute capability "
            f"{cap[0]}.{cap[1]}. Use backend='pytorch' or a bf16 path there."
        )
    raise BackendUnavailableError(
        f"{op}(backend='triton') got a tensor on {device}: the Triton kernels run on CUDA "
        "devices. Use backend='pytorch' there, or set TRITON_INTERPRET=1 before the kernels are "
        "imported to run them in Triton's CPU interpreter (tests); backend='pytorch' runs on "
        "any device."
    )


def plain_eager(t: torch.Tensor) -> bool:
    """True outside torch.compile/export, fake or other dispatch modes and tensor subclasses.

    There the public functions call their implementation directly: the custom-op dispatcher
    costs tens of microseconds a call, which shows on sub-millisecond kernels.  Everywhere
    else they go through the registered op, so tracing sees ``ultra_hstu::*``."""
    return (
        type(t) is torch.Tensor
        and not torch.compiler.is_compiling()
        and torch._C._len_torch_dispatch_stack() == 0
        and not torch._C._is_torch_function_mode_enabled()
    )


def _needs_grad(args: tuple) -> bool:
    return torch.is_grad_enabled() and any(
        isinstance(a, torch.Tensor) and a.requires_grad for a in args
    )


def custom_op(
    name: str,
    *,
    fake: Callable[..., Any],
    backward: Optional[Callable[..., Any]] = None,
    setup_context: Optional[Callable[..., None]] = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``impl`` as the custom op ``ultra_hstu::name`` and return its caller.

    ``impl`` needs full type annotations (``torch.library`` reads the schema from them) and
    positional arguments only.  The caller runs ``impl`` directly when :func:`plain_eager` holds
    for its first tensor argument and no autograd is involved; otherwise it calls the
    registered op, so compile/export/fake tensors see ``ultra_hstu::name`` and autograd goes
    through ``backward``.  The registered op is the caller's ``.op`` attribute."""

    def register(impl: Callable[..., Any]) -> Callable[..., Any]:
        op = torch.library.custom_op(f"{NAMESPACE}::{name}", mutates_args=())(impl)
        op.register_fake(fake)
        if backward is not None:
            op.register_autograd(backward, setup_context=setup_context)

        @functools.wraps(impl)
        def call(*args: Any) -> Any:
            if plain_eager(args[0]) and not (backward is not None and _needs_grad(args)):
                return impl(*args)
            return op(*args)

        call.op = op  # type: ignore[attr-defined]
        return call

    return register
