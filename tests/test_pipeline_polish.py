"""Tight deadlines: the exact-time MIP polish improves a plan the roundings left above optimal."""

from __future__ import annotations

from pathlib import Path

import pytest
from ortools.linear_solver import pywraplp

from fxenergy.hardware.profiles import read_profile
from fxenergy.pipeline.dag import StageCosts, build_dag, evaluate_pipeline
from fxenergy.pipeline.planner import PipelinePlanner
from fxenergy.schedule.cpsat import pipeline_mip
from fxenergy.schedule.cpsat.pipeline_lns import NeighbourhoodSearch, solve_neighbourhood
from fxenergy.schedule.cpsat.pipeline_mip import mip_polish

DATA = Path(__file__).parent / "data" / "perseus_a100_4stage.csv"
needs_scip = pytest.mark.skipif(
    pywraplp.Solver.CreateSolver("SCIP") is None, reason="OR-Tools built without SCIP"
)


@needs_scip
def test_polish_improves_the_plan_at_the_all_max_clock_deadline():
    dag = build_dag("GPipe", 4, 8)
    costs = StageCosts.from_profile(read_profile(DATA), 4, 83.64)
    quick = PipelinePlanner(dag, costs, polish_s=0)
    before = quick.plan(quick.all_max_s)
    polished = PipelinePlanner(dag, costs, polish_s=3.0, workers=1)
    after = polished.plan(polished.all_max_s)
    assert after.method == "lp+mip"
    assert after.evaluation.energy_j < before.evaluation.energy_j - 0.5  # joules
    assert after.evaluation.iteration_time_s <= polished.all_max_s * (1 + 1e-12)
    assert after.evaluation.energy_j >= after.lower_bound_j * (1 - 1e-9)


@needs_scip
def test_mip_polish_keeps_exact_times_and_never_loses():
    # Times stay continuous (no quantization), so a solution meets the real deadline and the
    # feasible hint is never lost.
    dag = build_dag("1F1B", 4, 6)
    costs = StageCosts.from_profile(read_profile(DATA), 4, 83.64)
    planner = PipelinePlanner(dag, costs, polish_s=0)
    hint = planner.plan(planner.all_max_s).freqs_mhz
    freqs = mip_polish(dag, costs, planner.all_max_s, hint, time_limit_s=2.0)
    assert freqs is not None
    ev = evaluate_pipeline(dag, costs, freqs)
    assert ev.iteration_time_s <= planner.all_max_s * (1 + 1e-9)
    assert ev.energy_j <= evaluate_pipeline(dag, costs, hint).energy_j + 1e-6


A40 = Path(__file__).parent / "data" / "perseus" / "gpt3-175b+a40_bf16.csv"


def _a40_1f1b() -> tuple:
    """1F1B, 4 stages (A40 profile stages 0, 3, 5, 7) x 8 microbatches, LP-rounded plan at
    the all-max-clock deadline."""
    costs = StageCosts.from_profile(read_profile(A40), 4, 83.64, profile_stages=[0, 3, 5, 7])
    dag = build_dag("1F1B", 4, 8)
    planner = PipelinePlanner(dag, costs, polish_s=0)
    plan = planner.plan(planner.all_max_s)
    return dag, costs, planner.all_max_s, plan.freqs_mhz, planner.lp.durations()


@needs_scip
def test_window_holds_the_hull_vertices_the_lp_mixes(monkeypatch):
    # The LP puts a computation between two hull vertices; computations sharing slack can mix
    # them (some at each end), which the clocks next to the LP's duration cannot. With those
    # vertices in the window, its proven optimum is lower than without them.
    dag, costs, deadline, hint, lp_times = _a40_1f1b()
    with_ends = pipeline_mip._solve_window(dag, costs, deadline, hint, lp_times, time_limit_s=20)
    monkeypatch.setattr(pipeline_mip, "bracket", lambda *args: set())
    without = pipeline_mip._solve_window(dag, costs, deadline, hint, lp_times, time_limit_s=20)
    assert with_ends is not None and without is not None
    assert with_ends[0] and without[0]  # both windows proven optimal
    energy = [evaluate_pipeline(dag, costs, f[1]).energy_j for f in (with_ends, without)]
    assert energy[0] < energy[1] - 0.2  # joules (both proven within 1e-7)


@needs_scip
def test_collapsed_sub_mip_equals_the_full_model():
    # Fixing the other computations and collapsing the DAG onto the free ones loses nothing:
    # the same neighbourhood solved on the whole DAG (others free with one clock) agrees.
    dag, costs, deadline, hint, lp_times = _a40_1f1b()
    search = NeighbourhoodSearch(dag, costs, deadline, lp_times, seed=3)
    starts = evaluate_pipeline(dag, costs, hint).start_s
    for _ in range(3):
        free = search.neighbourhood(starts, deadline)
        options = {c: search.options(c, hint[c]) for c in free}
        small = solve_neighbourhood(dag, costs, deadline, hint, free, options, time_limit_s=10)
        every = {c: options.get(c, [costs.option(c, hint[c])]) for c in dag.topological}
        full = solve_neighbourhood(
            dag, costs, deadline, hint, set(dag.topological), every, time_limit_s=10
        )
        assert small is not None and full is not None and small[0] and full[0]
        energy = [evaluate_pipeline(dag, costs, f[1]) for f in (small, full)]
        assert energy[0].energy_j == pytest.approx(energy[1].energy_j, rel=1e-6)
        assert energy[0].iteration_time_s <= deadline * (1 + 1e-9)


@needs_scip
def test_neighbourhood_search_improves_and_keeps_the_deadline():
    dag, costs, deadline, hint, lp_times = _a40_1f1b()
    before = evaluate_pipeline(dag, costs, hint)
    after = evaluate_pipeline(
        dag, costs, NeighbourhoodSearch(dag, costs, deadline, lp_times).run(hint, 2.0)
    )
    assert after.iteration_time_s <= deadline * (1 + 1e-12)
    assert after.energy_j < before.energy_j - 0.5  # joules
