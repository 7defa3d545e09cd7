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


def test_frontier_of_a_model_with_graph_breaks(tmp_path, capsys) -> None:
    """One-graph capture fails (a data-dependent branch): the frontier re-plans the cycle of
    graphs one call runs at every budget instead of failing (issue 15)."""
    file = tmp_path / "branchy.py"
    file.write_text(
        "import torch\n"
        "class Branchy(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a, self.b = torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)\n"
        "    def forward(self, x):\n"
        "        h = torch.relu(self.a(x))\n"
        "        if h.sum() > 0:\n"
        "            h = h * 2\n"
        "        return self.b(h)\n"
    )
    out = tmp_path / "f.json"
    argv = ["frontier", f"{file}:Branchy", "--input-shape", "32,64", "--slowdowns", "0,2%,10%",
            "--time-limit", "3", "--out", str(out), "--plot", str(tmp_path / "f.png")]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "graph break" in text.lower() or "graphs" in text
    points = json.loads(out.read_text())["points"]
    assert [p["max_slowdown"] for p in points] == [0.0, 0.02, 0.1]
    energies = [p["energy_j"] for p in points]
    assert energies == sorted(energies, reverse=True) and energies[0] > 0
    for p in points:
        assert p["slowdown"] <= p["max_slowdown"] + 1e-9
