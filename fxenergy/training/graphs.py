"""A model that runs as several graphs (graph breaks), optimized through ``torch.compile``.

:func:`fxenergy.optimize` falls back here when one-graph capture fails: the model is compiled
with fxenergy's backend (``dynamic=False``: every shape gets its own, fully known graphs), every
call is one :meth:`~fxenergy.training.backend.EnergyBackend.step`, so the graphs one call runs
are planned as one cycle and the clock carries across the breaks. A call that takes another
branch or another shape compiles and records new graphs and plans that variant at its end;
``report()`` shows every variant planned.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fxenergy.graph.capture_log import capture_log_path, torch_logs_to, verbose_capture
from fxenergy.plans.plan import Plan, PlanMetrics, Savings
from fxenergy.training.backend import EnergyBackend
from fxenergy.training.breaks import describe_breaks
from fxenergy.training.cycle import StepRun


@dataclass(frozen=True)
class CyclePlanSummary(Savings):
    """The plans of one call of a model with graph breaks: one :class:`Plan` per graph run."""

    gpu: str
    max_slowdown: float
    plans: tuple[Plan, ...]
    predicted: PlanMetrics
    baseline: PlanMetrics
    breaks: tuple[str, ...]

    def to_json(self) -> str:
        """Every graph's plan and the breaks, as JSON (for reading; not loadable as one Plan)."""
        return json.dumps(asdict(self), indent=1)

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_text(self.to_json())


class OptimizedGraphs(nn.Module):
    """A model compiled into several planned graphs; call it like the model.

    Attributes:
        original: the model as given (unchanged).
        energy: the :class:`~fxenergy.training.backend.EnergyBackend` holding every graph,
            every cycle planned and the runs.
        capture_error: why one-graph capture failed (the reason for this fallback).
        last_run: the latest call's cost, once a call ran entirely under a plan.
    """

    def __init__(self, original: nn.Module, energy: EnergyBackend, capture_error: str = "") -> None:
        super().__init__()
        self.original = original
        self.energy = energy
        self.capture_error = capture_error
        self.compiled = torch.compile(original, backend=energy, dynamic=False)
        self.last_run: StepRun | None = None
        self._log: Any = None  # the capture log, opened on the first call

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # dynamo may recompile on any call (another branch, another shape); its warnings go
        # to the capture log, not the user's terminal
        with torch_logs_to(self._log_stream()), self.energy.step():
            out = self.compiled(*args, **kwargs)
        cyc = self.energy.active_cycle
        runs = cyc.runs if cyc is not None else []
        self.last_run = runs[-1] if runs else None
        return out

    def _log_stream(self) -> Any:
        if verbose_capture():
            return None
        if self._log is None:
            self._log = open(capture_log_path(), "a", encoding="utf-8")
        return self._log

    @property
    def graph_count(self) -> int:
        """Graphs the active cycle runs per call."""
        cyc = self.energy.active_cycle
        return len(cyc.sequence) if cyc is not None else len(self.energy.graphs)

    @property
    def plan(self) -> CyclePlanSummary:
        """The active cycle's plans (one per graph run by a call); none if no graph ran."""
        cyc = self.energy.active_cycle
        if cyc is None:
            zero = PlanMetrics(0.0, 0.0, 0)
            return CyclePlanSummary(self.energy.gpu, self.energy.max_slowdown, (), zero, zero, ())
        return CyclePlanSummary(
            gpu=cyc.plans[0].gpu if cyc.plans else self.energy.gpu,
            max_slowdown=self.energy.max_slowdown,
            plans=cyc.plans,
            predicted=cyc.predicted,
            baseline=cyc.baseline,
            breaks=tuple(dict.fromkeys(str(b) for b in self.energy.breaks)),
        )

    def break_lines(self) -> list[str]:
        """How many graphs one call runs, where the breaks are, and what that costs."""
        if not self.energy.graphs:
            return [
                "torch.compile compiled no graph of this model (dynamo skips a whole frame when "
                "a graph break falls right inside one of its loops): it runs eagerly, unplanned. "
                "Move the loop body with the data-dependent branch into a submodule or function "
                "so dynamo can compile around the break."
            ]
        return describe_breaks(self.energy.breaks, self.graph_count)

    def report(self, console: Any = None) -> None:
        """Print the breaks, every graph and every variant planned (rich tables)."""
        from rich.console import Console

        console = console or Console()
        for line in self.break_lines():
            console.print(line, highlight=False, markup=False)
        self.energy.report(console=console)

    def restore(self) -> None:
        """Restorer protocol (atexit, signals): put the GPU's clocks back."""
        self.energy.restore()

    def restore_clocks(self) -> None:
        """Put the GPU's clocks back now (they are kept between calls)."""
        self.energy.restore_clocks()


@contextmanager
def _state_kept(model: nn.Module) -> Iterator[None]:
    """Run the model without leaving a trace: buffers (BatchNorm statistics) and the RNG state
    are put back afterwards."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            with torch.no_grad():
                for buf, saved in buffers:
                    buf.copy_(saved)


def optimize_with_breaks(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    energy: EnergyBackend,
    capture_error: str,
) -> OptimizedGraphs:
    """Compile ``model`` through ``energy`` and run it once on the example inputs (state kept):
    the graphs it runs are recorded and planned as one cycle before this returns.

    Raises:
        CaptureError: the model is on the meta device (it must run to be compiled), or
            ``torch.compile`` cannot run it either (both failures are said).
    """
    from fxenergy.errors import CaptureError
    from fxenergy.graph.capture_log import capture_log

    devices = {t.device.type for t in [*model.parameters(), *model.buffers()]}
    if "meta" in devices:
        raise CaptureError(
            f"{capture_error}\nThe fallback, torch.compile with fxenergy's backend, runs the "
            "model once, which a model on the meta device cannot do: build it with real (even "
            "random) weights."
        )
    opt = OptimizedGraphs(model, energy, capture_error)
    with capture_log() as log_path, _state_kept(model):
        try:
            opt(*args, **kwargs)
        except Exception as err:
            opt.restore_clocks()
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise CaptureError(
                f"{capture_error}\ntorch.compile with fxenergy's backend failed too: "
                f"{type(err).__name__}: {first}"
                + (f" (torch's log: {log_path})" if log_path else "")
            ) from err
    return opt


def graph_reports(
    opt: OptimizedGraphs, gpu: str | None, title: str, group_by: str = "module", depth=None
) -> list[Any]:
    """One :class:`fxenergy.report.Report` per graph one call runs (critical path per graph),
    titled with its position and the break that ended it; the caller sums or prints them."""
    from fxenergy.report import analyze, build_report

    cyc = opt.energy.active_cycle
    order = cyc.sequence if cyc is not None else tuple(g.index for g in opt.energy.graphs)
    reports = []
    for k, g in enumerate(order):
        record = opt.energy.graphs[g]
        gm = analyze(record.graph_module, gpu)
        where = f" ({record.label})" if record.label else ""
        name = f"{title} — graph {k + 1} of {len(order)}, {record.kind}{where}"
        reports.append(build_report(gm, title=name, group_by=group_by, depth=depth))
    return reports


def report_with_breaks(
    model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], gpu: str | None, error: str
) -> OptimizedGraphs:
    """Compile ``model`` through dynamo (clocks untouched: the null backend) for ``report``
    and ``frontier`` when one-graph capture failed; read it with :func:`graph_reports`."""
    from fxenergy.plans.planner import DEFAULT_GPU

    energy = EnergyBackend(gpu or DEFAULT_GPU, 0.0, "null", time_limit_s=1.0)
    return optimize_with_breaks(model, args, kwargs, energy=energy, capture_error=error)


_SUMMED = ("flops", "macs", "matmul_flops", "bytes_read", "bytes_written", "nodes", "kernels")


def summed_totals(reports: list[Any], params: int | None = None) -> dict[str, Any]:
    """The graphs' totals added up (what one call costs); the critical path stays per graph,
    since graphs run one after another: their sum is the call's critical path. ``params``:
    the model's parameter count (aot graphs take parameters as inputs, so they count none)."""
    if not reports:
        return {}
    first = {**reports[0].totals, "params": params or reports[0].totals.get("params")}
    out = {**first, **{k: sum(r.totals.get(k) or 0 for r in reports) for k in _SUMMED}}
    for key in ("roofline_time_s", "critical_path_s"):
        values = [r.totals.get(key) for r in reports]
        out[key] = sum(values) if all(v is not None for v in values) else None
    peaks = [r.totals.get("peak_memory_bytes") for r in reports]
    out["peak_memory_bytes"] = max((p for p in peaks if p is not None), default=None)
    uncounted: dict[str, int] = {}
    for r in reports:
        for k, v in (r.totals.get("uncounted_ops") or {}).items():
            uncounted[k] = uncounted.get(k, 0) + v
    out["uncounted_ops"] = uncounted
    return out
