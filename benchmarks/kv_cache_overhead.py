# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Host ops and time of one cached call (``cached_forward``) against the full recompute.

Per configuration (the encoders of ``ultra_hstu_plugin/bench/scaling.py``) and request
(``--users`` users, each ``--length`` history rows and ``--candidates`` candidates):

* ``ops``: the ops one call issues, counted two ways: ``dispatch_ops`` (what a
  ``TorchDispatchMode`` sees: every op the Python code issues, a custom op counted once,
  i.e. the host work around the kernels) and ``aten_ops`` (every ``aten::`` event of
  ``torch.profiler``, nested ones included, custom ops' insides too);
* ``ms``: the median wall time of ``--reps`` calls (synchronised on CUDA);
* ``max_abs_err``: cached scores vs the full recompute's candidate rows.

    python3 benchmarks/kv_cache_overhead.py --out benchmarks/results --tag _cpu
    python3 benchmarks/kv_cache_overhead.py --device cuda --length 16384 --candidates 256 \
        --dim 512 --heads 4 --head-dim 128 --k1 1024 --k2 128 --lprime-scale 1 \
        --out $OUT --tag _h200

Writes ``kv_cache_overhead<tag>.json`` (the rows) and prints them; the markdown beside it is
written by hand (prediction first).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

# this checkout's package, not whichever one is installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = ["ultra_sla18", "ultra_sla3_trunc15_L1024"]


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=CONFIGS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--users", type=int, default=1)
    p.add_argument("--length", type=int, default=1024, help="history rows per user")
    p.add_argument("--candidates", type=int, default=64, help="candidates per user")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--k1", type=int, default=128)
    p.add_argument("--k2", type=int, default=16)
    p.add_argument("--lprime-scale", type=float, default=1 / 4, help="L' = 1024 * this")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's)")
    p.add_argument("--out", default=None, help="folder of kv_cache_overhead<tag>.json")
    p.add_argument("--tag", default="")
    return p.parse_args(argv)


class _Count:
    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        counts: Dict[str, int] = {}

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
                name = str(func.overloadpacket)
                counts[name] = counts.get(name, 0) + 1
                return func(*args, **(kwargs or {}))

        self.counts = counts
        self.mode = Mode()


def count_ops(call: Callable[[], Any]) -> Dict[str, Any]:
    """Dispatch-level ops (custom ops once) and profiler ``aten::`` events of one call."""
    import torch

    c = _Count()
    with c.mode:
        call()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        call()
    aten = sum(1 for e in prof.events() if e.name.startswith("aten::"))
    top = sorted(c.counts.items(), key=lambda kv: -kv[1])[:8]
    return {
        "dispatch_ops": sum(c.counts.values()),
        "aten_ops": aten,
        "top_dispatch_ops": dict(top),
    }


def time_ms(call: Callable[[], Any], device: str, reps: int) -> float:
    import torch

    call()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        call()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 3)


def measure(name: str, args: argparse.Namespace) -> List[Dict[str, Any]]:
    import torch

    from ultra_hstu_plugin.bench import scaling

    cfg = scaling.CONFIGS[name]
    B, L, M, dev = args.users, args.length, args.candidates, args.device
    ns = argparse.Namespace(
        dim=args.dim, heads=args.heads, head_dim=args.head_dim, k1=args.k1, k2=args.k2,
        lprime_scale=args.lprime_scale,
    )  # fmt: skip
    encoder = scaling.build_encoder(cfg, ns, L + M, is_inference=True, device=dev).eval()
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(B, L + M, args.dim, device=dev, dtype=dtype, generator=g)
    history, cands = x[:, :L].reshape(-1, args.dim), x[:, L:].reshape(-1, args.dim)

    def t(*v: int) -> torch.Tensor:
        return torch.tensor(v, dtype=torch.int64, device=dev)

    full_len = t(*[L + M] * B)
    full_off = torch.arange(B + 1, device=dev, dtype=torch.int64) * (L + M)
    nt = t(*[M] * B)

    def full() -> torch.Tensor:
        with torch.no_grad():
            out = encoder(x=x.reshape(-1, args.dim), x_lengths=full_len, x_offsets=full_off,
                          max_seq_len=L + M, num_targets=nt)  # fmt: skip
        return out.view(B, L + M, -1)[:, L:].reshape(-1, out.shape[-1])

    with torch.no_grad():
        n = t(*[L] * B)
        encoder(x=history, x_lengths=n, x_offsets=torch.arange(B + 1, device=dev) * L,
                max_seq_len=L + M, num_targets=t(*[0] * B), max_kv_caching_len=L,
                kv_caching_lengths=n)  # fmt: skip

    def cached() -> torch.Tensor:
        with torch.no_grad():
            return encoder.cached_forward(delta_x=cands, num_targets=nt)

    want = full()
    got = cached()
    err = float((got.float() - want.float()).abs().max())
    rows = []
    for mode, call in (("full", full), ("cached", cached)):
        row = {"config": name, "mode": mode, "B": B, "L": L, "M": M, "device": dev}
        row.update(count_ops(call))
        row["ms"] = time_ms(call, dev, args.reps)
        if mode == "cached":
            row["max_abs_err"] = err
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    from ultra_hstu_plugin.host.stubs import stub_torchrec_if_missing

    stub_torchrec_if_missing()  # the GPU machine has GR but no torchrec (a no-op here)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows: List[Dict[str, Any]] = []
    for name in args.configs:
        rows += measure(name, args)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parents[1],
        ).stdout.strip()
    except OSError:
        commit = ""
    result = {
        "command": "python3 benchmarks/kv_cache_overhead.py " + " ".join(argv),
        "commit": commit,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"kv_cache_overhead{args.tag}.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
