# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""When a public kernel function may skip its ``torch.library`` custom op."""

import torch


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
