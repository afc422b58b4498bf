# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""GR's ranking model (``DlrmHSTU``) with an encoder chosen by name.

GR builds its model, preprocessor, transducer, multitask head and embedding collection;
we only swap the STU stack inside the transducer (and, with
``merged_item_action_tokens``, make the candidates' action input exactly zero).  So GR's
data pipeline, losses, metrics, sharding and checkpoints all keep working.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Sequence, Tuple

import gin
import torch

from ultra_hstu_plugin import host
from ultra_hstu_plugin.config import RunSettings, bound_parameters, run_settings
from ultra_hstu_plugin.host import STU, DlrmHSTU, DlrmHSTUConfig, STULayerConfig
from ultra_hstu_plugin.modules.encoder import build_ultra_hstu_encoder
from ultra_hstu_plugin.modules.encoder_config import UltraHSTUEncoderConfig
from ultra_hstu_plugin.modules.merged_tokens import use_merged_item_action_tokens
from ultra_hstu_plugin.modules.mixture_of_transducers import MixtureOfTransducers, StreamConfig
from ultra_hstu_plugin.registry import discover

logger = logging.getLogger(__name__)


def contextual_seq_len(hstu_config: DlrmHSTUConfig) -> int:
    return sum(dict(hstu_config.contextual_feature_to_max_length).values())


def build_gr_hstu_encoder(
    model: DlrmHSTU, hstu_config: DlrmHSTUConfig, encoder_config: Optional[Any], is_inference: bool
) -> STU:
    """GR's own STU stack as DlrmHSTU built it (the baseline)."""
    if encoder_config is not None:
        raise ValueError("encoder 'hstu' is GR's own stack and takes no encoder_config; unbind it")
    return host.stu_module_of(model)


def build_ultra_encoder(
    model: DlrmHSTU,
    hstu_config: DlrmHSTUConfig,
    encoder_config: Optional[UltraHSTUEncoderConfig],
    is_inference: bool,
) -> STU:
    enc = _ultra_config(encoder_config).with_default_depth(hstu_config.hstu_attn_num_layers)
    return build_ultra_hstu_encoder(
        enc, _layer_config(hstu_config, enc), is_inference, max_seq_len=hstu_config.max_seq_len
    )


def default_encoder_config() -> UltraHSTUEncoderConfig:
    """``UltraHSTUEncoderConfig()`` built through gin, so its bindings apply.

    A GR user binds ``ultra_hstu.UltraHSTUEncoderConfig.k1 = 64`` the way they bind any
    GR configurable and expects it to apply; with gin a binding applies wherever the
    configurable is called.  So ``encoder = "ultra_hstu"`` without ``encoder_config``
    calls it through gin instead of building a plain default that drops the bindings
    (raising instead would make every config spell out a line that adds nothing).
    """
    try:
        cls = gin.get_configurable(UltraHSTUEncoderConfig)
    except ValueError:  # ultra_hstu_plugin.gin not imported: nothing can be bound
        cls = UltraHSTUEncoderConfig
    return cls()


def _ultra_config(encoder_config: Optional[Any]) -> UltraHSTUEncoderConfig:
    enc = encoder_config if encoder_config is not None else default_encoder_config()
    if not isinstance(enc, UltraHSTUEncoderConfig):
        raise TypeError(
            f"encoder 'ultra_hstu' needs an UltraHSTUEncoderConfig, got {type(enc).__name__}"
        )
    return enc


def _bindings(selector: str) -> Dict[Tuple[str, str], Any]:
    try:
        return bound_parameters(selector)
    except (ValueError, KeyError):  # not registered (ultra_hstu_plugin.gin not imported)
        return {}


def check_no_ignored_bindings(
    encoder: str, encoder_config: Optional[Any], streams: Optional[Sequence[StreamConfig]]
) -> None:
    """Raise, naming the binding, for gin bindings this model would not read.

    The encoder config's own fields are checked by ``UltraHSTUEncoderConfig.validate``;
    here are the bindings that reach no object at all.  ``merged_item_action_tokens``
    is not among them: it rewires GR's preprocessor, so it applies to "hstu" too.
    """
    if encoder == "hstu" and encoder_config is None:
        # GR's stack is built from DlrmHSTUConfig (hstu_overrides); nothing reads these.
        for (scope, name), _ in sorted(_bindings("ultra_hstu.UltraHSTUEncoderConfig").items()):
            if scope == "":
                raise ValueError(
                    f"ultra_hstu.UltraHSTUEncoderConfig.{name} is bound but encoder 'hstu' is "
                    "GR's own stack and ignores it; unbind it, or set "
                    'make_ultra_model.encoder = "ultra_hstu"'
                )
    stream_names = {s.name for s in streams or ()}
    for (scope, name), _ in sorted(_bindings("ultra_hstu.StreamConfig").items()):
        prefix = f"{scope}/" if scope else ""
        scope_name = _bindings("ultra_hstu.StreamConfig").get((scope, "name"))
        if not streams or (scope_name is not None and scope_name not in stream_names):
            raise ValueError(
                f"{prefix}ultra_hstu.StreamConfig.{name} is bound but no stream of "
                "make_ultra_model.streams uses it, so it would be ignored; add "
                f"@{prefix}ultra_hstu.StreamConfig() to make_ultra_model.streams or unbind it"
            )


def _layer_config(hstu_config: DlrmHSTUConfig, enc: UltraHSTUEncoderConfig) -> STULayerConfig:
    return STULayerConfig(
        embedding_dim=hstu_config.hstu_transducer_embedding_dim,
        num_heads=hstu_config.hstu_num_heads,
        hidden_dim=hstu_config.hstu_attn_linear_dim,
        attention_dim=hstu_config.hstu_attn_qk_dim,
        output_dropout_ratio=hstu_config.hstu_linear_dropout_rate,
        use_group_norm=hstu_config.hstu_group_norm,
        causal=True,
        target_aware=True,
        recompute_normed_x=enc.recompute_normed_x,
        recompute_uvqk=enc.recompute_uvqk,
        recompute_y=enc.recompute_y,
        contextual_seq_len=contextual_seq_len(hstu_config),
    )


class UltraDlrmHSTU(DlrmHSTU):
    """``DlrmHSTU`` whose encoder is picked by registry name ("hstu", "ultra_hstu", ...)."""

    def __init__(
        self,
        hstu_configs: DlrmHSTUConfig,
        embedding_tables: Dict[str, Any],
        is_inference: bool,
        encoder: str = "ultra_hstu",
        encoder_config: Optional[Any] = None,
        bf16_training: bool = False,
        merged_item_action_tokens: bool = False,
        streams: Optional[Sequence[StreamConfig]] = None,
    ) -> None:
        builder = discover().get("encoder", encoder).load()  # fail before building anything
        if streams and encoder != "ultra_hstu":
            raise ValueError(
                f"streams (mixture of transducers) need encoder 'ultra_hstu', got {encoder!r}"
            )
        check_no_ignored_bindings(encoder, encoder_config, streams)
        if streams:
            stream_enc = _ultra_config(encoder_config)
            stream_enc.validate(hstu_configs.max_seq_len, depth_from_streams=True)
        super().__init__(
            hstu_configs=hstu_configs,
            embedding_tables=embedding_tables,
            is_inference=is_inference,
            bf16_training=bf16_training,
        )
        self.encoder_name = encoder
        if streams:
            host.set_transducer(
                self,
                MixtureOfTransducers(
                    host.transducer_of(self),
                    streams,
                    _layer_config(hstu_configs, stream_enc),
                    stream_enc,
                    action_feature_name=hstu_configs.uih_weight_feature_name,
                    is_inference=is_inference,
                ),
            )
        else:
            host.set_stu_module(self, builder(self, hstu_configs, encoder_config, is_inference))
        if merged_item_action_tokens:
            use_merged_item_action_tokens(self, hstu_configs)


# ``settings`` is not bindable: the dataset is named once, by RunSettings.dataset.
@gin.configurable(denylist=["settings"])
def make_ultra_model(
    encoder: str = "ultra_hstu",
    encoder_config: Optional[Any] = None,
    hstu_overrides: Optional[Dict[str, Any]] = None,
    bf16_training: bool = False,
    merged_item_action_tokens: bool = False,
    streams: Optional[Sequence[StreamConfig]] = None,
    settings: Optional[RunSettings] = None,
) -> Tuple[UltraDlrmHSTU, DlrmHSTUConfig, Dict[str, Any]]:
    """GR's ``make_model`` with the encoder chosen by registry name.

    The dataset is ``settings.dataset`` (default: the ``RunSettings`` gin resolves now),
    the same object the launcher hands the dataloaders, so the two cannot disagree.
    """
    settings = settings if settings is not None else run_settings()
    spec = settings.dataset_spec()
    hstu_config = spec.hstu_config(hstu_overrides)
    tables = spec.tables(hstu_config)
    model = UltraDlrmHSTU(
        hstu_configs=hstu_config,
        embedding_tables=tables,
        is_inference=False,
        encoder=encoder,
        encoder_config=encoder_config,
        bf16_training=bf16_training,
        merged_item_action_tokens=merged_item_action_tokens,
        streams=streams,
    )
    n_params = dense_parameter_count(model)
    logger.info("built %s on %s: %d dense parameters", encoder, settings.dataset, n_params)
    return model, hstu_config, tables


def dense_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embedding_collection" not in n)
