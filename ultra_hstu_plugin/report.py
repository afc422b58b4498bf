# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""What a run leaves for a person to read: the eval table and PNG curves.

Reads only the files ``ultra-hstu train`` writes (``metrics.json`` / ``eval_metrics.json``
and ``curves.jsonl`` / ``eval_curves.jsonl``), so it needs neither GR nor TensorBoard;
matplotlib is imported only by :func:`plot_run`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from ultra_hstu_plugin.config import MODES, curves_file_name

# GR's metric names (metric/lifetime_<name>/<task>) -> column heading, in table order.
# GR's AUC is GAUC (AUC per user, averaged); MSE/MAE appear for regression tasks.
COLUMNS = (("ne", "NE"), ("gauc", "GAUC"), ("accuracy", "accuracy"), ("mse", "MSE"), ("mae", "MAE"))


def _split(key: str) -> Tuple[str, str, str]:
    """``metric/lifetime_ne/rating`` -> ("lifetime", "ne", "rating"); else ("", "", "")."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "metric" or "_" not in parts[1]:
        return "", "", ""
    window, _, name = parts[1].partition("_")
    return window, name, parts[2]


def eval_table(metrics: Dict[str, float], samples: bool = True) -> str:
    """A table of the lifetime (whole eval split) metrics, one row per task."""
    rows: Dict[str, Dict[str, float]] = {}
    for key, value in metrics.items():
        window, name, task = _split(key)
        if window == "lifetime":
            rows.setdefault(task, {})[name] = value
    if not rows:
        return ""
    present = [(name, head) for name, head in COLUMNS if any(name in r for r in rows.values())]
    headings = ["task"] + [head for _, head in present]
    if samples:
        headings.append("GAUC samples")
    lines = []
    for task, r in rows.items():
        cells = [task] + [f"{r[name]:.4f}" if name in r else "-" for name, _ in present]
        if samples:
            n = r.get("gauc_num_samples")
            cells.append(f"{n:.0f}" if n is not None else "-")
        lines.append(cells)
    widths = [max(len(row[i]) for row in [headings, *lines]) for i in range(len(headings))]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    return "\n".join([fmt(headings), fmt(["-" * w for w in widths]), *map(fmt, lines)])


def read_curves(run_dir: Path) -> List[Dict[str, Any]]:
    """Every logged point of the run (train and eval), in the order they were logged.

    Each point gets ``"file"``: the name of the file it came from, since an eval-only run
    into the same folder repeats the eval steps of the training run.  A last line that is
    not JSON (a run killed mid-write) is left out; any other is an error.
    """
    run_dir = Path(run_dir)
    names = sorted({curves_file_name(m) for m in MODES})
    paths = [run_dir / n for n in names if (run_dir / n).exists()]
    if not paths:
        raise FileNotFoundError(
            f"no {' or '.join(names)} in {run_dir}: give the RunSettings.output_dir of an "
            "`ultra-hstu train` run"
        )
    points: List[Dict[str, Any]] = []
    for path in paths:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        for i, line in enumerate(lines):
            try:
                points.append({**json.loads(line), "file": path.name})
            except json.JSONDecodeError:
                if i < len(lines) - 1:  # only the last line can be a write cut by a kill
                    raise ValueError(f"{path}: line {i + 1} is not JSON: {line[:80]!r}") from None
    return points


def _series(points: List[Dict[str, Any]], mode: str, key: str) -> Tuple[List[int], List[float]]:
    xs, ys = [], []
    for p in points:
        if p["mode"] == mode and key in p:
            xs.append(p["step"])
            ys.append(p[key])
    return xs, ys


def _tasks(points: List[Dict[str, Any]], mode: str) -> List[str]:
    seen: Dict[str, None] = {}
    for p in points:
        if p["mode"] == mode:
            for key in p:
                window, name, task = _split(key)
                if name == "ne":
                    seen[task] = None
    return list(seen)


def _pass_of(point: Dict[str, Any]) -> Tuple[str, int]:
    """One line per task and pass: train points are one pass per file; an eval pass is the
    eval points of one file made after the same number of train steps."""
    return point["file"], point.get("train_step", 0) if point["mode"] == "eval" else 0


def plot_run(run_dir: Path, out_dir: Path | None = None) -> List[Path]:
    """Write ``train_loss.png``, ``train_ne.png`` and ``eval_ne.png`` (those with data).

    Default ``out_dir``: ``RUN_DIR/plots``.  Returns the files written.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    points = read_curves(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    xs, ys = _series(points, "train", "loss")
    if xs:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(xs, ys, marker=".", label="total")
        loss_keys = sorted(
            {k for p in points if p["mode"] == "train" for k in p if k.startswith("loss/")}
        )
        if len(loss_keys) > 1:  # one task: its loss is the total
            for key in loss_keys:
                ax.plot(*_series(points, "train", key), label=key.split("/", 1)[1])
        ax.set(xlabel="train step", ylabel="loss (mean since previous point)", title="train loss")
        ax.legend()
        ax.grid(alpha=0.3)
        save(fig, "train_loss.png")

    for mode, window, title in (
        ("train", "window", "train NE per task (window)"),
        ("eval", "lifetime", "eval NE per task (running over the eval pass)"),
    ):
        tasks = _tasks(points, mode)
        if not tasks:
            continue
        passes = sorted({_pass_of(p) for p in points if p["mode"] == mode})
        fig, ax = plt.subplots(figsize=(7, 4))
        for one_pass in passes:
            group = [p for p in points if p["mode"] == mode and _pass_of(p) == one_pass]
            for task in tasks:
                label = task
                if mode == "eval":
                    label += f", after {one_pass[1]} train steps"
                    if one_pass[0] == curves_file_name("eval"):
                        label += " (eval-only run)"
                xs, ys = _series(group, mode, f"metric/{window}_ne/{task}")
                if xs:
                    ax.plot(xs, ys, marker=".", label=label)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--", label="constant predictor")
        ax.set(xlabel=f"{mode} step", ylabel="NE", title=title)
        ax.legend()
        ax.grid(alpha=0.3)
        save(fig, f"{mode}_ne.png")
    return written


__all__ = ["COLUMNS", "eval_table", "plot_run", "read_curves"]
