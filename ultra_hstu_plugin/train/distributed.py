# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Process group and device glue (GR's ``setup`` hard-codes NCCL and CUDA).

One process per device.  Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` in the
environment, env:// rendezvous) the process group comes from there; otherwise the
launcher spawns ``nproc`` local processes with a free localhost port, as GR does.
gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
from torch import distributed as dist

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class DistContext:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return int(s.getsockname()[1])


def resolve_device(kind: str, local_rank: int) -> torch.device:
    if kind not in DEVICES:
        raise ValueError(f"--device must be one of {DEVICES}, got {kind!r}")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(
            "--device cuda was asked for but torch sees no CUDA device; use --device cpu"
        )
    if local_rank >= torch.cuda.device_count():
        raise RuntimeError(
            f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible"
        )
    return torch.device(f"cuda:{local_rank}")


def init_distributed(device_kind: str, rank: int, world_size: int, master_port: int) -> DistContext:
    """Initialise the default process group for this process and pick its device."""
    if launched_by_torchrun():
        rank = int(os.environ["RANK"])
        world_size = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    else:
        os.environ["MASTER_ADDR"] = "localhost"
        os.environ["MASTER_PORT"] = str(master_port)
        local_rank = rank
    device = resolve_device(device_kind, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=1800)
        )
    return DistContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
