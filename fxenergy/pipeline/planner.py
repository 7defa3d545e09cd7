"""Pipeline frequency planning (Perseus's problem): one DAG planned at any deadline.

:class:`PipelinePlanner` plans one DAG at any deadline: the LP relaxation
(:class:`~fxenergy.schedule.cpsat.pipeline_lp.PipelineLP`, GLOP, kept warm across deadlines)
gives a lower bound and a rounded plan, a greedy pass fills the slack that rounding left, an
exact-time MIP (SCIP; CP-SAT where OR-Tools has no SCIP) polishes the result, and with
``split_clocks`` the LP optimum itself is a candidate (clock splits).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

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
from fxenergy.schedule.cpsat.pipeline import PipelineModel
from fxenergy.schedule.cpsat.pipeline_lp import PipelineLP
from fxenergy.schedule.cpsat.pipeline_mip import mip_polish
from fxenergy.schedule.pipeline_sweep import slow_down_greedily

logger = logging.getLogger(__name__)


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
        # (clocks, evaluation, method, splits) of the best candidate so far
        best = (self.fastest, self._evaluated("fastest", horizon), "fastest", {})
        if self.all_max_s <= deadline_s * (1 + 1e-12):
            allmax = self._evaluated("max-clock", horizon)
            if allmax.energy_j < best[1].energy_j:
                best = (self.all_max, allmax, "max-clock", {})
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
        return PipelinePlan(self.dag, best[0], best[1], base, deadline_s, best[2], bound, best[3])

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
