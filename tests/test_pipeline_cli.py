"""The ``fxenergy pipeline`` command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fxenergy.cli import main

DATA = Path(__file__).parent / "data" / "perseus_a100_4stage.csv"


def test_cli_plan_frontier_and_json(tmp_path, capsys):
    frontier, plan = tmp_path / "frontier.csv", tmp_path / "plan.json"
    argv = [
        "pipeline", str(DATA), "--microbatches", "6", "--schedule", "1F1B",
        "--blocked-power-w", "85", "--max-slowdown", "0.01", "--polish-s", "0",
        "--frontier-points", "8", "--frontier-out", str(frontier), "--out", str(plan),
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "saved" in out and "critical path" in out
    rows = list(csv.DictReader(frontier.open()))
    assert list(rows[0]) == ["time", "energy"]
    times = [float(r["time"]) for r in rows]
    assert times == sorted(times) and len(rows) >= 2
    doc = json.loads(plan.read_text())
    assert doc["iteration_time_s"] <= doc["deadline_s"] * (1 + 1e-12)
    assert doc["energy_j"] < doc["baseline_energy_j"]
    assert len(doc["ranks"]) == 4 and len(doc["ranks"][0]) == 12
    assert min(a["slack_s"] for r in doc["ranks"] for a in r) == pytest.approx(0, abs=1e-9)
    assert doc["critical_path"][0] == "0F0" and doc["critical_path"][-1] == "0B5"


def test_cli_interleaved_on_two_ranks(capsys):
    argv = [
        "pipeline", str(DATA), "--schedule", "interleaved", "--ranks", "2",
        "--microbatches", "4", "--blocked-power-w", "83.64", "--polish-s", "0",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "Interleaved1F1B plan: 4 stages x 4 microbatches" in capsys.readouterr().out


def test_cli_errors_are_reported(capsys):
    assert main(["pipeline", str(DATA), "--blocked-power-w", "85", "--microbatches", "2"]) == 1
    assert "at least as many microbatches" in capsys.readouterr().err
