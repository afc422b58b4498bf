# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""benchmarks/triton_autotune_cache.py: only autotuning results travel, and come back intact."""

import importlib.util
import io
import tarfile
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "triton_autotune_cache",
    Path(__file__).resolve().parents[1] / "benchmarks" / "triton_autotune_cache.py",
)
tac = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tac)


def _fake_cache(root: Path) -> None:
    (root / "aa11").mkdir(parents=True)
    (root / "aa11" / "_hstu_attn_fwd.autotune.json").write_text(
        '{"key": [1], "configs_timings": []}'
    )
    (root / "aa11" / "_hstu_attn_fwd.cubin").write_bytes(b"\x00binary")
    (root / "bb22").mkdir()
    (root / "bb22" / "_sla_fwd.autotune.json").write_text('{"key": [2], "configs_timings": []}')


def test_pack_keeps_only_autotune_results_and_unpack_restores_them(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _fake_cache(src)
    archive = tmp_path / "tuned.tgz"
    assert tac.pack(src, archive) == 2
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == [
            "aa11/_hstu_attn_fwd.autotune.json",
            "bb22/_sla_fwd.autotune.json",
        ]
    assert tac.unpack(archive, dst) == 2
    assert tac.autotune_files(dst) == tac.autotune_files(src)
    for rel in tac.autotune_files(src):
        assert (dst / rel).read_text() == (src / rel).read_text()
    assert not (dst / "aa11" / "_hstu_attn_fwd.cubin").exists()


def test_unpack_rejects_other_members(tmp_path):
    archive = tmp_path / "bad.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"x"
        info = tarfile.TarInfo("../escape.autotune.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="unexpected member '../escape.autotune.json'"):
        tac.unpack(archive, tmp_path / "dst")
    assert not (tmp_path / "escape.autotune.json").exists()
