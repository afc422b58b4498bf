# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Inference forward of an encoder replayed from CUDA graphs, one graph per batch layout.

Why: an ULTRA-HSTU encoder's truncated upper layers run on short sequences, so each is a
string of small kernels whose launches cost the host more than the GPU spends on them
(``benchmarks/results/scaling*.md`` profiles it).  A captured graph replays every launch
of the forward in one call.

A graph is valid for one *layout*: the number of rows, the lengths and candidate counts of
every sequence and ``max_seq_len``; reading the lengths is this wrapper's one host
synchronisation per call.  Serving code that pads batches to a few layouts replays; a new
layout is captured on first sight (after one eager warm-up run, which also autotunes
every Triton kernel) and kept, up to ``max_graphs`` layouts (least recently used first out).
Truncation plans (:class:`~ultra_hstu_plugin.modules.truncation.TruncatedSTU`) are
computed outside the graph and fixed in it, since they follow from the layout.

Inference only: the wrapped encoder must be in eval mode and called under ``no_grad``
(training keeps the eager path; see the scaling benchmark's notes).
"""

from __future__ import annotations

import collections
import contextlib
from typing import Iterator, List, Optional, Tuple

import torch

from ultra_hstu_plugin.modules.truncation import TruncatedSTU

Layout = Tuple[int, int, Tuple[int, ...], Tuple[int, ...]]


class _Graph:
    def __init__(
        self,
        graph: torch.cuda.CUDAGraph,
        inputs: Tuple[torch.Tensor, ...],
        output: torch.Tensor,
        plans: List[object],
    ) -> None:
        self.graph, self.inputs, self.output = graph, inputs, output
        self.plans = plans  # the graph reads their tensors: they live as long as it does


@contextlib.contextmanager
def _fixed_truncation_plans(
    encoder: torch.nn.Module,
    x_lengths: torch.Tensor,
    x_offsets: torch.Tensor,
    num_targets: torch.Tensor,
) -> Iterator[List[object]]:
    """Plans of every top-level truncation computed now, outside any capture.

    A truncation sees the encoder's own lengths (the layers before it keep every row), so
    its plan follows from the encoder's inputs.  Nested truncations are not supported."""
    modules: List[TruncatedSTU] = [m for m in encoder.modules() if isinstance(m, TruncatedSTU)]
    for m in modules:
        if any(isinstance(inner, TruncatedSTU) for inner in m.upper.modules()):
            raise ValueError("GraphedEncoder: nested TruncatedSTU modules are not supported")
    originals = [m.forward for m in modules]
    plans: List[object] = []
    try:
        for m, fwd in zip(modules, originals):
            plan = m.plan(x_lengths, x_offsets, num_targets)
            plans.append(plan)

            def fixed(*args, _fwd=fwd, _plan=plan, **kwargs):  # noqa: ANN002, ANN003
                kwargs["plan"] = _plan
                return _fwd(*args, **kwargs)

            m.forward = fixed  # instance attribute: nn.Module.__call__ finds it first
        yield plans
    finally:
        for m in modules:
            m.__dict__.pop("forward", None)


class GraphedEncoder(torch.nn.Module):
    """``encoder``'s inference forward (GR's STU call signature) replayed from CUDA graphs.

    ``encoder`` stays the owner of the parameters (``self.encoder``); changing its weights
    in place is seen by the graphs, re-creating them is not (call :meth:`reset`).
    """

    def __init__(self, encoder: torch.nn.Module, max_graphs: int = 8) -> None:
        super().__init__()
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be >= 1, got {max_graphs}")
        self.encoder = encoder
        self.max_graphs = max_graphs
        self._graphs: collections.OrderedDict[Layout, _Graph] = collections.OrderedDict()
        self._pool: Optional[Tuple[int, int]] = None
        self.captures = 0  # how many layouts were captured (a benchmark reports it)

    def reset(self) -> None:
        """Drop every captured graph (and the memory they hold)."""
        self._graphs.clear()
        self._pool = None

    @staticmethod
    def layout(
        x: torch.Tensor, x_lengths: torch.Tensor, max_seq_len: int, num_targets: torch.Tensor
    ) -> Layout:
        both = torch.cat([x_lengths.to(torch.int64), num_targets.to(torch.int64)]).tolist()
        B = x_lengths.numel()
        return (x.shape[0], max_seq_len, tuple(both[:B]), tuple(both[B:]))

    def forward(
        self,
        x: torch.Tensor,
        x_lengths: torch.Tensor,
        x_offsets: torch.Tensor,
        max_seq_len: int,
        num_targets: torch.Tensor,
    ) -> torch.Tensor:
        if self.encoder.training or torch.is_grad_enabled():
            raise RuntimeError(
                "GraphedEncoder replays the inference forward only: call encoder.eval() and "
                "run under torch.no_grad() (training runs the encoder eagerly)"
            )
        if x.device.type != "cuda":
            raise ValueError(f"GraphedEncoder needs CUDA tensors, got x on {x.device}")
        key = self.layout(x, x_lengths, max_seq_len, num_targets)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(x, x_lengths, x_offsets, max_seq_len, num_targets)
            self._graphs[key] = entry
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        for static, new in zip(entry.inputs, (x, x_lengths, x_offsets, num_targets)):
            static.copy_(new)
        entry.graph.replay()
        # the graph's output buffer is overwritten by the next replay: hand out a copy
        return entry.output.clone()

    def _capture(
        self,
        x: torch.Tensor,
        x_lengths: torch.Tensor,
        x_offsets: torch.Tensor,
        max_seq_len: int,
        num_targets: torch.Tensor,
    ) -> _Graph:
        inputs = tuple(t.clone() for t in (x, x_lengths, x_offsets, num_targets))
        sx, slen, soff, snt = inputs

        def run() -> torch.Tensor:
            return self.encoder(
                x=sx, x_lengths=slen, x_offsets=soff, max_seq_len=max_seq_len, num_targets=snt
            )

        with _fixed_truncation_plans(self.encoder, slen, soff, snt) as plans:
            # eager warm-up on a side stream: autotuning and lazy initialisation happen here
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                run()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self._pool):
                output = run()
        self.captures += 1
        return _Graph(graph, inputs, output, plans)
