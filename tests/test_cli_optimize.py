"""`fxenergy optimize` and `fxenergy frontier` on a built-in model (simulated GPU)."""

from __future__ import annotations

import json

import pytest

from fxenergy.cli import main
from fxenergy.plans.plan import Plan


def test_optimize_writes_a_loadable_plan(tmp_path, capsys) -> None:
    out = tmp_path / "plan.json"
    rc = main(
        [
            "optimize",
            "cnn-small",
            "--max-slowdown",
            "0.02",
            "--switch-latency-ms",
            "0",
            "--time-limit",
            "3",
            "--out",
            str(out),
            "--run",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "simulated" in text and "partitions" in text
    plan = Plan.load(out)
    assert plan.gpu == "A100-SXM4-80GB" and plan.predicted.time_s <= plan.baseline.time_s * 1.02


def test_optimize_unknown_gpu_lists_known(capsys) -> None:
    assert main(["optimize", "gpt-tiny", "--gpu", "A1000"]) == 1
    err = capsys.readouterr().err
    assert "unknown GPU" in err and "H100-SXM5" in err


def test_frontier_json_and_plot(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "f.json", tmp_path / "f.png"
    rc = main(
        [
            "frontier",
            "cnn-small",
            "--slowdowns",
            "0,0.05",
            "--switch-latency-ms",
            "0",
            "--time-limit",
            "3",
            "--out",
            str(out),
            "--plot",
            str(png),
        ]
    )
    assert rc == 0 and png.stat().st_size > 1000
    data = json.loads(out.read_text())
    points = data["points"]
    assert data["simulated"] and [p["max_slowdown"] for p in points] == [0.0, 0.05]
    assert points[1]["energy_j"] <= points[0]["energy_j"]
    assert points[1]["slowdown"] <= 0.05 + 1e-6
