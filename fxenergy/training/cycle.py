"""Plan the graphs one step (or one call) runs as ONE cycle, and make each graph's plan from it.

:func:`plan_cycle` takes annotated graphs in call order (a graph may appear more than once),
builds their problems on one set of clocks and units, concatenates them
(:func:`fxenergy.plans.cycle.concat_problems`), solves the cyclic problem once
(:func:`fxenergy.schedule.solve.solve`, then the planner's best-global-clock check) and splits the
solution back into one :class:`~fxenergy.plans.plan.Plan` per call position. Every graph's
problem is built with ``cycle=`` all the step's costs (:func:`~fxenergy.schedule.build.
build_problem`): the power cap averages over the whole step and the transition windows are the
step's, as the runtime's ``cycle=`` tells the simulator. The plan is solved on integer units and
re-evaluated (:func:`fxenergy.schedule.validate.evaluate`) on the exact float problem, so the
predicted seconds and joules are what the simulator charges.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed
import torch.fx

from fxenergy.graph import meta
from fxenergy.graph.meta import CostRecord
from fxenergy.hardware.dvfs import DVFSModel, get_dvfs_model
from fxenergy.plans.cycle import CycleProblem, concat_problems, split_solution
from fxenergy.plans.plan import Plan, PlanMetrics, PlanPartition, Savings, graph_fingerprint
from fxenergy.plans.planner import annotate, with_global_clock
from fxenergy.schedule.build import GraphProblem, build_problem
from fxenergy.schedule.problem import Problem, Solution
from fxenergy.schedule.solve import ScheduleResult, solve
from fxenergy.schedule.validate import Evaluation, evaluate, peak_memory

T = TypeVar("T")


@dataclass(frozen=True)
class StepRun:
    """What one run of a whole cycle cost (summed over its graphs' runtime summaries)."""

    time_s: float
    energy_j: float
    switches: int
    simulated: bool


@dataclass
class CyclePlan(Savings):
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
    costs: tuple[CostRecord, ...] = ()

    def runtime_kwargs(self, position: int) -> dict[str, Any]:
        """What the runtime of call ``position`` needs to run its share of the cycle: the
        step's costs (cap and windows) and the next graph's first clock (issue-ahead)."""
        nxt = self.plans[(position + 1) % len(self.plans)]
        first = nxt.partitions[0].clock_mhz if nxt.partitions else None
        return {"cycle": self.costs, "next_clock_mhz": first, "restore_on_exit": False}


def step_costs(gms: Sequence[torch.fx.GraphModule]) -> tuple[CostRecord, ...]:
    """Every task's cost of ``gms`` in call order (a graph called twice counts twice): the
    cycle the power cap averages over."""
    tasks = (n for g in gms for n in g.graph.nodes if n.op not in ("placeholder", "output"))
    return tuple(n.meta[meta.COST] for n in tasks)


def _problems(
    gms: Sequence[torch.fx.GraphModule], model: DVFSModel, clocks: Sequence[int] | None
) -> list[GraphProblem]:
    """Each call's problem on common clocks and integer units, the cap acting on the cycle."""
    costs = step_costs(gms)
    distinct = list({id(g): g for g in gms}.values())
    own = {id(g): build_problem(g, model, clocks, cycle=costs) for g in distinct}
    first = own[id(distinct[0])].problem
    units = (
        sum(own[id(g)].problem.time_unit_s for g in gms),
        sum(own[id(g)].problem.energy_unit_j for g in gms),
    )
    common = {
        id(g): build_problem(g, model, first.clocks_mhz, units=units, cycle=costs) for g in distinct
    }
    return [common[id(g)] for g in gms]


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


def _graph_windows(cycle: CycleProblem, ev: Evaluation) -> dict[int, tuple[float, float, int]]:
    """Task id (in the cycle) -> (window time, window energy, switches) of the transition
    windows hosted by the cycle partition ending with that task: the window runs at the end of
    that task's graph's partition (issue-ahead), so that graph carries it."""
    out: dict[int, tuple[float, float, int]] = {}
    m = len(ev.partitions)
    for i, part in enumerate(ev.partitions):
        switch = int(part.clock != ev.partitions[(i + 1) % m].clock)
        out[part.tasks[-1]] = (part.window_time, part.window_energy, switch)
    return out


def _local_plan(
    gm: torch.fx.GraphModule,
    gp: GraphProblem,
    span: tuple[int, int],
    sol: Solution,
    windows: dict[int, tuple[float, float, int]],
    result: ScheduleResult,
    where: str,
    max_slowdown: float,
) -> Plan:
    """One graph's plan from its slice of the cycle's solution (exact seconds and joules)."""
    assert gp.exact is not None
    p: Problem = gp.exact
    runs: list[tuple[int, list[int]]] = []
    for t in sol.order:
        if runs and runs[-1][0] == sol.clocks[t]:
            runs[-1][1].append(t)
        else:
            runs.append((sol.clocks[t], [t]))
    parts: list[PlanPartition] = []
    switches = 0
    for i, (clock, tasks) in enumerate(runs):
        wt, we, n = windows.get(span[0] + tasks[-1], (0.0, 0.0, 0))
        switches += n
        parts.append(
            PlanPartition(
                index=i,
                clock_mhz=p.clocks_mhz[clock],
                nodes=tuple(gp.names[t] for t in tasks),
                time_s=sum(p.tasks[t].durations[clock] for t in tasks) + wt,
                energy_j=sum(p.tasks[t].energies[clock] for t in tasks) + we,
            )
        )
    # per-graph shares of the cycle: its partitions plus the windows they host (the cycle's
    # totals, from evaluate(), are the authority; these add up to them)
    base = evaluate(p, Solution.original(p))
    predicted = PlanMetrics(
        sum(x.time_s for x in parts),
        sum(x.energy_j for x in parts),
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
            "entry_clock_mhz": p.clocks_mhz[runs[0][0]] if runs else None,
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
        and the cycle's (predicted, baseline) metrics in the DVFS model's seconds and joules,
        evaluated on the exact float problem.
    """
    gms = [annotate(g, gpu) for g in gms]
    model = get_dvfs_model(gpu, switch_latency_s=switch_latency_s)
    gps = _problems(gms, model, clocks_mhz)
    cycle = concat_problems([g.problem for g in gps])
    exact = concat_problems([g.exact for g in gps if g.exact is not None])

    def decide() -> ScheduleResult:
        return _decide(cycle.problem, exact.problem, max_slowdown, objective, time_limit_s)

    result = same_on_every_rank(decide)
    sols = split_solution(exact, result.solution)
    ev = evaluate(exact.problem, result.solution)
    windows = _graph_windows(exact, ev)
    where = [f"graph {k + 1} of a {len(gms)}-graph cycle" for k in range(len(gms))]
    plans = [
        _local_plan(gm, gps[k], exact.spans[k], sols[k], windows, result, where[k], max_slowdown)
        for k, gm in enumerate(gms)
    ]
    base = evaluate(exact.problem, Solution.original(exact.problem))
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


def _fits(exact: Problem, solution: Solution, max_slowdown: float) -> bool:
    """Whether ``solution`` meets the deadline in exact seconds."""
    ev, base = evaluate(exact, solution), evaluate(exact, Solution.original(exact))
    return ev.time_s <= (1.0 + max_slowdown) * base.time_s * (1 + 1e-12)


def _decide(
    coarse: Problem, exact: Problem, max_slowdown: float, objective: str, time_limit_s: float
) -> ScheduleResult:
    """Solve on the solver's units against the exact deadline (``solve(..., exact=)``), then
    take the best single global clock if it is better (:func:`with_global_clock`, as the
    planner does). A plan that still misses the exact deadline is refused for the best single
    clock that meets it (or the maximum clock); the notes say so."""
    result = solve(
        coarse,
        max_slowdown=max_slowdown,
        objective=objective,  # type: ignore[arg-type]
        time_limit_s=time_limit_s,
        progress=False,
        exact=exact,
    )
    result = with_global_clock(coarse, exact, result, max_slowdown)
    if _fits(exact, result.solution, max_slowdown):
        return result
    return _best_exact_clock(coarse, exact, result, max_slowdown)


def _best_exact_clock(
    coarse: Problem, exact: Problem, result: ScheduleResult, max_slowdown: float
) -> ScheduleResult:
    """The lowest-energy single clock that meets the deadline in exact seconds."""
    best = Solution.original(exact)
    for c in range(1, exact.num_clocks):
        sol = Solution.original(exact, c)
        if (
            _fits(exact, sol, max_slowdown)
            and evaluate(exact, sol).energy < evaluate(exact, best).energy
        ):
            best = sol
    mhz = exact.clocks_mhz[best.clocks[0] if best.clocks else 0]
    return dataclasses.replace(
        result,
        solution=best,
        evaluation=evaluate(coarse, best),
        status="GLOBAL-CLOCK" if mhz != exact.clocks_mhz[0] else "BASELINE",
        gap=None,
        notes=(
            *result.notes,
            "the plan misses the deadline once unrounded",
            f"one clock, {mhz} MHz, meets the deadline exactly",
        ),
    )
