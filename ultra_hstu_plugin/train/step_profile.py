# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Where a training step's time goes, inside GR's own loop: ``RunSettings.profile_steps``.

GR's ``train_loop`` has its own profiler (``output_trace``), but it exports to Meta's internal
storage.  This one needs no change to GR: the dataloader hands GR's loop its batches, so a
loader that starts ``torch.profiler`` before yielding batch ``start`` and stops it before
yielding batch ``start + count`` records exactly ``count`` whole steps: forward, backward,
optimizer, GR's metric update, the next batch's fetch.  It writes, to the run folder,

- ``step_profile.txt``: wall ms a step, the GPU's busy ms a step (kernels' self time), and the
  operators with the most self time on the GPU and on the CPU;
- ``step_profile.json``: the same numbers; ``step_profile_trace.json``: the Chrome trace.

A wall time much above the GPU's busy time means the step waits on the host (Python, launch
overhead, the loader), not on kernels.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import torch

logger = logging.getLogger(__name__)

_TOP = 25


def _sync(device_type: str) -> None:
    if device_type == "cuda":
        torch.cuda.synchronize()


def _rows(events: Any, attr: str, n: int) -> List[Dict[str, Any]]:
    ranked = sorted(events, key=lambda e: getattr(e, attr, 0.0), reverse=True)
    return [
        {"name": e.key, "calls": e.count, "self_ms": getattr(e, attr, 0.0) / 1e3}
        for e in ranked[:n]
        if getattr(e, attr, 0.0) > 0
    ]


def _gpu_busy_us(events: Any) -> float:
    """The kernels' own time: the device-side events only.  An operator's self device time
    is its kernels' time again, so summing every event would count each kernel twice (the
    same rule as the total line of torch's own profiler table)."""
    from torch.autograd import DeviceType

    return sum(
        e.self_device_time_total
        for e in events
        if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
    )


def summarize(prof: Any, steps: int, wall_s: float, device_type: str) -> Dict[str, Any]:
    """Per-step totals and the top operators of a finished ``torch.profiler.profile``."""
    events = prof.key_averages()
    cuda_attr = "self_device_time_total"
    gpu_us = _gpu_busy_us(events) if device_type == "cuda" else 0.0
    cpu_us = sum(e.self_cpu_time_total for e in events)
    return {
        "steps": steps,
        "device": device_type,
        "wall_ms_per_step": 1e3 * wall_s / steps,
        "gpu_busy_ms_per_step": gpu_us / 1e3 / steps if device_type == "cuda" else None,
        "cpu_op_ms_per_step": cpu_us / 1e3 / steps,
        "top_gpu": _rows(events, cuda_attr, _TOP) if device_type == "cuda" else [],
        "top_cpu": _rows(events, "self_cpu_time_total", _TOP),
    }


def render(summary: Dict[str, Any]) -> str:
    s, n = summary, summary["steps"]
    lines = [f"{n} training steps profiled ({s['device']})", ""]
    lines.append(f"wall: {s['wall_ms_per_step']:.2f} ms a step")
    if s["gpu_busy_ms_per_step"] is not None:
        busy = s["gpu_busy_ms_per_step"]
        lines.append(
            f"GPU busy (kernels' self time): {busy:.2f} ms a step "
            f"({busy / s['wall_ms_per_step']:.0%} of the wall)"
        )
    lines.append(f"CPU operators' self time: {s['cpu_op_ms_per_step']:.2f} ms a step")
    for title, key in (("GPU", "top_gpu"), ("CPU", "top_cpu")):
        if not s[key]:
            continue
        lines += ["", f"top self time on the {title} (ms a step, calls a step):", ""]
        lines += [f"{r['self_ms'] / n:9.3f} ms  {r['calls'] / n:8.1f}  {r['name']}" for r in s[key]]
    return "\n".join(lines) + "\n"


class ProfiledLoader:
    """Yields ``loader``'s batches; profiles the steps between batch ``start`` and batch
    ``start + count`` (counted over epochs) and writes the report into ``out``."""

    def __init__(self, loader: Any, start: int, count: int, out: Path, device_type: str) -> None:
        self._loader = loader
        self._start, self._count = start, count
        self._out = Path(out)
        self._device_type = device_type
        self._seen = 0
        self._prof: Optional[Any] = None
        self._t0 = 0.0
        self.summary: Optional[Dict[str, Any]] = None
        # The profiled steps and the report's writing, as time spent inside the training
        # loop: the launcher leaves them out of the run's steps/s (profiling slows them).
        self.excluded_steps = 0
        self.excluded_seconds = 0.0

    def __len__(self) -> int:
        return len(self._loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def __iter__(self) -> Iterator[Any]:
        # An epoch's end leaves the profiler running into the next epoch's iterator; GR's
        # loop breaking off at num_batches closes this generator: write what was recorded.
        try:
            for sample in self._loader:
                if self._seen == self._start:
                    self._begin()
                elif self._prof is not None and self._seen == self._start + self._count:
                    self._finish(self._count)
                self._seen += 1
                yield sample
        except GeneratorExit:
            if self._prof is not None:
                self._finish(self._seen - self._start)
            raise

    def _begin(self) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self._device_type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        _sync(self._device_type)
        self._prof = torch.profiler.profile(activities=activities)
        self._prof.__enter__()
        self._t0 = time.perf_counter()

    def _finish(self, steps: int) -> None:
        prof, self._prof = self._prof, None
        _sync(self._device_type)
        wall = time.perf_counter() - self._t0
        prof.__exit__(None, None, None)
        if steps < 1:
            logger.warning("profile_steps: no whole step was recorded (the run ended first)")
            return
        self.summary = summarize(prof, steps, wall, self._device_type)
        self._out.mkdir(parents=True, exist_ok=True)
        (self._out / "step_profile.txt").write_text(render(self.summary))
        (self._out / "step_profile.json").write_text(json.dumps(self.summary, indent=1))
        prof.export_chrome_trace(str(self._out / "step_profile_trace.json"))
        if self._start >= 1:  # a window from batch 0 holds the first step, timed on its own
            self.excluded_steps = steps
            self.excluded_seconds = time.perf_counter() - self._t0
        logger.info(
            "profiled %d training steps: %.1f ms a step; %s",
            steps,
            self.summary["wall_ms_per_step"],
            self._out / "step_profile.txt",
        )
