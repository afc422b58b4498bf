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

:class:`GraphedEncoder` is inference only: the wrapped encoder must be in eval mode and
called under ``no_grad``.  :class:`GraphedTrainStep` captures one training step (forward in
train mode + backward) of one fixed layout; its dropout caveat is in its docstring.
"""

from __future__ import annotations

import collections
import contextlib
from typing import Iterator, List, Optional, Tuple

import torch

from ultra_hstu_plugin.host import stu_output_dropout_ratio
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


def dropout_ratios(module: torch.nn.Module) -> List[Tuple[str, float]]:
    """(name, ratio) of every dropout in ``module`` with a ratio above 0: ``nn.Dropout``
    modules and GR's STU layers' ``_output_dropout_ratio``."""
    found = []
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Dropout) and m.p > 0:
            found.append((name, float(m.p)))
        ratio = stu_output_dropout_ratio(m)
        if ratio > 0:
            found.append((name, ratio))
    return found


class GraphedTrainStep:
    """One training step of ``encoder`` -- its forward in train mode and the backward of an
    output gradient -- captured for one batch layout and replayed from a CUDA graph.

    Why: in training, the truncated upper layers' short kernels leave the GPU idle while the
    host launches them (a 3 + 15 stack at L = 16384: ~18 ms of kernels inside a ~44 ms
    eager step, ``benchmarks/results/encoder_profile_h200.md``).  A replay issues every
    launch of the step, backward included, in one call.

    The layout (``x_lengths``, ``x_offsets``, ``max_seq_len``, ``num_targets``) is fixed at
    construction; :meth:`step` takes new values of ``x`` and of the output gradient (same
    shapes, copied into the graph's inputs).  Each replay writes fresh gradients, as
    ``zero_grad(set_to_none=True)`` followed by ``backward`` would: the parameters' ``.grad``
    and :attr:`x_grad` are the graph's buffers, overwritten by the next replay (an optimizer
    step between replays reads them in place).  The returned output is a buffer too.

    Dropout: GR's fused LayerNorm-mul-dropout kernels draw their seed on the host
    (``torch.randint(...).item()``) and pass it to the kernel as a number, so a captured
    step replays the capture's dropout mask on every replay.  A model with dropout is refused
    unless ``fixed_dropout_mask=True``: the GPU work is the same (a benchmark may time it),
    the training is not (one mask for every step).
    """

    def __init__(
        self,
        encoder: torch.nn.Module,
        x: torch.Tensor,
        x_lengths: torch.Tensor,
        x_offsets: torch.Tensor,
        max_seq_len: int,
        num_targets: torch.Tensor,
        *,
        fixed_dropout_mask: bool = False,
        warmup_steps: int = 2,
    ) -> None:
        if x.device.type != "cuda":
            raise ValueError(f"GraphedTrainStep needs CUDA tensors, got x on {x.device}")
        if not encoder.training:
            raise RuntimeError("GraphedTrainStep captures a training step: call encoder.train()")
        if warmup_steps < 1:
            raise ValueError(
                f"warmup_steps must be >= 1 (autotuning runs there), got {warmup_steps}"
            )
        dropouts = dropout_ratios(encoder)
        if dropouts and not fixed_dropout_mask:
            names = ", ".join(f"{n or '<encoder>'}={r}" for n, r in dropouts[:4])
            raise ValueError(
                f"GraphedTrainStep: the encoder has dropout ({names}"
                f"{', ...' if len(dropouts) > 4 else ''}); GR's dropout kernels take their "
                "seed from the host, so every replay would reuse the capture's mask.  Build "
                "the encoder with dropout 0, or pass fixed_dropout_mask=True to time it anyway"
            )
        self.encoder = encoder
        self.params: List[torch.nn.Parameter] = [p for p in encoder.parameters() if p.requires_grad]
        self._x = x.detach().clone().requires_grad_(True)
        self._layout = tuple(t.clone() for t in (x_lengths, x_offsets, num_targets))
        self.max_seq_len = max_seq_len
        lengths, offsets, targets = self._layout

        def fwd_bwd(grad: Optional[torch.Tensor]) -> torch.Tensor:
            out = self.encoder(
                x=self._x,
                x_lengths=lengths,
                x_offsets=offsets,
                max_seq_len=max_seq_len,
                num_targets=targets,
            )
            out.backward(torch.ones_like(out) if grad is None else grad)
            return out

        with _fixed_truncation_plans(encoder, lengths, offsets, targets) as plans:
            # eager warm-up on a side stream: autotuning, lazy initialisation and the
            # AccumulateGrad nodes' first (allocating) run happen here, not in the capture
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(warmup_steps):
                    self._zero_grads()
                    out = fwd_bwd(None)
            torch.cuda.current_stream().wait_stream(side)
            self._grad_out = torch.zeros_like(out)
            del out
            self._zero_grads()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._out = fwd_bwd(self._grad_out)
        self._plans = plans  # the graph reads their tensors
        # None for a parameter the step does not reach, as in eager backward
        self._grads: List[Optional[torch.Tensor]] = [p.grad for p in self.params]
        self.x_grad: torch.Tensor = self._x.grad

    def _zero_grads(self) -> None:
        for p in self.params:
            p.grad = None
        self._x.grad = None

    def step(self, x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        """Replays the step on ``x`` with output gradient ``grad_output``; returns the output
        (a graph buffer).  Gradients land in the parameters' ``.grad`` and :attr:`x_grad`."""
        for name, new, static in (("x", x, self._x), ("grad_output", grad_output, self._grad_out)):
            if new.shape != static.shape or new.dtype != static.dtype:
                raise ValueError(
                    f"GraphedTrainStep.step: {name} is {tuple(new.shape)} {new.dtype}, the "
                    f"captured layout has {tuple(static.shape)} {static.dtype}"
                )
        with torch.no_grad():
            self._x.copy_(x)
            self._grad_out.copy_(grad_output)
        self.graph.replay()
        for p, g in zip(self.params, self._grads):  # in case a caller set .grad to None
            p.grad = g
        return self._out
