"""The LP relaxation of pipeline clock planning (GLOP) and two roundings of its optimum.

Per computation a duration ``d`` between its fastest and slowest option and an energy ``z`` on
the lower convex hull of its (time, effective energy) options; precedence between starts; the
makespan under the deadline. Its optimum is a lower bound on the energy of any plan at that
deadline. Plans come from it two ways: each ``d`` down to the hull vertex below it, then
fractional ones up where the deadline allows; or each ``d`` to the nearest vertex, then the
cheapest critical computations sped up until the deadline is met.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import TYPE_CHECKING

from ortools.linear_solver import pywraplp

from fxenergy.schedule.hull import lower_hull
from fxenergy.schedule.pipeline_sweep import SlackTracker, slow_down_greedily

if TYPE_CHECKING:  # types only: schedule/ does not import pipeline/ at run time
    from fxenergy.pipeline.dag import ClockSplit, Computation, PipelineDAG, StageCosts


class PipelineLP:
    """The LP relaxation (each computation on the convex hull of its options), kept warm.

    Per computation a duration ``d`` between its fastest and slowest option, costed by the
    lower convex hull of its (time, effective energy) options.
    Its optimum is a lower bound on the energy at a deadline, and rounding ``d`` down to the
    nearest hull vertex gives a feasible plan close to it: the hint CP-SAT starts from. Only
    the deadline bound changes between solves, so GLOP re-solves from its last basis.
    """

    def __init__(self, dag: PipelineDAG, costs: StageCosts, straggler: bool = False) -> None:
        self.dag, self.costs, self.straggler = dag, costs, straggler
        self.lp = pywraplp.Solver.CreateSolver("GLOP")
        # A deadline change moves one bound: dual simplex re-solves from the last basis, and
        # presolve would throw that basis away (measured: about 2x faster per frontier point).
        self.lp.SetSolverSpecificParametersAsString(
            "use_dual_simplex: true use_preprocessing: false"
        )
        p = costs.blocked_power_w
        hulls: dict[tuple[int, str], list] = {}  # options are per (stage, kind)
        for c in dag.topological:
            if (c[0], c[1]) not in hulls:
                hulls[(c[0], c[1])] = lower_hull(
                    costs.candidates(c), lambda o: o.time_s, lambda o: o.energy_j - p * o.time_s
                )
        self._hull = {c: hulls[(c[0], c[1])] for c in dag.topological}
        inf = self.lp.infinity()
        self.dur = {c: self.lp.NumVar(h[0].time_s, h[-1].time_s, "") for c, h in self._hull.items()}
        start = {c: self.lp.NumVar(0, inf, "") for c in dag.topological}
        self.makespan = self.lp.NumVar(0, inf, "T")
        objective = self.lp.Objective()
        objective.SetOffset(sum(self._add_energy(c, p) for c in dag.topological))
        # Rows through the low-level API: the operator API costs more than the solves here.
        for u, v in dag.edges():
            self._row(0.0, [(start[v], 1.0), (start[u], -1.0), (self.dur[u], -1.0)])
        for order in dag.rank_orders:
            last = order[-1]
            self._row(0.0, [(self.makespan, 1.0), (start[last], -1.0), (self.dur[last], -1.0)])
        objective.SetCoefficient(self.makespan, 0.0 if straggler else p * dag.num_ranks)
        objective.SetMinimization()

    def _row(self, lower: float, terms: list) -> None:
        row = self.lp.Constraint(lower, self.lp.infinity())
        for var, coef in terms:
            row.SetCoefficient(var, coef)

    def _add_energy(self, c: Computation, p: float) -> float:
        """``d = t_0 + sum(delta_k)``, ``0 <= delta_k <= segment k``, cost ``slope_k`` each.

        The hull is convex (slopes increase), so the LP fills segments in order and the cost
        of ``d`` is the hull's value there. Bounded ``delta`` columns instead of one row per
        segment keep the LP small (measured: several times faster per frontier point).
        Returns the constant ``E_0 - P_b t_0`` of the fastest vertex.
        """
        hull = self._hull[c]
        row = self.lp.Constraint(hull[0].time_s, hull[0].time_s)
        row.SetCoefficient(self.dur[c], 1.0)
        objective = self.lp.Objective()
        for a, b in pairwise(hull):
            ea, eb = a.energy_j - p * a.time_s, b.energy_j - p * b.time_s
            delta = self.lp.NumVar(0.0, b.time_s - a.time_s, "")
            row.SetCoefficient(delta, -1.0)
            objective.SetCoefficient(delta, (eb - ea) / (b.time_s - a.time_s))
        return hull[0].energy_j - p * hull[0].time_s

    def solve(
        self, deadline_s: float, exact: bool = True
    ) -> tuple[dict[Computation, int], float] | None:
        """Rounded clocks and the LP bound (J, without the constant idle term), or None.

        ``exact`` rounds fractional computations up one at a time in order of how far the LP
        moved them (exact slack after each move); otherwise in two linear sweeps (faster,
        used for frontier points).
        """
        self.makespan.SetUb(deadline_s)
        if self.lp.Solve() != pywraplp.Solver.OPTIMAL:
            return None
        pick: dict[Computation, int] = {}
        fractional: list[tuple[float, Computation]] = []
        for c, d in self.dur.items():
            # The hull vertex at or just below the LP's duration: never longer than the LP's.
            hull, t = self._hull[c], d.solution_value()
            i = max([0] + [k for k, o in enumerate(hull) if o.time_s <= t * (1 + 1e-9)])
            pick[c] = i
            if i + 1 < len(hull) and t > hull[i].time_s * (1 + 1e-9):
                share = (t - hull[i].time_s) / (hull[i + 1].time_s - hull[i].time_s)
                fractional.append((share, c))
        if exact:
            self._round_up_exact(pick, sorted(fractional, reverse=True), deadline_s)
        else:
            self._round_up(pick, fractional, deadline_s)
        freqs = {c: self._hull[c][i].freq_mhz for c, i in pick.items()}
        return freqs, self.lp.Objective().Value()

    def _round_up(self, pick: dict, fractional: list, deadline_s: float) -> None:
        """Move computations the LP left between two clocks up to the slower one, greedily.

        Rounding all of them down wastes the slack the LP had planned to use. Two linear
        sweeps (:func:`slow_down_greedily` restricted to the slower vertex): first the
        computations the LP put more than half-way to it, then the rest; a move is kept if
        the iteration still meets the deadline and the energy goes down.
        """
        freqs = {c: self._hull[c][i].freq_mhz for c, i in pick.items()}
        for half in (True, False):
            up = {
                c: [self._hull[c][pick[c]], self._hull[c][pick[c] + 1]]
                for share, c in fractional
                if (share >= 0.5) == half
            }
            freqs = slow_down_greedily(self.dag, self.costs, freqs, deadline_s, self.straggler, up)
        for c in pick:
            if freqs[c] != self._hull[c][pick[c]].freq_mhz:
                pick[c] += 1

    def _round_up_exact(self, pick: dict, fractional: list, deadline_s: float) -> None:
        """As :meth:`_round_up`, one computation at a time, largest LP share first."""
        p = self.costs.blocked_power_w
        per_second = 0.0 if self.straggler else p * self.dag.num_ranks
        dur = [self._hull[c][pick[c]].time_s for c in self.dag.topological]
        slack = SlackTracker(self.dag, dur, deadline_s, per_second)
        for _, c in fractional:
            lo, hi = self._hull[c][pick[c]], self._hull[c][pick[c] + 1]
            gain = (hi.energy_j - p * hi.time_s) - (lo.energy_j - p * lo.time_s)
            if slack.try_grow(slack.index[c], hi.time_s - lo.time_s, gain):
                pick[c] += 1

    def round_nearest(self, deadline_s: float) -> dict[Computation, int] | None:
        """Clocks from the last optimum rounded to the nearest hull vertex, then repaired.

        Rounding to the nearest vertex can overrun the deadline; while it does, the
        computation on a critical path whose next faster vertex costs the least energy per
        second gained is sped up (the time-cost trade-off's classic crashing step).
        """
        p = self.costs.blocked_power_w
        pick = {}
        for c in self.dur:
            i, t, hull = self._vertex_below(c), self.dur[c].solution_value(), self._hull[c]
            up = i + 1 < len(hull) and t - hull[i].time_s > hull[i + 1].time_s - t
            pick[c] = i + 1 if up else i
        order = self.dag.topological
        _, preds, succs = self.dag.index_arrays
        for _ in range(len(order) * 4):
            dur = [self._hull[c][pick[c]].time_s for c in order]
            finish, latest = finish_times(dur, preds, succs)
            span = max(finish)
            if span <= deadline_s * (1 + 1e-12):
                return {c: self._hull[c][pick[c]].freq_mhz for c in order}
            best, price = None, math.inf
            for k, c in enumerate(order):
                if pick[c] == 0 or latest[k] - finish[k] > 1e-9 * span:
                    continue
                fast, slow = self._hull[c][pick[c] - 1], self._hull[c][pick[c]]
                cost = (fast.energy_j - p * fast.time_s) - (slow.energy_j - p * slow.time_s)
                if cost / (slow.time_s - fast.time_s) < price:
                    best, price = c, cost / (slow.time_s - fast.time_s)
            if best is None:
                return None
            pick[best] -= 1
        return None

    def split_plan(
        self, deadline_s: float
    ) -> tuple[dict[Computation, int], dict[Computation, ClockSplit]] | None:
        """The last optimum itself: each computation between two hull vertices is *split*.

        A computation whose LP duration lies between hull vertices ``a`` (faster) and ``b``
        starts at ``a`` and runs the share ``(d - t_a) / (t_b - t_a)`` of its work at ``b``, so
        its time and energy are the LP's. GLOP's tolerance can leave the schedule a hair past
        the deadline; shares on the critical path are then trimmed until it fits.

        Returns:
            Clocks and splits, or None (the trimming could not meet the deadline).
        """
        freqs: dict[Computation, int] = {}
        splits: dict[Computation, ClockSplit] = {}
        for c, d in self.dur.items():
            i, hull, t = self._vertex_below(c), self._hull[c], d.solution_value()
            freqs[c] = hull[i].freq_mhz
            if i + 1 < len(hull):
                share = (t - hull[i].time_s) / (hull[i + 1].time_s - hull[i].time_s)
                if share >= 1 - 1e-9:
                    freqs[c] = hull[i + 1].freq_mhz
                elif share > 1e-9:
                    splits[c] = self.costs.split(c, freqs[c], hull[i + 1].freq_mhz, share)
        return self._trim(freqs, splits, deadline_s)

    def _trim(
        self, freqs: dict, splits: dict, deadline_s: float
    ) -> tuple[dict[Computation, int], dict[Computation, ClockSplit]] | None:
        order = self.dag.topological
        _, preds, succs = self.dag.index_arrays
        for _ in range(64):
            dur = [self.costs.run(c, freqs[c], splits.get(c)).time_s for c in order]
            finish, latest = finish_times(dur, preds, succs)
            over = max(finish) - deadline_s * (1 + 1e-13)
            if over <= 0:
                return freqs, splits
            crit = [c for k, c in enumerate(order) if latest[k] - finish[k] <= 1e-12 * finish[k]]
            crit = [c for c in crit if c in splits]
            if not crit:
                return None
            for c in crit:  # every critical split gives back the overrun (a hair each)
                a, b = self.costs.option(c, freqs[c]), self.costs.option(c, splits[c].then_mhz)
                share = splits[c].share - 2 * over / (b.time_s - a.time_s)
                if share <= 1e-9:
                    del splits[c]
                else:
                    splits[c] = self.costs.split(c, freqs[c], splits[c].then_mhz, share)
        return None

    def durations(self) -> dict[Computation, float]:
        """The last optimum's duration per computation (s)."""
        return {c: d.solution_value() for c, d in self.dur.items()}

    def _vertex_below(self, c: Computation) -> int:
        t = self.dur[c].solution_value()
        return max([0] + [k for k, o in enumerate(self._hull[c]) if o.time_s <= t * (1 + 1e-9)])


def finish_times(dur: list[float], preds: list, succs: list) -> tuple[list[float], list[float]]:
    """Earliest finish and latest finish (against the makespan) of each computation."""
    n = len(dur)
    finish = [0.0] * n
    for k in range(n):
        finish[k] = max([finish[q] for q in preds[k]], default=0.0) + dur[k]
    span = max(finish)
    latest = [0.0] * n
    for k in range(n - 1, -1, -1):
        latest[k] = min([latest[q] - dur[q] for q in succs[k]], default=span)
    return finish, latest
