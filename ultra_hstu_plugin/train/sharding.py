# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""torchrec sharding + optimizers for GR's model on any device.

GR's ``make_optimizer_and_shard`` plans for ``compute_device="cuda"`` with fixed HBM caps,
which puts shards on ``cuda:0`` even on a CPU run.  This is the same recipe (GR's
optimizer factories from gin, the sparse optimizer fused into backward, a
``CombinedOptimizer`` over dense parameters) with the planner told the real device.
"""

from __future__ import annotations

import zlib
from typing import Tuple

import torch
from torch import distributed as dist
from torch.distributed.optim import _apply_optimizer_in_backward as apply_optimizer_in_backward

from ultra_hstu_plugin.host import (
    dense_optimizer_factory_and_class,
    sparse_optimizer_factory_and_class,
)
from ultra_hstu_plugin.host.torchrec import (
    CombinedOptimizer,
    DistributedModelParallel,
    EmbeddingBagCollection,
    EmbeddingCollection,
    EmbeddingShardingPlanner,
    KeyedOptimizerWrapper,
    ShardedTensor,
    ShardingEnv,
    Topology,
    get_default_sharders,
    in_backward_optimizer_filter,
)

_EMBEDDING_TYPES = (EmbeddingBagCollection, EmbeddingCollection)


def shard_model_and_make_optimizer(
    model: torch.nn.Module, device: torch.device, world_size: int
) -> Tuple[DistributedModelParallel, torch.optim.Optimizer]:
    _, _, dense_factory = dense_optimizer_factory_and_class()
    sparse_cls, sparse_args, sparse_factory = sparse_optimizer_factory_and_class()
    for prefix, module in model.named_modules():
        if isinstance(module, _EMBEDDING_TYPES):
            for _, param in module.named_parameters(prefix=prefix):
                if param.requires_grad:
                    apply_optimizer_in_backward(sparse_cls, [param], sparse_args)

    sharders = get_default_sharders()
    topology_kwargs = {}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        topology_kwargs["hbm_cap"] = props.total_memory
    planner = EmbeddingShardingPlanner(
        topology=Topology(
            local_world_size=world_size,
            world_size=world_size,
            compute_device=device.type,
            **topology_kwargs,
        )
    )
    pg = dist.GroupMember.WORLD
    env = ShardingEnv.from_process_group(pg)
    plan = planner.collective_plan(model, sharders, env.process_group)
    dmp = DistributedModelParallel(module=model, device=device, plan=plan, sharders=sharders)

    dense_params = {}
    non_fused_sparse = {}
    for name, param in in_backward_optimizer_filter(dmp.named_parameters()):
        if param.requires_grad:
            (non_fused_sparse if isinstance(param, ShardedTensor) else dense_params)[name] = param
    optimizers = []
    if non_fused_sparse:
        optimizers.append(
            (
                "sparse_non_fused",
                KeyedOptimizerWrapper(params=non_fused_sparse, optim_factory=sparse_factory),
            )
        )
    if dense_params:
        optimizers.append(
            ("dense", KeyedOptimizerWrapper(params=dense_params, optim_factory=dense_factory))
        )
    optimizer = CombinedOptimizer(optimizers)
    optimizer.init_state(set(dmp.sparse_grad_parameter_names()))
    return dmp, optimizer


def deterministic_embedding_init(dmp: torch.nn.Module, seed: int) -> int:
    """Re-initialise every sharded embedding table from ``seed``, whatever the sharding.

    torchrec initialises each shard with the local RNG, so the same model sharded over 1
    or N processes starts from different tables.  Here every table is drawn whole from a
    generator keyed on (seed, table name) with torchrec's default range
    (uniform +-sqrt(1/num_rows)) and each process copies in its shard: runs with
    different world sizes start identical.  Returns the number of tables touched.
    """
    touched = 0
    with torch.no_grad():
        for name, value in dmp.state_dict().items():
            if not isinstance(value, ShardedTensor):
                continue
            rows, cols = value.size()
            gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            bound = (1.0 / rows) ** 0.5
            full = torch.empty(rows, cols).uniform_(-bound, bound, generator=gen)
            for shard in value.local_shards():
                r0, c0 = shard.metadata.shard_offsets
                nr, nc = shard.metadata.shard_sizes
                shard.tensor.copy_(full[r0 : r0 + nr, c0 : c0 + nc])
            touched += 1
    return touched
