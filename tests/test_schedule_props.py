"""Property tests over random DAG problems: every plan is legal, in budget, never worse."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fxenergy.schedule.greedy import energy_lower_bound
from fxenergy.schedule.problem import Problem
from fxenergy.schedule.solve import solve
from fxenergy.schedule.validate import check, evaluate
from tests.strategies import problems


@settings(max_examples=25, deadline=None)
@given(problems(), st.sampled_from((0.0, 0.05, 0.3)))
def test_solve_is_legal_in_budget_and_never_worse(problem: Problem, slowdown: float) -> None:
    result = solve(problem, max_slowdown=slowdown, progress=False, time_limit_s=2)
    check(problem, result.solution)
    ev = evaluate(problem, result.solution)
    assert ev == result.evaluation
    assert ev.time <= result.deadline
    assert ev.energy <= result.baseline.energy
    assert ev.peak_memory <= result.memory_bound
    bound = energy_lower_bound(problem, result.deadline)
    assert bound is None or bound <= ev.energy + 1e-6


@settings(max_examples=15, deadline=None)
@given(problems(max_tasks=6))
def test_memory_objective_never_above_baseline(problem: Problem) -> None:
    result = solve(problem, objective="memory", max_slowdown=0.1, progress=False, time_limit_s=2)
    check(problem, result.solution)
    assert result.evaluation.peak_memory <= result.baseline.peak_memory
    assert result.evaluation.time <= result.deadline


@settings(max_examples=20, deadline=None)
@given(problems(max_tasks=4, max_clocks=2), st.sampled_from((0.0, 0.1, 0.5)))
def test_small_problems_reach_the_brute_force_optimum(problem: Problem, slowdown: float) -> None:
    from tests.test_schedule import brute_force

    result = solve(problem, max_slowdown=slowdown, progress=False, time_limit_s=5)
    assert result.evaluation.energy == brute_force(problem, result.deadline)


@settings(max_examples=30, deadline=None)
@given(problems(min_tasks=3, max_tasks=9), st.sampled_from((0.0, 0.1, 0.4)), st.integers(2, 4))
def test_windowed_plans_stitch_legally(problem: Problem, slowdown: float, window: int) -> None:
    """Several small windows: boundaries, carried slack and memory context must hold up."""
    from fxenergy.schedule.decompose import solve_windows
    from fxenergy.schedule.greedy import greedy_solution
    from fxenergy.schedule.validate import baseline, deadline

    limit = deadline(problem, slowdown)
    mem = baseline(problem).peak_memory
    hint = greedy_solution(problem, limit)
    run = solve_windows(problem, "energy", limit, mem, hint, 5.0, False, window, max_shift=2)
    assert run.solution is not None
    check(problem, run.solution)
    ev = evaluate(problem, run.solution)
    assert ev.time <= limit
    assert ev.peak_memory <= mem
    assert ev.energy <= evaluate(problem, hint or run.solution).energy


@settings(max_examples=25, deadline=None)
@given(problems(max_tasks=12))
def test_clustered_order_is_legal(problem: Problem) -> None:
    from fxenergy.schedule.cluster import clustered_order
    from fxenergy.schedule.problem import Solution

    order = clustered_order(problem, max_lead=3)
    check(problem, Solution(tuple(order), (0,) * problem.num_tasks))
