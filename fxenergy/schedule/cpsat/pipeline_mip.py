"""Exact-time MIP polish of a pipeline plan (SCIP through OR-Tools), warm-started.

The CP-SAT model (:class:`fxenergy.schedule.cpsat.pipeline.PipelineModel`) needs integer
times; rounding every duration up makes a plan that meets a tight deadline in real time miss
it in the model, so at the all-max-clock deadline the hint is infeasible there and the search
cannot improve it. This MIP keeps times continuous (start times are real variables, a
duration is ``sum(x_o * t_o)``), so the hint is feasible, every solution meets the real
deadline, and the solver's LP relaxation is ours (the bound the plan is measured against).

Each computation's clocks are restricted to a window of its candidates around the LP's
duration, the two hull vertices around it (what the LP mixes) and the hint's clock: the LP says
where the optimum lies, and the smaller model is what lets branch-and-bound close the gap within
a second or two. The last part of the time goes to a large-neighbourhood search
(:mod:`fxenergy.schedule.cpsat.pipeline_lns`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ortools.linear_solver import pywraplp

from fxenergy.schedule.cpsat.pipeline_lns import (
    NeighbourhoodSearch,
    bracket,
    clock_booleans,
    exact_gap,
)

if TYPE_CHECKING:  # types only: schedule/ does not import pipeline/ at run time
    from fxenergy.pipeline.costs import ClockOption
    from fxenergy.pipeline.dag import Computation, PipelineDAG, StageCosts

logger = logging.getLogger(__name__)

#: share of the polish time for the whole-plan window MIPs; the rest goes to neighbourhoods
#: (measured on the A40 GPT-3 plans: the window finds the big moves, sub-MIPs the rest)
WINDOW_SHARE = 0.7


def _window(
    opts: list[ClockOption],
    lp_time_s: float | None,
    hint_mhz: int | None,
    width: int,
    blocked_power_w: float = 0.0,
) -> list[ClockOption]:
    """Candidates within ``width`` of the LP duration's neighbours, the hull vertices around
    it (what the LP mixes; computations sharing slack can mix them too) and the hinted one."""
    if lp_time_s is None:
        return opts
    below = max([0] + [i for i, o in enumerate(opts) if o.time_s <= lp_time_s * (1 + 1e-9)])
    lo, hi = max(0, below - width), min(len(opts) - 1, below + 1 + width)
    ends = bracket(opts, lp_time_s, blocked_power_w)
    keep = set(range(lo, hi + 1))
    keep |= {i for i, o in enumerate(opts) if o.freq_mhz == hint_mhz or o.freq_mhz in ends}
    hinted = [o for o in opts if o.freq_mhz == hint_mhz]
    if width <= 1 and hinted and abs(hinted[0].time_s - lp_time_s) <= 1e-9 * lp_time_s:
        return hinted  # the LP and the hint agree on this clock: kept in the first window
    return [opts[i] for i in sorted(keep)]


def _solve_window(
    dag: PipelineDAG,
    costs: StageCosts,
    deadline_s: float,
    hint: Mapping[Computation, int],
    lp_times_s: Mapping[Computation, float] | None = None,
    *,
    time_limit_s: float = 1.0,
    width: int = 1,
    fixed_horizon: bool = False,
) -> tuple[bool, dict[Computation, int]] | None:
    """Least-energy clocks meeting ``deadline_s`` found by SCIP within ``time_limit_s``.

    Args:
        dag: the iteration DAG.
        costs: clock options and blocked power.
        deadline_s: iteration time limit (s), exact.
        hint: a feasible plan (clock per computation) to start from.
        lp_times_s: the LP relaxation's duration per computation; restricts each one's clocks
            to ``width`` candidates either side of it (None: every candidate).
        time_limit_s: SCIP wall-time limit.
        width: window half-width in candidates.
        fixed_horizon: straggler mode (blocked energy counted to a fixed horizon).

    Returns:
        Whether the window's optimum was proven, and the clocks of the best solution found;
        None (no SCIP, or nothing found).
    """
    solver = pywraplp.Solver.CreateSolver("SCIP")
    if solver is None:  # an OR-Tools build without SCIP
        return None
    choice, duration = _clock_choices(solver, dag, costs, hint, lp_times_s, width)
    makespan = _timing_rows(solver, dag, duration, deadline_s)
    objective = solver.Objective()
    objective.SetCoefficient(
        makespan, 0.0 if fixed_horizon else costs.blocked_power_w * dag.num_ranks
    )
    objective.SetMinimization()
    pairs = [(x, o) for xs in choice.values() for x, o in xs]
    hint_by_var = {id(x): hint.get(c) for c, xs in choice.items() for x, _ in xs}
    solver.SetHint(
        [x for x, _ in pairs],
        [1.0 if o.freq_mhz == hint_by_var[id(x)] else 0.0 for x, o in pairs],
    )
    solver.SetTimeLimit(max(1, int(time_limit_s * 1000)))
    status = solver.Solve(exact_gap())
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        logger.info("MIP polish found no solution (status %s)", status)
        return None
    return status == pywraplp.Solver.OPTIMAL, {
        c: max(xs, key=lambda xo: xo[0].solution_value())[1].freq_mhz for c, xs in choice.items()
    }


def _clock_choices(
    solver: pywraplp.Solver,
    dag: PipelineDAG,
    costs: StageCosts,
    hint: Mapping[Computation, int],
    lp_times_s: Mapping[Computation, float] | None,
    width: int,
) -> tuple[
    dict[Computation, list[tuple[pywraplp.Variable, ClockOption]]],
    dict[Computation, pywraplp.Variable],
]:
    """One boolean per (computation, candidate clock in its window), exactly one chosen, its
    duration linked to a continuous variable (:func:`clock_booleans`)."""
    options = {
        c: _window(
            costs.candidates(c),
            None if lp_times_s is None else lp_times_s[c],
            hint.get(c),
            width,
            costs.blocked_power_w,
        )
        for c in dag.topological
    }
    return clock_booleans(solver, options, costs.blocked_power_w)


def _timing_rows(
    solver: pywraplp.Solver,
    dag: PipelineDAG,
    duration: Mapping[Computation, pywraplp.Variable],
    deadline_s: float,
) -> pywraplp.Variable:
    """Start times after every predecessor and a makespan after each rank's last computation,
    all within ``deadline_s``; returns the makespan variable."""
    inf = solver.infinity()
    start = {c: solver.NumVar(0, deadline_s, "") for c in dag.topological}
    makespan = solver.NumVar(0, deadline_s, "T")
    for u, v in dag.edges():
        row = solver.Constraint(0, inf)
        for var, coef in ((start[v], 1), (start[u], -1), (duration[u], -1)):
            row.SetCoefficient(var, coef)
    for order in dag.rank_orders:
        row = solver.Constraint(0, inf)
        for var, coef in ((makespan, 1), (start[order[-1]], -1), (duration[order[-1]], -1)):
            row.SetCoefficient(var, coef)
    return makespan


def mip_polish(
    dag: PipelineDAG,
    costs: StageCosts,
    deadline_s: float,
    hint: Mapping[Computation, int],
    lp_times_s: Mapping[Computation, float] | None = None,
    *,
    time_limit_s: float = 1.0,
    fixed_horizon: bool = False,
    window_share: float = WINDOW_SHARE,
) -> dict[Computation, int] | None:
    """Exact-time MIP polish within ``time_limit_s`` in all: windows, then neighbourhoods.

    First (``window_share`` of the time) the whole plan, each computation's clocks restricted
    to a window around the LP duration; whenever SCIP proves a window optimal with time left,
    the window doubles (finally: every candidate), hinted with the best plan so far. The rest
    of the time goes to a :class:`NeighbourhoodSearch` from the best plan: small sub-MIPs that
    SCIP solves to optimality, each improving a part of the plan.

    Returns:
        The best clocks found (never worse than ``hint`` in the MIP's energy), or None (no
        SCIP, or nothing found).
    """
    end = time.perf_counter() + time_limit_s
    best = _widen(
        dag, costs, deadline_s, hint, lp_times_s,
        time_limit_s=time_limit_s * window_share, fixed_horizon=fixed_horizon,
    )  # fmt: skip
    if best is None and pywraplp.Solver.CreateSolver("SCIP") is None:
        return None
    search = NeighbourhoodSearch(dag, costs, deadline_s, lp_times_s, fixed_horizon=fixed_horizon)
    return search.run(search.better(hint, best), end - time.perf_counter())


def _widen(
    dag: PipelineDAG,
    costs: StageCosts,
    deadline_s: float,
    hint: Mapping[Computation, int],
    lp_times_s: Mapping[Computation, float] | None,
    *,
    time_limit_s: float,
    fixed_horizon: bool,
) -> dict[Computation, int] | None:
    """The widening-window MIPs of :func:`mip_polish`: the best clocks found, or None."""
    deadline = time.perf_counter() + time_limit_s
    best, width = None, 1
    while True:
        left = deadline - time.perf_counter()
        if left <= 0.05:
            return best
        got = _solve_window(
            dag, costs, deadline_s, best or hint, lp_times_s,
            time_limit_s=left, width=width, fixed_horizon=fixed_horizon,
        )  # fmt: skip
        if got is None:
            return best
        proven, best = got
        if not proven or lp_times_s is None:
            return best
        if width >= max(len(costs.candidates(c)) for c in dag.topological):
            return best
        width *= 2
