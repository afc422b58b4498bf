# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""ULTRA-HSTU in GR's research (retrieval) stack.

``import ultra_hstu_plugin.retrieval.gin`` (from a gin file, or in Python) makes
``train_fn.main_module = "ULTRA-HSTU"`` and our datasets' ``train_fn.dataset_name`` work in
GR's own ``train_fn``; ``ultra-hstu retrieval-train`` runs that training on CPU or GPU.

encoder.py   GR's research HSTU with SLA attention and truncation (UltraResearchHSTU)
datasets.py  our converted datasets as GR's RecoDataset (GR's DatasetV2 reads them)
trainer.py   GR's train_fn steps with the device / process-group glue (gloo on CPU)
baseline.py  the popularity baseline on the same leave-one-out split
gin.py       the gin import: registrations and the seam into train_fn
"""
