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

from ortools.sat.python import cp_model

from fxenergy.errors import InfeasibleBudgetError
from fxenergy.pipeline.dag import (
    Computation,
    PipelineDAG,
    PipelinePlan,
    PlanEvaluation,
    StageCosts,
    evaluate_pipeline,
    fastest_plan,
    max_clock_plan,
)
from fxenergy.schedule.cpsat.pipeline_lp import PipelineLP
from fxenergy.schedule.cpsat.pipeline_mip import mip_polish
from fxenergy.schedule.pipeline_sweep import slow_down_greedily

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

    def _units_up(self, seconds: float) -> int:
        """``seconds`` in the model's integer time units, rounded up."""
        return math.ceil(seconds / self.unit_s - 1e-9)

    def _horizon_units(self) -> int:
        # All computations back to back on one GPU at their slowest: no schedule is longer.
        return sum(self._units_up(opts[-1].time_s) for opts in self._options.values()) + 1

    def _add_choices(self) -> None:
        self.choice: dict[Computation, list[cp_model.IntVar]] = {}
        for c, opts in self._options.items():
            bools = [self.model.NewBoolVar(f"{c}@{o.freq_mhz}") for o in opts]
            self.model.AddExactlyOne(bools)
            self.choice[c] = bools

    def _duration(self, c: Computation) -> cp_model.LinearExpr:
        opts = self._options[c]
        return sum(b * self._units_up(o.time_s) for b, o in zip(self.choice[c], opts, strict=True))

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
            finish[c] = starts[c] + self._units_up(picks[c].time_s)
        return max(finish.values())


def _nearest(opts: list, freq_mhz: int, time_s: float):
    for o in opts:
        if o.freq_mhz == freq_mhz:
            return o
    faster = [o for o in opts if o.time_s <= time_s]
    return faster[-1] if faster else opts[0]


class PipelinePlanner:
    """Plans one DAG at any deadline: warm LP -> rounded plan -> greedy -> CP-SAT polish.

    Every candidate plan goes through :func:`~fxenergy.pipeline.dag.evaluate_pipeline`; the kept
    plan is the least-energy one that meets the deadline in real time. The fastest plan (every
    computation at its fastest measured option, ``shortest_s``) and, where it meets the
    deadline, the all-max-clock plan (``all_max_s``, the baseline savings are counted against)
    are always candidates, so a plan
    is never worse than the baseline.

    Args:
        dag: the iteration DAG.
        costs: clock options and blocked power.
        straggler_s: plan for an iteration that a slower pipeline stretches to this long.
        polish_s: CP-SAT time per plan (0 keeps the LP + greedy plan).
        workers: CP-SAT workers.
        split_clocks: also consider the LP optimum itself, made real by running each
            computation the LP put between two clocks partly at each (:class:`ClockSplit`):
            a plan at the LP bound, with one more clock switch per split computation.
    """

    def __init__(
        self,
        dag: PipelineDAG,
        costs: StageCosts,
        *,
        straggler_s: float | None = None,
        polish_s: float = 1.0,
        workers: int = 2,
        split_clocks: bool = False,
    ) -> None:
        self.dag, self.costs, self.polish_s, self.workers = dag, costs, polish_s, workers
        self.straggler_s, self.split_clocks = straggler_s, split_clocks
        self.fastest = fastest_plan(dag, costs)
        self.shortest_s = evaluate_pipeline(dag, costs, self.fastest).iteration_time_s
        self.all_max = max_clock_plan(dag, costs)
        self.baseline = evaluate_pipeline(dag, costs, self.all_max)
        self.all_max_s = self.baseline.iteration_time_s
        if straggler_s is not None and straggler_s < self.shortest_s * (1 - 1e-9):
            raise InfeasibleBudgetError(
                f"straggler time {straggler_s:.6g} s is shorter than this pipeline's shortest "
                f"iteration {self.shortest_s:.6g} s; this pipeline is the straggler"
            )
        self.lp = PipelineLP(dag, costs, straggler=straggler_s is not None)
        self._cp: PipelineModel | None = None
        self._cache: dict[tuple[str, float], PlanEvaluation] = {}
        self.nearest = True  #: also round to the nearest vertex (off for frontier points)

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
                f"{self.shortest_s:.6g} s (every computation at its fastest measured clock); "
                "allow a longer iteration"
            )
        horizon = self.straggler_s or 0.0
        deadline_s = max(deadline_s, self.shortest_s)
        base = self._baseline_at(horizon)
        best = (self.fastest, self._evaluated("fastest", horizon), "fastest")
        if self.all_max_s <= deadline_s * (1 + 1e-12):
            allmax = self._evaluated("max-clock", horizon)
            if allmax.energy_j < best[1].energy_j:
                best = (self.all_max, allmax, "max-clock")
        if hint:
            best = self._better(best, dict(hint), "hint", deadline_s, horizon)
        bound = None
        lp = self.lp.solve(deadline_s, exact=self.nearest)
        if lp is not None:
            # The greedy pass only accepts moves that lower the evaluator's energy, so the
            # rounded LP plan itself need not be scored.
            greedy = slow_down_greedily(
                self.dag, self.costs, lp[0], deadline_s, self.straggler_s is not None
            )
            best = self._better(best, greedy, "lp+greedy", deadline_s, horizon)
            nearest = self.lp.round_nearest(deadline_s) if self.nearest else None
            if nearest is not None:  # a second rounding: to the nearest vertex, then repaired
                greedy = slow_down_greedily(
                    self.dag, self.costs, nearest, deadline_s, self.straggler_s is not None
                )
                best = self._better(best, greedy, "lp-nearest+greedy", deadline_s, horizon)
            idle_const = self.costs.blocked_power_w * self.dag.num_ranks * horizon
            bound = lp[1] + (idle_const if self.straggler_s else 0.0)
        if self.polish_s > 0:
            best = self._polish(best, deadline_s, horizon, lp is not None)
        if self.split_clocks and lp is not None:
            split = self.lp.split_plan(deadline_s)
            if split is not None:
                best = self._better(best, split[0], "lp-split", deadline_s, horizon, split[1])
        logger.info(
            "deadline %.6g s: kept the %s plan, %.1f J (all-max-clock %.1f J, LP bound %s J)",
            deadline_s, best[2], best[1].energy_j, base.energy_j,
            "n/a" if bound is None else f"{bound:.1f}",
        )  # fmt: skip
        splits = best[3] if len(best) > 3 else {}
        return PipelinePlan(self.dag, best[0], best[1], base, deadline_s, best[2], bound, splits)

    def _polish(self, best: tuple, deadline_s: float, horizon: float, have_lp: bool) -> tuple:
        """Improve the best plan: exact-time MIP (SCIP) near the LP optimum, else CP-SAT."""
        lp_times = self.lp.durations() if have_lp else None
        freqs = mip_polish(
            self.dag, self.costs, deadline_s, best[0], lp_times,
            time_limit_s=self.polish_s, fixed_horizon=self.straggler_s is not None,
        )  # fmt: skip
        if freqs is not None:
            return self._better(best, freqs, "lp+mip", deadline_s, horizon)
        result = self.cp.solve(deadline_s, best[0], time_limit_s=self.polish_s)
        if result.freqs_mhz:
            return self._better(best, result.freqs_mhz, "lp+cpsat", deadline_s, horizon)
        return best

    def _evaluated(self, which: str, horizon: float) -> PlanEvaluation:
        """The fastest or all-max-clock plan's evaluation at a horizon, computed once."""
        key = (which, horizon)
        if key not in self._cache:
            freqs = self.fastest if which == "fastest" else self.all_max
            self._cache[key] = evaluate_pipeline(self.dag, self.costs, freqs, horizon_s=horizon)
        return self._cache[key]

    def _baseline_at(self, horizon: float) -> PlanEvaluation:
        return self.baseline if horizon <= self.all_max_s else self._evaluated("max-clock", horizon)

    def _better(
        self,
        best: tuple,
        freqs: dict,
        method: str,
        deadline_s: float,
        horizon: float,
        splits: dict | None = None,
    ) -> tuple:
        """The candidate if it meets the deadline in real time and uses less energy."""
        ev = evaluate_pipeline(self.dag, self.costs, freqs, horizon_s=horizon, splits=splits)
        if ev.iteration_time_s <= deadline_s * (1 + 1e-12) and ev.energy_j < best[1].energy_j:
            return (freqs, ev, method, splits or {})
        return best

    def frontier(self, points: int = 40, polish_s: float = 0.0) -> list[PipelinePlan]:
        """Plans from the shortest iteration to the least-energy one, shortest first.

        The least-energy end is the LP optimum with no deadline; ``points`` deadlines are
        spread evenly between the two ends, each warm-started from the one before (GLOP keeps
        its basis; the previous plan is a feasible hint). ``polish_s`` > 0 adds a CP-SAT
        improvement run per point. Points whose plan is no better than a shorter one are
        dropped, so the list is a frontier.
        """
        free = self.lp.solve(math.inf, exact=False)
        end = self.shortest_s
        if free is not None:
            end = max(end, evaluate_pipeline(self.dag, self.costs, free[0]).iteration_time_s)
        plans: list[PipelinePlan] = []
        hint = None
        keep, self.polish_s = self.polish_s, polish_s  # frontier points: LP, CP-SAT optional
        self.nearest = False
        try:
            for i in range(points):
                deadline = self.shortest_s + (end - self.shortest_s) * i / max(1, points - 1)
                # The previous plan only helps CP-SAT; without polish it is not rescored.
                plan = self.plan(deadline, hint if polish_s > 0 else None)
                hint = plan.freqs_mhz
                if not plans or plan.evaluation.energy_j < plans[-1].evaluation.energy_j - 1e-9:
                    plans.append(plan)
        finally:
            self.polish_s, self.nearest = keep, True
        return plans
