# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""``ultra-hstu bench scaling`` end to end on CPU at toy sizes (``--smoke``): every config
and length measured, FLOP ratios from the FLOP model, rejected / out-of-memory / time-budget
rows recorded with their reasons, and ``--report-only`` re-rendering (and merging) runs."""

import json

import pytest
import torch

from ultra_hstu_plugin.bench import encoder_flops as ef
from ultra_hstu_plugin.bench import scaling

LENGTHS = (64, 128)
REJECTED = ("ultra_sla6_trunc12_L2048", 64)  # --smoke scales its L' to 64: L' >= L


def _measurements(out_dir, stem="scaling"):
    data = json.loads((out_dir / f"{stem}.json").read_text())
    return data, {(r["config"], r["L"], r["batch_kind"]): r for r in data["rows"]}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling")
    assert scaling.main(["--smoke", "--out", str(out)]) == 0
    return out


def test_every_config_and_length_has_a_row_with_positive_times(smoke):
    data, rows = _measurements(smoke)
    for name in scaling.CONFIGS:
        for L in LENGTHS:
            for kind in scaling.BATCH_KINDS:
                r = rows[(name, L, kind)]
                if (name, L) == REJECTED:
                    continue
                assert r["status"] == "ok", r
                assert r["B"] == (1 if kind == "single" else 256 // L)
                assert r["inference_ms"] > 0 and r["inference_warmup_s"] >= 0
                if kind == "batch":
                    assert r["train_ms"] > 0 and r["train_warmup_s"] >= 0
                    assert r["train_tflops"] == pytest.approx(
                        3 * r["fwd_flops"] / (r["train_ms"] * 1e-3) / 1e12
                    )
                else:
                    assert "train_ms" not in r
    assert data["meta"][0]["device_kind"] == "cpu"
    assert (smoke / "scaling.jsonl").is_file()
    assert {p.name for p in smoke.glob("*.png")} == {"scaling_time.png", "scaling_flops.png"}


def test_flop_ratios_are_the_flop_models(smoke):
    _, rows = _measurements(smoke)
    dims = ef.LayerDims(embedding_dim=32, num_heads=2, hidden_dim=16, attention_dim=16)
    gr = ef.StackShape(num_full_layers=10)
    shapes = {
        "ultra_sla18": ef.StackShape(18, k1=16, k2=4),
        "ultra_sla3_trunc15_L1024": ef.StackShape(3, 16, 4, 15, truncated_seq_len=32),
        "ultra_sla3_trunc15_L1024_fp8": ef.StackShape(3, 16, 4, 15, truncated_seq_len=32),
        "ultra_sla6_trunc12_L2048": ef.StackShape(6, 16, 4, 12, truncated_seq_len=64),
    }
    for (name, L, kind), r in rows.items():
        if r["status"].startswith("rejected"):
            continue
        B = r["B"]
        want = ef.encoder_flops(shapes.get(name, gr), L, B, dims, num_targets=4)["total"]
        gr_flops = ef.encoder_flops(gr, L, B, dims, num_targets=4)["total"]
        assert r["fwd_flops"] == want
        assert r["flop_ratio_vs_gr"] == pytest.approx(gr_flops / want)
        g = rows[("gr_hstu", L, kind)]
        assert r["ratio_basis"] == "same run"
        assert r["inference_speedup_vs_gr"] == pytest.approx(g["inference_ms"] / r["inference_ms"])
        assert r["inference_wall_per_flop"] == pytest.approx(
            r["inference_speedup_vs_gr"] / r["flop_ratio_vs_gr"]
        )
    # the truncated configs do fewer FLOPs than GR once L outgrows L' + candidates
    assert rows[("ultra_sla3_trunc15_L1024", 128, "batch")]["flop_ratio_vs_gr"] > 1.5


def test_rejected_combination_is_listed_with_its_reason(smoke):
    _, rows = _measurements(smoke)
    for kind in scaling.BATCH_KINDS:
        r = rows[(*REJECTED, kind)]
        assert r["status"].startswith("rejected: ")
        assert "truncated_seq_len=64 must be below max_seq_len=64" in r["status"]
        assert "train_ms" not in r and "inference_ms" not in r
    md = (smoke / "scaling.md").read_text()
    assert "| ultra_sla6_trunc12_L2048 | 64 | batch | rejected: ULTRA-HSTU encoder:" in md


def test_targets_are_evaluated_from_the_same_run(smoke):
    data, rows = _measurements(smoke)
    checks = {t["target"]: t for t in data["targets"]}
    best_train = checks[
        "best ULTRA train step >= 3x faster than gr_hstu (each side's faster of eager and graphs)"
    ]
    speedups = [
        r["best_train_speedup_vs_gr"]
        for (name, L, kind), r in rows.items()
        if L == 128 and kind == "batch" and name != "gr_hstu" and "train_speedup_vs_gr" in r
    ]
    # on CPU no graphs are measured: the faster of the two is the eager step
    assert speedups == [
        r["train_speedup_vs_gr"]
        for (name, L, kind), r in rows.items()
        if L == 128 and kind == "batch" and name != "gr_hstu" and "train_speedup_vs_gr" in r
    ]
    assert best_train["value"] == max(speedups) and best_train["met"] == (max(speedups) >= 3)
    assert best_train["basis"] == "same run"
    single = checks["best ULTRA B=1 inference <= 10 ms"]
    assert single["met"] is (single["value"] <= 10)
    wall = [t for t in data["targets"] if "wall-clock ratio" in t["target"]]
    assert len(wall) == 2 * 4 and all(t["met"] is not None for t in wall)
    md = (smoke / "scaling.md").read_text()
    assert "## Targets (L = 128)" in md and "every measurement started" in md


def test_report_only_reproduces_the_markdown(smoke, tmp_path):
    args = ["--report-only", str(smoke / "scaling.jsonl"), "--out", str(tmp_path)]
    assert scaling.main([*args, "--target-length", "128"]) == 0
    assert (tmp_path / "scaling.md").read_text() == (smoke / "scaling.md").read_text()
    assert (tmp_path / "scaling_time.png").is_file()


def test_report_only_merges_runs(smoke, tmp_path):
    """A second run measures one config without gr_hstu: merged, its ratios come from the
    first run's gr_hstu (same device) and say so."""
    part = tmp_path / "part"
    argv = ["--smoke", "--out", str(part), "--tag", "_part", "--configs", "ultra_sla18"]
    assert scaling.main([*argv, "--lengths", "64", "--batch-kinds", "single"]) == 0
    _, alone = _measurements(part, "scaling_part")
    assert "inference_speedup_vs_gr" not in alone[("ultra_sla18", 64, "single")]
    files = [str(smoke / "scaling.jsonl"), str(part / "scaling_part.jsonl")]
    assert scaling.main(["--report-only", *files, "--out", str(tmp_path), "--smoke"]) == 0
    data, rows = _measurements(tmp_path)
    assert len(data["meta"]) == 2
    merged = rows[("ultra_sla18", 64, "single")]
    assert merged["run_id"] == alone[("ultra_sla18", 64, "single")]["run_id"]
    assert merged["ratio_basis"].startswith("other run")
    assert merged["inference_speedup_vs_gr"] > 0
    assert rows[("ultra_sla18", 128, "batch")]["ratio_basis"] == "same run"


def test_out_of_memory_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    real = scaling.build_encoder

    def build(cfg, *a, **kw):
        if cfg.name == "ultra_sla18":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(cfg, *a, **kw)

    monkeypatch.setattr(scaling, "build_encoder", build)
    argv = ["--smoke", "--out", str(tmp_path), "--lengths", "64", "--batch-kinds", "single"]
    assert (
        scaling.main([*argv, "--configs", "gr_hstu", "ultra_sla18", "ultra_sla3_trunc15_L1024"])
        == 0
    )
    _, rows = _measurements(tmp_path)
    assert rows[("ultra_sla18", 64, "single")]["status"] == "out of memory at L=64"
    assert rows[("ultra_sla3_trunc15_L1024", 64, "single")]["status"] == "ok"
    assert "out of memory at L=64" in (tmp_path / "scaling.md").read_text()


def test_time_budget_stops_new_measurements(tmp_path):
    argv = ["--smoke", "--out", str(tmp_path), "--configs", "gr_hstu", "--time-budget", "1e-9"]
    assert scaling.main(argv) == 0
    data, rows = _measurements(tmp_path)
    assert {r["status"] for r in rows.values()} == {"skipped: time budget"}
    assert data["end"][0]["budget_reached"] and data["end"][0]["not_started"] == 2 * 3
    assert (
        "time budget of 1e-09 s reached; 6 measurements not started"
        in (tmp_path / "scaling.md").read_text()
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_no_gpu_exits_2_with_a_message(tmp_path, capsys):
    assert scaling.main(["--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is visible" in err and "Traceback" not in err
    # the default (auto) refuses the full grid on CPU rather than running it for hours
    assert scaling.main(["--out", str(tmp_path)]) == 2
    assert "--smoke" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_bad_options_are_usage_errors(tmp_path):
    for argv in (["--executor", "graphs"], ["--configs", "nope"], ["--tokens", "0"]):
        with pytest.raises(SystemExit) as e:
            scaling.main([*argv, "--out", str(tmp_path)])
        assert e.value.code == 2
    assert scaling.main(["--report-only", str(tmp_path / "missing.jsonl")]) == 2


def test_make_step_is_the_one_executor_seam():
    with pytest.raises(ValueError, match="unknown executor 'compiled'"):
        scaling.make_step(torch.nn.Identity(), None, "train", executor="compiled")
    # the graphed train step is built on the first call, and needs CUDA tensors
    inputs = scaling.EncoderInputs(
        x=torch.randn(4, 8),
        lengths=torch.tensor([4]),
        offsets=torch.tensor([0, 4]),
        max_seq_len=4,
        num_targets=torch.tensor([1]),
        grad=torch.randn(4, 8),
    )
    step = scaling.make_step(torch.nn.Linear(8, 8), inputs, "train", executor="graphs")
    with pytest.raises(ValueError, match="GraphedTrainStep needs CUDA tensors"):
        step()
