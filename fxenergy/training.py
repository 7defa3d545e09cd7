"""``fxenergy.backend(...)``: a ``torch.compile`` backend that plans training steps.

Built on aot_autograd: the forward graph, the backward graph and any other compiled graph (a
compiled optimizer step goes through the inference compiler) are each annotated, planned and
rewritten; every call runs under a frequency runtime (NVML on a GPU, the simulator elsewhere).
Numerics are untouched: the rewritten graphs run the same aten ops, only in a planned order with
clock switches between them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

from fxenergy.errors import CaptureError
from fxenergy.graph import meta
from fxenergy.hardware.boards import resolve_gpu
from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S
from fxenergy.plans.plan import Plan
from fxenergy.plans.planner import DEFAULT_GPU, apply_plan, plan_graph
from fxenergy.runtime import FrequencyBackend, get_backend
from fxenergy.runtime.session import FrequencyRuntime, RuntimeSummary


@dataclass
class CompiledGraph:
    """One graph the backend planned: its kind, plan, and the runtime's record of each call."""

    kind: str  #: "forward", "backward" or "inference"
    plan: Plan
    runs: list[RuntimeSummary] = field(default_factory=list)


def _aot_autograd() -> Callable[..., Any]:
    try:  # torch's own helper; not re-exported under a public name
        from torch._dynamo.backends.common import aot_autograd
    except ImportError as exc:  # pragma: no cover - depends on the torch build
        raise CaptureError(
            f"this torch ({torch.__version__}) has no torch._dynamo.backends.common.aot_autograd"
            "; fxenergy.backend needs torch >= 2.1"
        ) from exc
    return aot_autograd


def _boxed(fn: Callable[..., Any]) -> Callable[..., Any]:
    from functorch.compile import make_boxed_func

    return make_boxed_func(fn)


def _ensure_values(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> None:
    """aot graphs carry fake values already; propagate them where a node lacks one."""
    if all(meta.node_value(n) is not None for n in gm.graph.nodes if n.op != "output"):
        return
    from torch._guards import detect_fake_mode

    mode = detect_fake_mode(example_inputs)
    FakeTensorProp(gm, mode).propagate(*example_inputs)


class EnergyBackend:
    """A ``torch.compile`` backend that plans every compiled graph for energy.

    Use ``torch.compile(model, backend=fxenergy.backend(gpu="H100-SXM5"))``; the backend
    object keeps the plans (``.graphs``) and the runtime's record of every call.
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

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Any:
        aot = _aot_autograd()
        return aot(
            fw_compiler=self._compiler("forward"),
            bw_compiler=self._compiler("backward"),
            inference_compiler=self._compiler("inference"),
        )(gm, example_inputs)

    def _compiler(self, kind: str) -> Callable[[torch.fx.GraphModule, Sequence[Any]], Any]:
        def compile_graph(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Any:
            _ensure_values(gm, example_inputs)
            plan = plan_graph(
                gm,
                self.gpu,
                self.max_slowdown,
                switch_latency_s=self.switch_latency_s,
                objective=self.objective,
                time_limit_s=self.time_limit_s,
            )
            record = CompiledGraph(kind, plan)
            self.graphs.append(record)
            return _boxed(self._runner(apply_plan(gm, plan), record))

        return compile_graph

    def _runner(self, gm: torch.fx.GraphModule, record: CompiledGraph) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            with FrequencyRuntime.from_plan(record.plan, self.frequency_backend, gm) as rt:
                out = gm(*args)
            record.runs.append(rt.summary())
            return out

        return run

    def totals(self) -> dict[str, float]:
        """Predicted and baseline time/energy of one call of every planned graph, summed."""
        plans = [g.plan for g in self.graphs]
        return {
            "baseline_time_s": sum(p.baseline.time_s for p in plans),
            "baseline_energy_j": sum(p.baseline.energy_j for p in plans),
            "predicted_time_s": sum(p.predicted.time_s for p in plans),
            "predicted_energy_j": sum(p.predicted.energy_j for p in plans),
        }


def backend(
    gpu: str = DEFAULT_GPU,
    max_slowdown: float = 0.01,
    runtime: str | FrequencyBackend = "auto",
    switch_latency_s: float = DEFAULT_SWITCH_LATENCY_S,
    time_limit_s: float = 10.0,
    objective: str = "energy",
    gpu_params: str | None = None,
) -> EnergyBackend:
    """A ``torch.compile`` backend that plans forward, backward and optimizer-step graphs.

    Example::

        be = fxenergy.backend(gpu="A100-SXM4-80GB", max_slowdown=0.01)
        step = torch.compile(model, backend=be)
        opt_step = torch.compile(optimizer.step, backend=be)
    """
    gpu = resolve_gpu(gpu, gpu_params) or gpu  # gpu_params: a `fxenergy profile calibrate` file
    return EnergyBackend(gpu, max_slowdown, runtime, switch_latency_s, time_limit_s, objective)
