"""critical-path: earliest/latest start, slack and the longest path under roofline durations.

Builds the dependency DAG of the graph (:func:`fxenergy.graph.semantics.dependency_graph`:
data edges plus order edges between side-effectful nodes), weighs each node with its roofline
time at the maximum SM clock and runs the critical-path method
(:func:`fxenergy.graph.timing.dag_timing`). The
path length is the run time with unlimited parallelism; ``serial_time_s`` is the time on one
stream. Nodes with zero slack (within ``rel_tol`` of the path length) are critical: slowing any of
them slows the whole graph, while a node with slack ``s`` can stretch by ``s`` for free.

Reads: ``meta.ROOFLINE`` on every op node (placeholders, ``get_attr`` and the output take 0 s).
Writes: ``meta.TIMING`` (:class:`fxenergy.graph.meta.TimingRecord`) on every node and
``gm.meta[meta.CRITICAL_PATH]`` (:class:`fxenergy.graph.meta.CriticalPathSummary`).
Preserves everything (analysis).

Example::

    >>> from fxenergy.graph.pass_infra import run_passes
    >>> gm = run_passes(gm, "annotate-cost{gpu=A100-SXM4-80GB},critical-path")  # doctest: +SKIP
    >>> gm.meta["fxenergy.critical_path"].length_s  # doctest: +SKIP
    0.0123
"""

from __future__ import annotations

import torch.fx
from torch.fx.passes.infra.pass_base import PassResult

from fxenergy.graph import meta
from fxenergy.graph.pass_infra import FxPass, register_pass
from fxenergy.graph.semantics import dependency_graph
from fxenergy.graph.timing import dag_timing


def roofline_durations(gm: torch.fx.GraphModule) -> dict[str, float]:
    """Seconds per node name from ``meta.ROOFLINE`` (0 where a node has no record)."""
    out: dict[str, float] = {}
    for node in gm.graph.nodes:
        rec = node.meta.get(meta.ROOFLINE)
        out[node.name] = float(rec.time_s) if rec is not None else 0.0
    return out


def _gpu_name(gm: torch.fx.GraphModule) -> str:
    if meta.GPU in gm.meta:
        return str(gm.meta[meta.GPU])
    for node in gm.graph.nodes:
        rec = node.meta.get(meta.ROOFLINE)
        if rec is not None:
            return rec.gpu
    return ""


@register_pass
class CriticalPath(FxPass):
    """Annotate every node with its timing in the DAG and the graph with its critical path.

    Args:
        rel_tol: slack below ``rel_tol * length`` counts as zero (float error from summing
            durations along different paths); default 1e-9.
    """

    name = "critical-path"
    required = (meta.ROOFLINE,)
    provides = (meta.TIMING, meta.CRITICAL_PATH)
    is_analysis = True

    def __init__(self, rel_tol: float | None = None) -> None:
        # Only options the user set are recorded, so the default prints as plain "critical-path".
        super().__init__(**({} if rel_tol is None else {"rel_tol": rel_tol}))
        self.rel_tol = 1e-9 if rel_tol is None else float(rel_tol)

    def run(self, gm: torch.fx.GraphModule) -> PassResult:
        durations = roofline_durations(gm)
        timing = dag_timing(dependency_graph(gm), durations, rel_tol=self.rel_tol)
        for node in gm.graph.nodes:
            n = node.name
            node.meta[meta.TIMING] = meta.TimingRecord(
                duration_s=durations[n],
                earliest_start_s=timing.earliest_start[n],
                latest_start_s=timing.latest_start[n],
                slack_s=timing.slack[n],
                critical=n in timing.critical,
            )
        gm.meta[meta.CRITICAL_PATH] = meta.CriticalPathSummary(
            gpu=_gpu_name(gm),
            length_s=timing.length,
            serial_time_s=timing.serial,
            nodes=_op_nodes(gm, timing.path),
        )
        return PassResult(gm, False)


def _op_nodes(gm: torch.fx.GraphModule, path: tuple[str, ...]) -> tuple[str, ...]:
    # Placeholders and the output take no time; leave them off the reported path.
    kinds = {n.name: n.op for n in gm.graph.nodes}
    return tuple(n for n in path if kinds.get(n) not in ("placeholder", "output", "get_attr"))
