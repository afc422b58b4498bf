# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Console vs host.log routing (no GR needed: host loggers are stood in by name)."""

import io
import logging
import warnings

import pytest

from ultra_hstu_plugin import run_logging


@pytest.fixture
def routed():
    run_logging.configure(collect_host=True)
    console = io.StringIO()
    run_logging._state.console.setStream(console)
    yield console
    run_logging.reset()


def test_host_records_wait_for_the_run_folder_then_go_to_host_log(routed, tmp_path):
    logging.getLogger("torchrec.distributed.planner.partitioners").info("GreedyPerfPartitioner x")
    logging.getLogger("ultra_hstu_plugin.model").info("built it")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("host deprecation", FutureWarning, stacklevel=1)
    path = run_logging.attach_host_log(tmp_path)
    logging.getLogger("generative_recommenders.dlrm_v3").warning("Setting epoch to 0")
    logging.getLogger("torchrec").error("a real failure")
    console = routed.getvalue()
    assert "built it" in console and f"logs: {path}" in console
    assert "GreedyPerfPartitioner" not in console and "Setting epoch" not in console
    assert "host deprecation" not in console
    assert "a real failure" in console  # host errors still reach the user
    run_logging._state.host.file.flush()
    text = path.read_text()
    for expected in ("GreedyPerfPartitioner x", "host deprecation", "Setting epoch", "failure"):
        assert expected in text
    assert "built it" not in text


def test_commands_without_a_run_folder_show_host_warnings_only():
    run_logging.configure(collect_host=False)
    console = io.StringIO()
    run_logging._state.console.setStream(console)
    try:
        logging.getLogger("torchrec").info("chatter")
        logging.getLogger("torchrec").warning("heads up")
        logging.getLogger("ultra_hstu_plugin.data").info("wrote rows")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("TorchScript will treat", UserWarning, stacklevel=1)
    finally:
        run_logging.reset()
    assert console.getvalue().splitlines() == [
        "WARNING torchrec: heads up",
        "INFO ultra_hstu_plugin.data: wrote rows",
    ]


def test_only_the_whole_gr_cuda_note_is_dropped_from_stdout(caplog):
    out = io.StringIO()
    stream = run_logging._DropLines(
        out, [run_logging.GR_CUDA_AUTOTUNE_NOTE], logging.getLogger("gr.stdout")
    )
    with caplog.at_level(logging.INFO, logger="gr.stdout"):
        # print() writes the text and its newline separately
        for piece in (
            "WARNING: temporarily",
            " disabled some autotune configs for CUDA 12.8+",
            "\n",
        ):
            stream.write(piece)
        stream.write("WARNING: something else\n")
        stream.write("progress 1/3")
    assert out.getvalue() == "WARNING: something else\nprogress 1/3"
    assert any("CUDA 12.8" in r.getMessage() for r in caplog.records)
