"""Large-neighbourhood search over a pipeline plan: small exact-time sub-MIPs (SCIP).

One round frees a few computations (a neighbourhood) and keeps every other computation at its
current clock. With those durations fixed, the DAG collapses onto the free computations: each
one gets a release time (the longest path to it through fixed computations), each ordered pair
a delay (the longest fixed path between them) and each a tail (the longest fixed path from it
to the end of a rank). The sub-MIP has one start time and a few clock Booleans per free
computation and those rows only, so SCIP proves it optimal in a fraction of a second; its
optimum is never worse than the current plan (which is feasible in it), and times stay exact.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from ortools.linear_solver import pywraplp

from fxenergy.schedule.hull import lower_hull

#: relative optimality gap of every SCIP solve (OR-Tools' default, 1e-4, is 0.01 % of the
#: iteration's energy: a third of the gaps to the LP bound this polish works on)
RELATIVE_GAP = 1e-7

if TYPE_CHECKING:  # types only: schedule/ does not import pipeline/ at run time
    from fxenergy.pipeline.costs import ClockOption
    from fxenergy.pipeline.dag import Computation, PipelineDAG, StageCosts


@dataclass(frozen=True)
class Collapsed:
    """The DAG seen from a set of free computations (topological indices), durations fixed.

    Attributes:
        release: per free computation, the longest fixed-only path ending at its start.
        delay: per (u, v) of free computations joined by a path whose inner computations are
            all fixed, the longest such path's length (0 for a direct edge).
        tail: per free computation, the longest fixed-only path from its end to the end of a
            rank (0 when it ends a rank; absent when every such path meets a free one).
        floor_s: the longest path through fixed computations only (a makespan floor).
        asap: per free computation, its earliest start with every duration as given.
        makespan_s: the iteration time with every duration as given.
    """

    release: dict[int, float]
    delay: dict[tuple[int, int], float]
    tail: dict[int, float]
    floor_s: float
    asap: dict[int, float]
    makespan_s: float


def collapse(dag: PipelineDAG, durations: Sequence[float], free: set[int]) -> Collapsed:
    """Longest fixed-only paths between, into and out of the free computations.

    Args:
        dag: the iteration DAG.
        durations: every computation's duration (s) by topological index (free ones unused).
        free: topological indices of the free computations.
    """
    _, preds, _ = dag.index_arrays
    n = len(durations)
    ends = {dag.index_arrays[0][order[-1]] for order in dag.rank_orders}
    head = [0.0] * n  # longest fixed-only path ending at each start
    asap = [0.0] * n
    floor = 0.0
    for k in range(n):
        head[k] = max((head[q] + durations[q] for q in preds[k] if q not in free), default=0.0)
        asap[k] = max((asap[q] + durations[q] for q in preds[k]), default=0.0)
        if k in ends and k not in free:
            floor = max(floor, head[k] + durations[k])
    delay: dict[tuple[int, int], float] = {}
    tail: dict[int, float] = {}
    for u in sorted(free):
        reach = {u: 0.0}  # longest path from u's end to each start, through fixed ones
        best_tail = 0.0 if u in ends else None
        for k in range(u + 1, n):
            got = [reach[q] + (0.0 if q == u else durations[q]) for q in preds[k] if q in reach]
            if not got:
                continue
            if k in free:
                delay[(u, k)] = max(got)
                continue
            reach[k] = max(got)
            if k in ends:
                end = reach[k] + durations[k]
                best_tail = end if best_tail is None else max(best_tail, end)
        if best_tail is not None:
            tail[u] = best_tail
    makespan = max(asap[k] + durations[k] for k in range(n))
    return Collapsed(
        {k: head[k] for k in free}, delay, tail, floor, {k: asap[k] for k in free}, makespan
    )


def solve_neighbourhood(
    dag: PipelineDAG,
    costs: StageCosts,
    deadline_s: float,
    current: Mapping[Computation, int],
    free: set[Computation],
    options: Mapping[Computation, list[ClockOption]],
    *,
    time_limit_s: float,
    fixed_horizon: bool = False,
) -> tuple[bool, dict[Computation, int]] | None:
    """The least-energy clocks of ``free`` with every other computation at ``current``.

    Args:
        dag: the iteration DAG.
        costs: clock options and blocked power.
        deadline_s: iteration time limit (s), exact.
        current: a feasible plan; its clocks are kept outside ``free`` and hinted inside.
        free: the computations whose clocks may change.
        options: the clocks each free computation may take (its current one among them).
        time_limit_s: SCIP wall-time limit.
        fixed_horizon: straggler mode (blocked energy counted to a fixed horizon).

    Returns:
        Whether the sub-MIP was proven optimal, and the whole plan with its solution; None
        (no SCIP, or no solution within the limit).
    """
    index = dag.index_arrays[0]
    order = dag.topological
    durations = [costs.option(c, current[c]).time_s for c in order]
    view = collapse(dag, durations, {index[c] for c in free})
    solver = pywraplp.Solver.CreateSolver("SCIP")
    if solver is None:
        return None
    p, inf = costs.blocked_power_w, solver.infinity()
    objective = solver.Objective()
    makespan = solver.NumVar(min(view.floor_s, deadline_s), deadline_s, "T")
    objective.SetCoefficient(makespan, 0.0 if fixed_horizon else p * dag.num_ranks)
    picks, start, duration, hint = _free_choices(
        solver, [order[k] for k in sorted(view.release)], options, current, p
    )
    hint_vars, hint_vals = list(hint), list(hint.values())
    for k in sorted(view.release):
        c = order[k]
        start[c].SetBounds(view.release[k], deadline_s)
        hint_vars.append(start[c])
        hint_vals.append(view.asap[k])
    start = {k: start[order[k]] for k in view.release}
    dur = {k: duration[order[k]] for k in view.release}
    for (u, v), gap_s in view.delay.items():  # s_v >= s_u + d_u + gap
        _row(solver, gap_s, inf, [(start[v], 1.0), (start[u], -1.0), (dur[u], -1.0)])
    for u, tail_s in view.tail.items():  # T >= s_u + d_u + tail
        _row(solver, tail_s, inf, [(makespan, 1.0), (start[u], -1.0), (dur[u], -1.0)])
    objective.SetMinimization()
    solver.SetHint([*hint_vars, makespan], [*hint_vals, view.makespan_s])
    solver.SetTimeLimit(max(1, int(time_limit_s * 1000)))
    status = solver.Solve(exact_gap())
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        return None
    plan = dict(current)
    for c, xs in picks.items():
        plan[c] = max(xs, key=lambda xo: xo[0].solution_value())[1].freq_mhz
    return status == pywraplp.Solver.OPTIMAL, plan


def clock_booleans(
    solver: pywraplp.Solver,
    options: Mapping[Computation, list[ClockOption]],
    blocked_power_w: float,
) -> tuple[dict, dict]:
    """Per computation: one Boolean per clock option (exactly one chosen; its effective energy
    ``E - P_b t`` in the objective) and a duration variable linked to them.

    Returns:
        (Booleans with their options, duration variables), both keyed by computation.
    """
    objective = solver.Objective()
    picks: dict = {}
    duration: dict = {}
    for c, opts in options.items():
        # An explicit duration variable: SCIP proves these MIPs several times faster with it
        # than with the Booleans' sum in every timing row (measured on the sub-MIPs).
        duration[c] = solver.NumVar(opts[0].time_s, opts[-1].time_s, "")
        one, link = solver.Constraint(1, 1), solver.Constraint(0, 0)
        link.SetCoefficient(duration[c], -1)
        picks[c] = []
        for o in opts:
            x = solver.BoolVar("")
            one.SetCoefficient(x, 1)
            link.SetCoefficient(x, o.time_s)
            objective.SetCoefficient(x, o.energy_j - blocked_power_w * o.time_s)
            picks[c].append((x, o))
    return picks, duration


def _free_choices(
    solver: pywraplp.Solver,
    free: list[Computation],
    options: Mapping[Computation, list[ClockOption]],
    current: Mapping[Computation, int],
    blocked_power_w: float,
) -> tuple[dict, dict, dict, dict]:
    """Per free computation: its clock Booleans and duration (:func:`clock_booleans`), a start
    time, and the current plan as a hint.

    Returns:
        (Booleans with their options, start variables, duration variables, hint values).
    """
    picks, duration = clock_booleans(solver, {c: options[c] for c in free}, blocked_power_w)
    start = {c: solver.NumVar(0.0, solver.infinity(), "") for c in free}
    hint = {x: 1.0 if o.freq_mhz == current[c] else 0.0 for c in free for x, o in picks[c]}
    return picks, start, duration, hint


def exact_gap() -> pywraplp.MPSolverParameters:
    """Solve parameters that stop only at a proven optimum (OR-Tools stops within 0.01 %
    by default: as much as the gaps this search closes)."""
    params = pywraplp.MPSolverParameters()
    params.SetDoubleParam(params.RELATIVE_MIP_GAP, RELATIVE_GAP)
    return params


def _row(
    solver: pywraplp.Solver,
    lower: float,
    upper: float,
    terms: list[tuple[pywraplp.Variable, float]],
) -> None:
    """``lower <= sum(terms) <= upper``."""
    row = solver.Constraint(lower, upper)
    for var, coef in terms:
        row.SetCoefficient(var, coef)


def bracket(opts: list[ClockOption], lp_time_s: float, blocked_power_w: float) -> set[int]:
    """The clocks of the two hull vertices around the LP's duration (one when it sits on one).

    The LP mixes exactly these two; several computations that share slack can mix them too
    (some at each end), which no clock between them matches: they sit above the hull.
    """
    hull = lower_hull(opts, lambda o: o.time_s, lambda o: o.energy_j - blocked_power_w * o.time_s)
    below = max([0] + [k for k, o in enumerate(hull) if o.time_s <= lp_time_s * (1 + 1e-9)])
    out = {hull[below].freq_mhz}
    if below + 1 < len(hull) and lp_time_s > hull[below].time_s * (1 + 1e-9):
        out.add(hull[below + 1].freq_mhz)
    return out


class Score(NamedTuple):
    """What :meth:`NeighbourhoodSearch._score` reads off a plan."""

    iteration_time_s: float
    start_s: dict
    energy_j: float


class NeighbourhoodSearch:
    """Large-neighbourhood search from a feasible plan, deterministic for a given seed.

    Each round frees the computations that start in a window of the iteration (a random
    position; its length adapts: longer while sub-MIPs are proven fast, shorter when they
    time out), solves that sub-MIP and keeps its plan if the evaluator says it uses less
    energy and meets the deadline. A free computation may take its current clock, its
    neighbours, the candidates next to the LP's duration and the hull vertices around it.

    Args:
        dag: the iteration DAG.
        costs: clock options and blocked power.
        deadline_s: iteration time limit (s), exact.
        lp_times_s: the LP relaxation's duration per computation (None: no LP clocks).
        fixed_horizon: straggler mode (blocked energy counted to a fixed horizon).
        seed: the random neighbourhoods' seed.
    """

    def __init__(
        self,
        dag: PipelineDAG,
        costs: StageCosts,
        deadline_s: float,
        lp_times_s: Mapping[Computation, float] | None = None,
        *,
        fixed_horizon: bool = False,
        seed: int = 0,
    ) -> None:
        self.dag, self.costs, self.deadline_s = dag, costs, deadline_s
        self.fixed_horizon = fixed_horizon
        self.rng = random.Random(seed)
        self.share = 0.1  #: window length as a share of the iteration time
        self.kinds: tuple[str, ...] = ("time", "ranks", "microbatches")
        self._turn = -1
        self._lp_clocks: dict[Computation, set[int]] = {}
        for c in dag.topological:
            opts = costs.candidates(c)
            near: set[int] = set()
            if lp_times_s is not None:
                t = lp_times_s[c]
                below = max([0] + [k for k, o in enumerate(opts) if o.time_s <= t * (1 + 1e-9)])
                near = {o.freq_mhz for o in opts[below : below + 2]}
                near |= bracket(opts, t, costs.blocked_power_w)
            self._lp_clocks[c] = near

    def options(self, c: Computation, clock_mhz: int) -> list[ClockOption]:
        """The clocks a free computation may take (see the class docstring)."""
        opts = self.costs.candidates(c)
        at = next((k for k, o in enumerate(opts) if o.freq_mhz == clock_mhz), None)
        keep = set(self._lp_clocks[c]) | {clock_mhz}
        if at is not None:
            keep |= {o.freq_mhz for o in opts[max(0, at - 1) : at + 2]}
        return [o for o in opts if o.freq_mhz in keep]

    def neighbourhood(self, starts: Mapping[Computation, float], span_s: float) -> set:
        """Computations near each other: in turn, those starting in a random window of
        ``share * span_s``; those of two adjacent ranks in a window three times as long; and
        those of a few consecutive microbatches (as many as the window's share)."""
        self._turn = (self._turn + 1) % len(self.kinds)
        kind = self.kinds[self._turn]
        width = self.share * span_s * (3 if kind == "ranks" else 1)
        begin = self.rng.uniform(-width / 2, span_s - width / 2)
        if kind == "microbatches":
            count = max(1, round(self.share * self.dag.num_microbatches))
            first = self.rng.randrange(1 - count, self.dag.num_microbatches)
            return {c for c in starts if first <= c[2] < first + count}
        free = {c for c, s in starts.items() if begin <= s <= begin + width}
        if kind == "ranks":
            rank = self.rng.randrange(self.dag.num_ranks)
            pair = {rank, (rank + 1) % self.dag.num_ranks}
            free = {c for c in free if self.dag.rank_of[c] in pair}
        return free

    def better(
        self, plan: Mapping[Computation, int], other: Mapping[Computation, int] | None
    ) -> dict[Computation, int]:
        """``other`` if it meets the deadline with less energy than ``plan``, else ``plan``."""
        if other is None:
            return dict(plan)
        new = self._score(other)
        old = self._score(plan)
        return dict(other) if self._improves(new, old) else dict(plan)

    def _score(self, freqs: Mapping[Computation, int]) -> Score:
        """A plan's iteration, start times and the energy the MIP minimizes (the evaluator's,
        up to a constant: effective energy, plus blocked power over the iteration unless the
        horizon is fixed). schedule/ cannot import the pipeline evaluator, so it is here."""
        order = self.dag.topological
        _, preds, _ = self.dag.index_arrays
        p = self.costs.blocked_power_w
        finish = [0.0] * len(order)
        starts: dict[Computation, float] = {}
        energy = 0.0
        for k, c in enumerate(order):
            o = self.costs.option(c, freqs[c])
            begin = max((finish[q] for q in preds[k]), default=0.0)
            starts[c], finish[k] = begin, begin + o.time_s
            energy += o.energy_j - p * o.time_s
        span = max(finish)
        if not self.fixed_horizon:
            energy += p * self.dag.num_ranks * span
        return Score(span, starts, energy)

    def _improves(self, new: Score, old: Score) -> bool:
        return (
            new.iteration_time_s <= self.deadline_s * (1 + 1e-12)
            and new.energy_j < old.energy_j - 1e-9
        )

    def run(
        self, plan: Mapping[Computation, int], time_limit_s: float, round_s: float = 0.3
    ) -> dict[Computation, int]:
        """The best plan found from ``plan`` within ``time_limit_s`` (``plan`` if none)."""
        end = time.perf_counter() + time_limit_s
        best = dict(plan)
        ev = self._score(best)
        while (left := end - time.perf_counter()) > 0.02:
            free = self.neighbourhood(ev.start_s, ev.iteration_time_s)
            if not free:
                continue
            options = {c: self.options(c, best[c]) for c in free}
            began = time.perf_counter()
            got = solve_neighbourhood(
                self.dag, self.costs, self.deadline_s, best, free, options,
                time_limit_s=min(round_s, left), fixed_horizon=self.fixed_horizon,
            )  # fmt: skip
            took = time.perf_counter() - began
            if got is None or not got[0]:
                self.share = max(0.03, self.share * 0.8)
            elif took < round_s / 3:
                self.share = min(0.5, self.share * 1.15)
            if got is None:
                continue
            new = self._score(got[1])
            if self._improves(new, ev):
                best, ev = got[1], new
        return best
