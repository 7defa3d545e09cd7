"""``optimize(model)``: capture, annotate, schedule, rewrite — one call.

``optimize`` returns an :class:`OptimizedModule` that is called like the model. Each call runs
the rewritten graph under a :class:`~fxenergy.runtime.session.FrequencyRuntime`: on a real GPU
the clocks really change (NVML); elsewhere a simulated GPU accounts the time and energy the DVFS
model predicts, and the report says SIMULATED.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx
from torch import nn

from fxenergy import meta
from fxenergy.capture import capture
from fxenergy.hardware.boards import resolve_gpu
from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S, get_dvfs_model
from fxenergy.hardware.specs import get_gpu
from fxenergy.pass_infra import get_pass, run_passes
from fxenergy.plan import Plan, PlanMetrics, PlanPartition, graph_fingerprint
from fxenergy.runtime import FrequencyBackend, get_backend, restore
from fxenergy.runtime.session import FrequencyRuntime, RuntimeSummary
from fxenergy.schedule.build import GraphProblem, build_problem
from fxenergy.schedule.problem import Problem, Solution
from fxenergy.schedule.solve import ScheduleResult, solve
from fxenergy.schedule.validate import check, evaluate

DEFAULT_GPU = "A100-SXM4-80GB"


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
    )
    return plan_from_result(gm, gp, _with_global_clock(gp.problem, result), max_slowdown)


def _with_global_clock(problem: Problem, result: ScheduleResult) -> ScheduleResult:
    """The better of the solver's plan and the best single global clock (what Zeus-style
    tuning finds): a cyclic plan at one clock never switches, which the windowed solver may miss.
    """
    best = result
    if result.objective != "energy":
        return result  # peak memory and switch counts do not improve with one lower clock
    for c in range(1, problem.num_clocks):
        sol = Solution.original(problem, c)
        ev = evaluate(problem, sol)
        if ev.time > result.deadline or ev.peak_memory > result.memory_bound:
            continue
        if ev.energy < best.evaluation.energy:
            check(problem, sol)
            note = f"one global clock ({problem.clocks_mhz[c]} MHz) beat the windowed plan"
            best = dataclasses.replace(
                result,
                solution=sol,
                evaluation=ev,
                status="GLOBAL-CLOCK",
                gap=(ev.energy - result.bound) / ev.energy if result.bound is not None else None,
                notes=(*(n for n in result.notes if "beat the baseline" not in n), note),
            )
    return best


def plan_from_result(
    gm: torch.fx.GraphModule, gp: GraphProblem, result: ScheduleResult, max_slowdown: float
) -> Plan:
    """A :class:`Plan` (names, seconds, joules) from a solver result on ``gp``."""
    p = gp.problem
    ev, base = result.evaluation, result.baseline
    parts = tuple(
        PlanPartition(
            index=i,
            clock_mhz=part.clock_mhz,
            nodes=tuple(gp.names[t] for t in part.tasks),
            time_s=p.seconds(part.time),
            energy_j=p.joules(part.energy),
        )
        for i, part in enumerate(ev.partitions)
    )
    notes = result.notes
    if p.cyclic and parts and parts[-1].clock_mhz != p.clocks_mhz[0]:
        notes = (
            *notes,
            f"steady state: the clock stays at {parts[-1].clock_mhz} MHz between calls; the "
            f"first call also pays one switch from the maximum clock "
            f"({gp.model.switch_latency_s * 1e3:g} ms), not counted above",
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
        extra={"clocks_mhz": list(p.clocks_mhz), "tasks": p.num_tasks, "cyclic": p.cyclic},
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


class OptimizedModule(nn.Module):
    """A model rewritten to run its partitions at planned SM clocks; call it like the model.

    Attributes:
        plan: the :class:`~fxenergy.plan.Plan` (predicted and baseline time/energy, partitions).
        graph_module: the rewritten fx graph that runs.
        original: the model as given (unchanged).
        backend: the frequency backend the runtime uses (NVML, simulated or null).
        last_run: what the runtime measured (or simulated) on the latest call.
    """

    def __init__(
        self,
        original: nn.Module,
        graph_module: torch.fx.GraphModule,
        plan: Plan,
        backend: FrequencyBackend,
    ) -> None:
        super().__init__()
        self.original = original
        self.graph_module = graph_module
        self.plan = plan
        self.backend = backend
        self.last_run: RuntimeSummary | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # A cyclic plan keeps the last partition's clock between calls (its first partition was
        # planned to start there); clocks are restored on error, at exit, SIGINT/SIGTERM and by
        # restore_clocks().
        cyclic = bool(self.plan.extra.get("cyclic", False))
        rt = FrequencyRuntime.from_plan(
            self.plan, self.backend, self.graph_module, restore_on_exit=not cyclic
        )
        try:
            with rt:
                out = self.graph_module(*args, **kwargs)
        except BaseException:
            self.restore_clocks()
            raise
        if cyclic:
            restore.protect(self)
        self.last_run = rt.summary()
        return out

    def restore(self) -> None:
        """Restorer protocol (atexit, signals): put the GPU's clocks back."""
        self.backend.reset()

    def restore_clocks(self) -> None:
        """Put the GPU's clocks back now (they are kept between calls of a cyclic plan)."""
        self.backend.reset()
        restore.release(self)

    def report(self, console: Any = None) -> None:
        """Print the plan (and the latest run) as rich tables."""
        from fxenergy.plan_report import print_plan

        print_plan(self.plan, console=console, run=self.last_run, backend=self.backend)


def optimize(
    model: nn.Module,
    example_args: Any = (),
    example_kwargs: dict[str, Any] | None = None,
    *,
    gpu: str = DEFAULT_GPU,
    max_slowdown: float = 0.01,
    backend: str | FrequencyBackend = "auto",
    switch_latency_s: float = DEFAULT_SWITCH_LATENCY_S,
    objective: str = "energy",
    time_limit_s: float = 30.0,
    method: str = "auto",
    plan: Plan | str | None = None,
    progress: bool = False,
    gpu_params: str | None = None,
) -> OptimizedModule:
    """Capture ``model``, plan clocks (or load ``plan``) and return the rewritten module.

    Args:
        model: any ``nn.Module`` (real weights, or on the ``meta`` device for planning only).
        example_args: example positional inputs (a tensor or a tuple).
        example_kwargs: example keyword inputs.
        gpu: spec-table GPU to plan for (``fxenergy gpus`` lists them).
        max_slowdown: allowed predicted slowdown over running everything at the max clock.
        backend: ``"auto"`` (NVML if usable, else simulated), ``"nvml"``, ``"sim"``, ``"null"``,
            or a backend object.
        switch_latency_s: cost of one clock switch (the GPU stalls this long).
        objective: ``"energy"`` (default), ``"memory"`` or ``"switches"``.
        time_limit_s: solver wall-clock budget.
        method: capture method (``"auto"``, ``"symbolic"``, ``"export"``).
        plan: a saved plan (object or JSON path) to apply instead of planning; refused with
            :class:`~fxenergy.errors.PlanMismatchError` if made for another graph.
        progress: show the solver's progress bar.
        gpu_params: a calibrated board file (``fxenergy profile calibrate``); replaces ``gpu``.
    """
    gpu = resolve_gpu(gpu, gpu_params) or gpu
    gm = annotate(capture(model, example_args, example_kwargs, method=method), gpu)
    if plan is None:
        plan = plan_graph(
            gm,
            gpu,
            max_slowdown,
            switch_latency_s=switch_latency_s,
            objective=objective,
            time_limit_s=time_limit_s,
            progress=progress,
        )
    elif isinstance(plan, str):
        plan = Plan.load(plan)
    rewritten = apply_plan(gm, plan)
    be = (
        backend
        if isinstance(backend, FrequencyBackend)
        else get_backend(backend, gpu=plan.gpu, switch_latency_s=plan.switch_latency_s)
    )
    return OptimizedModule(model, rewritten, plan, be)
