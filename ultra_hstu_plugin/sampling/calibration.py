# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""Calibrate the LBSL cost model's constants from measured encoder step times.

The cost model (:mod:`.cost`) says a sequence costs ``quadratic * pairs + linear * tokens``
per layer.  ``ultra-hstu bench scaling`` measures whole ULTRA-HSTU encoders' train steps at
several lengths with B x L fixed, so each measured step is, under the model,

    step_ms = B * (quadratic * P(L) + linear * N(L)) + overhead

with ``P`` and ``N`` the model's attention pairs and layer-tokens of one length-L sequence for
that encoder (N1 SLA layers + N2 truncated layers on L').  Least squares over every measured
ULTRA-HSTU configuration and length gives ``quadratic`` and ``linear`` in ms (and a per-step
``overhead``, which LBSL ignores: it does not depend on the kept lengths).  What LBSL uses is
their ratio, so the fit's quality is reported with it (R^2 and the worst relative residual).

    python -m ultra_hstu_plugin.sampling.calibration benchmarks/results/scaling_h200.json \
        --out benchmarks/results/lbsl_cost_calibration_h200

The default ``--mode`` is ``inference_graphs``, the GPU time of the forward: it is what
grows with the kept lengths.  On the H200 the truncated stacks' train steps are host-bound
(launch-bound time does not depend on the lengths), and a fit to them gives a negative
per-token cost, which :func:`fit` refuses.  Backward costs about twice the forward for both
terms, so the forward's ratio is the train step's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ultra_hstu_plugin.sampling.cost import AttentionCostModel


def _shape_model(row: dict, quadratic: float, linear: float) -> AttentionCostModel:
    """The cost model of the encoder a scaling row measured (the window as the training path
    builds it, ``train.sampled_loader.encoder_cost_model``: k1 + 1 local keys, k2 global)."""
    k1, k2 = int(row["k1"]), int(row["k2"])
    sla = {"attention": "sla", "sla_local": k1 + 1, "sla_global": k2} if k1 > 0 else {}
    n_upper = int(row["num_truncated_layers"])
    return AttentionCostModel(
        quadratic=quadratic,
        linear=linear,
        n_lower=int(row["num_full_layers"]),
        n_upper=n_upper,
        truncate_to=int(row["lprime"]) + int(row["num_targets"]) if n_upper else None,
        **sla,
    )


def fit(rows: List[dict], mode: str = "train") -> Dict[str, float]:
    """Least-squares ``quadratic``, ``linear`` (ms) and ``overhead`` (ms a step) over the
    measured ULTRA-HSTU rows (``config`` starting "ultra_", bf16 layers, batch kind "batch")."""
    use = [
        r
        for r in rows
        if r.get("kind") == "measurement"
        and str(r.get("config", "")).startswith("ultra_")
        and not r.get("fp8")
        and r.get("batch_kind") == "batch"
        and r.get(f"{mode}_ms")
    ]
    if len(use) < 4:
        raise ValueError(
            f"calibration needs at least 4 measured ULTRA-HSTU {mode} rows, got {len(use)}"
        )
    design, target = [], []
    for r in use:
        length = torch.tensor([int(r["L"])])
        pairs = float(_shape_model(r, 1.0, 0.0)(length)[0])
        tokens = float(_shape_model(r, 0.0, 1.0)(length)[0])
        design.append([r["B"] * pairs, r["B"] * tokens, 1.0])
        target.append(float(r[f"{mode}_ms"]))
    a = torch.tensor(design, dtype=torch.float64)
    y = torch.tensor(target, dtype=torch.float64)
    solution = torch.linalg.lstsq(a, y.unsqueeze(1)).solution.squeeze(1)
    predicted = a @ solution
    ss_res = float(((y - predicted) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    quadratic, linear, overhead = (float(v) for v in solution)
    if quadratic <= 0 or linear <= 0:
        raise ValueError(
            f"calibration gave non-positive constants (quadratic={quadratic:.3g}, "
            f"linear={linear:.3g}): the rows do not separate the two terms"
        )
    return {
        "quadratic_ms": quadratic,
        "linear_ms": linear,
        "overhead_ms": overhead,
        "linear_over_quadratic": linear / quadratic,
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0,
        "max_rel_residual": float(((y - predicted).abs() / y).max()),
        "points": len(use),
        "rows": [
            {"config": r["config"], "L": r["L"], "B": r["B"], "measured_ms": m, "fit_ms": p}
            for r, m, p in zip(use, target, predicted.tolist())
        ],
    }


def calibrated(model: AttentionCostModel, path: str) -> AttentionCostModel:
    """``model`` with the per-pair and per-token costs of the calibration json at ``path``."""
    try:
        data = json.loads(Path(path).read_text())
        quadratic, linear = float(data["quadratic_ms"]), float(data["linear_ms"])
    except FileNotFoundError as e:
        raise FileNotFoundError(f"SamplerSettings.cost_calibration: no file {path}") from e
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"SamplerSettings.cost_calibration={path}: not a calibration json (needs "
            f"quadratic_ms and linear_ms; made by python -m ultra_hstu_plugin.sampling."
            f"calibration): {e}"
        ) from e
    if quadratic <= 0 or linear <= 0:
        raise ValueError(
            f"SamplerSettings.cost_calibration={path}: costs must be > 0, got "
            f"quadratic_ms={quadratic}, linear_ms={linear}"
        )
    return dataclasses.replace(model, quadratic=quadratic, linear=linear)


def load_rows(path: Path) -> List[dict]:
    """Rows of a scaling ``.json`` (its ``rows``) or ``.jsonl`` (one row a line)."""
    text = Path(path).read_text()
    if str(path).endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)["rows"]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scaling", type=Path, help="scaling<tag>.json or .jsonl")
    p.add_argument(
        "--mode", default="inference_graphs", choices=["train", "inference", "inference_graphs"]
    )
    p.add_argument("--out", type=Path, required=True, help="output stem (.json and .md)")
    args = p.parse_args(argv)
    result = fit(load_rows(args.scaling), args.mode)
    result["source"] = str(args.scaling)
    result["command"] = "python -m ultra_hstu_plugin.sampling.calibration " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [
        f"# LBSL cost model calibrated from `{args.scaling}` ({args.mode} steps)",
        "",
        f"Command: `{result['command']}`",
        "",
        f"quadratic = {result['quadratic_ms']:.4g} ms a (query, key) pair and layer; linear = "
        f"{result['linear_ms']:.4g} ms a token and layer; per-step overhead "
        f"{result['overhead_ms']:.3g} ms.  linear / quadratic = "
        f"{result['linear_over_quadratic']:.4g} (analytic FLOPs at D = 512 give "
        f"{AttentionCostModel.from_flops(512, 1).linear / AttentionCostModel.from_flops(512, 1).quadratic:.4g}).",
        f"Fit over {result['points']} points: R^2 = {result['r2']:.4f}, worst relative residual "
        f"{result['max_rel_residual']:.1%}.",
        "",
        "Why this mode: the cost LBSL balances is the GPU work that grows with kept lengths; "
        "graphed inference measures it without the host gaps that dominate the truncated "
        "stacks' eager steps (a fit to train steps gives a negative per-token cost).",
        "",
        "| config | L | B | measured ms | fit ms |",
        "|---|---|---|---|---|",
        *[
            f"| {r['config']} | {r['L']} | {r['B']} | {r['measured_ms']:.2f} | {r['fit_ms']:.2f} |"
            for r in result["rows"]
        ],
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
