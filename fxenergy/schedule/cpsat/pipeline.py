"""Pipeline frequency planning (Perseus's problem) with OR-Tools: LP relaxation and CP-SAT.

:class:`PipelinePlanner` plans one DAG at any deadline: the LP relaxation (:class:`PipelineLP`,
GLOP, kept warm across deadlines) gives a lower bound and a rounded plan, a greedy pass fills
the slack that rounding left, and :class:`PipelineModel` (CP-SAT) optionally polishes the result.

CP-SAT model: per computation ``c`` one Boolean per candidate clock (exactly one true) and a
start time; its duration is the chosen option's time quantized *up*, so the model's schedule is
never shorter than the real one. Constraints: every DAG edge ``start_v >= start_u + dur_u``,
``T >= end`` of each rank's last computation, ``T <= deadline``. Objective, in micro-joules:

    sum_c (E_c - P_b * t_c) + P_b * R * T        (= total energy of the iteration)

with the ``T`` term dropped when planning around a straggler (the horizon is fixed). The model is
built once; each solve works on a copy with its own deadline and a feasible hint, so it is a
short improvement run rather than a solve from scratch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

from ortools.linear_solver import pywraplp
from ortools.sat.python import cp_model

from fxenergy.errors import InfeasibleBudgetError
from fxenergy.pipeline.dag import (
    Computation,
    PipelineDAG,
    PipelinePlan,
    PlanEvaluation,
    SlackTracker,
    StageCosts,
    evaluate,
    max_clock_plan,
    slow_down_greedily,
)
from fxenergy.schedule.hull import lower_hull

logger = logging.getLogger(__name__)

ENERGY_UNIT_J = 1e-6  #: objective resolution


@dataclass(frozen=True)
class SolveResult:
    """What one CP-SAT run returned (clocks are checked by the caller's evaluator)."""

    freqs_mhz: dict[Computation, int]
    status: str  #: "optimal", "feasible" or "no-solution"
    wall_s: float
    objective_j: float


class PipelineModel:
    """A CP-SAT model of one DAG whose deadline can be changed between solves.

    Args:
        dag: the iteration DAG.
        costs: per-computation clock options and blocked power.
        time_unit_s: time quantum; default: 1/100000 of the shortest iteration.
        straggler_s: plan for an iteration that lasts this long anyway (extrinsic bloat):
            blocked energy is counted to this horizon, so only effective energy is minimized.
        workers: CP-SAT search workers.
    """

    def __init__(
        self,
        dag: PipelineDAG,
        costs: StageCosts,
        shortest_s: float,
        *,
        time_unit_s: float | None = None,
        straggler_s: float | None = None,
        workers: int = 2,
    ) -> None:
        self.dag, self.costs, self.workers = dag, costs, workers
        self.unit_s = time_unit_s or shortest_s / 100_000
        self.model = cp_model.CpModel()
        self._options = {c: costs.candidates(c) for c in dag.topological}
        horizon = self._horizon_units()
        self._add_choices()
        self._add_timing(horizon)
        self._add_objective(straggler_s is not None)
        self.shortest_units = self._makespan_units({c: o[0] for c, o in self._options.items()})

    def _q(self, seconds: float) -> int:
        return math.ceil(seconds / self.unit_s - 1e-9)

    def _horizon_units(self) -> int:
        # All computations back to back on one GPU at their slowest: no schedule is longer.
        return sum(self._q(opts[-1].time_s) for opts in self._options.values()) + 1

    def _add_choices(self) -> None:
        self.choice: dict[Computation, list[cp_model.IntVar]] = {}
        for c, opts in self._options.items():
            bools = [self.model.NewBoolVar(f"{c}@{o.freq_mhz}") for o in opts]
            self.model.AddExactlyOne(bools)
            self.choice[c] = bools

    def _duration(self, c: Computation) -> cp_model.LinearExpr:
        opts = self._options[c]
        return sum(b * self._q(o.time_s) for b, o in zip(self.choice[c], opts, strict=True))

    def _add_timing(self, horizon: int) -> None:
        m = self.model
        self.start = {c: m.NewIntVar(0, horizon, f"s{c}") for c in self.dag.topological}
        self.makespan = m.NewIntVar(0, horizon, "makespan")
        for u, v in self.dag.edges():
            m.Add(self.start[v] >= self.start[u] + self._duration(u))
        for order in self.dag.rank_orders:  # last computation of each rank bounds the makespan
            m.Add(self.makespan >= self.start[order[-1]] + self._duration(order[-1]))

    def _add_objective(self, fixed_horizon: bool) -> None:
        p = self.costs.blocked_power_w
        terms = []
        for c, opts in self._options.items():
            for b, o in zip(self.choice[c], opts, strict=True):
                eff = (o.energy_j - p * o.time_s) / ENERGY_UNIT_J
                terms.append(b * round(eff))
        ranks = self.dag.num_ranks
        if not fixed_horizon:
            terms.append(self.makespan * round(p * ranks * self.unit_s / ENERGY_UNIT_J))
        self.model.Minimize(sum(terms))

    def solve(
        self,
        deadline_s: float,
        hint: Mapping[Computation, int] | None = None,
        time_limit_s: float = 5.0,
    ) -> SolveResult:
        """Least-energy clocks with makespan <= ``deadline_s`` (in the quantized model)."""
        # The built model stays untouched; each solve works on a copy with its own bound and
        # hint (variables keep their indices in the copy, so the same handles read it back).
        model = self.model.clone()
        # Rounding durations up can push the all-fastest plan a few quanta past a deadline it
        # meets in real time; never bound below it (the evaluator checks the real schedule).
        bound = max(math.floor(deadline_s / self.unit_s + 1e-9), self.shortest_units)
        model.Add(model.get_int_var_from_proto_index(self.makespan.Index()) <= max(0, bound))
        self._set_hint(model, hint)
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = time_limit_s
        solver.parameters.num_workers = self.workers
        # Presolve and symmetry detection cost seconds on these models and find nothing the
        # hint-driven search needs; skip them so the time goes to improving the hint.
        solver.parameters.cp_model_presolve = False
        solver.parameters.symmetry_level = 0
        status = solver.Solve(model)
        name = {cp_model.OPTIMAL: "optimal", cp_model.FEASIBLE: "feasible"}.get(
            status, "no-solution"
        )
        if name == "no-solution":
            return SolveResult({}, name, solver.WallTime(), math.inf)
        freqs = {
            c: next(
                o.freq_mhz for b, o in zip(bools, self._options[c], strict=True) if solver.Value(b)
            )
            for c, bools in self.choice.items()
        }
        return SolveResult(freqs, name, solver.WallTime(), solver.ObjectiveValue() * ENERGY_UNIT_J)

    def _set_hint(self, model: cp_model.CpModel, hint: Mapping[Computation, int] | None) -> None:
        if not hint:
            return
        picks = {}
        for c, opts in self._options.items():
            # A hinted clock outside the candidates maps to the fastest candidate not slower.
            picks[c] = _nearest(opts, hint[c], self.costs.option(c, hint[c]).time_s)
            for b, o in zip(self.choice[c], opts, strict=True):
                model.AddHint(b, o is picks[c])
        starts: dict[Computation, int] = {}
        model.AddHint(self.makespan, self._makespan_units(picks, starts))
        for c, begin in starts.items():
            model.AddHint(self.start[c], begin)

    def _makespan_units(self, picks: Mapping, starts: dict | None = None) -> int:
        """Quantized as-soon-as-possible makespan of a choice of options (fills ``starts``)."""
        starts = {} if starts is None else starts
        finish: dict[Computation, int] = {}
        for c in self.dag.topological:
            starts[c] = max((finish[p] for p in self.dag.predecessors[c]), default=0)
            finish[c] = starts[c] + self._q(picks[c].time_s)
        return max(finish.values())


class PipelineLP:
    """The LP relaxation (each computation on the convex hull of its options), kept warm.

    Per computation a duration ``d`` between its fastest and slowest option and an energy
    ``z >= `` every segment of the lower convex hull of its (time, effective energy) options.
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
        self._hull = {
            c: lower_hull(costs.candidates(c), _time, lambda o: o.energy_j - p * o.time_s)
            for c in dag.topological
        }
        inf = self.lp.infinity()
        self.dur = {c: self.lp.NumVar(h[0].time_s, h[-1].time_s, "") for c, h in self._hull.items()}
        start = {c: self.lp.NumVar(0, inf, "") for c in dag.topological}
        self.makespan = self.lp.NumVar(0, inf, "T")
        objective = self.lp.Objective()
        for c in dag.topological:
            objective.SetCoefficient(self._add_energy(c, p), 1.0)
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

    def _add_energy(self, c: Computation, p: float) -> pywraplp.Variable:
        hull = self._hull[c]
        z = self.lp.NumVar(-self.lp.infinity(), self.lp.infinity(), "")
        if len(hull) == 1:
            self._row(hull[0].energy_j - p * hull[0].time_s, [(z, 1.0)])
        for a, b in pairwise(hull):
            ea, eb = a.energy_j - p * a.time_s, b.energy_j - p * b.time_s
            slope = (eb - ea) / (b.time_s - a.time_s)
            # z >= ea + slope * (d - t_a)  <=>  z - slope * d >= ea - slope * t_a
            self._row(ea - slope * a.time_s, [(z, 1.0), (self.dur[c], -slope)])
        return z

    def solve(self, deadline_s: float) -> tuple[dict[Computation, int], float] | None:
        """Rounded clocks and the LP bound (J, without the constant idle term), or None."""
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
        self._round_up(pick, sorted(fractional, reverse=True), deadline_s)
        freqs = {c: self._hull[c][i].freq_mhz for c, i in pick.items()}
        return freqs, self.lp.Objective().Value()

    def _round_up(self, pick: dict, fractional: list, deadline_s: float) -> None:
        """Move computations the LP left between two clocks up to the slower one, greedily.

        Rounding all of them down wastes the slack the LP had planned to use; each move is
        kept if the iteration still meets the deadline and the energy (effective energy plus
        blocked power times the longer makespan) goes down.
        """
        p = self.costs.blocked_power_w
        per_second = 0.0 if self.straggler else p * self.dag.num_ranks
        dur = [self._hull[c][pick[c]].time_s for c in self.dag.topological]
        slack = SlackTracker(self.dag, dur, deadline_s, per_second)
        for _, c in fractional:
            lo, hi = self._hull[c][pick[c]], self._hull[c][pick[c] + 1]
            gain = (hi.energy_j - p * hi.time_s) - (lo.energy_j - p * lo.time_s)
            if slack.try_grow(slack.index[c], hi.time_s - lo.time_s, gain):
                pick[c] += 1


def _time(o) -> float:
    return o.time_s


def _nearest(opts: list, freq_mhz: int, time_s: float):
    for o in opts:
        if o.freq_mhz == freq_mhz:
            return o
    faster = [o for o in opts if o.time_s <= time_s]
    return faster[-1] if faster else opts[0]


class PipelinePlanner:
    """Plans one DAG at any deadline: warm LP -> rounded plan -> greedy -> CP-SAT polish.

    Every candidate plan goes through :func:`evaluate`; the kept plan is the least-energy one
    that meets the deadline in real time, and the all-max-clock plan is always a candidate, so a
    plan is never worse than the baseline.

    Args:
        dag: the iteration DAG.
        costs: clock options and blocked power.
        straggler_s: plan for an iteration that a slower pipeline stretches to this long.
        polish_s: CP-SAT time per plan (0 keeps the LP + greedy plan).
        workers: CP-SAT workers.
    """

    def __init__(
        self,
        dag: PipelineDAG,
        costs: StageCosts,
        *,
        straggler_s: float | None = None,
        polish_s: float = 1.0,
        workers: int = 2,
    ) -> None:
        self.dag, self.costs, self.polish_s, self.workers = dag, costs, polish_s, workers
        self.straggler_s = straggler_s
        self.fastest = max_clock_plan(dag, costs)
        self.baseline = evaluate(dag, costs, self.fastest)
        self.shortest_s = self.baseline.iteration_time_s
        if straggler_s is not None and straggler_s < self.shortest_s * (1 - 1e-9):
            raise InfeasibleBudgetError(
                f"straggler time {straggler_s:.6g} s is shorter than this pipeline's shortest "
                f"iteration {self.shortest_s:.6g} s; this pipeline is the straggler"
            )
        self.lp = PipelineLP(dag, costs, straggler=straggler_s is not None)
        self._cp: PipelineModel | None = None

    @property
    def cp(self) -> PipelineModel:
        if self._cp is None:  # built on first use: a pure-LP frontier never needs it
            self._cp = PipelineModel(
                self.dag,
                self.costs,
                self.shortest_s,
                workers=self.workers,
                straggler_s=self.straggler_s,
            )
        return self._cp

    def plan(
        self, deadline_s: float | None = None, hint: Mapping[Computation, int] | None = None
    ) -> PipelinePlan:
        """The least-energy plan found with iteration time <= ``deadline_s``.

        ``deadline_s`` defaults to the straggler time, or to the shortest iteration.

        Raises:
            InfeasibleBudgetError: the deadline is shorter than the all-max-clock iteration.
        """
        if deadline_s is None:
            deadline_s = self.straggler_s or self.shortest_s
        if deadline_s < self.shortest_s * (1 - 1e-9):
            raise InfeasibleBudgetError(
                f"deadline {deadline_s:.6g} s is below the shortest possible iteration "
                f"{self.shortest_s:.6g} s (every computation at its fastest clock); "
                "allow a longer iteration"
            )
        horizon = self.straggler_s or 0.0
        deadline_s = max(deadline_s, self.shortest_s)
        base = self._baseline_at(horizon)
        best = (self.fastest, base, "max-clock")
        if hint:
            best = self._better(best, dict(hint), "hint", deadline_s, horizon)
        bound = None
        lp = self.lp.solve(deadline_s)
        if lp is not None:
            # The greedy pass only accepts moves that lower the evaluator's energy, so the
            # rounded LP plan itself need not be scored.
            greedy = slow_down_greedily(
                self.dag, self.costs, lp[0], deadline_s, self.straggler_s is not None
            )
            best = self._better(best, greedy, "lp+greedy", deadline_s, horizon)
            idle_const = self.costs.blocked_power_w * self.dag.num_ranks * horizon
            bound = lp[1] + (idle_const if self.straggler_s else 0.0)
        if self.polish_s > 0:
            result = self.cp.solve(deadline_s, best[0], time_limit_s=self.polish_s)
            if result.freqs_mhz:
                best = self._better(best, result.freqs_mhz, "lp+cpsat", deadline_s, horizon)
        logger.info(
            "deadline %.6g s: kept the %s plan, %.1f J (all-max-clock %.1f J, LP bound %s J)",
            deadline_s, best[2], best[1].energy_j, base.energy_j,
            "n/a" if bound is None else f"{bound:.1f}",
        )  # fmt: skip
        return PipelinePlan(self.dag, best[0], best[1], base, deadline_s, best[2], bound)

    def _baseline_at(self, horizon: float) -> PlanEvaluation:
        if horizon <= self.shortest_s:
            return self.baseline
        return evaluate(self.dag, self.costs, self.fastest, horizon_s=horizon)

    def _better(self, best: tuple, freqs: dict, method: str, deadline_s: float, horizon: float):
        """The candidate if it meets the deadline in real time and uses less energy."""
        ev = evaluate(self.dag, self.costs, freqs, horizon_s=horizon)
        if ev.iteration_time_s <= deadline_s * (1 + 1e-12) and ev.energy_j < best[1].energy_j:
            return (freqs, ev, method)
        return best

    def frontier(self, points: int = 40, polish_s: float = 0.0) -> list[PipelinePlan]:
        """Plans from the shortest iteration to the least-energy one, shortest first.

        The least-energy end is the LP optimum with no deadline; ``points`` deadlines are
        spread evenly between the two ends, each warm-started from the one before (GLOP keeps
        its basis; the previous plan is a feasible hint). ``polish_s`` > 0 adds a CP-SAT
        improvement run per point. Points whose plan is no better than a shorter one are
        dropped, so the list is a frontier.
        """
        free = self.lp.solve(math.inf)
        end = self.shortest_s
        if free is not None:
            end = max(end, evaluate(self.dag, self.costs, free[0]).iteration_time_s)
        plans: list[PipelinePlan] = []
        hint = None
        keep, self.polish_s = self.polish_s, polish_s  # frontier points: LP, CP-SAT optional
        try:
            for i in range(points):
                deadline = self.shortest_s + (end - self.shortest_s) * i / max(1, points - 1)
                # The previous plan only helps CP-SAT; without polish it is not rescored.
                plan = self.plan(deadline, hint if polish_s > 0 else None)
                hint = plan.freqs_mhz
                if not plans or plan.evaluation.energy_j < plans[-1].evaluation.energy_j - 1e-9:
                    plans.append(plan)
        finally:
            self.polish_s = keep
        return plans
