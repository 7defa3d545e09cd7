"""Frequency plans: what the scheduler decided for one graph, as JSON-able data.

A plan carries a schema version and a fingerprint of the graph it was made for; loading it onto
another graph is refused with :class:`~fxenergy.errors.PlanMismatchError`. A plan file is checked
when it is read (:meth:`Plan.load`): JSON syntax, schema, fields, the GPU's name and that every
clock is one the GPU supports; a bad file raises :class:`~fxenergy.errors.InvalidPlanError`
naming the file and what to do.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.fx

from fxenergy.errors import InvalidPlanError, PlanMismatchError, UnknownGPUError
from fxenergy.graph.meta import node_value, tensor_values

#: 2: switches are issued ahead (transition windows, not stalls); the power cap acts on the
#: cycle's average power; partition time/energy include the windows they host.
SCHEMA_VERSION = 2
_OLD_SCHEMAS = {
    1: "version 1 plans charged every clock switch as an idle stall and capped power per node",
}


def _describe_value(value: Any) -> str:
    parts = []
    for t in tensor_values(value):
        parts.append(f"{t.dtype}{list(t.shape)}")
    return ";".join(parts)


def _describe_target(node: torch.fx.Node) -> str:
    t = node.target
    if isinstance(t, str):
        return t
    return getattr(t, "__qualname__", None) or getattr(t, "__name__", None) or str(t)


def graph_fingerprint(gm: torch.fx.GraphModule) -> str:
    """A stable hash of a graph's structure: ops, targets, argument wiring, shapes and dtypes.

    Two captures of the same model with the same input shapes give the same fingerprint; a change
    of architecture, shape or dtype gives another. The node order and inserted plan nodes
    (frequency switches) are ignored, so a rewritten module keeps its original's fingerprint.
    """
    lines = []
    for node in gm.graph.nodes:
        if node.meta.get("fxenergy.inserted"):
            continue
        args = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: f"%{n.name}")
        desc = _describe_value(node_value(node))
        lines.append(f"{node.name}|{node.op}|{_describe_target(node)}|{args!r}|{desc}")
    # sorted: a reordered graph (same nodes, same wiring) keeps its fingerprint
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PlanPartition:
    """A contiguous run of nodes (in the plan's order) executed at one SM clock."""

    index: int
    clock_mhz: int
    nodes: tuple[str, ...]
    time_s: float
    energy_j: float


@dataclass(frozen=True)
class NodeCost:
    """What the cost model predicts for one planned node at its planned clock (for timelines)."""

    name: str
    op: str  #: short target name, e.g. ``aten.mm`` or ``linear``
    time_s: float
    energy_j: float
    flops: int
    bytes: int
    bound: str  #: "compute" or "memory" (roofline at the max clock)
    critical: bool  #: on the graph's critical path (zero slack)


@dataclass(frozen=True)
class PlanMetrics:
    """Time, energy and peak activation memory of one way to run the graph."""

    time_s: float
    energy_j: float
    peak_memory_bytes: int
    switches: int = 0


class Savings:
    """``energy_saving`` and ``slowdown`` of anything with ``predicted`` and ``baseline``
    :class:`PlanMetrics` (a plan, a training cycle, the graphs of a model with breaks)."""

    predicted: PlanMetrics
    baseline: PlanMetrics

    @property
    def energy_saving(self) -> float:
        """Fraction of the baseline (all-max) energy saved (predicted)."""
        b = self.baseline.energy_j
        return 1.0 - self.predicted.energy_j / b if b else 0.0

    @property
    def slowdown(self) -> float:
        """Predicted time over the baseline (all-max) time, minus one."""
        b = self.baseline.time_s
        return self.predicted.time_s / b - 1.0 if b else 0.0


@dataclass(frozen=True)
class Plan(Savings):
    """An op order and an SM clock per partition for one graph on one GPU.

    ``predicted`` and ``baseline`` (original order, every op at the maximum clock) come from the
    DVFS model: they are predictions, not measurements.
    """

    fingerprint: str
    gpu: str
    max_slowdown: float
    switch_latency_s: float
    order: tuple[str, ...]
    partitions: tuple[PlanPartition, ...]
    predicted: PlanMetrics
    baseline: PlanMetrics
    status: str  #: solver status, e.g. OPTIMAL, FEASIBLE, BASELINE
    gap: float | None = None  #: relative gap to the solver's bound on energy (None if unknown)
    solve_time_s: float = 0.0
    notes: tuple[str, ...] = ()
    objective: str = "energy"
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    nodes: tuple[NodeCost, ...] = ()  #: per-node predictions in plan order (may be empty)

    def clock_of(self) -> dict[str, int]:
        """SM clock of every planned node, by node name."""
        return {n: p.clock_mhz for p in self.partitions for n in p.nodes}

    def check_graph(self, gm: torch.fx.GraphModule) -> None:
        """Raise :class:`PlanMismatchError` unless this plan was made for ``gm``."""
        fp = graph_fingerprint(gm)
        if fp != self.fingerprint:
            raise PlanMismatchError(
                f"this plan was made for graph {self.fingerprint}, but the module's graph is "
                f"{fp} (another model, input shape or dtype). Re-plan it with "
                "fxenergy.optimize(model, example_args, ...) or `fxenergy optimize ... --out`."
            )

    def to_json(self) -> str:
        """Serialize (schema version included)."""
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, source: str = "the plan") -> Plan:
        """Parse and check a plan written by :meth:`to_json`.

        Raises:
            InvalidPlanError: not JSON, a pipeline plan, missing fields, or an unknown GPU or a
                clock the GPU does not support (the message names ``source``).
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidPlanError(
                f"{source} is not valid JSON ({exc.msg} at line {exc.lineno}, column "
                f"{exc.colno}): the file is truncated or corrupt; save the plan again "
                "(`fxenergy optimize ... --out plan.json`)"
            ) from None
        plan = _plan_from_dict(data, source)
        plan.validate(source)
        return plan

    def validate(self, source: str = "the plan") -> None:
        """Check the GPU name, that every clock is supported by it, and the partitions' nodes.

        Raises:
            InvalidPlanError: naming ``source`` and the first problem found.
        """
        from fxenergy.hardware.specs import get_gpu

        try:
            spec = get_gpu(self.gpu)
        except UnknownGPUError as exc:
            raise InvalidPlanError(f"{source} was made for an unknown GPU: {exc}") from None
        supported = set(spec.supported_clocks_mhz())
        bad = sorted({p.clock_mhz for p in self.partitions} - supported)
        if bad:
            raise InvalidPlanError(
                f"{source} asks for SM clock(s) {', '.join(map(str, bad))} MHz, which the "
                f"{spec.name} does not support ({min(supported)}-{max(supported)} MHz in its "
                "steps); re-plan instead of editing clocks by hand"
            )
        order = set(self.order)
        stray = [n for p in self.partitions for n in p.nodes if n not in order]
        if stray:
            raise InvalidPlanError(
                f"{source}: partition node {stray[0]!r} is not in the plan's order; the file "
                "was edited or is corrupt — re-plan it"
            )
        if not all(x >= 0 for x in (self.predicted.time_s, self.predicted.energy_j)):
            raise InvalidPlanError(f"{source}: negative predicted time or energy; re-plan it")

    def save(self, path: str | Path) -> None:
        """Write the plan as JSON."""
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read and check a plan saved by :meth:`save` (see :meth:`from_json`)."""
        return cls.from_json(read_plan_text(path), source=str(path))

    def to_trace(self, path: str | Path) -> None:
        """Write this plan's predicted timeline as Chrome trace-event JSON (Perfetto,
        chrome://tracing): ops, partitions, clock switches, SM clock and power counters."""
        from fxenergy.plans.trace import graph_timeline, write_trace

        write_trace(graph_timeline(self), path)

    def to_timeline_png(self, path: str | Path) -> None:
        """Draw this plan's predicted timeline as a PNG (needs matplotlib)."""
        from fxenergy.plans.timeline_plot import plot_timeline
        from fxenergy.plans.trace import graph_timeline

        plot_timeline(graph_timeline(self), path)


def read_plan_text(path: str | Path) -> str:
    """The text of a plan file, or :class:`InvalidPlanError` saying why it cannot be read."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise InvalidPlanError(f"plan file {path} not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidPlanError(f"cannot read plan file {path}: {exc}") from None


_REQUIRED = ("fingerprint", "gpu", "order", "partitions", "predicted", "baseline", "status")


def _plan_from_dict(data: Any, source: str) -> Plan:
    if isinstance(data, dict) and str(data.get("schema", "")).startswith("fxenergy.pipeline-plan"):
        raise InvalidPlanError(
            f"{source} is a pipeline plan (from `fxenergy pipeline --out`), not a graph plan; "
            "show it with `fxenergy plan show` and run it with fxenergy.pipeline.runner"
        )
    if not isinstance(data, dict):
        raise InvalidPlanError(f"{source} is not an fxenergy plan (a JSON object is expected)")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        why = f" ({_OLD_SCHEMAS[version]})" if version in _OLD_SCHEMAS else ""
        raise InvalidPlanError(
            f"{source}: plan schema version {version} is not supported{why}; this fxenergy "
            f"reads version {SCHEMA_VERSION}: re-plan the model with this version"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise InvalidPlanError(
            f"{source} lacks {', '.join(map(repr, missing))}: not a complete fxenergy plan; "
            "save it again with `fxenergy optimize ... --out`"
        )
    try:
        fields = {
            **data,
            "order": tuple(data["order"]),
            "notes": tuple(data.get("notes", ())),
            "partitions": tuple(
                PlanPartition(**{**p, "nodes": tuple(p["nodes"])}) for p in data["partitions"]
            ),
            "predicted": PlanMetrics(**data["predicted"]),
            "baseline": PlanMetrics(**data["baseline"]),
            "nodes": tuple(NodeCost(**n) for n in data.get("nodes", ())),
        }
        return Plan(**fields)
    except (TypeError, KeyError, AttributeError) as exc:
        raise InvalidPlanError(
            f"{source} has a malformed field ({type(exc).__name__}: {exc}); the file was edited "
            "or is corrupt — save the plan again"
        ) from None


def check_plan_gpu(plan: Plan, gpu: str) -> None:
    """Refuse to run ``plan`` for another GPU than the one it was made for."""
    from fxenergy.hardware.specs import get_gpu

    wanted = get_gpu(gpu).name
    if get_gpu(plan.gpu).name != wanted:
        raise PlanMismatchError(
            f"this plan was made for the {plan.gpu}, not the {wanted}: its clocks and "
            f"predictions do not carry over; re-plan for the {wanted}, or ask for the "
            f"{plan.gpu} (--gpu {plan.gpu})"
        )
