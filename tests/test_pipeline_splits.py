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
from fxenergy.pipeline.planner import PipelinePlanner
from fxenergy.pipeline.switch_aware import rank_profile, switched_evaluation
from fxenergy.pipeline.switch_fit import drop_unpaid_splits
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
    assert main([*argv, "--switch-latency-ms", "0"]) == 0  # switches free: the LP optimum
    text = capsys.readouterr().out
    assert "(lp-split)" in text and "clock splits:" in text and "gap 0.000%" in text
    assert "planned as free" in text and "SIMULATED" in text
    doc = json.loads(out.read_text())
    assert doc["split_computations"] > 0 and "switch_latency_s" not in doc
    assert main(argv) == 0  # the default latency: the deadline is met with windows priced
    text = capsys.readouterr().out
    assert "with clock-switch windows (10 ms latency" in text and "SIMULATED" in text
    doc = json.loads(out.read_text())
    assert doc["switch_latency_s"] == 0.01
    assert doc["iteration_time_with_switches_s"] <= doc["deadline_s"] * (1 + 1e-12)
    assert doc["energy_with_switches_j"] < doc["baseline_energy_j"]


GPU = "A100-SXM4-80GB"


def _sim_costs(dag):
    """Per (stage, kind) work, and its profile rows from the simulator's own DVFS model."""
    from fxenergy.graph.meta import CostRecord
    from fxenergy.hardware.dvfs import get_dvfs_model
    from fxenergy.hardware.profiles import Profile, ProfileRow

    model = get_dvfs_model(GPU)

    def cost_of(gflop: float) -> CostRecord:
        flops = int(gflop * 1e9)
        return CostRecord(flops, flops // 2, int(4e9), int(2e9), "bfloat16", (), (), 400, flops)

    cost = {(s, k): cost_of(g * (1.5 if s == 2 else 1.0)) for s in range(dag.num_stages)
            for k, g in (("forward", 40000), ("backward", 80000))}  # fmt: skip
    rows = [ProfileRow(s, k, f, model.time_s(c, f), model.energy_j(c, f))
            for (s, k), c in cost.items() for f in model.clocks_mhz()]  # fmt: skip
    return cost, StageCosts.from_profile(Profile(tuple(rows)), dag.num_stages, 83.64)


def _simulate(dag, cost, freqs, splits, latency):
    """Every rank's clock sequence on its own simulated GPU: a late switch at each boundary, a
    split's switch issued ahead inside its computation; the second (steady) iteration's
    computation times, then the DAG's iteration and energy with blocked power."""
    from fxenergy.runtime.sim import SimulatedBackend

    dur, energy = {}, 0.0
    for order in dag.rank_orders:
        gpu = SimulatedBackend(GPU, latency)
        for it in range(2):  # the second iteration starts at the clock the first ended on
            for c in order:
                t0, e0 = gpu.now_s(), gpu.energy_j()
                gpu.set_clock(freqs[c])
                # a zero-bubble I or W is half of its stage's backward (the profile's split)
                whole = cost[(c[0], "forward" if c[1] == "forward" else "backward")]
                part = 1.0 if c[1] in ("forward", "backward") else 0.5
                if c in splits:
                    gpu.execute(whole, share=part * (1 - splits[c].share))
                    gpu.switch_ahead(splits[c].then_mhz)  # issued ahead: the first part's tail
                    gpu.execute(whole, share=part * splits[c].share)
                else:
                    gpu.execute(whole, share=part)
                dur[c], e = gpu.now_s() - t0, gpu.energy_j() - e0
                energy += e if it else 0.0
    finish: dict = {}
    for c in dag.topological:
        finish[c] = max((finish[p] for p in dag.predecessors[c]), default=0.0) + dur[c]
    span = max(finish.values())
    blocked = 83.64 * sum(span - sum(dur[c] for c in o) for o in dag.rank_orders)
    return span, energy + blocked


def test_split_plan_windows_are_what_the_simulator_charges():
    """Hand-made clocks and splits (switches everywhere): the simulator charges exactly what
    ``switched_evaluation`` says."""
    dag = build_dag("1F1B", 4, 6)
    cost, costs = _sim_costs(dag)
    clocks = (1410, 1200, 990)
    freqs = {c: clocks[(c[0] + c[2]) % 3] for c in dag.topological}
    splits = {
        c: costs.split(c, freqs[c], 1095, (0.25, 0.5)[c[2] % 2])
        for c in dag.topological
        if c[2] % 3 == 1 and freqs[c] != 1095
    }
    assert len(splits) > 4
    got = switched_evaluation(dag, costs, freqs, 0.01, splits=splits)
    assert got == pytest.approx(_simulate(dag, cost, freqs, splits, 0.01), rel=1e-9)


@pytest.mark.parametrize(
    ("schedule", "split_clocks"),
    [("1F1B", False), ("1F1B", True), ("Interleaved1F1B", True), ("ZBVZeroBubble", False)],
)
def test_windowed_plan_runs_as_planned_at_the_default_latency(schedule, split_clocks):
    """``plan_with_windows`` at the default 10 ms: the simulated GPUs reproduce the plan's
    iteration and energy, the deadline holds, and it still saves energy."""
    from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S as latency
    from fxenergy.pipeline.windowed import plan_with_windows

    dag = build_dag(schedule, 4, 6)
    cost, costs = _sim_costs(dag)
    planner = PipelinePlanner(dag, costs, polish_s=0, split_clocks=split_clocks)
    deadline = planner.all_max_s * 1.02
    free = planner.plan(deadline)
    windowed = plan_with_windows(planner, deadline, latency)
    plan = windowed.plan
    span, energy = _simulate(dag, cost, plan.freqs_mhz, plan.splits, latency)
    assert (span, energy) == pytest.approx((windowed.iteration_time_s, windowed.energy_j), rel=1e-9)
    assert span <= deadline * (1 + 1e-12) and windowed.switches > 0
    assert windowed.savings > 0.01
    # The switch-free plan, run the same way, overruns: what the windows cost it.
    raw = _simulate(dag, cost, free.freqs_mhz, free.splits, latency)
    assert raw[0] > deadline
