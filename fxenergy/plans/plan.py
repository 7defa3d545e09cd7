"""Frequency plans: what the scheduler decided for one graph, as JSON-able data.

A plan carries a schema version and a fingerprint of the graph it was made for; loading it onto
another graph is refused with :class:`~fxenergy.errors.PlanMismatchError`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.fx

from fxenergy.errors import PlanMismatchError
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
class PlanMetrics:
    """Time, energy and peak activation memory of one way to run the graph."""

    time_s: float
    energy_j: float
    peak_memory_bytes: int
    switches: int = 0


@dataclass(frozen=True)
class Plan:
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

    @property
    def energy_saving(self) -> float:
        """Fraction of the baseline energy saved (predicted)."""
        b = self.baseline.energy_j
        return 1.0 - self.predicted.energy_j / b if b else 0.0

    @property
    def slowdown(self) -> float:
        """Predicted time over the baseline time, minus one."""
        b = self.baseline.time_s
        return self.predicted.time_s / b - 1.0 if b else 0.0

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
    def from_json(cls, text: str) -> Plan:
        """Parse a plan written by :meth:`to_json`."""
        data = json.loads(text)
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            why = f" ({_OLD_SCHEMAS[version]})" if version in _OLD_SCHEMAS else ""
            raise PlanMismatchError(
                f"plan schema version {version} is not supported{why}; this fxenergy reads "
                f"version {SCHEMA_VERSION}: re-plan the model with this version"
            )
        data["order"] = tuple(data["order"])
        data["notes"] = tuple(data["notes"])
        data["partitions"] = tuple(
            PlanPartition(**{**p, "nodes": tuple(p["nodes"])}) for p in data["partitions"]
        )
        data["predicted"] = PlanMetrics(**data["predicted"])
        data["baseline"] = PlanMetrics(**data["baseline"])
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write the plan as JSON."""
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a plan saved by :meth:`save`."""
        return cls.from_json(Path(path).read_text())
