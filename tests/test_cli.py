# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
import argparse
import importlib
import re
import subprocess
import sys

import pytest

from ultra_hstu_plugin import cli


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "ultra_hstu_plugin.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_list_prints_every_component():
    out = _cli("list")
    assert out.returncode == 0, out.stderr
    for name in ("ultra_hstu", "hstu", "pytorch", "triton", "movielens-100k", "synthetic-long"):
        assert name in out.stdout


def test_unknown_dataset_fails_with_known_names(tmp_path):
    out = _cli("data", "prepare", "movielens-1b", "--out", str(tmp_path))
    assert out.returncode == 2
    assert "unknown dataset 'movielens-1b'" in out.stderr and "movielens-100k" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_benchmark():
    out = _cli("bench", "nope")
    assert out.returncode != 0 and "known: " + ", ".join(sorted(cli.BENCHMARKS)) in out.stderr
    assert "retrieval" in cli.BENCHMARKS
    assert "quality" in cli.BENCHMARKS


def test_bench_help_is_the_benchmarks_own():
    out = _cli("bench", "fp8_gemm", "--help")
    assert out.returncode == 0
    assert "--host-only" in out.stdout and "--sweep" in out.stdout


# --- help and usage errors, in process (each subprocess would re-import torch) ---------

# "ultra-hstu: error:" (our handler) or argparse's "ultra-hstu train: error:"
ERROR_PREFIX = re.compile(r"^ultra-hstu( [\w-]+)*: error: ", re.MULTILINE)


def _main(capsys, *argv):
    try:
        code = cli.main(list(argv))
    except SystemExit as e:  # argparse's --help (0) and usage errors (2)
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _subcommands(parser):
    """(argv prefix, parser) of every subcommand, nested ones (data prepare) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield [name], sub
                for rest, subsub in _subcommands(sub):
                    yield [name, *rest], subsub


def _documented_options(parser):
    """Every option and positional of ``parser`` but -h, each with its help text."""
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = action.option_strings[0] if action.option_strings else action.metavar or action.dest
        yield name, action.help


def test_every_subcommand_has_help_naming_each_option(capsys):
    commands = list(_subcommands(cli.build_parser()))
    names = {" ".join(argv) for argv, _ in commands}
    assert {"list", "data", "data prepare", "train", "plot", "quantize", "bench"} <= names
    for argv, sub in commands:
        code, out, err = _main(capsys, *argv, "--help")
        assert code == 0, (argv, err)
        assert out.startswith(f"usage: ultra-hstu {' '.join(argv)}"), (argv, out[:200])
        for name, help_text in _documented_options(sub):
            assert help_text, f"ultra-hstu {' '.join(argv)}: {name} has no help text"
            assert name in out, (argv, name)


def test_bench_help_lists_the_benchmarks(capsys):
    code, out, _ = _main(capsys, "bench", "--help")
    assert code == 0
    for name, line in cli.BENCHMARK_HELP.items():
        assert name in out and line in out
    assert set(cli.BENCHMARK_HELP) == set(cli.BENCHMARKS)


@pytest.mark.parametrize("name", sorted(cli.BENCHMARKS))
def test_each_benchmarks_help_names_its_program_and_options(capsys, name):
    code, out, err = _main(capsys, "bench", name, "--help")
    assert code == 0, err
    assert out.startswith(f"usage: ultra-hstu bench {name} "), out[:200]
    parser = importlib.import_module(cli.BENCHMARKS[name]).build_parser()
    for option, help_text in _documented_options(parser):
        assert help_text, f"bench {name}: {option} has no help text"
        assert option in out


@pytest.mark.parametrize(
    "argv",
    [
        ["bench"],
        ["bench", "nope"],
        ["bench", "fp8_gemm"],  # the benchmark's own parser: --out is required
        ["frobnicate"],
        ["train"],
        ["train", "--gin", "x.gin", "--mode", "fast"],
        ["list", "--kind", "nope"],
        ["list", "extra"],
        ["plot"],
        ["plot", "/nonexistent/run"],
        ["data", "prepare", "movielens-1b"],
        ["data", "prepare", "synthetic-long", "--source", "x"],
    ],
)
def test_usage_errors_exit_2_with_the_prefix(capsys, argv):
    code, out, err = _main(capsys, *argv)
    assert code == 2, (argv, code, err)
    assert ERROR_PREFIX.search(err), (argv, err)
    assert "Traceback" not in err


def test_unknown_benchmark_names_the_known_ones(capsys):
    _, _, err = _main(capsys, "bench", "nope")
    assert "ultra-hstu bench: error: unknown benchmark 'nope'" in err


def test_list_of_a_kind_nobody_registered_says_so(capsys, monkeypatch):
    # every kind has a built-in component now, so list from an empty registry
    from ultra_hstu_plugin import registry

    monkeypatch.setattr(registry, "discover", lambda reload=False: registry.Registry())
    code, out, _ = _main(capsys, "list", "--kind", "sampler")
    assert code == 0
    assert out.strip() == "no sampler component is registered yet"
