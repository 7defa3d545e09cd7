"""``optimize(model)``: capture, annotate, schedule, rewrite — one call.

``optimize`` returns an :class:`OptimizedModule` that is called like the model. Each call runs
the rewritten graph under a :class:`~fxenergy.runtime.session.FrequencyRuntime`: on a real GPU
the clocks really change (NVML); elsewhere a simulated GPU accounts the time and energy the DVFS
model predicts, and the report says SIMULATED.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
from torch import nn

from fxenergy.graph.capture import capture
from fxenergy.hardware.boards import resolve_gpu
from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S
from fxenergy.plans.inputs import InputBinding
from fxenergy.plans.plan import Plan, check_plan_gpu
from fxenergy.plans.planner import DEFAULT_GPU, annotate, apply_plan, plan_graph
from fxenergy.runtime import FrequencyBackend, get_backend, restore
from fxenergy.runtime.session import FrequencyRuntime, RuntimeSummary


class OptimizedModule(nn.Module):
    """A model rewritten to run its partitions at planned SM clocks; call it like the model.

    Attributes:
        plan: the :class:`~fxenergy.plans.plan.Plan` (predicted/baseline time and energy, parts).
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
        #: the model's calling convention and the planned inputs (fxenergy.plans.inputs)
        self.inputs: InputBinding | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # A cyclic plan keeps the last partition's clock between calls (its first partition was
        # planned to start there); clocks are restored on error, at exit, SIGINT/SIGTERM and by
        # restore_clocks().
        if self.inputs is not None:  # kwargs given at optimize time are defaults; shapes checked
            args, kwargs = self.inputs.bind(args, kwargs)
        cyclic = bool(self.plan.extra.get("cyclic", False))
        rt = self.__dict__.get("_runtime")
        if rt is None:  # made once: building it reads every node's cost
            rt = FrequencyRuntime.from_plan(
                self.plan, self.backend, self.graph_module, restore_on_exit=not cyclic
            )
            self.__dict__["_runtime"] = rt
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
        from fxenergy.plans.report import print_plan

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
            :class:`~fxenergy.errors.PlanMismatchError` if made for another graph or GPU
            (:class:`~fxenergy.errors.InvalidPlanError` for a corrupt file).
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
    else:
        plan = Plan.load(plan) if isinstance(plan, str) else plan
        check_plan_gpu(plan, gpu)  # a plan's clocks and predictions hold for its own GPU only
    rewritten = apply_plan(gm, plan)
    be = (
        backend
        if isinstance(backend, FrequencyBackend)
        else get_backend(backend, gpu=plan.gpu, switch_latency_s=plan.switch_latency_s)
    )
    opt = OptimizedModule(model, rewritten, plan, be)
    args = tuple(example_args) if isinstance(example_args, (tuple, list)) else (example_args,)
    opt.inputs = InputBinding.from_example(model, rewritten, args, example_kwargs or {})
    return opt
