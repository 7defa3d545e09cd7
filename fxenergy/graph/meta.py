"""Every metadata key fxenergy writes, and the frozen record types stored under them.

Keys are flat and namespaced (``node.meta["fxenergy.cost"]``). Values are frozen dataclasses with
units in their field names, so ``node_copy``'s shallow copy cannot alias mutable state. torch's own
value keys (``val``, ``example_value``, ``tensor_meta``, ``fake_result``) are read only through
:func:`node_value`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.fx

# --- node-level keys -------------------------------------------------------------------------
COST = "fxenergy.cost"  #: CostRecord: frequency-independent work of the node
ROOFLINE = "fxenergy.roofline"  #: RooflineRecord: time at max clock on the graph's GPU
TIMING = "fxenergy.timing"  #: TimingRecord: earliest/latest start, slack, criticality
MODULE = "fxenergy.module"  #: str: dotted path of the nn.Module that owns the node ("" = root)
LIVE_BYTES = "fxenergy.live_bytes"  #: int: activation bytes live right after the node runs
FREQUENCY = "fxenergy.freq_mhz"  #: int: SM clock the plan assigns to the node
PARTITION = "fxenergy.partition"  #: int: index of the plan partition the node belongs to

# --- graph-level keys (GraphModule.meta) -------------------------------------------------------
GPU = "fxenergy.gpu"  #: str: name of the GPU the analyses were made for
CRITICAL_PATH = "fxenergy.critical_path"  #: CriticalPathSummary
MEMORY = "fxenergy.memory"  #: MemoryTimeline
REDUNDANCY = "fxenergy.redundancy"  #: RedundancyReport
ANALYSES = "fxenergy.analyses"  #: frozenset[str]: keys whose analyses are current on this graph
CAPTURE = "fxenergy.capture"  #: CaptureInfo

Bound = Literal["compute", "memory", "none"]


@dataclass(frozen=True)
class CostRecord:
    """Work of one fx node, counted at the aten level; independent of the SM clock.

    ``uncounted_ops`` lists aten ops that ran with no FLOP formula: they are costed as memory-only
    and reported, never silently zero.
    """

    flops: int
    macs: int
    bytes_read: int
    bytes_written: int
    dtype: str
    aten_ops: tuple[str, ...] = ()
    uncounted_ops: tuple[str, ...] = ()
    kernels: int = 0  #: aten ops that launch a kernel (views and metadata ops excluded)
    matmul_flops: int = 0  #: the part of ``flops`` that runs on tensor cores (mm, conv, attention)
    allow_tf32: bool = False  #: fp32 matmul work may use TF32 tensor cores (torch's flags)

    @property
    def bytes_total(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def arithmetic_intensity(self) -> float:
        """FLOPs per byte moved (0 for ops that move nothing)."""
        total = self.bytes_total
        return self.flops / total if total else 0.0


@dataclass(frozen=True)
class RooflineRecord:
    """Roofline estimate of one node on one GPU at its maximum SM clock."""

    gpu: str
    time_s: float
    compute_time_s: float
    memory_time_s: float
    bound: Bound


@dataclass(frozen=True)
class TimingRecord:
    """Position of a node in the DAG's schedule (seconds from the graph's start)."""

    duration_s: float
    earliest_start_s: float
    latest_start_s: float
    slack_s: float
    critical: bool


@dataclass(frozen=True)
class CriticalPathSummary:
    """The graph's longest path under roofline durations."""

    gpu: str
    length_s: float  #: critical-path length: the time with unlimited parallelism
    serial_time_s: float  #: sum of all durations: the time on one stream
    nodes: tuple[str, ...]  #: node names on the critical path, in order


@dataclass(frozen=True)
class MemoryTimeline:
    """Live activation bytes after each node in the graph's current order."""

    live_bytes: tuple[int, ...]
    peak_bytes: int
    peak_node: str
    live_at_peak: tuple[str, ...]  #: names of the nodes whose outputs are live at the peak


@dataclass(frozen=True)
class RedundancyReport:
    """What eliminate-redundancy removed (or would remove) and what that saves."""

    removed: tuple[tuple[str, str], ...]  #: (rule, node name) pairs
    flops_saved: int
    bytes_saved: int


@dataclass(frozen=True)
class CaptureInfo:
    """How a graph was captured."""

    method: str  #: "symbolic", "export" or "aot-joint"
    training: bool
    notes: tuple[str, ...] = ()


_VALUE_KEYS = ("val", "example_value", "fake_result")


def node_value(node: torch.fx.Node) -> Any:
    """The (fake) value a node produced, whichever key torch stored it under; None if unknown."""
    for key in _VALUE_KEYS:
        if key in node.meta:
            return node.meta[key]
    tm = node.meta.get("tensor_meta")
    if tm is not None:
        return tm
    return None


def tensor_values(value: Any) -> list[torch.Tensor]:
    """Flatten a node value (tensor, tuple, list, dict) into its tensors."""
    out: list[torch.Tensor] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            stack.extend(reversed(v))
        elif isinstance(v, dict):
            stack.extend(reversed(list(v.values())))
    return out


def analyses(gm: torch.fx.GraphModule) -> frozenset[str]:
    """The analysis keys currently valid on ``gm``."""
    return gm.meta.get(ANALYSES, frozenset())


# --- appended by capture/annotate-cost (issue 2) -----------------------------------------------
PARAMS = "fxenergy.params"  #: int (GraphModule.meta): parameter count of the captured model
ALLOW_TF32 = "fxenergy.allow_tf32"  #: tuple[bool, bool] (GraphModule.meta): TF32 (matmul, conv)
