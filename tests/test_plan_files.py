"""Saved plans: checked on load, applied with `optimize --plan`, shown with `plan show`; and the
figures `optimize` prints (activation memory like `report`, a gap that is never negative)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from fxenergy.api import optimize
from fxenergy.cli import main
from fxenergy.errors import InvalidPlanError, PlanMismatchError
from fxenergy.plans.files import load_pipeline_plan, load_plan_file
from fxenergy.plans.plan import Plan

DATA = Path(__file__).parent / "data" / "perseus_a100_4stage.csv"


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(512, 2048), nn.GELU(), nn.Linear(2048, 512), nn.LayerNorm(512))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Plan, Path]:
    opt = optimize(_model(), (torch.randn(64, 512),), backend="sim", time_limit_s=5)
    path = tmp_path_factory.mktemp("plans") / "plan.json"
    opt.plan.save(path)
    return opt.plan, path


def _edited(tmp_path: Path, plan_path: Path, edit) -> Path:
    data = json.loads(plan_path.read_text())
    edit(data)
    out = tmp_path / "edited.json"
    out.write_text(json.dumps(data))
    return out


def test_load_checks_clocks_fields_and_gpu(saved, tmp_path: Path) -> None:
    plan, path = saved
    assert Plan.load(path) == plan

    def overclock(d: dict) -> None:
        d["partitions"][0]["clock_mhz"] = 99999

    with pytest.raises(InvalidPlanError, match=r"edited\.json asks for SM clock\(s\) 99999"):
        Plan.load(_edited(tmp_path, path, overclock))
    with pytest.raises(InvalidPlanError, match=r"lacks 'partitions'"):
        Plan.load(_edited(tmp_path, path, lambda d: d.pop("partitions")))
    with pytest.raises(InvalidPlanError, match="unknown GPU"):
        Plan.load(_edited(tmp_path, path, lambda d: d.update(gpu="B9000")))
    truncated = tmp_path / "cut.json"
    truncated.write_text(path.read_text()[:200])
    with pytest.raises(InvalidPlanError, match=r"cut\.json is not valid JSON"):
        Plan.load(truncated)


def test_plan_for_another_gpu_or_graph_is_refused(saved) -> None:
    plan, path = saved
    h100 = dataclasses.replace(plan, gpu="H100-SXM5", partitions=(), nodes=())
    with pytest.raises(PlanMismatchError, match="made for the H100-SXM5"):
        optimize(_model(), (torch.randn(64, 512),), backend="sim", plan=h100)
    with pytest.raises(PlanMismatchError, match="another model, input shape"):
        optimize(_model(), (torch.randn(8, 512),), backend="sim", plan=str(path))


def test_pipeline_plans_load_and_show(tmp_path: Path, capsys) -> None:
    out = tmp_path / "pipe.json"
    rc = main(["pipeline", str(DATA), "--blocked-power-w", "75", "--microbatches", "4",
               "--polish-s", "0.2", "--out", str(out)])  # fmt: skip
    assert rc == 0
    doc = load_plan_file(out)
    assert isinstance(doc, dict) and doc["schedule"] == "1F1B"
    assert load_pipeline_plan(out, gpu="A100-SXM4-80GB") == doc
    with pytest.raises(InvalidPlanError, match="is a pipeline plan"):
        Plan.load(out)
    capsys.readouterr()
    assert main(["plan", "show", str(out)]) == 0
    assert "rank" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**doc, "ranks": [[{"action": "0F0", "freq_mhz": 99999}]]}))
    with pytest.raises(InvalidPlanError, match="99999"):
        load_pipeline_plan(bad, gpu="A100-SXM4-80GB")


def test_optimize_cli_applies_a_saved_plan(tmp_path: Path, capsys) -> None:
    out = tmp_path / "plan.json"
    args = ["optimize", "cnn-small", "--time-limit", "3", "--switch-latency-ms", "0"]
    assert main([*args, "--max-slowdown", "3%", "--out", str(out)]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--plan", str(out), "--run", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == json.loads(Plan.load(out).to_json()) and "simulated" in first
    assert main([*args, "--plan", str(out), "--input-shape", "2,3,64,64"]) == 1
    assert "another model, input shape" in capsys.readouterr().err
    assert main([*args, "--plan", str(out), "--gpu", "H100-SXM5"]) == 1
    assert "made for the A100-SXM4-80GB" in capsys.readouterr().err


def test_optimize_train_plans_the_training_step(capsys) -> None:
    args = ["optimize", "cnn-small", "--time-limit", "3", "--format", "json"]
    assert main(args) == 0
    inference = json.loads(capsys.readouterr().out)
    assert main([*args, "--train"]) == 0
    training = json.loads(capsys.readouterr().out)
    assert training["extra"]["tasks"] > 1.5 * inference["extra"]["tasks"]  # + backward
    assert training["baseline"]["time_s"] > 1.5 * inference["baseline"]["time_s"]


def test_activation_memory_matches_report_and_gap_is_never_negative(saved, capsys) -> None:
    from fxenergy.plans.report import summary_table

    plan, _ = saved
    # a one-window graph whose best plan is one global clock below the max: this printed a
    # negative gap (a bound for plans starting at the max clock, beaten by a switch-free cycle)
    clocks = {p.clock_mhz for p in plan.partitions}
    assert len(clocks) == 1 and max(clocks) < plan.extra["clocks_mhz"][0]
    assert plan.gap is not None and plan.gap >= 0
    assert main(["report", "cnn-small", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert main(["optimize", "cnn-small", "--time-limit", "3", "--format", "json"]) == 0
    opt = json.loads(capsys.readouterr().out)
    act = opt["baseline"]["peak_memory_bytes"] - opt["extra"]["memory_baseline_bytes"]
    assert act == pytest.approx(report["totals"]["peak_memory_bytes"], rel=0.05)
    negative = dataclasses.replace(plan, gap=-0.06)  # a plan saved by an older fxenergy
    assert "gap to bound 0.00%" in str(summary_table(negative).caption)
