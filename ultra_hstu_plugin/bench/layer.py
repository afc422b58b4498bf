# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu bench layer``: one ULTRA-HSTU layer's train step (fwd+bwd), bf16 vs fp8.

Runs on a GPU machine with torch + triton and a GR checkout (``--gr-path``) but no
torchrec/fbgemm: GR's layer code imports only
``torchrec.modules.sorted_index_select.maybe_sorted_index_select`` from torchrec, which
this script stands in for with ``torch.index_select`` when torchrec is absent (the
stand-in is only reached by GR's jagged concat/split ops, which the layer does not use).

Shape: B * L = 65536 tokens (B=16, L=4096), D=512, H=4 (``--dim``/``--heads`` change these),
head dims 128, SLA k1=1024,
k2=128, 32 candidates per sequence, HammerKernel.TRITON (GR's Triton layer norm, addmm
and output kernels; our SLA attention).  GR's kernels autotune on first use: every
variant is warmed up before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional


def build_parser() -> argparse.ArgumentParser:
    """This benchmark's options (``ultra-hstu bench layer --help``)."""
    parser = argparse.ArgumentParser(prog="ultra-hstu bench layer", description=__doc__)
    parser.add_argument(
        "--out", default="benchmarks/results", help="directory for layer<tag>.jsonl/json/md"
    )
    parser.add_argument("--gr-path", default=None, help="GR checkout root (if not installed)")
    parser.add_argument("--batch", type=int, default=16, help="sequences per batch")
    parser.add_argument("--seq-len", type=int, default=4096, help="tokens per sequence")
    parser.add_argument("--dim", type=int, default=512, help="embedding dim D")
    parser.add_argument("--heads", type=int, default=4, help="heads (head dims stay 128)")
    parser.add_argument("--tag", default="", help="suffix of the output files (layer<tag>.*)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--profile", action="store_true", help="print each variant's top kernels")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.gr_path:
        sys.path.insert(0, os.path.abspath(args.gr_path))
    # before GR's layer code is imported (host.stubs imports nothing of GR)
    from ultra_hstu_plugin.host.stubs import stub_torchrec_if_missing

    stub_note = stub_torchrec_if_missing()

    import torch
    from triton.testing import do_bench

    from ultra_hstu_plugin.bench.common import environment
    from ultra_hstu_plugin.host import HammerKernel, STULayerConfig
    from ultra_hstu_plugin.modules.ultra_stu import UltraHSTULayer

    if not torch.cuda.is_available():
        raise SystemExit("bench layer needs a CUDA GPU")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, object]] = []
    B, L, D, H = args.batch, args.seq_len, args.dim, args.heads
    stem = f"layer{args.tag}"
    jsonl = open(out_dir / f"{stem}.jsonl", "w")

    def config(recompute: bool) -> STULayerConfig:
        return STULayerConfig(
            embedding_dim=D,
            num_heads=H,
            hidden_dim=128,
            attention_dim=128,
            output_dropout_ratio=0.1,
            recompute_normed_x=recompute,
            recompute_uvqk=recompute,
            recompute_y=recompute,
        )

    lengths = torch.full((B,), L, dtype=torch.int64, device="cuda")
    offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    targets = torch.full((B,), 32, dtype=torch.int64, device="cuda")
    torch.manual_seed(0)
    x = torch.randn(B * L, D, device="cuda", dtype=torch.bfloat16)
    grad = torch.randn_like(x)

    # GR's default recomputes in backward; "store" keeps activations instead.
    layers = {}
    for name, fp8, recompute in (
        ("bf16", False, True),
        ("fp8", True, True),
        ("bf16-store", False, False),
        ("fp8-store", True, False),
    ):
        torch.manual_seed(1)
        layer = UltraHSTULayer(config(recompute), k1=1024, k2=128, fp8=fp8).cuda()
        layer.set_hammer_kernel(HammerKernel.TRITON)
        layers[name] = layer
    for name in ("fp8", "bf16-store", "fp8-store"):
        layers[name].load_state_dict(layers["bf16"].state_dict())

    def step(layer: UltraHSTULayer) -> torch.Tensor:
        xi = x.detach().requires_grad_()
        y = layer(x=xi, x_lengths=lengths, x_offsets=offsets, max_seq_len=L, num_targets=targets)
        y.backward(grad)
        return y

    # correctness of the fp8 layer against the bf16 layer, eval mode (no dropout)
    with torch.no_grad():
        for layer in layers.values():
            layer.eval()
        y16 = layers["bf16"](
            x=x, x_lengths=lengths, x_offsets=offsets, max_seq_len=L, num_targets=targets
        )
        y8 = layers["fp8"](
            x=x, x_lengths=lengths, x_offsets=offsets, max_seq_len=L, num_targets=targets
        )
        rel = float((y8.float() - y16.float()).norm() / y16.float().norm())
        for layer in layers.values():
            layer.train()

    for name, layer in layers.items():
        t0 = time.time()
        step(layer)  # warm-up: GR's kernels autotune here
        torch.cuda.synchronize()
        warm = time.time() - t0
        ms_train = do_bench(
            lambda layer=layer: step(layer), warmup=50, rep=300, return_mode="median"
        )
        with torch.no_grad():
            ms_fwd = do_bench(
                lambda layer=layer: layer(
                    x=x, x_lengths=lengths, x_offsets=offsets, max_seq_len=L, num_targets=targets
                ),
                warmup=50,
                rep=300,
                return_mode="median",
            )
        # Host time to issue one train step while the GPU is kept busy (so the host never
        # waits on it): near the step's GPU time means the step is launch-bound; far above it
        # means something in the step synchronises with the GPU.
        host_ms = []
        for _ in range(5):
            torch.cuda.synchronize()
            torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU spinning
            t0 = time.perf_counter()
            step(layer)
            host_ms.append((time.perf_counter() - t0) * 1e3)
            torch.cuda.synchronize()
        host_ms_median = sorted(host_ms)[len(host_ms) // 2]
        if args.profile:
            activities = [torch.profiler.ProfilerActivity.CUDA, torch.profiler.ProfilerActivity.CPU]
            with torch.profiler.profile(activities=activities) as prof:
                for _ in range(3):
                    step(layer)
                torch.cuda.synchronize()
            averages = prof.key_averages()
            table = averages.table(
                sort_by="cuda_time_total", row_limit=18, max_name_column_width=60
            )
            host = averages.table(
                sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60
            )
            (out_dir / f"{stem}_profile_{name}.txt").write_text(table + "\n" + host)
            print(
                f"--- {name} (3 train steps) ---\n{table}\n--- {name} host ---\n{host}", flush=True
            )
        row = {
            "variant": name,
            "fwd_bwd_ms": round(ms_train, 4),
            "fwd_ms": round(ms_fwd, 4),
            "host_issue_ms": round(host_ms_median, 3),
            "warmup_s": round(warm, 1),
            "tokens": B * L,
        }
        rows.append(row)
        jsonl.write(json.dumps(row) + "\n")
        jsonl.flush()
        print(row, flush=True)

    # Interleaved rounds: each round times every variant once more (100 ms of steps each), so
    # slow drifts of the host (which sets the pace where a step is launch-bound) hit all
    # variants alike; the reported ratios are medians of within-round ratios.
    rounds: List[Dict[str, float]] = []
    for _ in range(args.rounds):
        rounds.append(
            {
                name: do_bench(
                    lambda layer=layer: step(layer), warmup=10, rep=100, return_mode="median"
                )
                for name, layer in layers.items()
            }
        )
        jsonl.write(json.dumps({"round": rounds[-1]}) + "\n")
        jsonl.flush()

    def median(values: List[float]) -> float:
        return sorted(values)[len(values) // 2]

    for row in rows:
        row["fwd_bwd_ms_rounds_median"] = round(median([r[row["variant"]] for r in rounds]), 4)

    meta = {
        **environment(),
        "command": "python -m ultra_hstu_plugin.bench.layer " + " ".join(argv or sys.argv[1:]),
        "shape": {
            "B": B,
            "L": L,
            "D": D,
            "heads": H,
            "head_dim": 128,
            "k1": 1024,
            "k2": 128,
            "targets": 32,
        },
        "fp8_vs_bf16_relative_error_eval": rel,
        "notes": [n for n in (stub_note,) if n],
    }
    ratio = median([r["bf16"] / r["fp8"] for r in rounds])
    ratio_store = median([r["bf16-store"] / r["fp8-store"] for r in rounds])
    meta["rounds"] = args.rounds
    meta["fp8_speedup_fwd_bwd"] = round(ratio, 3)
    meta["fp8_speedup_fwd_bwd_store"] = round(ratio_store, 3)
    (out_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        "# ULTRA-HSTU layer train step: bf16 vs fp8",
        "",
        f"Device: {meta['device']}; torch {meta['torch']}, triton {meta['triton']}; commit {meta['git_commit']}.",
        f"Command: `{meta['command']}`",
        f"Shape: {meta['shape']}. fp8 vs bf16 output relative error (eval): {rel:.2e}.",
        "",
        "| variant | fwd+bwd ms | fwd+bwd ms, median of rounds | fwd ms | host ms to issue fwd+bwd |",
        "|---|---|---|---|---|",
        *[
            f"| {r['variant']} | {r['fwd_bwd_ms']} | {r['fwd_bwd_ms_rounds_median']} | "
            f"{r['fwd_ms']} | {r['host_issue_ms']} |"
            for r in rows
        ],
        "",
        f"fp8 speed-up on the train step (median of {args.rounds} interleaved rounds' ratios): "
        f"{ratio:.2f}x with GR's default recomputation, {ratio_store:.2f}x with activations "
        "stored",
    ]
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
