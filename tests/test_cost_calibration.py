# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""The LBSL cost calibration recovers known constants from synthetic benchmark rows."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ultra_hstu_plugin.sampling import calibration
from ultra_hstu_plugin.sampling.cost import AttentionCostModel

SHAPES = [  # (config, N1, N2, L', k1, k2)
    ("ultra_sla18", 18, 0, 0, 1024, 128),
    ("ultra_sla6_trunc12_L2048", 6, 12, 2048, 1024, 128),
    ("ultra_sla3_trunc15_L1024", 3, 15, 1024, 1024, 128),
]


def _rows(quadratic, linear, overhead, noise=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for name, n1, n2, lp, k1, k2 in SHAPES:
        for L in (2048, 4096, 8192, 16384):
            if n2 and lp >= L:
                continue
            row = {"kind": "measurement", "config": name, "batch_kind": "batch", "fp8": False,
                   "L": L, "B": 65536 // L, "num_full_layers": n1, "num_truncated_layers": n2,
                   "lprime": lp, "num_targets": 64, "k1": k1, "k2": k2}  # fmt: skip
            model = calibration._shape_model(row, quadratic, linear)
            ms = row["B"] * float(model(torch.tensor([L]))[0]) + overhead
            row["train_ms"] = ms * (1 + noise * float(torch.randn(1, generator=g)))
            rows.append(row)
    return rows


@settings(max_examples=20, deadline=None)
@given(
    quadratic=st.floats(1e-10, 1e-8),
    linear=st.floats(1e-6, 1e-4),
    overhead=st.floats(0.0, 5.0),
)
def test_fit_recovers_the_constants(quadratic, linear, overhead):
    got = calibration.fit(_rows(quadratic, linear, overhead), "train")
    assert got["quadratic_ms"] == pytest.approx(quadratic, rel=1e-6)
    assert got["linear_ms"] == pytest.approx(linear, rel=1e-6)
    assert got["r2"] > 0.999999 and got["points"] == 11


def test_noisy_rows_still_fit_and_report_their_residuals():
    # With B x L fixed the pair term is only weakly identified (the SLA layers' pairs grow
    # like the tokens): what LBSL needs, the cost of one sequence as a function of its
    # length, is what must come back; the split between the two constants may move.
    got = calibration.fit(_rows(1e-9, 2e-5, 1.0, noise=0.005), "train")
    assert 0.0 < got["max_rel_residual"] < 0.05
    row = {"num_full_layers": 3, "num_truncated_layers": 15, "lprime": 1024, "num_targets": 64,
           "k1": 1024, "k2": 128}  # fmt: skip
    true = calibration._shape_model(row, 1e-9, 2e-5)
    fitted = calibration._shape_model(row, got["quadratic_ms"], got["linear_ms"])
    lengths = torch.tensor([512, 2048, 8192, 16384])
    torch.testing.assert_close(fitted(lengths), true(lengths), rtol=0.05, atol=0)


def test_too_few_rows_and_inseparable_terms_are_errors():
    with pytest.raises(ValueError, match="at least 4"):
        calibration.fit(_rows(1e-9, 2e-5, 1.0)[:3], "train")
    with pytest.raises(ValueError, match="non-positive"):  # time falls as tokens grow
        calibration.fit(_rows(1e-9, -2e-5, 50.0), "train")


def test_main_writes_json_and_markdown(tmp_path):
    src = tmp_path / "scaling.json"
    src.write_text(json.dumps({"rows": _rows(1e-9, 2e-5, 1.0)}))
    assert calibration.main([str(src), "--mode", "train", "--out", str(tmp_path / "cal")]) == 0
    data = json.loads((tmp_path / "cal.json").read_text())
    assert data["linear_ms"] == pytest.approx(2e-5, rel=1e-6)
    assert "R^2" in (tmp_path / "cal.md").read_text()
    model = calibration.calibrated(AttentionCostModel(), str(tmp_path / "cal.json"))
    assert (model.quadratic, model.linear) == (data["quadratic_ms"], data["linear_ms"])
