# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu train``: GR's ranking training, with the plugin's encoder, on any device.

Per process: gin, parsed once (:mod:`ultra_hstu_plugin.config`) -> process group + device
(:mod:`.distributed`) -> GR's model with the
chosen encoder (:func:`make_ultra_model`) -> torchrec sharding (:mod:`.sharding`) -> GR's
dataloader pieces (:mod:`.dataloaders`) -> GR's ``MetricsLogger`` -> GR's checkpoint
load -> GR's ``train_loop`` and/or ``eval_loop`` -> GR's checkpoint save.  Rank 0 writes
``metrics.json`` (the final train and eval metrics; ``eval_metrics.json`` for an eval-only
run, so that evaluating into a training run's folder keeps its summary) and
``curves.jsonl`` (loss and metrics every ``RunSettings.log_every_steps`` steps, see
:mod:`.curves`) to the run's output directory.

Every setting comes from gin (``RunSettings``); ``--mode``/``--device``/``--nproc`` are
shorthands that become ``RunSettings`` bindings.  The launching process parses once in
:func:`preflight` and, when it is the only worker, trains on that same parse; spawned
workers parse the same :class:`~ultra_hstu_plugin.config.ConfigSource` once each.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import gin
import numpy as np
import torch
from torch import multiprocessing as mp

import ultra_hstu_plugin.gin  # noqa: F401 - registers configurables
from ultra_hstu_plugin import config, run_logging
from ultra_hstu_plugin.autotune import bound_autotuning, finish_autotuning
from ultra_hstu_plugin.config import (
    MODES,
    ConfigSource,
    RunSettings,
    curves_file_name,
    metrics_file_name,
)
from ultra_hstu_plugin.host import (
    HammerKernel,
    MetricsLogger,
    eval_loop,
    load_dmp_checkpoint,
    save_dmp_checkpoint,
    train_loop,
)
from ultra_hstu_plugin.kernels.autotune_budget import summary as autotune_summary
from ultra_hstu_plugin.model import dense_parameter_count, make_ultra_model
from ultra_hstu_plugin.registry import discover
from ultra_hstu_plugin.train.batch_checks import BatchLimits, CheckedLoader, FeatureNames
from ultra_hstu_plugin.train.curves import (
    CurveMetricsLogger,
    NonFiniteLossError,
    capturing_losses,
    planned_train_steps,
)
from ultra_hstu_plugin.train.dataloaders import make_dataloaders
from ultra_hstu_plugin.train.distributed import (
    cleanup,
    free_port,
    init_distributed,
    launched_by_torchrun,
)
from ultra_hstu_plugin.train.sampled_loader import (
    SampledLoader,
    check_sampler_bindings,
    encoder_cost_model,
    history_features,
    make_train_sampler,
)
from ultra_hstu_plugin.train.sharding import (
    deterministic_embedding_init,
    shard_model_and_make_optimizer,
)
from ultra_hstu_plugin.train.spawn import spawned_worker
from ultra_hstu_plugin.train.step_profile import ProfiledLoader

logger = logging.getLogger(__name__)
__all__ = ["MODES", "RunRequest", "preflight", "run"]


@dataclass
class RunRequest:
    """``ultra-hstu train``'s arguments; ``mode``/``device``/``nproc`` None = not given.

    Given ones become ``RunSettings`` bindings (see :func:`ultra_hstu_plugin.config.load`).
    """

    gin_files: List[str]
    mode: Optional[str] = None
    device: Optional[str] = None
    nproc: Optional[int] = None
    gin_bindings: List[str] = field(default_factory=list)

    def source(self) -> ConfigSource:
        return ConfigSource.of(
            self.gin_files, self.gin_bindings, mode=self.mode, device=self.device, nproc=self.nproc
        )


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


def _balancing_cost_model(sampler: Any, model: torch.nn.Module, hstu_config: Any) -> Any:
    """What ``make_dataloaders.sampler = 'length_balanced'`` prices rows with: the training
    sampler's own cost model when there is one (LBSL then trims what was balanced by the
    same measure), else the encoder's analytic FLOPs; None for the other samplers."""
    if _bound_value("make_dataloaders.sampler", default="chunk") != "length_balanced":
        return None
    if sampler is not None:
        return sampler.cost_model
    try:
        return encoder_cost_model(model, hstu_config)
    except ValueError as e:  # its message speaks of RunSettings.sampler
        raise ValueError(
            f"make_dataloaders.sampler='length_balanced' cannot price rows: {e}"
        ) from e


def _worker(rank: int, world_size: int, port: int, source: ConfigSource) -> None:
    # In the launching process this reuses preflight's parse; a spawned one parses here.
    settings = config.ensure_loaded(source)
    # From here on torchrec's planner, fbgemm's TBE setup and GR's loops log to host.log.
    run_logging.attach_host_log(settings.output_dir, rank)
    ctx = init_distributed(settings.device, rank, world_size, port)
    try:
        _seed_everything(settings.seed)
        model, hstu_config, tables = make_ultra_model(settings=settings)
        model.set_hammer_kernel(_hammer_kernel(settings.hammer_kernel, ctx.device))
        if ctx.device.type == "cuda":  # before the first launch; CPU runs tune nothing
            torch.backends.cuda.matmul.allow_tf32 = settings.allow_tf32
            torch.backends.cudnn.allow_tf32 = settings.allow_tf32
            bounded = bound_autotuning(settings.autotune_max_configs, settings.autotune_table)
            logger.info("Triton autotuning: %s", autotune_summary(bounded))
        if ctx.device.type == "cpu":
            # GR's autocast targets CUDA; on CPU keep float32 end to end.
            model.set_training_dtype(torch.float32)
        n_dense = dense_parameter_count(model)
        # Built off the encoder before sharding wraps it; bad settings fail before any step.
        sampler = make_train_sampler(settings, model, hstu_config, ctx.rank)
        model, optimizer = shard_model_and_make_optimizer(model, ctx.device, ctx.world_size)
        # Same tables for any world size, so runs on 1 or N processes are comparable.
        deterministic_embedding_init(model, settings.seed)
        train_dl, eval_dl = make_dataloaders(
            hstu_config=hstu_config,
            settings=settings,
            rank=ctx.rank,
            cost_model=_balancing_cost_model(sampler, model, hstu_config),
        )
        # On the CPU, before GR's loop moves a batch: the kernels do not check on GPUs.  The
        # first batch's feature names are checked always (once, cheap); the structure and ids
        # of every batch with check_batches.
        limits = BatchLimits.from_config(hstu_config, tables) if settings.check_batches else None
        names = FeatureNames.from_config(hstu_config, tables, source=_feature_source(settings))
        train_dl = CheckedLoader(train_dl, limits, "train", names)
        eval_dl = CheckedLoader(eval_dl, limits, "eval", names)
        out = Path(settings.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        training = settings.mode in ("train", "train-eval")
        # GR's SummaryWriter purges a run folder's earlier steps (purge_step=0); an eval-only
        # run into a training run's folder gets its own, so the training curves stay.
        tb_run = f"rank{ctx.rank}" if training else f"eval_rank{ctx.rank}"
        metrics = CurveMetricsLogger(
            multitask_configs=hstu_config.multitask_configs,
            batch_size=settings.batch_size,
            window_size=1000,
            device=ctx.device,
            rank=ctx.rank,
            tensorboard_log_path=str(out / "tensorboard" / tb_run),
            log_every_steps=settings.log_every_steps,
            curves_path=out / curves_file_name(settings.mode) if ctx.rank == 0 else None,
            # one bar for the whole run, where the loader's bar would restart each epoch
            progress_total=_planned_train_steps(len(train_dl)) if training and train_dl.show else 0,
        )
        if sampler is not None:
            # after the checks (a malformed batch fails there, not in the trim)
            train_dl = SampledLoader(
                train_dl,
                sampler,
                history_features(hstu_config),
                hstu_config.uih_post_id_feature_name,
                metrics,
            )
        profiled: Optional[ProfiledLoader] = None
        if settings.profile_steps is not None and ctx.rank == 0:
            start, count = settings.profile_steps
            train_dl = profiled = ProfiledLoader(train_dl, start, count, out, ctx.device.type)
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
            "mode": settings.mode,
            "world_size": ctx.world_size,
            "device": str(ctx.device.type),
            "dense_parameters": n_dense,
            "output_dir": str(out),
        }
        start = time.time()
        if training:
            metrics.mark_train_start()
            try:
                with capturing_losses(model, metrics):
                    train_loop(
                        rank=ctx.rank,
                        model=model,
                        dataloader=train_dl,
                        optimizer=optimizer,
                        metric_logger=metrics,
                        device=ctx.device,
                    )
            except NonFiniteLossError as e:
                metrics.close_progress()
                note = _stopped_on_non_finite_loss(
                    e, settings, model, optimizer, metrics, ctx.rank, out
                )
                metrics.close()
                raise e.with_note(note) from None
            metrics.mark_train_end()
            summary["train_seconds"] = round(time.time() - start, 1)
            # the profiled window, slowed by the profiler, is left out of the rate
            excluded = (
                (profiled.excluded_steps, profiled.excluded_seconds) if profiled else (0, 0.0)
            )
            summary.update(metrics.train_timing(*excluded))
            if "steps_per_second" in summary:
                logger.info(
                    "%d training steps: first step after %.1f s, then %.2f steps/s",
                    int(metrics.global_step["train"]),
                    summary["first_step_seconds"],
                    summary["steps_per_second"],
                )
            # the last point of the curve, when the run did not end on a multiple of N
            summary["train"] = {
                k: float(v) for k, v in metrics.compute_and_log(mode="train").items()
            }
            summary["train_steps"] = int(metrics.global_step["train"])
            summary["train_loss"] = metrics.last_train_loss
            metrics.close_progress()
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
        if settings.mode in ("eval", "train-eval"):
            metrics.reset(mode="eval")
            eval_loop(
                rank=ctx.rank,
                model=model,
                dataloader=eval_dl,
                metric_logger=metrics,
                device=ctx.device,
            )
            summary["eval"] = _final_eval_metrics(metrics)
        metrics.close()
        if ctx.device.type == "cuda":
            record = settings.autotune_record if ctx.rank == 0 else None
            lines = finish_autotuning(record, " ".join(sys.argv))
            summary["autotune"] = lines[0]
            for line in lines:
                logger.info(line)
        if ctx.rank == 0:
            path = out / metrics_file_name(settings.mode)
            path.write_text(json.dumps(summary, indent=2, sort_keys=True))
            logger.info("wrote %s and %s", path, out / curves_file_name(settings.mode))
    finally:
        cleanup()


def _stopped_on_non_finite_loss(
    error: NonFiniteLossError,
    settings: RunSettings,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    metrics: CurveMetricsLogger,
    rank: int,
    out: Path,
) -> str:
    """A NaN/inf loss stopped training: keep the last finite state; returns what was kept.

    The error is raised before the bad step's backward, so the model and optimizer hold the
    state after the last finite step, what a checkpoint at that step would hold.  With
    ``RunSettings.save_checkpoint`` it is saved as ``checkpoints/<last finite step>`` (no
    step of this run finished: nothing is saved); checkpoints already there (earlier steps,
    GR's periodic ``save_dmp_checkpoint.path`` ones) are never touched, since each step has
    its own folder.  Loading it and training on repeats the NaN (same data order), so lower
    the learning rate or start from an earlier checkpoint.  ``metrics.json`` records the
    failure (``stopped``) with the last finite loss and metrics; no eval runs.
    """
    checkpoint = None
    step = error.last_finite_step
    if settings.save_checkpoint and error.last_loss is not None:
        save_dmp_checkpoint(
            model=model,
            optimizer=optimizer,
            metric_logger=metrics,
            rank=rank,
            batch_idx=step,
            path=str(out / "checkpoints"),
        )
        checkpoint = str(out / "checkpoints" / str(step))
    if rank == 0:
        summary = {
            "dataset": settings.dataset,
            "mode": settings.mode,
            "output_dir": str(out),
            "stopped": {
                "reason": "non-finite training loss",
                "step": error.step,
                "losses": {k: str(v) for k, v in error.losses.items()},
                "last_finite_step": step,
                "last_finite_loss": error.last_loss,
                "last_metrics_step": error.last_metrics_step,
                "last_metrics": error.last_metrics,
                "checkpoint": checkpoint,
            },
        }
        (out / metrics_file_name(settings.mode)).write_text(
            json.dumps(summary, indent=2, sort_keys=True)
        )
    if checkpoint:
        return f"saved the last finite step's state as {checkpoint}"
    if not settings.save_checkpoint:
        return "no checkpoint saved (RunSettings.save_checkpoint = False)"
    return "no checkpoint saved (no step of this run finished)"


def _feature_source(settings: RunSettings) -> str:
    """Where the model's feature names come from, for a feature mismatch's message."""
    source = f"dataset {settings.dataset!r} (RunSettings.dataset)"
    overrides = _bound_value("make_ultra_model.hstu_overrides", default=None) or {}
    named = sorted(k for k in overrides if "feature" in k)
    if named:
        source += f" and the gin binding make_ultra_model.hstu_overrides ({', '.join(named)})"
    return source


def _planned_train_steps(batches_per_epoch: int) -> int:
    """What GR's ``train_loop`` will run, from its gin bindings (``num_epochs`` is required)."""
    return planned_train_steps(
        batches_per_epoch,
        num_epochs=int(_bound_value("train_loop.num_epochs", default=1)),
        num_batches=_bound_value("train_loop.num_batches", default=None),
    )


def preflight(request: RunRequest) -> RunSettings:
    """Parse gin (once) and fail here, with one clear message, before any worker starts.

    Leaves gin parsed: the in-process worker trains on this parse.
    """
    settings = config.load(request.source())
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda was asked for but torch sees no CUDA device; use --device cpu"
        )
    if launched_by_torchrun():
        world = int(os.environ["WORLD_SIZE"])
        if settings.nproc not in (1, world):
            # torchrun made the processes; a different count here would be ignored.
            raise ValueError(
                f"RunSettings.nproc (--nproc) = {settings.nproc} is ignored under torchrun, "
                f"whose world size is {world}; leave it unset"
            )
    elif settings.device == "cuda" and settings.nproc > torch.cuda.device_count():
        raise ValueError(
            f"--nproc {settings.nproc} exceeds the {torch.cuda.device_count()} visible GPUs"
        )
    _hammer_kernel(settings.hammer_kernel, torch.device(settings.device))
    spec = settings.dataset_spec()
    spec.data_path(_bound_value("make_dataloaders.data_dir", default="data"))
    discover().get("encoder", _bound_value("make_ultra_model.encoder", default="ultra_hstu"))
    check_sampler_bindings(settings.sampler)
    if settings.mode == "eval" and not settings.load_checkpoint:
        raise ValueError("--mode eval needs RunSettings.load_checkpoint (a checkpoint directory)")
    if settings.load_checkpoint and not os.path.isdir(settings.load_checkpoint):
        raise FileNotFoundError(f"checkpoint directory {settings.load_checkpoint} does not exist")
    return settings


def _bound_value(name: str, default: object) -> object:
    """A gin binding's value, or the function's own default when it is not bound."""
    try:
        return gin.query_parameter(name)
    except ValueError:
        return default


def run(request: RunRequest) -> Optional[Dict[str, object]]:
    """Run in this process (torchrun) or spawn ``nproc`` local processes; returns metrics."""
    settings = preflight(request)
    source = request.source()
    if launched_by_torchrun():
        _worker(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), 0, source)
    elif settings.nproc == 1:
        _worker(0, 1, free_port(), source)
    else:
        mp.start_processes(
            spawned_worker,
            args=(settings.nproc, free_port(), source),
            nprocs=settings.nproc,
            join=True,
            start_method="spawn",
        )
    path = Path(settings.output_dir) / metrics_file_name(settings.mode)
    return json.loads(path.read_text()) if path.exists() else None
