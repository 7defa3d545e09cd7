"""Clock splits: a computation run partly at a second clock makes the LP optimum a real plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fxenergy.cli import main
from fxenergy.hardware.profiles import read_profile
from fxenergy.pipeline.costs import ClockSplit
from fxenergy.pipeline.dag import StageCosts, build_dag, evaluate_pipeline
from fxenergy.pipeline.orders import SCHEDULES
from fxenergy.pipeline.switch_aware import (
    drop_unpaid_splits,
    rank_profile,
    switched_evaluation,
)
from fxenergy.schedule.cpsat.pipeline import PipelinePlanner
from fxenergy.schedule.switch import window_cost

DATA = Path(__file__).parent / "data" / "perseus_a100_4stage.csv"
A40 = Path(__file__).parent / "data" / "perseus" / "gpt3-175b+a40_bf16.csv"


def _costs(path: Path = DATA, stages: int = 4) -> StageCosts:
    return StageCosts.from_profile(read_profile(path), stages, 83.64)


def test_a_split_runs_the_share_weighted_mix_of_its_two_clocks():
    costs = _costs()
    c = (1, "forward", 0)
    clocks = costs.clocks_mhz(c)
    a, b = costs.option(c, clocks[0]), costs.option(c, clocks[5])
    split = costs.split(c, clocks[0], clocks[5], 0.25)
    assert split.after_s == pytest.approx(0.75 * a.time_s, rel=1e-15)
    run = costs.run(c, clocks[0], split)
    assert run.time_s == pytest.approx(0.75 * a.time_s + 0.25 * b.time_s, rel=1e-15)
    assert run.energy_j == pytest.approx(0.75 * a.energy_j + 0.25 * b.energy_j, rel=1e-15)
    assert costs.run(c, clocks[0]) == a
    for share in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="share"):
            ClockSplit(clocks[5], share)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_split_plans_reach_the_lp_bound_on_every_schedule(schedule):
    dag = build_dag(schedule, 4, 8)  # multi-stage schedules: 2 ranks x 2 stages
    costs = _costs()
    discrete = PipelinePlanner(dag, costs, polish_s=0)
    split = PipelinePlanner(dag, costs, polish_s=0, split_clocks=True)
    for slowdown in (0.0, 0.02):
        deadline = discrete.all_max_s * (1 + slowdown)
        d, s = discrete.plan(deadline), split.plan(deadline)
        ev = evaluate_pipeline(dag, costs, s.freqs_mhz, splits=s.splits)
        assert ev.energy_j == pytest.approx(s.evaluation.energy_j, rel=1e-12)
        assert ev.iteration_time_s <= deadline * (1 + 1e-12)
        assert s.evaluation.energy_j <= s.lower_bound_j * (1 + 1e-7)
        assert s.evaluation.energy_j <= d.evaluation.energy_j  # never worse than discrete
        if d.evaluation.energy_j > d.lower_bound_j * (1 + 1e-4):  # discrete left a gap
            assert s.method == "lp-split" and s.splits


def test_split_closes_the_a40_1f1b_gap_at_the_all_max_deadline():
    # The case that motivated splits: discrete plans stay ~0.5 % above the bound here.
    costs = _costs(A40, 8)
    dag = build_dag("1F1B", 8, 16)
    planner = PipelinePlanner(dag, costs, polish_s=0, split_clocks=True)
    plan = planner.plan(planner.all_max_s)
    assert plan.method == "lp-split" and len(plan.splits) > 10
    assert plan.evaluation.energy_j <= plan.lower_bound_j * (1 + 1e-7)
    assert plan.evaluation.iteration_time_s <= planner.all_max_s * (1 + 1e-12)
    discrete = PipelinePlanner(dag, costs, polish_s=0).plan(planner.all_max_s)
    assert discrete.evaluation.energy_j > plan.lower_bound_j * 1.003


def test_split_plan_json_names_both_clocks(tmp_path):
    dag = build_dag("1F1B", 4, 8)
    planner = PipelinePlanner(dag, _costs(), polish_s=0, split_clocks=True)
    plan = planner.plan(planner.all_max_s)
    doc = json.loads(json.dumps(plan.to_json()))
    entries = [e for rank in doc["ranks"] for e in rank if "then_mhz" in e]
    assert doc["split_computations"] == len(plan.splits) == len(entries) > 0
    for e in entries:
        assert 0 < e["then_share"] < 1 and e["then_after_s"] > 0 and e["then_mhz"] < e["freq_mhz"]
    splits = {c for r in range(dag.num_ranks) for c in plan.rank_splits(r)}
    assert splits == set(plan.splits)


def _one_split(costs: StageCosts, share: float):
    dag = build_dag("1F1B", 4, 4)
    freqs = {c: costs.clocks_mhz(c)[0] for c in dag.topological}
    c = dag.rank_orders[1][3]
    low = costs.clocks_mhz(c)[8]
    return dag, freqs, c, {c: costs.split(c, freqs[c], low, share)}


@pytest.mark.parametrize("latency", [0.005, 0.5])
def test_a_split_costs_one_window_issued_ahead_or_late(latency):
    costs = _costs()
    dag, freqs, c, splits = _one_split(costs, 0.4)
    free_t, free_e = switched_evaluation(dag, costs, freqs, 0.0, splits=splits)
    t, e = switched_evaluation(dag, costs, freqs, latency, splits=splits)
    profile = rank_profile(dag.rank_orders[1], costs)
    first, then = freqs[c], splits[c].then_mhz
    if splits[c].after_s >= latency:  # ahead: the tail of the first part, work planned at it
        wt, we = window_cost(latency, *profile(first), *profile(then))
    else:  # the first part cannot host it: late, the head of the second part
        wt, we = window_cost(latency, *profile(then), *profile(first))
    # Only rank 1 switches (into the split and back at its next computation: a late switch).
    back_t, back_e = window_cost(latency, *profile(freqs[c]), *profile(then))
    assert e - free_e == pytest.approx(
        we + back_e + 83.64 * ((t - free_t) * dag.num_ranks - (wt + back_t)), rel=1e-9
    )


def test_drop_unpaid_splits_undoes_splits_whose_window_costs_more():
    costs = _costs()
    dag = build_dag("1F1B", 4, 8)
    planner = PipelinePlanner(dag, costs, polish_s=0, split_clocks=True)
    plan = planner.plan(planner.all_max_s * 1.02)
    assert plan.splits
    same = drop_unpaid_splits(dag, costs, plan.freqs_mhz, plan.splits, plan.deadline_s, 0.0)
    assert same == (dict(plan.freqs_mhz), dict(plan.splits))
    latency = 0.05
    freqs, splits = drop_unpaid_splits(
        dag, costs, plan.freqs_mhz, plan.splits, plan.deadline_s, latency
    )
    before = switched_evaluation(dag, costs, plan.freqs_mhz, latency, splits=plan.splits)
    after = switched_evaluation(dag, costs, freqs, latency, splits=splits)
    assert len(splits) < len(plan.splits)
    key = [(max(0.0, t - plan.deadline_s), e) for t, e in (after, before)]
    assert key[0] < key[1]


def test_cli_split_clocks(tmp_path, capsys):
    out = tmp_path / "plan.json"
    argv = [
        "pipeline", str(DATA), "--microbatches", "8", "--schedule", "1F1B",
        "--blocked-power-w", "83.64", "--polish-s", "0", "--split-clocks", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "(lp-split)" in text and "clock splits:" in text and "gap 0.000%" in text
    assert "SIMULATED" in text
    doc = json.loads(out.read_text())
    assert doc["split_computations"] > 0
