# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Entry point of a spawned training worker, in a module that imports nothing heavy.

A spawned process imports the module of its target function before calling it; were
that the launcher, GR, torchrec and fbgemm would be imported (and would print and warn)
before this process's logging is set up.  Here logging comes first, then the launcher.
"""

from __future__ import annotations

from ultra_hstu_plugin import run_logging
from ultra_hstu_plugin.config import ConfigSource


def spawned_worker(rank: int, world_size: int, port: int, source: ConfigSource) -> None:
    run_logging.configure(collect_host=True)
    from ultra_hstu_plugin.train.launcher import _worker

    _worker(rank, world_size, port, source)
