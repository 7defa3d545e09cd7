"""Planning a captured graph: annotate, build the scheduling problem, solve, make a :class:`Plan`,
and apply a plan to a graph (reorder + frequency-switch calls).

This is the layer under the faces (:func:`fxenergy.optimize`, the compile backend, the frontier
and the CLI): each of them plans through :func:`plan_graph` and rewrites through :func:`apply_plan`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import torch
import torch.fx

from fxenergy.cost.annotate import DEFAULT_GPU
from fxenergy.graph import meta
from fxenergy.graph.pass_infra import get_pass, run_passes
from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S, get_dvfs_model
from fxenergy.hardware.specs import get_gpu
from fxenergy.plans.plan import NodeCost, Plan, PlanMetrics, PlanPartition, graph_fingerprint
from fxenergy.schedule.build import GraphProblem, build_problem
from fxenergy.schedule.problem import Problem, Solution
from fxenergy.schedule.solve import ScheduleResult, solve
from fxenergy.schedule.validate import check, evaluate


def annotate(gm: torch.fx.GraphModule, gpu: str) -> torch.fx.GraphModule:
    """Run ``annotate-cost`` for ``gpu`` unless the graph already carries it."""
    if meta.COST in meta.analyses(gm) and gm.meta.get(meta.GPU) == get_gpu(gpu).name:
        return gm
    return run_passes(gm, [get_pass("annotate-cost", gpu=get_gpu(gpu).name)])


def plan_graph(
    gm: torch.fx.GraphModule,
    gpu: str = DEFAULT_GPU,
    max_slowdown: float = 0.01,
    *,
    switch_latency_s: float = DEFAULT_SWITCH_LATENCY_S,
    objective: str = "energy",
    time_limit_s: float = 30.0,
    clocks_mhz: Sequence[int] | None = None,
    memory_bound: int | None = None,
    progress: bool = False,
) -> Plan:
    """Plan an order and a clock per partition for a captured graph (annotated on the way)."""
    gm = annotate(gm, gpu)
    model = get_dvfs_model(gpu, switch_latency_s=switch_latency_s)
    gp = build_problem(gm, model, clocks_mhz)
    result = solve(
        gp.problem,
        max_slowdown=max_slowdown,
        objective=objective,  # type: ignore[arg-type]
        memory_bound=memory_bound,
        time_limit_s=time_limit_s,
        progress=progress,
        exact=gp.exact,
    )
    return plan_from_result(gm, gp, _with_global_clock(gp, result, max_slowdown), max_slowdown)


def _with_global_clock(
    gp: GraphProblem, result: ScheduleResult, max_slowdown: float
) -> ScheduleResult:
    """:func:`with_global_clock` on a graph's problem and its exact float twin."""
    return with_global_clock(gp.problem, gp.exact, result, max_slowdown)


def with_global_clock(
    problem: Problem, exact: Problem | None, result: ScheduleResult, max_slowdown: float
) -> ScheduleResult:
    """The better of the solver's plan and the best single global clock (what Zeus-style
    tuning finds). With ``exact`` (the same problem in unrounded floats) a clock qualifies when
    it meets ``(1 + max_slowdown)`` x the all-max time there, and energies are compared there;
    the solver's rounded-up units can reject a clock that uses the last ~0.1% of the budget.
    Without it, the solver's integer deadline decides.

    The single place the planner and :func:`fxenergy.training.cycle.plan_cycle` make this
    guarantee: the plan returned is never worse than the best such clock under
    :func:`~fxenergy.schedule.validate.evaluate`.
    """
    best = result
    if result.objective != "energy":
        return result  # peak memory and switch counts do not improve with one lower clock
    judge = exact if exact is not None else problem  # exact floats decide when given
    limit = float(result.deadline)
    if exact is not None:  # not the solver's rounded-up units: a clock that fits unrounded counts
        limit = (1 + max_slowdown) * evaluate(exact, Solution.original(exact)).time * (1 + 1e-12)
    best_energy = evaluate(judge, result.solution).energy
    for c in range(1, problem.num_clocks):
        sol = Solution.original(problem, c)
        ev, fair = evaluate(problem, sol), evaluate(judge, sol)
        if fair.time > limit or ev.peak_memory > result.memory_bound:
            continue
        if fair.energy < best_energy:
            check(judge, sol)
            best_energy = fair.energy
            note = f"one global clock ({problem.clocks_mhz[c]} MHz) beat the windowed plan"
            best = dataclasses.replace(
                result,
                solution=sol,
                evaluation=ev,
                status="GLOBAL-CLOCK",
                gap=_global_clock_gap(problem, result, ev.energy),
                notes=(*(n for n in result.notes if "beat the baseline" not in n), note),
            )
    return best


def _global_clock_gap(problem: Problem, result: ScheduleResult, energy: float) -> float | None:
    """Gap of a one-clock cyclic plan to a bound that holds for it.

    CP-SAT's bound (kept when one window is the whole graph) is for plans that start at the
    maximum clock, so a cyclic plan that stays at one lower clock, paying no switch, can beat it:
    that printed negative gaps. The LP bound ignores switches and holds for every plan.
    """
    from fxenergy.schedule.greedy import energy_lower_bound

    bound = result.bound
    if bound is None or bound > energy:
        bound = energy_lower_bound(problem, result.deadline)
    return None if bound is None or energy <= 0 else max(0.0, (energy - bound) / energy)


def plan_from_result(
    gm: torch.fx.GraphModule, gp: GraphProblem, result: ScheduleResult, max_slowdown: float
) -> Plan:
    """A :class:`Plan` (names, seconds, joules) from a solver result on ``gp``.

    Times and energies are evaluated on the exact float problem when ``gp`` has one (the
    checker's re-evaluation; the integer one is rounded up for the solvers), and the plan is
    refused there if it is not legal.
    """
    p = gp.exact if gp.exact is not None else gp.problem
    check(p, result.solution)
    ev, base = evaluate(p, result.solution), evaluate(p, Solution.original(p))
    parts = tuple(
        PlanPartition(
            index=i,
            clock_mhz=part.clock_mhz,
            nodes=tuple(gp.names[t] for t in part.tasks),
            time_s=p.seconds(part.time + part.window_time),
            energy_j=p.joules(part.energy + part.window_energy),
        )
        for i, part in enumerate(ev.partitions)
    )
    notes = result.notes
    if p.cyclic and parts and parts[-1].clock_mhz != p.clocks_mhz[0]:
        notes = (
            *notes,
            f"steady state: the clock is kept between calls (the last partition requests the "
            f"first one's ahead); the first call starts at the maximum clock and switches late "
            f"into {parts[0].clock_mhz} MHz ({gp.model.switch_latency_s * 1e3:g} ms window), "
            "not counted above",
        )
    return Plan(
        fingerprint=graph_fingerprint(gm),
        gpu=gp.model.spec.name,
        max_slowdown=max_slowdown,
        switch_latency_s=gp.model.switch_latency_s,
        order=tuple(gp.names[t] for t in result.solution.order),
        partitions=parts,
        predicted=PlanMetrics(p.seconds(ev.time), p.joules(ev.energy), ev.peak_memory, ev.switches),
        baseline=PlanMetrics(
            p.seconds(base.time), p.joules(base.energy), base.peak_memory, base.switches
        ),
        status=result.status,
        gap=result.gap,
        solve_time_s=result.solve_time_s,
        notes=notes,
        objective=result.objective,
        extra={
            "clocks_mhz": list(p.clocks_mhz),
            "tasks": p.num_tasks,
            "cyclic": p.cyclic,
            "memory_baseline_bytes": p.memory_baseline_bytes,  # weights + inputs, always live
        },
        nodes=node_costs(gm, gp, result.solution),
    )


def apply_plan(gm: torch.fx.GraphModule, plan: Plan) -> torch.fx.GraphModule:
    """A copy of ``gm`` in the plan's order with a frequency switch at each partition start.

    The copy shares ``gm``'s parameters and submodules; ``gm`` itself is left unchanged.
    """
    plan.check_graph(gm)
    new = torch.fx.GraphModule(gm, copy.deepcopy(gm.graph), class_name=type(gm).__name__)
    new.meta.update(gm.meta)
    movable = [n.name for n in new.graph.nodes if n.op not in ("placeholder", "get_attr", "output")]
    wanted = [name for name in plan.order if name in set(movable)]  # get_attr stays in place
    if movable != wanted:
        new = run_passes(new, [get_pass("reorder", order=wanted)])
    return run_passes(new, [get_pass("insert-frequency-switches", plan=plan)])


def node_costs(
    gm: torch.fx.GraphModule, gp: GraphProblem, solution: Solution
) -> tuple[NodeCost, ...]:
    """Per planned node (in plan order): time and energy at its planned clock, work, bound and
    whether it lies on the critical path. Used by the planner to fill ``Plan.nodes``."""
    from fxenergy.graph.semantics import op_name

    if meta.TIMING not in meta.analyses(gm):
        gm = run_passes(gm, [get_pass("critical-path")])
    nodes = {n.name: n for n in gm.graph.nodes}
    p = gp.problem
    out = []
    for t in solution.order:
        task, node = p.tasks[t], nodes[gp.names[t]]
        c = solution.clocks[t]
        cost, roof = node.meta.get(meta.COST), node.meta.get(meta.ROOFLINE)
        timing = node.meta.get(meta.TIMING)
        out.append(
            NodeCost(
                name=node.name,
                op=op_name(node),
                time_s=p.seconds(task.durations[c]),
                energy_j=p.joules(task.energies[c]),
                flops=int(cost.flops) if cost else 0,
                bytes=int(cost.bytes_total) if cost else 0,
                bound=roof.bound if roof else "none",
                critical=bool(timing.critical) if timing else False,
            )
        )
    return tuple(out)
