# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Merged item+action input tokens with no action at candidate positions.

GR's ``ContextualPreprocessor`` already makes one token per event as
``content_mlp(item) + action_mlp(action)``; at candidates it feeds a learned "target
action" embedding through ``action_mlp``.  ULTRA-HSTU's merged tokens carry *no* action
at candidates, so their labels cannot leak and nothing stands in for them:

* the target-action table becomes a zero buffer, and
* ``action_mlp`` becomes a bias-free MLP, so ``action_mlp(0) == 0`` exactly.

A candidate token is then exactly ``content_mlp(item)``.
"""

from __future__ import annotations

import torch

from ultra_hstu_plugin import host


class ZeroPreservingMLP(torch.nn.Module):
    """``W2 · silu(W1 · a)``: no biases, so a zero action gives a zero contribution."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(in_dim, hidden_dim, bias=False)
        self.fc2 = torch.nn.Linear(hidden_dim, out_dim, bias=False)
        torch.nn.init.xavier_normal_(self.fc1.weight)
        torch.nn.init.xavier_normal_(self.fc2.weight)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.nn.functional.silu(self.fc1(a)))


def use_merged_item_action_tokens(model: torch.nn.Module, hstu_config: host.DlrmHSTUConfig) -> None:
    pre = host.input_preprocessor_of(model)
    action_encoder = host.action_encoder_of(pre)
    if action_encoder is None:
        raise ValueError(
            "merged_item_action_tokens needs action features: the dataset's DlrmHSTUConfig "
            "has action_weights=None"
        )
    host.zero_target_action_table(action_encoder)
    host.set_action_mlp(
        pre,
        ZeroPreservingMLP(
            action_encoder.output_embedding_dim,
            hstu_config.hstu_preprocessor_hidden_dim,
            hstu_config.hstu_transducer_embedding_dim,
        ),
    )
