"""Whole-graph sums of the per-node cost annotations, as the report shows them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch.fx

from fxenergy.cost.annotate import COST_ANALYSES, DEFAULT_GPU, annotate_costs
from fxenergy.graph import meta


@dataclass(frozen=True)
class CostTotals:
    """Sums over a graph's nodes (``roofline_time_s``: serial sum at max clock on ``gpu``)."""

    flops: int
    macs: int
    matmul_flops: int
    bytes_read: int
    bytes_written: int
    params: int
    nodes: int
    kernels: int
    roofline_time_s: float
    gpu: str
    uncounted_ops: dict[str, int] = field(default_factory=dict)  #: aten op -> occurrences

    @property
    def bytes_total(self) -> int:
        return self.bytes_read + self.bytes_written


def graph_params(gm: torch.fx.GraphModule) -> int:
    """Parameter count recorded at capture, else the module's distinct parameters."""
    if meta.PARAMS in gm.meta:
        return int(gm.meta[meta.PARAMS])
    return sum(p.numel() for p in gm.parameters())


def graph_totals(gm: torch.fx.GraphModule, gpu: str | None = None) -> CostTotals:
    """Sum the ``annotate-cost`` records of ``gm``, annotating it first if they are missing.

    Args:
        gm: a captured graph.
        gpu: GPU for the roofline if the pass must run (default: the pass's default).
    """
    if meta.COST not in meta.analyses(gm) or (gpu and gm.meta.get(meta.GPU) != gpu):
        annotate_costs(gm, gpu or DEFAULT_GPU)
        gm.meta[meta.ANALYSES] = meta.analyses(gm) | set(COST_ANALYSES)
    nodes = list(gm.graph.nodes)
    costs = [n.meta[meta.COST] for n in nodes]
    uncounted = Counter(op for c in costs for op in c.uncounted_ops)
    return CostTotals(
        flops=sum(c.flops for c in costs),
        macs=sum(c.macs for c in costs),
        matmul_flops=sum(c.matmul_flops for c in costs),
        bytes_read=sum(c.bytes_read for c in costs),
        bytes_written=sum(c.bytes_written for c in costs),
        params=graph_params(gm),
        nodes=len(nodes),
        kernels=sum(c.kernels for c in costs),
        roofline_time_s=sum(n.meta[meta.ROOFLINE].time_s for n in nodes),
        gpu=str(gm.meta.get(meta.GPU, "")),
        uncounted_ops=dict(sorted(uncounted.items())),
    )
