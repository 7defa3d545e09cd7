"""Plan the graphs one step (or one call) runs as ONE cycle, and make each graph's plan from it.

:func:`plan_cycle` takes annotated graphs in call order (a graph may appear more than once),
builds their problems on one set of clocks and units, concatenates them
(:func:`fxenergy.plans.cycle.concat_problems`), solves the cyclic problem once
(:func:`fxenergy.schedule.solve.solve`, then the planner's best-global-clock check) and splits the
solution back into one :class:`~fxenergy.plans.plan.Plan` per call position. The totals are
re-evaluated (:func:`fxenergy.schedule.validate.evaluate`) on the same problem built with units a
million times finer, so the predicted seconds and joules are the DVFS model's to ~1e-12, which
is what the simulator charges.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed
import torch.fx

from fxenergy.hardware.dvfs import DVFSModel, get_dvfs_model
from fxenergy.plans.cycle import CycleProblem, concat_problems, entry_clocks, split_solution
from fxenergy.plans.plan import Plan, PlanMetrics, PlanPartition, graph_fingerprint
from fxenergy.plans.planner import _with_global_clock, annotate
from fxenergy.schedule.build import GraphProblem, build_problem
from fxenergy.schedule.problem import Problem, Solution
from fxenergy.schedule.solve import ScheduleResult, solve
from fxenergy.schedule.validate import evaluate, peak_memory

T = TypeVar("T")

#: the exact-accounting problem's units are this many times finer than the solver's
_FINE = 1_000_000


@dataclass(frozen=True)
class StepRun:
    """What one run of a whole cycle cost (summed over its graphs' runtime summaries)."""

    time_s: float
    energy_j: float
    switches: int
    simulated: bool


@dataclass
class CyclePlan:
    """One planned cycle: the graphs in call order and each position's plan.

    Attributes:
        index: the cycle's number on its backend (0, 1, ... as variants appear).
        sequence: graph indices (into the backend's ``graphs``) in call order.
        plans: the plan of each call position (a graph that runs twice has two plans).
        predicted: time, energy, peak memory and switches of one cycle (steady state: the
            clock carried in from the previous cycle).
        baseline: every node at the maximum clock, in program order.
        status, gap, solve_time_s, notes: from the solver.
        runs: one entry per completed cycle run under this plan.
    """

    index: int
    sequence: tuple[int, ...]
    plans: tuple[Plan, ...]
    predicted: PlanMetrics
    baseline: PlanMetrics
    status: str
    gap: float | None
    solve_time_s: float
    notes: tuple[str, ...]
    modules: tuple[torch.fx.GraphModule, ...] = ()
    runs: list[StepRun] = field(default_factory=list)

    @property
    def energy_saving(self) -> float:
        """Predicted fraction of the all-max energy saved per cycle."""
        b = self.baseline.energy_j
        return 1.0 - self.predicted.energy_j / b if b else 0.0

    @property
    def slowdown(self) -> float:
        """Predicted cycle time over the all-max time, minus one."""
        b = self.baseline.time_s
        return self.predicted.time_s / b - 1.0 if b else 0.0


def _problems(
    gms: Sequence[torch.fx.GraphModule], model: DVFSModel, clocks: Sequence[int] | None
) -> tuple[list[GraphProblem], list[GraphProblem]]:
    """Each distinct graph's problem on common clocks, with coarse (solver) and fine units."""
    distinct = list({id(g): g for g in gms}.values())
    own = {id(g): build_problem(g, model, clocks) for g in distinct}
    first = own[id(distinct[0])].problem
    units = (
        sum(own[id(g)].problem.time_unit_s for g in distinct),
        sum(own[id(g)].problem.energy_unit_j for g in distinct),
    )
    fine_units = (units[0] / _FINE, units[1] / _FINE)
    coarse, fine = {}, {}
    for g in distinct:
        coarse[id(g)] = build_problem(g, model, first.clocks_mhz, units=units)
        fine[id(g)] = build_problem(g, model, first.clocks_mhz, units=fine_units)
    return [coarse[id(g)] for g in gms], [fine[id(g)] for g in gms]


def baseline_plan(gm: torch.fx.GraphModule, gpu: str, switch_latency_s: float) -> Plan:
    """One partition at the maximum clock in program order: how a graph runs while recording."""
    gm = annotate(gm, gpu)
    model = get_dvfs_model(gpu, switch_latency_s=switch_latency_s)
    gp = build_problem(gm, model)
    p = gp.problem
    ev = evaluate(p, Solution.original(p))
    metrics = PlanMetrics(ev.time_s, ev.energy_j, ev.peak_memory, 0)
    part = PlanPartition(0, p.clocks_mhz[0], gp.names, ev.time_s, ev.energy_j)
    return Plan(
        fingerprint=graph_fingerprint(gm),
        gpu=model.spec.name,
        max_slowdown=0.0,
        switch_latency_s=model.switch_latency_s,
        order=gp.names,
        partitions=(part,) if gp.names else (),
        predicted=metrics,
        baseline=metrics,
        status="RECORDING",
        notes=("runs at the maximum clock until the graphs it runs with are known",),
        extra={"clocks_mhz": list(p.clocks_mhz), "tasks": p.num_tasks, "cyclic": False},
    )


def _local_plan(
    gm: torch.fx.GraphModule,
    gp: GraphProblem,
    sol: Solution,
    entry: int,
    result: ScheduleResult,
    where: str,
    max_slowdown: float,
) -> Plan:
    """One graph's plan from its slice of the cycle's solution (fine units)."""
    p: Problem = gp.problem
    parts: list[PlanPartition] = []
    runs: list[tuple[int, list[int]]] = []
    for t in sol.order:
        if runs and runs[-1][0] == sol.clocks[t]:
            runs[-1][1].append(t)
        else:
            runs.append((sol.clocks[t], [t]))
    switches, current = 0, entry
    for i, (clock, tasks) in enumerate(runs):
        switches += clock != current
        current = clock
        parts.append(
            PlanPartition(
                index=i,
                clock_mhz=p.clocks_mhz[clock],
                nodes=tuple(gp.names[t] for t in tasks),
                time_s=p.seconds(sum(p.tasks[t].durations[clock] for t in tasks)),
                energy_j=p.joules(sum(p.tasks[t].energies[clock] for t in tasks)),
            )
        )
    # per-graph shares of the cycle: the work of its partitions plus the switches that start
    # them (the cycle's totals, from evaluate(), are the authority; these add up to them)
    base = evaluate(p, Solution.original(p))
    predicted = PlanMetrics(
        sum(x.time_s for x in parts) + switches * p.seconds(p.switch.latency),
        sum(x.energy_j for x in parts) + switches * p.joules(p.switch.energy),
        peak_memory(p, sol.order),
        switches,
    )
    return Plan(
        fingerprint=graph_fingerprint(gm),
        gpu=gp.model.spec.name,
        max_slowdown=max_slowdown,
        switch_latency_s=gp.model.switch_latency_s,
        order=tuple(gp.names[t] for t in sol.order),
        partitions=tuple(parts),
        predicted=predicted,
        baseline=PlanMetrics(base.time_s, base.energy_j, base.peak_memory, 0),
        status=result.status,
        gap=result.gap,
        solve_time_s=result.solve_time_s,
        notes=(f"planned as {where}; the clock is carried in from the graph before",),
        objective=result.objective,
        extra={
            "clocks_mhz": list(p.clocks_mhz),
            "tasks": p.num_tasks,
            "cyclic": True,
            "entry_clock_mhz": p.clocks_mhz[entry],
        },
    )


def plan_cycle(
    gms: Sequence[torch.fx.GraphModule],
    gpu: str,
    max_slowdown: float,
    *,
    switch_latency_s: float,
    objective: str = "energy",
    time_limit_s: float = 10.0,
    clocks_mhz: Sequence[int] | None = None,
) -> tuple[CycleProblem, ScheduleResult, list[Plan], tuple[PlanMetrics, PlanMetrics]]:
    """Plan ``gms`` (annotated here if needed), run one after another in a loop, as one cycle.

    Returns:
        The cycle problem (solver units), the solver's result on it, one plan per call position,
        and the cycle's (predicted, baseline) metrics in the DVFS model's seconds and joules.
    """
    gms = [annotate(g, gpu) for g in gms]
    model = get_dvfs_model(gpu, switch_latency_s=switch_latency_s)
    coarse, fine = _problems(gms, model, clocks_mhz)
    cycle = concat_problems([g.problem for g in coarse])
    fine_cycle = concat_problems([g.problem for g in fine])

    def decide() -> ScheduleResult:
        return _decide(cycle.problem, fine_cycle.problem, max_slowdown, objective, time_limit_s)

    result = same_on_every_rank(decide)
    sols = split_solution(fine_cycle, result.solution)
    entries = entry_clocks(fine_cycle, result.solution)
    where = [f"graph {k + 1} of a {len(gms)}-graph cycle" for k in range(len(gms))]
    plans = [
        _local_plan(gm, fine[k], sols[k], entries[k], result, where[k], max_slowdown)
        for k, gm in enumerate(gms)
    ]
    ev = evaluate(fine_cycle.problem, result.solution)
    base = evaluate(fine_cycle.problem, Solution.original(fine_cycle.problem))
    return (
        cycle,
        result,
        plans,
        (
            PlanMetrics(ev.time_s, ev.energy_j, ev.peak_memory, ev.switches),
            PlanMetrics(base.time_s, base.energy_j, base.peak_memory, 0),
        ),
    )


def same_on_every_rank(decide: Callable[[], T]) -> T:
    """``decide()`` on rank 0, broadcast to every rank of an initialized process group.

    CP-SAT under a time limit (and with several workers) is not deterministic, so two ranks
    solving the same problem may pick different orders; with collectives in the graph that is a
    hang. Every rank calls this at the same point (the same call of the same program closes the
    same cycle), so the broadcast pairs up. Without torch.distributed, ``decide()`` runs here.
    An error on rank 0 is sent too, and raised on every rank.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return decide()
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", decide())
        except Exception as exc:  # every rank must hear about it, or the others wait forever
            box[0] = ("error", exc)
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise value
    return value


def _fits(fine: Problem, solution: Solution, max_slowdown: float) -> bool:
    """Whether ``solution`` meets the deadline in (nearly) exact seconds."""
    ev, base = evaluate(fine, solution), evaluate(fine, Solution.original(fine))
    return ev.time_s <= (1.0 + max_slowdown) * base.time_s * (1 + 1e-12)


def _decide(
    coarse: Problem, fine: Problem, max_slowdown: float, objective: str, time_limit_s: float
) -> ScheduleResult:
    """Solve on the solver's units, then re-check the plan in (nearly) exact seconds.

    The solver's integer units round every task (to 1/4,000,000 of the totals), so a plan that
    fills the deadline in units can miss it by up to half a unit per task in seconds. Such a plan
    is refused; the problem is solved again with the budget tightened by that rounding margin,
    and if that plan misses too, the best single clock that meets the deadline exactly (or the
    maximum clock) is used. The notes say which.
    """
    base_units = evaluate(coarse, Solution.original(coarse)).time
    margin = 0.5 * coarse.num_tasks / base_units if base_units else 0.0
    notes: list[str] = []
    result = None
    for budget in dict.fromkeys((max_slowdown, max(0.0, max_slowdown - margin))):
        result = solve(
            coarse,
            max_slowdown=budget,
            objective=objective,  # type: ignore[arg-type]
            time_limit_s=time_limit_s,
            progress=False,
        )
        result = _with_global_clock(coarse, result)
        if _fits(fine, result.solution, max_slowdown):
            if budget != max_slowdown:
                notes.append(f"planned at a {100 * budget:.3g}% budget: unit rounding margin")
            return dataclasses.replace(result, notes=(*result.notes, *notes))
        notes.append(f"the plan at a {100 * budget:.3g}% budget misses the deadline once unrounded")
    assert result is not None
    return _best_exact_clock(coarse, fine, result, max_slowdown, notes)


def _best_exact_clock(
    coarse: Problem, fine: Problem, result: ScheduleResult, max_slowdown: float, notes: list[str]
) -> ScheduleResult:
    """The lowest-energy single clock that meets the deadline in exact seconds."""
    best = Solution.original(fine)
    for c in range(1, fine.num_clocks):
        sol = Solution.original(fine, c)
        if (
            _fits(fine, sol, max_slowdown)
            and evaluate(fine, sol).energy < evaluate(fine, best).energy
        ):
            best = sol
    mhz = fine.clocks_mhz[best.clocks[0] if best.clocks else 0]
    return dataclasses.replace(
        result,
        solution=best,
        evaluation=evaluate(coarse, best),
        status="GLOBAL-CLOCK" if mhz != fine.clocks_mhz[0] else "BASELINE",
        gap=None,
        notes=(*result.notes, *notes, f"one clock, {mhz} MHz, meets the deadline exactly"),
    )
