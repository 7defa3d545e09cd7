"""Hand-built scheduling problems with known answers: evaluate, check, greedy, solve."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from fxenergy.errors import InvalidScheduleError, ScheduleProblemError
from fxenergy.schedule.greedy import energy_lower_bound, greedy_solution
from fxenergy.schedule.problem import Problem, Solution, SwitchModel, Task
from fxenergy.schedule.solve import solve
from fxenergy.schedule.validate import baseline, check, deadline, evaluate

CLOCKS = (1400, 1000)


def brute_force(
    problem: Problem, limit: int, objective: str = "energy", memory_bound: int | None = None
) -> int:
    """Least energy (or peak) over every legal order and clock assignment within the budgets."""
    mem = baseline(problem).peak_memory if memory_bound is None else memory_bound
    best = None
    for order in itertools.permutations(range(problem.num_tasks)):
        pos = {t: i for i, t in enumerate(order)}
        if any(pos[u] > pos[v] for u, v in problem.edges):
            continue
        for clocks in itertools.product(range(problem.num_clocks), repeat=problem.num_tasks):
            sol = Solution(order, clocks)
            try:
                check(problem, sol)
            except InvalidScheduleError:
                continue
            ev = evaluate(problem, sol)
            value = ev.energy if objective == "energy" else ev.peak_memory
            fits = ev.time <= limit and (objective == "memory" or ev.peak_memory <= mem)
            if fits and (best is None or value < best):
                best = value
    assert best is not None
    return best


#: the cycle's time and energy at each clock, fixed so that window costs are easy by hand:
#: P(0) = 50/10 = 5, P(1) = 60/20 = 3, the low clock twice as slow
PROFILE = ((10, 20), (50, 60))


def two_chains(latency: int = 4, cyclic: bool = False) -> Problem:
    """A→B and C→D; A and C memory-bound, B and D compute-bound; program order A, B, C, D.

    With latency 4: a switch down (0→1) issued ahead runs its window's 4 units at the slow clock:
    the work of 2 units at clock 0 takes 4, +2 time, energy 4·5 − 2·5 = +10; a switch up (1→0)
    runs 4 units at clock 1's speed at clock 0's power: +0 time, 4·(5 − 3) = +8 energy; the
    first switch of a run (0→1, late) costs like a switch up: +0, +8.
    """
    mem = Task("A", (10, 10), (30, 20), 4)
    comp = Task("B", (10, 16), (50, 50), 4)
    return Problem(
        tasks=(mem, comp, Task("C", (10, 10), (30, 20), 4), Task("D", (10, 16), (50, 50), 4)),
        clocks_mhz=CLOCKS,
        data_edges=((0, 1), (2, 3)),
        switch=SwitchModel(latency=latency, profile=PROFILE),
        cyclic=cyclic,
    )


def test_window_costs_by_hand() -> None:
    p = two_chains()
    costs = p.switch_costs
    assert costs.ahead(0, 1) == (2, 10) and costs.ahead(1, 0) == (0, 8)
    assert costs.late(0, 1) == (0, 8) and costs.ahead(1, 1) == (0, 0)
    one = two_chains(latency=1).switch_costs  # 0→1: +0.5 time, +2.5 energy, rounded up
    assert one.ahead(0, 1) == (1, 3) and one.ahead(1, 0) == (0, 2)


def test_evaluate_by_hand() -> None:
    p = Problem(
        tasks=(Task("a", (2, 3), (10, 8), 5), Task("b", (4, 4), (9, 6), 3, is_output=True)),
        clocks_mhz=CLOCKS,
        data_edges=((0, 1),),
        switch=SwitchModel(latency=1, profile=PROFILE),
        memory_baseline_bytes=10,
    )
    ev = evaluate(p, Solution((0, 1), (1, 0)))
    # late switch into clock 1 at a's start (+0, +2), ahead back to 0 in a's tail (+0, +2)
    assert (ev.time, ev.energy, ev.switches) == (3 + 4, 8 + 9 + 2 + 2, 2)
    assert [(q.window_time, q.window_energy) for q in ev.partitions] == [(0, 4), (0, 0)]
    assert ev.peak_memory == 10 + 5 + 3  # a's output is read by b while b's output is made
    assert [part.clock_mhz for part in ev.partitions] == [1000, 1400]
    assert baseline(p).time == 6 and deadline(p, 0.5) == 9
    cyc = dataclasses.replace(p, cyclic=True)
    ev = evaluate(cyc, Solution((0, 1), (1, 0)))
    # repeating: b's tail requests clock 1 for the next run's a ahead (+1, +3)
    assert (ev.time, ev.energy, ev.switches) == (3 + 4 + 1, 8 + 9 + 2 + 3, 2)


def test_check_rejects_reversed_edges_and_short_partitions() -> None:
    p = two_chains()
    with pytest.raises(InvalidScheduleError, match="reversed"):
        check(p, Solution((1, 0, 2, 3), (0, 0, 0, 0)))
    short = two_chains(latency=6)  # A alone (10) cannot hold a head and a tail window (12)
    with pytest.raises(InvalidScheduleError, match="too short"):
        check(short, Solution((0, 1, 2, 3), (1, 0, 0, 0)))
    check(short, Solution((0, 2, 1, 3), (1, 0, 1, 0)))  # A, C together: 20 units
    # a max-clock partition between two switches must hold the window out of it too
    with pytest.raises(InvalidScheduleError, match="too short"):
        check(two_chains(latency=11), Solution((0, 2, 1, 3), (1, 1, 0, 1)))
    # cyclic: the last and first partitions at one clock are one partition across the wrap
    check(two_chains(latency=10, cyclic=True), Solution((0, 1, 2, 3), (1, 0, 0, 1)))


def test_problem_rejects_bad_input() -> None:
    with pytest.raises(ScheduleProblemError, match="decreasing"):
        Problem(tasks=(), clocks_mhz=(1000, 1400))
    with pytest.raises(ScheduleProblemError, match="program order"):
        Problem(
            tasks=(Task("a", (1,), (1,)), Task("b", (1,), (1,))),
            clocks_mhz=(1,),
            data_edges=((1, 0),),
        )
    with pytest.raises(ScheduleProblemError, match="finite numbers"):
        Problem(tasks=(Task("a", (-1.5,), (1,)),), clocks_mhz=(1,))


def test_reordering_groups_memory_bound_tasks() -> None:
    p = two_chains()
    # 40 -> 44: A and C at the low clock next to each other: 40 time units, energy
    # 20 + 20 + 50 + 50 + 8 (late switch down) + 8 (back up, ahead) = 156; one global low clock
    # (52) or B or D slow (+6 each) do not fit
    limit = deadline(p, 0.1)
    result = solve(p, max_slowdown=0.1, memory_bound=12, progress=False, time_limit_s=10)
    assert result.evaluation.energy == brute_force(p, limit, memory_bound=12) == 156
    order = result.solution.order
    assert abs(order.index(0) - order.index(2)) == 1  # A and C side by side, at the low clock
    assert result.solution.clocks[0] == result.solution.clocks[2] == 1
    # the fixed-order greedy cannot do this: on program order every slow task pays two switches
    greedy = greedy_solution(p, limit)
    assert greedy is not None and evaluate(p, greedy).energy > result.evaluation.energy
    # under the baseline's peak (8 B) A and C cannot both be live with B's output: no grouping
    # (program order: A slow alone pays 8 + 8 for 10 saved; A and C apart pay 34 for 20)
    tight = solve(p, max_slowdown=0.1, progress=False, time_limit_s=10)
    assert tight.evaluation.energy == brute_force(p, limit) == 160
    assert tight.evaluation.peak_memory <= 8


def test_known_optimum_three_tasks() -> None:
    p = Problem(
        tasks=(
            Task("mm", (10, 13), (60, 55)),
            Task("norm", (6, 6), (20, 14), 2),
            Task("add", (4, 4), (12, 9), 2, is_output=True),
        ),
        clocks_mhz=CLOCKS,
        data_edges=((0, 1), (1, 2)),
        switch=SwitchModel(latency=1),
    )
    result = solve(p, max_slowdown=0.05, progress=False, time_limit_s=10)
    # profile (sums): T = (20, 23), E = (92, 78); the switch 0→1 issued ahead in mm's tail:
    # done = 20/23, +0.13 time and 4.6·(1 − 20/23) = +0.6 energy, both rounded up to 1.
    # budget 21: mm stays fast, norm+add slow with one switch: 60 + 14 + 9 + 1
    assert result.evaluation.energy == brute_force(p, 21) == 84
    assert result.status == "OPTIMAL" and result.gap == 0.0


def test_lower_bound_is_below_the_optimum() -> None:
    p = two_chains()
    limit = deadline(p, 0.1)
    bound = energy_lower_bound(p, limit)
    assert bound is not None and bound <= brute_force(p, limit)


@pytest.mark.parametrize(
    "problem",
    [
        Problem(tasks=(), clocks_mhz=CLOCKS),
        Problem(tasks=(Task("only", (5, 7), (10, 8)),), clocks_mhz=CLOCKS),
        Problem(
            tasks=(Task("view", (0, 0), (0, 0)), Task("view2", (0, 0), (0, 0))),
            clocks_mhz=CLOCKS,
            data_edges=((0, 1),),
        ),
    ],
    ids=["empty", "one-task", "no-compute"],
)
def test_degenerate_problems_return_baseline(problem: Problem) -> None:
    result = solve(problem, max_slowdown=0.0, progress=False, time_limit_s=5)
    assert result.status == "BASELINE"
    assert result.evaluation.energy == result.baseline.energy
    assert result.notes


def test_infeasible_memory_bound_falls_back_to_baseline() -> None:
    p = two_chains()
    result = solve(p, memory_bound=1, progress=False, time_limit_s=5)
    assert result.status == "BASELINE"
    assert any("memory bound" in note for note in result.notes)


def test_tiny_time_limit_is_still_legal_and_no_worse() -> None:
    p = two_chains()
    result = solve(p, max_slowdown=0.1, time_limit_s=0.0, progress=False)
    check(p, result.solution)
    assert result.evaluation.energy <= result.baseline.energy
    assert result.evaluation.time <= result.deadline


def test_memory_objective_never_above_baseline_peak() -> None:
    p = two_chains()
    result = solve(p, objective="memory", max_slowdown=0.0, progress=False, time_limit_s=5)
    assert result.evaluation.peak_memory == brute_force(p, deadline(p, 0.0), "memory")


def test_switches_objective_keeps_greedy_energy() -> None:
    p = two_chains()
    greedy = solve(p, max_slowdown=0.5, progress=False, use_cpsat=False).evaluation
    result = solve(p, objective="switches", max_slowdown=0.5, progress=False, time_limit_s=5)
    assert greedy.energy < solve(p, max_slowdown=0.0, progress=False).evaluation.energy
    assert result.evaluation.energy <= greedy.energy
    assert 1 <= result.evaluation.switches <= greedy.switches
    assert result.bound == 1.0  # a run from the max clock below the baseline energy switches


def test_switches_bound_of_a_repeating_plan() -> None:
    """The old bound said 1 for every problem; a repeating (cyclic) plan at one lower clock
    never switches (bound 0), and one that changes clock must come back around the loop (2)."""
    loose = two_chains(cyclic=True)  # 30 %: one global low clock (52 units) fits
    result = solve(loose, objective="switches", max_slowdown=0.3, progress=False, time_limit_s=5)
    assert result.bound == 0.0 and result.evaluation.switches == 0
    assert result.evaluation.energy == 140 < result.baseline.energy
    tight = two_chains(cyclic=True)  # 10 %: the global low clock does not fit, A+C slow does
    result = solve(
        tight,
        objective="switches",
        max_slowdown=0.1,
        memory_bound=12,
        progress=False,
        time_limit_s=5,
    )
    assert result.evaluation.energy < result.baseline.energy
    assert result.bound == 2.0 and result.evaluation.switches == 2


@pytest.mark.slow
def test_ten_thousand_tasks_plan_within_a_minute() -> None:
    from fxenergy.schedule.synthetic import transformer_problem

    p = transformer_problem(10_000, switch_latency_s=0.010)  # simulated training graph
    result = solve(p, max_slowdown=0.05, time_limit_s=40, progress=False)
    check(p, result.solution)
    assert p.num_tasks >= 9_900
    assert result.solve_time_s <= 60
    assert result.evaluation.time <= result.deadline
    assert result.evaluation.peak_memory <= result.baseline.peak_memory
    assert 0 < result.energy_saving and result.gap is not None and result.gap < 0.02


def test_clustered_order_groups_tasks_that_want_the_same_clock() -> None:
    from fxenergy.schedule.cluster import clustered_order, preferred_clocks

    p = two_chains()
    assert preferred_clocks(p) == [1, 0, 1, 0]
    assert clustered_order(p) == [0, 2, 1, 3]
    # the greedy on the clustered order finds the grouped optimum without CP-SAT
    fast = solve(p, max_slowdown=0.1, memory_bound=12, progress=False, use_cpsat=False)
    assert fast.evaluation.energy == 156


def test_plan_breaking_the_deadline_in_floats_is_refused() -> None:
    """The solvers see integers; a plan that fits there but not in the exact floats is refused,
    and the best legal plan (here the baseline) returned."""
    ints = Problem(tasks=(Task("mem", (10, 10), (50, 30)),), clocks_mhz=CLOCKS, cyclic=True)
    exact = Problem(
        tasks=(Task("mem", (10.0, 10.4), (50.0, 30.0)),), clocks_mhz=CLOCKS, cyclic=True
    )
    assert solve(ints, max_slowdown=0.0, progress=False).solution.clocks == (1,)  # 10 <= 10
    result = solve(ints, max_slowdown=0.0, progress=False, exact=exact)  # 10.4 > 10
    assert result.status == "BASELINE" and result.solution.clocks == (0,)
    assert any("in unrounded floats the plan takes" in n for n in result.notes)
