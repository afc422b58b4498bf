# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu bench retrieval``: SASRec, GR's HSTU and ULTRA-HSTU on the Amazon datasets.

    ultra-hstu bench retrieval --preset gpu --data-dir data --out DIR
    ultra-hstu bench retrieval --preset cpu-smoke --data-dir DATA --out DIR
    ultra-hstu bench retrieval --report-only DIR/retrieval.json --out DIR

Every (dataset, model, seed) is one ``ultra-hstu retrieval-train`` subprocess on the
dataset's gin config (``gin_configs/retrieval/amzn_<ds>_<model>.gin``; ``ml100k_<model>_cpu
.gin`` for ml-100k) with the leave-one-out validation split, early stopping on validation
NDCG@10 and a wall-time cap (``ultra_hstu.RetrievalRun.validation / early_stopping_patience
/ max_train_seconds``): the metrics are GR's full-corpus test HR@10, NDCG@10, HR@50,
NDCG@50 and MRR at the best validation epoch.  ``--jobs`` runs go at once (several small
runs share a GPU better than one uses it); each has ``--run-timeout`` seconds, after which
it is killed and recorded as ``timeout`` with its best validation point so far; a run that
fails is recorded with the end of its log, and the bench goes on.

Each row goes to ``DIR/retrieval.jsonl`` when measured, and ``DIR/retrieval.json`` (rows,
machine, commit, command, preset) and ``DIR/retrieval.md`` are rewritten after every row:
mean ± std over seeds per dataset and model, ULTRA-HSTU / GR-HSTU ratios of HR@10 and
NDCG@10 with the target's verdict (>= 1 on every dataset, means over seeds), and our rows
next to the published full-ranking ones (:mod:`.retrieval_published`; target: within 10%).

Presets (any option given on the command line wins):

* ``gpu``: 4 datasets x 3 models x 3 seeds = 36 runs on one GPU, 12 at a time (16 CPU
  cores: one each, data in-process, ``OMP_NUM_THREADS=1``), up to 200 epochs, patience 10,
  each run's training capped at 110 s from the end of its first step (autotuning outside the
  cap), killed at 300 s; ``--time-budget 540`` shrinks the
  cap of runs that start late so the whole bench ends within it, and skips what cannot
  start.  Sizing: 3 waves of 12 runs x (about 20-30 s of start-up: imports, CUDA context,
  parsing the csv; <= 110 s of training with the per-epoch validation; one test eval) is
  about 7.5 minutes; an epoch of Beauty is 175 steps of 128 users, a few seconds on an
  H200 even shared, so a run sees tens of epochs and early stopping ends the faster ones.
  The first GPU run measures it: ``seconds``, ``epochs_run`` and ``stop_reason`` per row.
* ``cpu-smoke``: amzn-beauty, the 3 models, seed 0, 2 epochs of the CPU smoke sizes
  (``common/amzn_smoke_cpu.gin``), patience 1: the pipeline end to end, not results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ultra_hstu_plugin.bench import retrieval_published as published

REPO = Path(__file__).resolve().parents[2]
GIN_DIR = REPO / "gin_configs" / "retrieval"
MODELS = ("sasrec", "hstu", "ultra_hstu")
MODEL_NAMES = {"sasrec": "SASRec", "hstu": "GR HSTU", "ultra_hstu": "ULTRA-HSTU"}
DATASETS = ("amzn-beauty", "amzn-sports", "amzn-toys", "amzn-games", "ml-100k")
METRICS = ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr")
# users per dataset, to start the longest runs first
SIZE = {"amzn-sports": 35598, "amzn-games": 30901, "amzn-beauty": 22363, "amzn-toys": 19412}


@dataclass(frozen=True)
class Preset:
    datasets: Tuple[str, ...]
    models: Tuple[str, ...]
    seeds: Tuple[int, ...]
    device: str
    jobs: int
    num_epochs: int
    patience: int
    max_train_seconds: float
    run_timeout: float
    time_budget: float  # 0: none
    extra_gin: Tuple[str, ...] = ()  # files after the dataset's config
    bindings: Tuple[str, ...] = ()
    env: Dict[str, str] = field(default_factory=dict)


COMMON = (
    "ultra_hstu.RetrievalRun.save_checkpoint = False",
    # in-process data: the rows are parsed once and cached (workers would re-parse each
    # epoch), and many runs share the machine's cores
    "create_data_loader.num_workers = 0",
    "create_data_loader.prefetch_factor = None",
)
PRESETS: Dict[str, Preset] = {
    "gpu": Preset(
        datasets=("amzn-beauty", "amzn-sports", "amzn-toys", "amzn-games"),
        models=MODELS,
        seeds=(0, 1, 2),
        device="cuda",
        jobs=12,
        num_epochs=200,
        patience=10,
        max_train_seconds=110.0,
        run_timeout=300.0,
        time_budget=540.0,
        bindings=(*COMMON, "train_fn.eval_batch_size = 512"),
        env={"OMP_NUM_THREADS": "1"},
    ),
    "cpu-smoke": Preset(
        datasets=("amzn-beauty",),
        models=MODELS,
        seeds=(0,),
        device="cpu",
        jobs=1,
        num_epochs=2,
        patience=1,
        max_train_seconds=300.0,
        run_timeout=600.0,
        time_budget=0.0,
        extra_gin=("gin_configs/retrieval/common/amzn_smoke_cpu.gin",),
        bindings=COMMON,
    ),
}


def gin_file(dataset: str, model: str) -> Path:
    """The retrieval config of ``model`` on ``dataset``."""
    if dataset == "ml-100k":
        return GIN_DIR / f"ml100k_{model}_cpu.gin"
    return GIN_DIR / f"amzn_{dataset.split('-', 1)[1]}_{model}.gin"


def run_command(
    preset: Preset,
    dataset: str,
    model: str,
    seed: int,
    run_dir: Path,
    data_dir: Path,
    max_train_seconds: float,
) -> List[str]:
    """The ``ultra-hstu retrieval-train`` command of one run."""
    cmd = [sys.executable, "-m", "ultra_hstu_plugin.cli", "retrieval-train"]
    for f in (gin_file(dataset, model), *(REPO / g for g in preset.extra_gin)):
        cmd += ["--gin", str(f)]
    bindings = [
        *preset.bindings,
        f"train_fn.dataset_name = '{dataset}'",
        f"train_fn.random_seed = {seed}",
        f"train_fn.num_epochs = {preset.num_epochs}",
        f"ultra_hstu.RetrievalData.data_dir = '{data_dir}'",
        f"ultra_hstu.RetrievalRun.output_dir = '{run_dir}'",
        f"ultra_hstu.RetrievalRun.device = '{preset.device}'",
        "ultra_hstu.RetrievalRun.validation = True",
        f"ultra_hstu.RetrievalRun.early_stopping_patience = {preset.patience}",
        f"ultra_hstu.RetrievalRun.max_train_seconds = {max_train_seconds:g}",
    ]
    for b in bindings:
        cmd += ["--gin-param", b]
    return cmd


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _best_so_far(run_dir: Path) -> Dict[str, Any]:
    """The best validation point of a run cut off before it wrote metrics.json."""
    best: Dict[str, Any] = {}
    try:
        for line in (run_dir / "curves.jsonl").read_text().splitlines():
            point = json.loads(line)
            if not best or point.get("ndcg@10", -1) > best.get("ndcg@10", -1):
                best = point
    except (OSError, ValueError):
        pass
    return best


def run_one(
    preset: Preset,
    dataset: str,
    model: str,
    seed: int,
    out: Path,
    data_dir: Path,
    max_train_seconds: float,
) -> Dict[str, Any]:
    """One training subprocess; its row (never raises for the run's own failure)."""
    run_dir = out / "runs" / f"{dataset}_{model}_s{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "log.txt"
    cmd = run_command(preset, dataset, model, seed, run_dir, data_dir, max_train_seconds)
    row: Dict[str, Any] = {
        "dataset": dataset,
        "model": model,
        "seed": seed,
        "gin": str(gin_file(dataset, model).relative_to(REPO)),
        "max_train_seconds": max_train_seconds,
        "log": str(log),
        "command": shlex.join(["ultra-hstu", *cmd[3:]]),
    }
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **preset.env}
    start = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=preset.run_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the run's own process group
            proc.wait()
            rc = None
    row["wall_seconds"] = round(time.time() - start, 1)
    metrics_path = run_dir / "metrics.json"
    if rc is None:
        row.update(
            status="timeout",
            error=f"killed after --run-timeout {preset.run_timeout:g} s",
            validation=_best_so_far(run_dir),
        )
        return row
    if rc != 0 or not metrics_path.exists():
        row.update(status="failed", error=f"exit code {rc}: ...{_tail(log)}")
        return row
    summary = json.loads(metrics_path.read_text())
    test = summary.get("test") or {}
    missing = [k for k in METRICS if not isinstance(test.get(k), (int, float))]
    if missing:
        row.update(status="failed", error=f"metrics.json has no test {', '.join(missing)}")
        return row
    row.update(
        status="ok",
        **{k: float(test[k]) for k in METRICS},
        validation={k: summary["validation"].get(k) for k in ("epoch", *METRICS)},
        best_epoch=summary.get("best_epoch"),
        epochs_run=summary.get("epochs_run"),
        stop_reason=summary.get("stop_reason"),
        steps=summary.get("steps"),
        train_seconds=summary.get("seconds"),
        parameters=summary.get("parameters"),
        model_str=summary.get("model"),
        device=summary.get("device"),
    )
    return row


# --- the report ------------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def aggregate(rows: Sequence[Dict[str, Any]]) -> Dict[Tuple[str, str], Dict[str, Any]]:
    """(dataset, model) -> mean, std over the seeds that finished, and the counts."""
    out: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for r in rows:
        out.setdefault((r["dataset"], r["model"]), {"ok": [], "not_ok": []})
        out[(r["dataset"], r["model"])]["ok" if r.get("status") == "ok" else "not_ok"].append(r)
    for agg in out.values():
        ok = agg["ok"]
        for k in METRICS:
            agg[k] = _mean_std([r[k] for r in ok]) if ok else None
        for k in ("best_epoch", "epochs_run", "wall_seconds"):
            vals = [r[k] for r in ok if isinstance(r.get(k), (int, float))]
            agg[k] = sum(vals) / len(vals) if vals else None
        agg["stops"] = sorted({str(r.get("stop_reason")) for r in ok})
    return out


def ultra_vs_hstu(agg: Dict[Tuple[str, str], Dict[str, Any]], dataset: str) -> Dict[str, Any]:
    """ULTRA-HSTU / GR-HSTU of the seed means of HR@10 and NDCG@10, and the verdict."""
    u, h = agg.get((dataset, "ultra_hstu")), agg.get((dataset, "hstu"))
    if not u or not h or not all(u[k] and h[k] for k in ("hr@10", "ndcg@10")):
        return {"verdict": "not measured"}
    if not all(h[k][0] > 0 for k in ("hr@10", "ndcg@10")):
        return {"verdict": "not measurable (GR HSTU's mean is 0)"}
    ratio = {k: u[k][0] / h[k][0] for k in ("hr@10", "ndcg@10")}
    met = all(v >= 1.0 for v in ratio.values())
    return {**ratio, "verdict": "met" if met else "missed"}


def vs_published(mean: float, pub: float) -> Tuple[float, str]:
    ratio = mean / pub
    if abs(ratio - 1.0) <= published.TOLERANCE:
        return ratio, "within 10%"
    return ratio, "above by more than 10%" if ratio > 1 else "below by more than 10%"


def _fmt(ms: Optional[Tuple[float, float]]) -> str:
    return "-" if ms is None else f"{ms[0]:.4f} ± {ms[1]:.4f}"


def markdown(doc: Dict[str, Any]) -> str:
    rows = doc["rows"]
    agg = aggregate(rows)
    env = doc.get("environment", {})
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]
    lines = [
        "# Retrieval on Amazon: SASRec, GR's HSTU, ULTRA-HSTU (GR's research trainer)",
        "",
        f"- command: `{doc.get('command', '')}`",
        f"- preset: {doc.get('preset')} ({json.dumps(doc.get('settings', {}), sort_keys=True)})",
        f"- device: {env.get('device')} (torch {env.get('torch')}, CUDA {env.get('cuda')}); "
        f"git commit {env.get('git_commit')}",
        f"- started {doc.get('started')}; {doc.get('elapsed_seconds', 0):.0f} s so far; "
        f"{len(rows)} of {doc.get('planned_runs', len(rows))} runs recorded",
        *(
            f"- merged from: `{m['command']}` ({m['device']}, commit {m['git_commit']}, "
            f"{m['runs']} runs)"
            for m in doc.get("merged_from", [])
        ),
        "",
        "Protocol: leave-one-out (train without each user's last two items, validate on the "
        "second-to-last, test on the last); GR's eval code: the target ranked against every "
        "item, the user's seen items filtered; test metrics of the best validation NDCG@10 "
        "epoch; mean ± std (sample) over the seeds that finished.",
        "",
        "## Test metrics",
        "",
        "| dataset | model | seeds | HR@10 | NDCG@10 | HR@50 | NDCG@50 | MRR | best epoch "
        "| epochs run | stop | s/run |",
        "|---|---|---|---|---|---|---|---|---:|---:|---|---:|",
    ]
    for d in datasets:
        for m in MODELS:
            a = agg.get((d, m))
            if a is None:
                continue
            n_ok, n = len(a["ok"]), len(a["ok"]) + len(a["not_ok"])
            ep = "-" if a["best_epoch"] is None else f"{a['best_epoch'] + 1:.1f}"
            run = "-" if a["epochs_run"] is None else f"{a['epochs_run']:.1f}"
            secs = "-" if a["wall_seconds"] is None else f"{a['wall_seconds']:.0f}"
            lines.append(
                f"| {d} | {MODEL_NAMES[m]} | {n_ok}/{n} | "
                + " | ".join(_fmt(a[k]) for k in METRICS)
                + f" | {ep} | {run} | {', '.join(a['stops']) or '-'} | {secs} |"
            )
    lines += [
        "",
        "## Target: ULTRA-HSTU HR@10 and NDCG@10 >= GR's HSTU (mean of seeds), each dataset",
        "",
        "| dataset | HR@10 ULTRA / HSTU | NDCG@10 ULTRA / HSTU | verdict |",
        "|---|---:|---:|---|",
    ]
    verdicts = []
    for d in datasets:
        v = ultra_vs_hstu(agg, d)
        verdicts.append(v["verdict"])
        if "hr@10" in v:
            lines.append(f"| {d} | {v['hr@10']:.3f} | {v['ndcg@10']:.3f} | {v['verdict']} |")
        else:
            lines.append(f"| {d} | - | - | {v['verdict']} |")
    overall = (
        "met on every dataset"
        if verdicts and all(v == "met" for v in verdicts)
        else "not met on every dataset"
    )
    lines += [
        "",
        f"Overall: {overall}.",
        "",
        "## Against published full-ranking rows (target: GR HSTU and SASRec within 10%)",
        "",
        "Published rows: `benchmarks/results/retrieval_published.md` "
        "(eSASRec, arXiv 2508.06450: SASRec+SS and HSTU trained by its authors on the same "
        "S3-Rec files, leave-one-out, full ranking; their HSTU had timestamps, ours positions).",
        "",
        "| dataset | model | ours HR@10 | published HR@10 | ratio | ours NDCG@10 "
        "| published NDCG@10 | ratio | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for d in datasets:
        for m in ("sasrec", "hstu"):
            pub = published.target_row(d, m)
            a = agg.get((d, m))
            if pub is None:
                why = published.NO_SOURCE.get(d, "no published row")
                lines.append(f"| {d} | {MODEL_NAMES[m]} | - | - | - | - | - | - | {why} |")
                continue
            if a is None or a["hr@10"] is None:
                lines.append(
                    f"| {d} | {MODEL_NAMES[m]} | - | {pub.hr10:.4f} | - | - | "
                    f"{pub.ndcg10:.4f} | - | not measured |"
                )
                continue
            rh, vh = vs_published(a["hr@10"][0], pub.hr10)
            rn, vn = vs_published(a["ndcg@10"][0], pub.ndcg10)
            verdict = "met" if vh == vn == "within 10%" else f"HR@10 {vh}, NDCG@10 {vn}"
            lines.append(
                f"| {d} | {MODEL_NAMES[m]} ({pub.label}) | {a['hr@10'][0]:.4f} | "
                f"{pub.hr10:.4f} | {rh:.3f} | {a['ndcg@10'][0]:.4f} | {pub.ndcg10:.4f} | "
                f"{rn:.3f} | {verdict} |"
            )
    bad = [r for r in rows if r.get("status") != "ok"]
    if bad:
        lines += ["", "## Runs without a result", ""]
        for r in bad:
            err = " ".join(str(r.get("error", "")).split())[-400:]
            val = r.get("validation") or {}
            best = f"; best validation NDCG@10 so far {val['ndcg@10']:.4f}" if val else ""
            lines.append(
                f"- {r['dataset']} {r['model']} seed {r['seed']}: {r.get('status')}{best}: `{err}`"
            )
    lines.append("")
    return "\n".join(lines)


def merge_docs(docs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Several calls' ``retrieval.json`` as one: rows by ``common.latest_finished`` per
    (dataset, model, seed); the first call's header, every call's command, device and commit
    listed."""
    if not docs:
        raise ValueError("merge_docs: no documents")
    if len(docs) == 1:
        return docs[0]
    from ultra_hstu_plugin.bench.common import latest_finished

    def key(r: Dict[str, Any]) -> Tuple[Any, Any, Any]:
        return (r["dataset"], r["model"], r["seed"])

    merged = dict(docs[0])
    merged["rows"] = sorted(latest_finished([r for d in docs for r in d["rows"]], key), key=key)
    merged["planned_runs"] = len(merged["rows"])
    merged["elapsed_seconds"] = sum(d.get("elapsed_seconds", 0) for d in docs)
    merged["merged_from"] = [
        {
            "command": d.get("command"),
            "device": d.get("environment", {}).get("device"),
            "git_commit": d.get("environment", {}).get("git_commit"),
            "runs": len(d["rows"]),
        }
        for d in docs
    ]
    return merged


def write_report(doc: Dict[str, Any], out: Path, tag: str = "") -> None:
    (out / f"retrieval{tag}.json").write_text(json.dumps(doc, indent=1, sort_keys=True))
    (out / f"retrieval{tag}.md").write_text(markdown(doc))


# --- the command -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ultra-hstu bench retrieval",
        description="SASRec, GR's HSTU and ULTRA-HSTU on the Amazon datasets: GR's research "
        "trainer, leave-one-out validation, early stopping, test at the best epoch, seeds; "
        "rows as measured, a markdown table with the targets and the published rows.",
    )
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default="cpu-smoke", help="sizes (module doc)"
    )
    p.add_argument("--out", default="benchmarks/results/retrieval", help="output folder")
    p.add_argument("--data-dir", default="data", help="ultra-hstu data prepare --out folder")
    p.add_argument("--datasets", nargs="+", choices=DATASETS, help="datasets to run")
    p.add_argument("--models", nargs="+", choices=MODELS, help="models to run")
    p.add_argument("--seeds", nargs="+", type=int, help="train_fn.random_seed values")
    p.add_argument("--device", choices=("cpu", "cuda"), help="ultra_hstu.RetrievalRun.device")
    p.add_argument("--jobs", type=int, help="runs at once")
    p.add_argument("--epochs", type=int, help="train_fn.num_epochs (the most epochs)")
    p.add_argument("--patience", type=int, help="early stopping patience (epochs)")
    p.add_argument("--max-train-seconds", type=float, help="each run's wall-time cap")
    p.add_argument("--run-timeout", type=float, help="seconds before a run is killed")
    p.add_argument("--time-budget", type=float, help="the whole bench's seconds; 0: none")
    p.add_argument("--gin-param", action="append", default=[], help="extra binding for every run")
    p.add_argument("--tag", default="", help="suffix of the output file names")
    p.add_argument(
        "--report-only",
        metavar="JSON",
        nargs="+",
        help="re-render the markdown of a retrieval.json; several: merge the calls' rows",
    )
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def resolve(args: argparse.Namespace) -> Preset:
    pr = PRESETS[args.preset]
    given = {
        "datasets": tuple(args.datasets) if args.datasets else None,
        "models": tuple(args.models) if args.models else None,
        "seeds": tuple(args.seeds) if args.seeds else None,
        "device": args.device,
        "jobs": args.jobs,
        "num_epochs": args.epochs,
        "patience": args.patience,
        "max_train_seconds": args.max_train_seconds,
        "run_timeout": args.run_timeout,
        "time_budget": args.time_budget,
    }
    pr = replace(pr, **{k: v for k, v in given.items() if v is not None})
    if args.gin_param:
        pr = replace(pr, bindings=(*pr.bindings, *args.gin_param))
    if pr.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {pr.jobs}")
    return pr


def plan(pr: Preset) -> List[Tuple[str, str, int]]:
    """Every (dataset, model, seed), seed-major and the largest datasets first, so that
    the first wave has one seed of everything and the longest runs start early."""
    order = sorted(pr.datasets, key=lambda d: -SIZE.get(d, 0))
    return [(d, m, s) for s in pr.seeds for d in order for m in pr.models]


def _environment() -> Dict[str, Any]:
    try:
        from ultra_hstu_plugin.bench.common import environment

        return environment()
    except Exception as e:  # noqa: BLE001 - the bench still runs; say why
        from ultra_hstu_plugin.bench.common import git_commit

        return {"device": None, "git_commit": git_commit(), "error": repr(e)}


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        doc = merge_docs([json.loads(Path(p).read_text()) for p in args.report_only])
        write_report(doc, out, args.tag)
        print(f"wrote {out}/retrieval{args.tag}.md")
        return 0
    pr = resolve(args)
    data_dir = Path(args.data_dir).resolve()
    for d in pr.datasets:
        from ultra_hstu_plugin.data import retrieval as rdata

        spec = next(s for s in rdata.RETRIEVAL_SOURCES if s.name == d)
        if not spec.csv_path(data_dir).exists():
            print(
                f"ultra-hstu bench retrieval: error: {spec.csv_path(data_dir)} not found; "
                + spec.prepare_hint(data_dir),
                file=sys.stderr,
            )
            return 2
    from ultra_hstu_plugin.bench.common import RowWriter

    runs = plan(pr)
    settings = {
        k: getattr(pr, k)
        for k in (
            "datasets",
            "models",
            "seeds",
            "device",
            "jobs",
            "num_epochs",
            "patience",
            "max_train_seconds",
            "run_timeout",
            "time_budget",
            "extra_gin",
            "bindings",
        )
    }
    doc: Dict[str, Any] = {
        "command": shlex.join(["ultra-hstu", "bench", "retrieval", *argv]),
        "preset": args.preset,
        "settings": settings,
        "environment": _environment(),
        "published": published.rows_as_dicts(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "planned_runs": len(runs),
        "rows": [],
    }
    print(
        f"bench retrieval: {len(runs)} runs ({len(pr.datasets)} datasets x {len(pr.models)} "
        f"models x {len(pr.seeds)} seeds), {pr.jobs} at a time on {pr.device}; rows in "
        f"{out}/retrieval{args.tag}.jsonl",
        flush=True,
    )
    start = time.time()
    writer = RowWriter(out, f"retrieval{args.tag}")
    lock = threading.Lock()

    def task(d: str, m: str, s: int) -> Dict[str, Any]:
        cap = pr.max_train_seconds
        if pr.time_budget:
            left = pr.time_budget - (time.time() - start) - 40.0  # start-up and test eval
            if left < 15.0:
                return {
                    "dataset": d,
                    "model": m,
                    "seed": s,
                    "status": "skipped",
                    "error": f"--time-budget {pr.time_budget:g} s spent before it could start",
                }
            cap = min(cap, left) if cap else left
        return run_one(pr, d, m, s, out, data_dir, round(cap, 1))

    try:
        with ThreadPoolExecutor(max_workers=pr.jobs) as pool:
            futures = [pool.submit(task, *r) for r in runs]
            for fut in as_completed(futures):
                row = fut.result()
                with lock:
                    writer.add(row)
                    doc["rows"] = sorted(
                        writer.rows, key=lambda r: (r["dataset"], r["model"], r["seed"])
                    )
                    doc["elapsed_seconds"] = round(time.time() - start, 1)
                    write_report(doc, out, args.tag)
    finally:
        writer.close()
    n_ok = sum(r.get("status") == "ok" for r in doc["rows"])
    print(
        f"bench retrieval: {n_ok}/{len(runs)} runs ok in {time.time() - start:.0f} s; wrote "
        f"{out}/retrieval{args.tag}.json and .md",
        flush=True,
    )
    return 0 if n_ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
