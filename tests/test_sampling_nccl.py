# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The LBSL sampler over an NCCL process group (GPU machine only; CI has no GPU).

The gloo test (``test_sampling_distributed.py``) covers two ranks on CPU.  This one checks the
NCCL side of the same collectives (tensors moved to this rank's GPU, ``all_gather_object``
over NCCL): one rank per visible GPU.  With one GPU (the lent machine), a 1-rank NCCL group
must give exactly the statistics and kept lengths of the same sampler with no process group;
with two or more, every rank must see the same targets and per-rank costs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# the gloo test's lengths, sampler and port helper (tests/ is on sys.path under pytest)
from test_sampling_distributed import _free_port, balance_sampler, long_tailed

WARMUP, STEPS, BATCH = 8, 24, 32
NCCL = torch.cuda.is_available() and dist.is_available() and dist.is_nccl_available()


def _run(rank: int) -> dict:
    data = torch.Generator().manual_seed(100 + rank)
    s = balance_sampler(rank, WARMUP)
    steps = []
    for _ in range(STEPS):
        kept, stats = s(long_tailed(BATCH, data))
        steps.append({"kept": kept.tolist(), **stats})
    return {"steps": steps}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    try:
        Path(out, f"rank{rank}.json").write_text(json.dumps(_run(rank)))
    finally:
        dist.destroy_process_group()


@pytest.mark.gpu  # benchmarks/gpu_integration_tests.sh and the LBSL GPU call run it
@pytest.mark.skipif(not NCCL, reason="NCCL needs a GPU")
def test_lbsl_over_nccl(tmp_path):
    world = min(torch.cuda.device_count(), 2)
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    steps = ranks[0]["steps"]
    assert [s["phase"] for s in steps] == ["warmup"] * WARMUP + ["lbsl"] * (STEPS - WARMUP)
    assert all(s["target_cost"] > 0 for s in steps[WARMUP:])
    if world == 1:
        # a 1-rank group reduces to the local sampler: the same numbers, bit for bit
        assert steps == json.loads(json.dumps(_run(0)))["steps"]
    for other in ranks[1:]:
        for a, b in zip(steps[WARMUP:], other["steps"][WARMUP:]):
            assert a["target_cost"] == b["target_cost"] and a["rank_costs"] == b["rank_costs"]
