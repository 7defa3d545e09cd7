"""memory-timeline: live activation bytes after each node in the graph's current order.

A tensor is live from the node that produces it through the last node that reads it (through any
view of it); views and ``getitem`` results share their base's storage, which is counted once.
Graph inputs, parameters and buffers are not activations and are not counted; tensors that reach
the output stay live to the end. See :mod:`fxenergy.memory.problem` for the exact
definition (a node's inputs are still counted at its own step, so the peak bounds the allocator's
high-water mark from below only by fragmentation and workspace, which are not modelled).

Reads: fake values in ``node.meta["val"]`` (capture puts them there). Writes: ``meta.LIVE_BYTES``
(int) on every node and ``gm.meta[meta.MEMORY]`` (:class:`fxenergy.graph.meta.MemoryTimeline`).
Preserves everything (analysis).
"""

from __future__ import annotations

import torch.fx
from torch.fx.passes.infra.pass_base import PassResult

from fxenergy.graph import meta
from fxenergy.graph.pass_infra import FxPass, register_pass
from fxenergy.memory.timeline import graph_memory_timeline


@register_pass
class MemoryTimelinePass(FxPass):
    """Annotate each node with the activation bytes live after it and the graph with its peak."""

    name = "memory-timeline"
    provides = (meta.LIVE_BYTES, meta.MEMORY)
    is_analysis = True

    def run(self, gm: torch.fx.GraphModule) -> PassResult:
        timeline = graph_memory_timeline(gm)
        for node, live in zip(gm.graph.nodes, timeline.live_bytes, strict=True):
            node.meta[meta.LIVE_BYTES] = live
        gm.meta[meta.MEMORY] = timeline
        return PassResult(gm, False)
