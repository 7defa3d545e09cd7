"""The CP-SAT model of pipeline frequency planning (Perseus's problem).

:class:`fxenergy.pipeline.planner.PipelinePlanner` plans one DAG at any deadline (LP relaxation,
roundings, greedy, an exact-time MIP polish); this model is its polish where OR-Tools has no SCIP.

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
from typing import TYPE_CHECKING

from ortools.sat.python import cp_model

if TYPE_CHECKING:  # types only: schedule/ does not import pipeline/ at run time
    from fxenergy.pipeline.dag import Computation, PipelineDAG, StageCosts

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
