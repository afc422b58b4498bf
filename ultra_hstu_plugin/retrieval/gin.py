# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The gin import for GR's research trainer: ``import ultra_hstu_plugin.retrieval.gin``.

After it, a gin file for GR's ``main.py`` (or ``ultra-hstu retrieval-train``) can say
``train_fn.main_module = "ULTRA-HSTU"`` and name our datasets in ``train_fn.dataset_name``,
and bind ``ultra_hstu.UltraHSTUEncoderConfig.*`` (SLA window/prefix, truncation),
``ultra_hstu.ultra_hstu_encoder.backend`` and ``ultra_hstu.RetrievalData.data_dir``.

The seam (no GR file is edited): GR's ``train_fn`` calls ``get_sequential_encoder`` and
``get_reco_dataset`` by their names in its module; :func:`install_research_hooks` puts
wrappers there that build ULTRA-HSTU and our datasets and hand every other name to GR's
originals.  Needs GR's research stack only (not torchrec).
"""

from __future__ import annotations

from ultra_hstu_plugin import encoder_gin  # noqa: F401 - ultra_hstu.UltraHSTUEncoderConfig
from ultra_hstu_plugin.host import install_research_hooks
from ultra_hstu_plugin.retrieval import trainer  # noqa: F401 - ultra_hstu.RetrievalRun
from ultra_hstu_plugin.retrieval.datasets import dataset_loaders
from ultra_hstu_plugin.retrieval.encoder import MAIN_MODULE, ultra_hstu_encoder

install_research_hooks(encoders={MAIN_MODULE: ultra_hstu_encoder}, datasets=dataset_loaders())
