# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Training curves: loss and every metric every ``RunSettings.log_every_steps`` steps.

GR's ``train_loop`` and ``eval_loop`` keep running unchanged; what they see is

* :class:`CurveMetricsLogger`, a subclass of GR's ``MetricsLogger``.  The loops call its
  ``update`` once per step; every N-th step it calls GR's own ``compute_and_log`` (so
  TensorBoard gets the points under GR's tag names, ``train_metric/lifetime_ne/rating``,
  ``losses/train_rating`` ...) and, on rank 0, appends the same numbers as one JSON line
  to ``curves.jsonl`` (``eval_curves.jsonl`` for eval-only runs; ``ultra-hstu plot``
  reads it), with the means of the sampler's load statistics since the last point
  (``load/*``, see :mod:`.sampled_loader`).  It also draws the whole-run progress bar on
  rank 0.
* :func:`capturing_losses`, which wraps the model's ``forward`` for the duration of
  ``train_loop``.  GR's loop computes the loss from ``forward``'s ``aux_losses`` but never
  hands it to the logger (it passes it only in the ``compute_and_log`` calls its
  ``metric_log_frequency`` test skips), so the wrapper is where the loss is visible.
  It is also where a non-finite loss stops the run (:class:`NonFiniteLossError`), before
  that step's backward and optimizer step, so the model stays at the last finite step.

Eval also gets AUC over the whole eval split (torchrec's ``AUCMetricComputation`` with a
window larger than any eval split here, ``metric/window_auc/<task>``); GR's logger has NE,
accuracy and GAUC only.

The logger also times the run: ``first_step_seconds`` (train start to the end of the
first optimizer step, Triton autotuning and compilation included) and ``steps_per_second``
over the later steps (:meth:`CurveMetricsLogger.train_timing`).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Dict, Iterator, Optional

import torch
from tqdm import tqdm

from ultra_hstu_plugin.host import MetricsLogger

logger = logging.getLogger(__name__)
# Samples the eval AUC keeps: every eval prediction of the runs here (the window drops the
# oldest beyond it, so AUC stays exact up to this many).
EVAL_AUC_WINDOW = 1 << 24

# Always steps/s: tqdm's default flips to s/step below one step a second (CPU runs).
BAR_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
    "[{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"
)


class NonFiniteLossError(FloatingPointError):
    """A training loss was NaN or infinite; raised before that step's backward.

    ``step``: the step whose loss was not finite; ``last_finite_step``: the one before
    (the state the model is in); ``last_loss``/``last_metrics``: that step's loss per task
    and the metrics of the last logged point."""

    def __init__(
        self,
        step: int,
        losses: Dict[str, float],
        last_finite_step: int,
        last_loss: Optional[Dict[str, float]],
        last_metrics: Dict[str, float],
        last_metrics_step: Optional[int],
        note: str = "",
    ) -> None:
        self.step = step
        self.losses = losses
        self.last_finite_step = last_finite_step
        self.last_loss = last_loss
        self.last_metrics = last_metrics
        self.last_metrics_step = last_metrics_step
        bad = ", ".join(f"{k}={v}" for k, v in losses.items())
        msg = (
            f"non-finite training loss at step {step} ({bad}); training stopped before its backward"
        )
        if last_loss is None:
            msg += "; no earlier step in this run"
        else:
            loss = ", ".join(f"{k}={v:.6g}" for k, v in last_loss.items())
            msg += f"; last finite step {last_finite_step}: loss {loss}"
        if last_metrics:
            shown = ", ".join(f"{k}={v:.6g}" for k, v in sorted(last_metrics.items()))
            msg += f"; metrics at step {last_metrics_step}: {shown}"
        self.note = note
        super().__init__(msg + (f"; {note}" if note else ""))

    def with_note(self, note: str) -> NonFiniteLossError:
        """The same error with ``note`` (what happened to the checkpoint) appended."""
        return NonFiniteLossError(
            self.step,
            self.losses,
            self.last_finite_step,
            self.last_loss,
            self.last_metrics,
            self.last_metrics_step,
            note,
        )


class CurveMetricsLogger(MetricsLogger):
    """GR's ``MetricsLogger`` that also logs every ``log_every_steps`` steps.

    ``curves_path`` is None on ranks other than 0 (they still compute, since computing
    a metric synchronises it across ranks).  ``progress_total`` is the number of train
    steps the run will do (0: no bar).
    """

    def __init__(
        self,
        *args: Any,
        log_every_steps: int = 10,
        curves_path: Optional[Path] = None,
        progress_total: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._device = torch.device(kwargs.get("device", "cpu"))  # GR's keeps no attribute
        self._add_eval_auc(rank=int(kwargs.get("rank", 0)), batch_size=kwargs.get("batch_size"))
        if log_every_steps < 1:
            raise ValueError(f"log_every_steps must be >= 1, got {log_every_steps}")
        self.log_every_steps = log_every_steps
        self._curves: Optional[IO[str]] = open(curves_path, "w") if curves_path else None
        self._start = time.time()
        # Detached per-task losses summed since the last point: the curve shows their mean,
        # and adding on device avoids a host sync every step.
        self._loss_sum: Dict[str, torch.Tensor] = {}
        self._loss_steps = 0
        self._last_point: Dict[str, int] = {}
        self.last_train_loss: Optional[float] = None
        # load statistics of the sampler (train/sampled_loader.py) summed since the last point
        self._load_sum: Dict[str, float] = {}
        self._load_steps: Dict[str, int] = {}
        # non-finite loss detection (add_losses) and what the error reports
        self._last_finite: Optional[Dict[str, float]] = None
        self._last_finite_step = 0
        self.last_train_metrics: Dict[str, float] = {}
        self._last_train_metrics_step: Optional[int] = None
        # timing (mark_train_start / update / mark_train_end)
        self._train_start: Optional[float] = None
        self._first_step_end: Optional[float] = None
        self._first_step_index: Optional[int] = None
        self._train_end: Optional[float] = None
        self._bar: Optional[tqdm] = None
        if progress_total > 0:
            self._bar = tqdm(total=progress_total, desc="train", unit="step", bar_format=BAR_FORMAT)

    def _add_eval_auc(self, rank: int, batch_size: Optional[int]) -> None:
        """AUC of the classification tasks over the eval split (keyed ``window_auc``)."""
        if not self.class_metrics["eval"] or batch_size is None:
            return
        try:
            from ultra_hstu_plugin.host.torchrec import auc_metric_computation, metric_task_count
        except ImportError:  # no torchrec at all: no AUC, the rest stays
            return
        AUCMetricComputation = auc_metric_computation()
        if AUCMetricComputation is None:  # a torchrec stand-in without metrics
            return
        n_tasks = metric_task_count(self.class_metrics["eval"][0])
        self.class_metrics["eval"].append(
            AUCMetricComputation(
                my_rank=rank, batch_size=batch_size, n_tasks=n_tasks, window_size=EVAL_AUC_WINDOW
            ).to(self._device)
        )

    def add_losses(self, aux_losses: Dict[str, torch.Tensor]) -> None:
        """Called by :func:`capturing_losses` with each training step's ``aux_losses``.

        Raises :class:`NonFiniteLossError` when one is NaN or infinite, before the step's
        backward (it is called at the end of ``forward``).  That check reads the losses on
        the host every step: free on CPU; on CUDA one more wait for the device in a forward
        that already waits several times a step (GR's preprocessing reads
        ``int(lengths.max())``), and the only way to stop before the optimizer applies a
        non-finite gradient, so that the model (and a checkpoint of it) is still the last
        finite step's.  Deferring it to the logged points would save that wait but let up
        to ``log_every_steps - 1`` steps of NaN updates (and GR's periodic checkpoints)
        through.  With several processes the verdict is all-reduced, so every rank stops at
        the same step (one collective on a scalar).
        """
        values = {name: value.detach().float() for name, value in aux_losses.items()}
        step = int(self.global_step["train"]) + 1
        if values:
            stacked = torch.stack([v.reshape(()) for v in values.values()])
            finite = torch.isfinite(stacked).all().to(torch.int32)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                if torch.distributed.get_world_size() > 1:
                    torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
            host = stacked.cpu().tolist()
            now = dict(zip(values, host))
            if not bool(finite.item()):
                raise NonFiniteLossError(
                    step=step,
                    losses=now,
                    last_finite_step=step - 1,
                    last_loss=self._last_finite,
                    last_metrics=self.last_train_metrics,
                    last_metrics_step=self._last_train_metrics_step,
                )
            self._last_finite = now
            self._last_finite_step = step
        for name, value in values.items():
            self._loss_sum[name] = self._loss_sum[name] + value if name in self._loss_sum else value
        self._loss_steps += 1

    def mark_train_start(self) -> None:
        """Start of the training loop: ``first_step_seconds`` counts from here."""
        self._train_start = time.time()

    def mark_train_end(self) -> None:
        """End of the training loop (after waiting for the device)."""
        self._sync_device()
        self._train_end = time.time()

    def _sync_device(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def train_timing(
        self, excluded_steps: int = 0, excluded_seconds: float = 0.0
    ) -> Dict[str, float]:
        """``first_step_seconds`` and ``steps_per_second`` (steps after the first).

        ``excluded_steps`` / ``excluded_seconds``: a window inside the loop left out of the
        rate (``RunSettings.profile_steps``: the profiled steps and the report's writing),
        recorded as ``steps_excluded_from_rate``."""
        out: Dict[str, float] = {}
        if self._train_start is None or self._first_step_end is None:
            return out
        out["first_step_seconds"] = round(self._first_step_end - self._train_start, 3)
        later = int(self.global_step["train"]) - int(self._first_step_index or 0)
        if excluded_steps:
            later -= excluded_steps
            out["steps_excluded_from_rate"] = excluded_steps
        if self._train_end is not None and later > 0:
            elapsed = self._train_end - self._first_step_end - excluded_seconds
            out["steps_per_second"] = round(later / elapsed, 3) if elapsed > 0 else float("inf")
        return out

    def add_load_stats(self, scalars: Dict[str, float]) -> None:
        """One training step's load statistics; their means since the last point go into the
        next train row of ``curves.jsonl`` as ``load/<name>`` (TensorBoard gets every step
        from the loader itself)."""
        for name, value in scalars.items():
            self._load_sum[name] = self._load_sum.get(name, 0.0) + value
            self._load_steps[name] = self._load_steps.get(name, 0) + 1

    def update(
        self,
        predictions: torch.Tensor,
        weights: torch.Tensor,
        labels: torch.Tensor,
        num_candidates: torch.Tensor,
        mode: str = "train",
    ) -> None:
        super().update(
            predictions=predictions,
            weights=weights,
            labels=labels,
            num_candidates=num_candidates,
            mode=mode,
        )
        if mode == "train" and self._first_step_end is None and self._train_start is not None:
            # GR calls update right after optimizer.step(); one wait here makes the time
            # include the step's device work (first Triton autotuning and compilation too).
            self._sync_device()
            self._first_step_end = time.time()
            self._first_step_index = int(self.global_step["train"])
            logger.info(
                "first training step done %.1f s after the loop started (autotuning and "
                "compilation included)",
                self._first_step_end - self._train_start,
            )
        if mode == "train" and self._bar is not None:
            self._bar.update(1)
        if self.global_step[mode] % self.log_every_steps == 0:
            self.compute_and_log(mode=mode)

    def compute_and_log(
        self,
        mode: str = "train",
        additional_logs: Optional[Dict[str, Dict[str, torch.Tensor]]] = None,
    ) -> Dict[str, float]:
        step = self.global_step[mode]
        if self._last_point.get(mode) == step:
            # The run's final call lands on a step already logged: one point per step.
            return self.compute(mode)
        self._last_point[mode] = step
        logs = dict(additional_logs or {})
        losses: Dict[str, float] = {}
        if mode == "train" and self._loss_steps:
            mean = {k: v / self._loss_steps for k, v in self._loss_sum.items()}
            mean["total"] = sum(mean.values())  # what GR's loop backpropagates
            logs["losses"] = mean  # GR's tag for it: losses/train_<task>
            losses = {k: float(v) for k, v in mean.items()}
            self._loss_sum, self._loss_steps = {}, 0
            self.last_train_loss = losses["total"]
            if self._bar is not None:
                self._bar.set_postfix(loss=f"{losses['total']:.4f}", refresh=False)
        load: Dict[str, float] = {}
        if mode == "train" and self._load_steps:
            load = {f"load/{k}": v / self._load_steps[k] for k, v in self._load_sum.items()}
            self._load_sum, self._load_steps = {}, {}
        computed = super().compute_and_log(mode=mode, additional_logs=logs or None)
        if mode == "train":
            self.last_train_metrics = {k: float(v) for k, v in computed.items()}
            self._last_train_metrics_step = step
        if self._curves is not None:
            row: Dict[str, Any] = {
                "mode": mode,
                "step": step,
                "train_step": self.global_step["train"],
                "seconds": round(time.time() - self._start, 3),
            }
            if losses:
                row["loss"] = losses.pop("total")
                row.update({f"loss/{k}": v for k, v in losses.items()})
            row.update({k: float(v) for k, v in computed.items()})
            row.update(load)
            self._curves.write(json.dumps(row) + "\n")
            self._curves.flush()  # a cut-off run keeps the points it logged
        return computed

    def close_progress(self) -> None:
        """End the run's progress bar (before the eval pass draws its own)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        """End the progress bar and the curves file (the TensorBoard writer is GR's)."""
        self.close_progress()
        if self._curves is not None:
            self._curves.close()
            self._curves = None
        if self.tb_logger is not None:
            self.tb_logger.flush()


@contextmanager
def capturing_losses(model: torch.nn.Module, metrics: CurveMetricsLogger) -> Iterator[None]:
    """Hand each training ``forward``'s ``aux_losses`` to ``metrics`` while in this block.

    An instance attribute shadows the class's ``forward`` because GR's loops call
    ``model.forward(...)`` directly, which forward hooks (run by ``__call__``) would miss.
    The model, its state dict and its checkpoints are untouched.
    """
    original = model.forward
    shadowed = "forward" in vars(model)

    def forward(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        if model.training:
            metrics.add_losses(out[2])  # (.., .., aux_losses, preds, labels, weights)
        return out

    model.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        if shadowed:
            model.forward = original  # type: ignore[method-assign]
        else:
            del model.forward


def planned_train_steps(
    batches_per_epoch: int, num_epochs: int, num_batches: Optional[int], start: int = 0
) -> int:
    """The steps GR's ``train_loop`` will run: it stops after ``num_epochs`` epochs or at
    batch index ``num_batches``, whichever comes first, counting from ``start``."""
    total = batches_per_epoch * num_epochs
    if num_batches is not None:
        total = min(total, max(num_batches - start, 0))
    return total


__all__ = ["CurveMetricsLogger", "NonFiniteLossError", "capturing_losses", "planned_train_steps"]
