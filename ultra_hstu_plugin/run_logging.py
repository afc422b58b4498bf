# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Console for our progress and results; the host libraries' records go to ``host.log``.

A CPU training run through GR prints thousands of lines that are not ours: torchrec's
planner (one ``GreedyPerfPartitioner`` line per proposal, 4096 of them, and a wide stats
table), fbgemm's library loads, TBE settings, deprecation warnings from torch/torchrec,
and GR's ``print`` of a CUDA 12.8 autotune note even without CUDA.  Here:

* records of our loggers (``ultra_hstu_plugin.*``) go to the console at INFO;
* every other record ("host": GR, torchrec, fbgemm, torch, Python warnings, which are
  routed through logging) goes to ``RUN_DIR/host.log`` once the run directory is known
  (:func:`attach_host_log`); records from before that, e.g. at import, are held and
  written first.  Host errors still reach the console.  Commands without a run
  directory (``list``, ``data`` ...) show host log warnings on the console and drop the
  rest; Python warnings (all of them the host's) never reach the console;
* GR's CUDA 12.8 autotune note is dropped from stdout when torch sees no CUDA device
  (it concerns CUDA kernels only) and recorded in ``host.log`` instead.

``TORCH_LOGS`` set by the user keeps torch's own log handlers untouched.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional, TextIO

HOST_LOG = "host.log"
OUR_LOGGERS = ("ultra_hstu_plugin", "__main__")
# Printed by GR's triton_hstu_attention at import when CUDA < 12.8 is not detected, which
# includes "no CUDA at all".
GR_CUDA_AUTOTUNE_NOTE = "WARNING: temporarily disabled some autotune configs for CUDA 12.8+"
_PENDING_CAP = 20000  # records held before the run directory is known

_FORMAT = "%(levelname)s %(name)s: %(message)s"


def is_ours(record: logging.LogRecord) -> bool:
    return record.name.startswith(OUR_LOGGERS)


class _ConsoleFilter(logging.Filter):
    """Ours at any level; host records only from ``host_level`` up."""

    def __init__(self) -> None:
        super().__init__()
        self.host_level = logging.WARNING

    def filter(self, record: logging.LogRecord) -> bool:
        if is_ours(record):
            return True
        if record.name == "py.warnings":
            # Deprecations and TorchScript notes from torch/torchrec/GR, raised while they
            # import or build; nothing a user of the CLI acts on (we raise no warnings).
            return False
        return record.levelno >= self.host_level


class _HostHandler(logging.Handler):
    """Host records: held in memory until a file is attached, then written to it."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.pending: List[logging.LogRecord] = []
        self.file: Optional[logging.FileHandler] = None
        self.collect = False  # hold records (a run whose directory is not known yet)

    def emit(self, record: logging.LogRecord) -> None:
        if is_ours(record):
            return
        if self.file is not None:
            self.file.handle(record)
        elif self.collect and len(self.pending) < _PENDING_CAP:
            self.pending.append(record)

    def attach(self, path: Path) -> None:
        self.file = logging.FileHandler(path, mode="w", encoding="utf-8")
        self.file.setFormatter(logging.Formatter("%(asctime)s " + _FORMAT))
        for record in self.pending:
            self.file.handle(record)
        self.pending = []

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        super().close()


class _DropLines(io.TextIOBase):
    """A text stream that passes everything through except whole lines in ``drop``.

    ``print`` writes a line and its newline in two calls, so text that could still become
    a dropped line is held until the newline (or until it cannot match any more).
    """

    def __init__(self, stream: TextIO, drop: List[str], to: logging.Logger) -> None:
        self._stream = stream
        self._drop = drop
        self._to = to
        self._held = ""

    def write(self, text: str) -> int:
        self._held += text
        out = []
        while "\n" in self._held:
            line, self._held = self._held.split("\n", 1)
            if line in self._drop:
                self._to.info("%s (printed by GR; dropped from the console: no CUDA here)", line)
            else:
                out.append(line + "\n")
        if self._held and not any(d.startswith(self._held) for d in self._drop):
            out.append(self._held)
            self._held = ""
        if out:
            self._stream.write("".join(out))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str):  # fileno, isatty, encoding, buffer ...
        return getattr(self._stream, name)


class _State:
    console: Optional[logging.Handler] = None
    console_filter: Optional[_ConsoleFilter] = None
    host: Optional[_HostHandler] = None
    stdout: Optional[TextIO] = None  # the stream _DropLines replaced


_state = _State()


def configure(collect_host: bool = False) -> None:
    """Console + host routing for this process (idempotent).

    ``collect_host``: this process will know a run directory (``ultra-hstu train``), so
    hold host records for ``host.log`` instead of showing host warnings on the console.
    """
    root = logging.getLogger()
    if _state.host is None:
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter(_FORMAT))
        _state.console_filter = _ConsoleFilter()
        console.addFilter(_state.console_filter)
        _state.console = console
        _state.host = _HostHandler()
        root.addHandler(console)
        root.addHandler(_state.host)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)  # warnings.warn -> logger "py.warnings" (host)
        _route_torch_logs()
        _drop_gr_cuda_note_without_cuda()
    if collect_host:
        _state.host.collect = True
        _state.console_filter.host_level = logging.ERROR


def _route_torch_logs() -> None:
    # torch gives its "torch" logger its own stderr handler and propagate=False, so its
    # records would bypass the routing; hand them to the root handlers instead.
    if os.environ.get("TORCH_LOGS"):
        return
    import torch  # noqa: F401 - installs torch's handlers, which are replaced next

    log = logging.getLogger("torch")
    for handler in list(log.handlers):
        log.removeHandler(handler)
    log.propagate = True


def _drop_gr_cuda_note_without_cuda() -> None:
    import torch

    if torch.cuda.is_available() or isinstance(sys.stdout, _DropLines):
        return
    _state.stdout = sys.stdout
    sys.stdout = _DropLines(sys.stdout, [GR_CUDA_AUTOTUNE_NOTE], logging.getLogger("gr.stdout"))


def attach_host_log(run_dir: os.PathLike, rank: int = 0) -> Path:
    """Write host records (held ones first) to ``run_dir/host.log`` (rank > 0: ``host.rankN.log``).

    Rank 0 says where on the console, once.
    """
    configure(collect_host=True)
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / (HOST_LOG if rank == 0 else f"host.rank{rank}.log")
    _state.host.attach(path)
    if rank == 0:
        logging.getLogger(__name__).info("torchrec/fbgemm/GR/torch logs: %s", path)
    return path


def reset() -> None:
    """Undo :func:`configure` (in-process callers such as tests run ``main`` repeatedly)."""
    root = logging.getLogger()
    for handler in (_state.console, _state.host):
        if handler is not None:
            root.removeHandler(handler)
            handler.close()
    if _state.stdout is not None and isinstance(sys.stdout, _DropLines):
        sys.stdout = _state.stdout
    logging.captureWarnings(False)
    _state.console = _state.console_filter = _state.host = _state.stdout = None


__all__ = ["GR_CUDA_AUTOTUNE_NOTE", "HOST_LOG", "attach_host_log", "configure", "reset"]
