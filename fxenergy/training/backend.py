"""``fxenergy.backend(...)``: a ``torch.compile`` backend that plans a training step as ONE cycle.

Built on aot_autograd: the forward graph, the backward graph and any other compiled graph (a
compiled optimizer step goes through the inference compiler; a model with graph breaks gives
one graph per piece) are annotated on compile. Every call of a compiled graph runs under a
:class:`~fxenergy.runtime.session.FrequencyRuntime` that does NOT restore the clock on exit: the
clock carries from graph to graph and from step to step.

How a plan comes about (``be.report()`` tells the story):

1. *Recording*: each graph runs at the maximum clock while the backend records which compiled
   graphs run, in which order.
2. When the first graph of the record is called again, the record is one cycle (one training
   step, or one call of a model with breaks). The graphs are planned together as one cyclic
   problem (:func:`fxenergy.training.cycle.plan_cycle`) and that plan applies from this call on.
3. If a call departs from the planned sequence (a new graph appears: a recompile, another
   branch, another shape), the backend goes back to recording, and plans the new cycle when it
   closes; every variant planned stays in ``be.cycles``.

Numerics are untouched: the rewritten graphs run the same aten ops, only in a planned order with
clock switches between them. Clocks are put back by ``be.restore_clocks()``, on an exception in
a graph, and at interpreter exit, SIGINT or SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx

from fxenergy.hardware.boards import resolve_gpu
from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S
from fxenergy.plans.plan import Plan
from fxenergy.plans.planner import DEFAULT_GPU, annotate, apply_plan
from fxenergy.runtime import FrequencyBackend, get_backend, restore
from fxenergy.runtime.session import FrequencyRuntime, RuntimeSummary
from fxenergy.training.aot import aot_autograd, boxed, ensure_values
from fxenergy.training.breaks import GraphBreak, graph_break_of
from fxenergy.training.cycle import CyclePlan, StepRun, baseline_plan, plan_cycle, step_costs

log = logging.getLogger("fxenergy.training")

#: a record that grows past this many calls without closing a cycle starts over
_MAX_RECORD = 512


@dataclass
class CompiledGraph:
    """One graph the backend compiled: its kind, current plan and the runtime's record of calls.

    ``plan`` is the graph's plan in the latest cycle it belongs to (its recording plan, at the
    maximum clock, until then); ``plans`` holds every plan it ran under.
    """

    index: int
    kind: str  #: "forward", "backward" or "inference"
    graph_module: torch.fx.GraphModule
    plan: Plan
    runs: list[RuntimeSummary] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)
    label: str = ""  #: where it came from (a graph break's reason, when the capture knows it)
    recording_module: torch.fx.GraphModule | None = None  #: runs while recording (max clock)

    @property
    def nodes(self) -> int:
        """Nodes that are planned (everything but placeholders and the output)."""
        return sum(
            1 for n in self.graph_module.graph.nodes if n.op not in ("placeholder", "output")
        )


def _step_run(summaries: Sequence[RuntimeSummary]) -> StepRun:
    return StepRun(
        sum(s.time_s for s in summaries),
        sum(s.energy_j for s in summaries),
        sum(s.switches for s in summaries),
        all(s.simulated for s in summaries),
    )


class EnergyBackend:
    """A ``torch.compile`` backend that plans the graphs of a step together, as one cycle.

    Use ``torch.compile(model, backend=be)`` (and ``torch.compile(opt.step, backend=be)``)
    with ``be = fxenergy.backend(gpu=...)``. ``be.graphs`` lists every compiled graph,
    ``be.cycles`` every cycle planned, ``be.events`` what happened, ``be.report()`` prints it.
    """

    def __init__(
        self,
        gpu: str = DEFAULT_GPU,
        max_slowdown: float = 0.01,
        runtime: str | FrequencyBackend = "auto",
        switch_latency_s: float = DEFAULT_SWITCH_LATENCY_S,
        time_limit_s: float = 10.0,
        objective: str = "energy",
    ) -> None:
        self.gpu = gpu
        self.max_slowdown = max_slowdown
        self.switch_latency_s = switch_latency_s
        self.time_limit_s = time_limit_s
        self.objective = objective
        self._runtime_spec = runtime
        self._frequency_backend: FrequencyBackend | None = None
        self.graphs: list[CompiledGraph] = []
        self.cycles: list[CyclePlan] = []
        self.events: list[str] = []
        self.breaks: list[GraphBreak] = []  #: dynamo's graph breaks, in compile order
        self._record: list[int] = []  # graph indices called since recording (re)started
        self._active: CyclePlan | None = None
        self._pos = 0  # next call position in the active cycle
        self._step: list[RuntimeSummary] = []  # summaries of the cycle run in progress
        self._in_step, self._step_ok = False, True  # inside step(); still on the active plan
        self._step_seq: list[int] = []  # graphs called in the current step()

    @property
    def frequency_backend(self) -> FrequencyBackend:
        """The runtime backend (made on first use)."""
        if self._frequency_backend is None:
            spec = self._runtime_spec
            self._frequency_backend = (
                spec
                if isinstance(spec, FrequencyBackend)
                else get_backend(spec, gpu=self.gpu, switch_latency_s=self.switch_latency_s)
            )
        return self._frequency_backend

    @property
    def active_cycle(self) -> CyclePlan | None:
        """The cycle whose plans run now (None while recording)."""
        return self._active

    # --- compiling -------------------------------------------------------------------------------
    def __call__(self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Any:
        aot = aot_autograd()
        brk = graph_break_of(gm)
        if brk is not None:
            self.breaks.append(brk)
        label = f"ends at break: {brk.where}" if brk is not None else ""
        return aot(
            fw_compiler=self._compiler("forward", label),
            bw_compiler=self._compiler("backward", label),
            inference_compiler=self._compiler("inference", label),
        )(gm, example_inputs)

    def _compiler(
        self, kind: str, label: str = ""
    ) -> Callable[[torch.fx.GraphModule, Sequence[Any]], Any]:
        def compile_graph(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Any:
            ensure_values(gm, example_inputs)
            gm = annotate(gm, self.gpu)
            plan = baseline_plan(gm, self.gpu, self.switch_latency_s)
            record = CompiledGraph(len(self.graphs), kind, gm, plan, plans=[plan], label=label)
            record.recording_module = apply_plan(gm, plan)
            self.graphs.append(record)
            self.events.append(f"compiled graph {record.index} ({kind}, {record.nodes} nodes)")
            return boxed(self._runner(record))

        return compile_graph

    # --- running ---------------------------------------------------------------------------------
    def _runner(self, record: CompiledGraph) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            plan, module, kwargs = self._next(record.index)
            kwargs.setdefault("restore_on_exit", False)
            rt = FrequencyRuntime.from_plan(plan, self.frequency_backend, module, **kwargs)
            try:
                with rt:
                    out = module(*args)
            except BaseException:
                self.restore_clocks()
                self._restart(f"graph {record.index} raised: clocks restored, recording again")
                raise
            restore.protect(self)  # the clock stays set between calls: restore it at exit
            summary = rt.summary()
            record.runs.append(summary)
            self._finish_call(summary)
            return out

        return run

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Mark one cycle explicitly: the graphs run inside are one step (or one call).

        Without it, the backend finds the cycle by itself (the first graph called again). With
        it, the cycle is exactly what ran inside: at the end of a step whose graphs are not the
        active cycle's, that sequence is planned (or an earlier plan of it reused) and applies
        from the next step on. :func:`fxenergy.optimize` wraps each call of a model with graph
        breaks in a step.
        """
        if self._in_step:
            raise RuntimeError("EnergyBackend.step() does not nest")
        self._in_step, self._step_seq, self._step, self._step_ok = True, [], [], True
        try:
            yield
        finally:
            self._in_step = False
        self._end_step()

    def _end_step(self) -> None:
        seq, cyc = tuple(self._step_seq), self._active
        if not seq:
            return
        if cyc is not None and self._step_ok and seq == cyc.sequence:
            cyc.runs.append(_step_run(self._step))
        else:
            if cyc is not None:
                self.events.append(
                    f"a step ran graphs {list(seq)}, not cycle {cyc.index}'s "
                    f"{list(cyc.sequence)} (another branch, shape or break): it ran at the "
                    "maximum clock"
                )
            self._active = self._cycle(seq)
        self._step = []

    def _next(self, g: int) -> tuple[Plan, torch.fx.GraphModule, dict[str, Any]]:
        """The plan, module and runtime arguments (the cycle's costs and the next graph's first
        clock) for this call of graph ``g``; closes a cycle when one is seen."""
        if self._in_step:
            return self._next_in_step(g)
        cyc = self._active
        if cyc is not None and cyc.sequence[self._pos] == g:
            return self._position(cyc)
        if cyc is not None:
            want = cyc.sequence[self._pos]
            self._restart(
                f"graph {g} ran where cycle {cyc.index} expects graph {want} (a recompile, "
                "another branch or another step shape): recording again"
            )
        if self._record and self._record[0] == g:
            self._active = self._cycle(tuple(self._record))
            self._pos, self._step, self._record = 0, [], []
            return self._position(self._active)
        if len(self._record) >= _MAX_RECORD:
            self._record = []
        self._record.append(g)
        record = self.graphs[g]
        assert record.recording_module is not None
        return record.plans[0], record.recording_module, {}

    def _next_in_step(self, g: int) -> tuple[Plan, torch.fx.GraphModule, dict[str, Any]]:
        self._step_seq.append(g)
        k, cyc = len(self._step_seq) - 1, self._active
        if cyc is not None and self._step_ok and k < len(cyc.sequence) and cyc.sequence[k] == g:
            return cyc.plans[k], cyc.modules[k], cyc.runtime_kwargs(k)
        self._step_ok = False  # off the plan: the rest of this step records at the max clock
        record = self.graphs[g]
        assert record.recording_module is not None
        return record.plans[0], record.recording_module, {}

    def _position(self, cyc: CyclePlan) -> tuple[Plan, torch.fx.GraphModule, dict[str, Any]]:
        k = self._pos
        self._pos = (k + 1) % len(cyc.sequence)
        return cyc.plans[k], cyc.modules[k], cyc.runtime_kwargs(k)

    def _finish_call(self, summary: RuntimeSummary) -> None:
        cyc = self._active
        if self._in_step:
            self._step.append(summary)
            return
        if cyc is None:
            return
        self._step.append(summary)
        if self._pos == 0 and len(self._step) == len(cyc.sequence):
            cyc.runs.append(_step_run(self._step))
            self._step = []

    def _restart(self, why: str) -> None:
        self.events.append(why)
        log.info("fxenergy: %s", why)
        self._active, self._pos, self._step, self._record = None, 0, [], []

    def replan(self, max_slowdown: float) -> CyclePlan:
        """Plan the active cycle's graphs again with another slowdown budget (no recompile);
        the new plan applies from the next step on. Call it between steps."""
        cyc = self._active
        if cyc is None:
            raise RuntimeError("no active cycle to re-plan: run a few steps first")
        self.max_slowdown = max_slowdown
        self.events.append(f"re-planning cycle {cyc.index}'s graphs at max_slowdown={max_slowdown}")
        self._active = self._cycle(cyc.sequence, reuse=False)
        self._pos, self._step = 0, []
        return self._active

    def _cycle(self, sequence: tuple[int, ...], reuse: bool = True) -> CyclePlan:
        """The plan of ``sequence``: reused if this variant was planned before, else solved."""
        for cyc in reversed(self.cycles) if reuse else ():  # the latest plan of a variant
            if cyc.sequence == sequence:
                self.events.append(f"cycle {cyc.index} seen again: its plan applies")
                return cyc
        gms = [self.graphs[g].graph_module for g in sequence]
        _, result, plans, (pred, base) = plan_cycle(
            gms,
            self.gpu,
            self.max_slowdown,
            switch_latency_s=self.switch_latency_s,
            objective=self.objective,
            time_limit_s=self.time_limit_s,
        )
        for plan in plans:
            plan.extra["cycle"] = len(self.cycles)
        cyc = CyclePlan(
            index=len(self.cycles),
            sequence=sequence,
            plans=tuple(plans),
            predicted=pred,
            baseline=base,
            status=result.status,
            gap=result.gap,
            solve_time_s=result.solve_time_s,
            notes=result.notes,
            modules=tuple(apply_plan(gm, p) for gm, p in zip(gms, plans, strict=True)),
            costs=step_costs(gms),
        )
        for g, plan in zip(sequence, plans, strict=True):
            self.graphs[g].plan = plan
            self.graphs[g].plans.append(plan)
        self.cycles.append(cyc)
        self.events.append(
            f"planned cycle {cyc.index}: graphs {list(sequence)} as one cycle, predicted "
            f"{100 * cyc.energy_saving:.2f}% less energy at {100 * cyc.slowdown:+.2f}% time "
            f"(SIMULATED DVFS model, {result.status})"
        )
        return cyc

    # --- clocks ----------------------------------------------------------------------------------
    def restore(self) -> None:
        """Restorer protocol (atexit, signals): put the GPU's clocks back."""
        if self._frequency_backend is not None:
            self._frequency_backend.reset()

    def restore_clocks(self) -> None:
        """Put the GPU's clocks back now (they are kept between the calls of a cycle)."""
        self.restore()
        restore.release(self)

    # --- results ---------------------------------------------------------------------------------
    def totals(self) -> dict[str, float]:
        """Predicted and all-max time/energy of one run of the active (else latest) cycle; of one
        call of every graph while nothing is planned yet."""
        cyc = self._active or (self.cycles[-1] if self.cycles else None)
        if cyc is not None:
            pred_t, pred_e = cyc.predicted.time_s, cyc.predicted.energy_j
            base_t, base_e = cyc.baseline.time_s, cyc.baseline.energy_j
        else:
            base_t = pred_t = sum(g.plan.baseline.time_s for g in self.graphs)
            base_e = pred_e = sum(g.plan.baseline.energy_j for g in self.graphs)
        return {
            "baseline_time_s": base_t,
            "baseline_energy_j": base_e,
            "predicted_time_s": pred_t,
            "predicted_energy_j": pred_e,
        }

    def report(self, console: Any = None) -> None:
        """Print every compiled graph, every cycle planned, and the runs (rich tables)."""
        from fxenergy.training.report import print_backend_report

        print_backend_report(self, console=console)


def backend(
    gpu: str = DEFAULT_GPU,
    max_slowdown: float = 0.01,
    runtime: str | FrequencyBackend = "auto",
    switch_latency_s: float = DEFAULT_SWITCH_LATENCY_S,
    time_limit_s: float = 10.0,
    objective: str = "energy",
    gpu_params: str | None = None,
) -> EnergyBackend:
    """A ``torch.compile`` backend that plans forward, backward and optimizer-step graphs as one
    cycle (the clock carried from graph to graph and step to step).

    Example::

        be = fxenergy.backend(gpu="A100-SXM4-80GB", max_slowdown=0.01)
        step = torch.compile(model, backend=be)
        opt_step = torch.compile(optimizer.step, backend=be)
        ...  # train; the first step runs at the maximum clock while the graphs are recorded
        be.report()

    ``gpu_params`` is a board file from ``fxenergy profile calibrate`` (``gpu`` then names it).
    """
    gpu = resolve_gpu(gpu, gpu_params) or gpu
    return EnergyBackend(gpu, max_slowdown, runtime, switch_latency_s, time_limit_s, objective)
