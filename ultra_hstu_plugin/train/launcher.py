# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu train``: GR's ranking training, with the plugin's encoder, on any device.

Per process: process group + device (:mod:`.distributed`) -> gin -> GR's model with the
chosen encoder (:func:`make_ultra_model`) -> torchrec sharding (:mod:`.sharding`) -> GR's
dataloader pieces (:mod:`.dataloaders`) -> GR's ``MetricsLogger`` -> GR's checkpoint
load -> GR's ``train_loop`` and/or ``eval_loop`` -> GR's checkpoint save.  Rank 0 writes
``metrics.json`` (the final eval metrics) to the run's output directory.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import gin
import numpy as np
import torch
from torch import multiprocessing as mp

import ultra_hstu_plugin.gin  # noqa: F401 - registers configurables
from ultra_hstu_plugin.host import (
    HammerKernel,
    MetricsLogger,
    eval_loop,
    gr_checkout_root,
    load_dmp_checkpoint,
    save_dmp_checkpoint,
    train_loop,
)
from ultra_hstu_plugin.model import dense_parameter_count, make_ultra_model
from ultra_hstu_plugin.registry import discover
from ultra_hstu_plugin.train.dataloaders import make_dataloaders
from ultra_hstu_plugin.train.distributed import (
    cleanup,
    free_port,
    init_distributed,
    launched_by_torchrun,
)
from ultra_hstu_plugin.train.settings import RunSettings
from ultra_hstu_plugin.train.sharding import (
    deterministic_embedding_init,
    shard_model_and_make_optimizer,
)

logger = logging.getLogger(__name__)
MODES = ("train", "eval", "train-eval")


@dataclass
class RunRequest:
    gin_files: List[str]
    mode: str = "train-eval"
    device: str = "cpu"
    nproc: int = 1
    gin_bindings: List[str] = field(default_factory=list)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _hammer_kernel(name: str, device: torch.device) -> HammerKernel:
    if name == "auto":
        return HammerKernel.PYTORCH if device.type == "cpu" else HammerKernel.TRITON
    try:
        return HammerKernel[name]
    except KeyError:
        known = ", ".join(["auto"] + [k.name for k in HammerKernel])
        raise ValueError(f"RunSettings.hammer_kernel={name!r} is unknown; known: {known}") from None


def _final_eval_metrics(metrics: MetricsLogger) -> Dict[str, float]:
    return {k: float(v) for k, v in metrics.compute(mode="eval").items()}


def _worker(rank: int, world_size: int, port: int, request: RunRequest) -> None:
    ctx = init_distributed(request.device, rank, world_size, port)
    try:
        parse_gin(request)
        settings = RunSettings()
        _seed_everything(settings.seed)
        model, hstu_config, _ = make_ultra_model(dataset=settings.dataset)
        model.set_hammer_kernel(_hammer_kernel(settings.hammer_kernel, ctx.device))
        if ctx.device.type == "cpu":
            # GR's autocast targets CUDA; on CPU keep float32 end to end.
            model.set_training_dtype(torch.float32)
        n_dense = dense_parameter_count(model)
        model, optimizer = shard_model_and_make_optimizer(model, ctx.device, ctx.world_size)
        # Same tables for any world size, so runs on 1 or N processes are comparable.
        deterministic_embedding_init(model, settings.seed)
        train_dl, eval_dl = make_dataloaders(
            dataset=settings.dataset,
            hstu_config=hstu_config,
            batch_size=settings.batch_size,
            rank=ctx.rank,
        )
        out = Path(settings.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        metrics = MetricsLogger(
            multitask_configs=hstu_config.multitask_configs,
            batch_size=settings.batch_size,
            window_size=1000,
            device=ctx.device,
            rank=ctx.rank,
            tensorboard_log_path=str(out / "tensorboard" / f"rank{ctx.rank}"),
        )
        if settings.load_checkpoint:
            load_dmp_checkpoint(
                model=model,
                optimizer=optimizer,
                metric_logger=metrics,
                device=ctx.device,
                path=settings.load_checkpoint,
            )
        summary: Dict[str, object] = {
            "dataset": settings.dataset,
            "mode": request.mode,
            "world_size": ctx.world_size,
            "device": str(ctx.device.type),
            "dense_parameters": n_dense,
        }
        start = time.time()
        if request.mode in ("train", "train-eval"):
            train_loop(
                rank=ctx.rank,
                model=model,
                dataloader=train_dl,
                optimizer=optimizer,
                metric_logger=metrics,
                device=ctx.device,
            )
            summary["train_seconds"] = round(time.time() - start, 1)
            summary["train"] = {
                k: float(v) for k, v in metrics.compute_and_log(mode="train").items()
            }
            summary["train_steps"] = int(metrics.global_step["train"])
            if settings.save_checkpoint:
                save_dmp_checkpoint(
                    model=model,
                    optimizer=optimizer,
                    metric_logger=metrics,
                    rank=ctx.rank,
                    batch_idx=int(metrics.global_step["train"]),
                    path=str(out / "checkpoints"),
                )
                summary["checkpoint"] = str(out / "checkpoints" / str(metrics.global_step["train"]))
        if request.mode in ("eval", "train-eval"):
            metrics.reset(mode="eval")
            eval_loop(
                rank=ctx.rank,
                model=model,
                dataloader=eval_dl,
                metric_logger=metrics,
                device=ctx.device,
            )
            summary["eval"] = _final_eval_metrics(metrics)
        if ctx.rank == 0:
            (out / "metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
            logger.info("wrote %s", out / "metrics.json")
    finally:
        cleanup()


def add_gin_search_paths(gin_files: List[str]) -> None:
    """Let includes name files relative to this repository's root or GR's checkout."""
    for f in gin_files:
        for parent in Path(f).resolve().parents:
            if parent.name == "gin_configs":
                gin.add_config_file_search_path(str(parent.parent))
                break
    gin.add_config_file_search_path(gr_checkout_root())


def parse_gin(request: RunRequest) -> None:
    add_gin_search_paths(request.gin_files)
    gin.parse_config_files_and_bindings(request.gin_files, request.gin_bindings)


def preflight(request: RunRequest) -> RunSettings:
    """Fail in the launching process, with one clear message, before any worker starts."""
    if request.mode not in MODES:
        raise ValueError(f"--mode must be one of {MODES}, got {request.mode!r}")
    for f in request.gin_files:
        if not os.path.exists(f):
            raise FileNotFoundError(f"gin file {f} does not exist")
    if request.nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {request.nproc}")
    if request.device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda was asked for but torch sees no CUDA device; use --device cpu"
        )
    if request.device == "cuda" and request.nproc > torch.cuda.device_count():
        raise ValueError(
            f"--nproc {request.nproc} exceeds the {torch.cuda.device_count()} visible GPUs"
        )
    gin.clear_config()
    parse_gin(request)
    try:
        settings = RunSettings()
        if settings.batch_size <= 0:
            raise ValueError(f"RunSettings.batch_size must be positive, got {settings.batch_size}")
        _hammer_kernel(settings.hammer_kernel, torch.device(request.device))
        spec = discover().get("dataset", settings.dataset).load()
        spec.data_path(_bound_value("make_dataloaders.data_dir", default="data"))
        discover().get("encoder", _bound_value("make_ultra_model.encoder", default="ultra_hstu"))
        if request.mode == "eval" and not settings.load_checkpoint:
            raise ValueError(
                "--mode eval needs RunSettings.load_checkpoint (a checkpoint directory)"
            )
        if settings.load_checkpoint and not os.path.isdir(settings.load_checkpoint):
            raise FileNotFoundError(
                f"checkpoint directory {settings.load_checkpoint} does not exist"
            )
        return settings
    finally:
        gin.clear_config()


def _bound_value(name: str, default: object) -> object:
    """A gin binding's value, or the function's own default when it is not bound."""
    try:
        return gin.query_parameter(name)
    except ValueError:
        return default


def run(request: RunRequest) -> Optional[Dict[str, object]]:
    """Run in this process (torchrun) or spawn ``nproc`` local processes; returns metrics."""
    settings = preflight(request)
    if launched_by_torchrun():
        _worker(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), 0, request)
    elif request.nproc == 1:
        _worker(0, 1, free_port(), request)
    else:
        mp.start_processes(
            _worker,
            args=(request.nproc, free_port(), request),
            nprocs=request.nproc,
            join=True,
            start_method="spawn",
        )
    path = Path(settings.output_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None
