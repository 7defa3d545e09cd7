"""Per-node cost records of a graph: what the ``annotate-cost`` pass and the totals share.

:func:`annotate_costs` writes ``meta.COST`` and ``meta.ROOFLINE`` on every node and
``gm.meta[meta.GPU]``; the pass (``passes/annotate_cost.py``) wraps it for pipelines, and
:func:`fxenergy.cost.totals.graph_totals` calls it directly when a graph has no costs yet.
"""

from __future__ import annotations

import torch.fx

from fxenergy.cost.counter import count_costs
from fxenergy.cost.roofline import roofline
from fxenergy.graph import meta
from fxenergy.hardware.specs import get_gpu

#: The GPU costs are predicted for when none is named (the one default of the package).
DEFAULT_GPU = "A100-SXM4-80GB"
#: The analysis keys :func:`annotate_costs` provides.
COST_ANALYSES = (meta.COST, meta.ROOFLINE, meta.GPU)


def annotate_costs(gm: torch.fx.GraphModule, gpu: str = DEFAULT_GPU) -> None:
    """Annotate each node of ``gm`` with its aten-level cost and its roofline on ``gpu``.

    Raises:
        UnknownGPUError: ``gpu`` is not in the spec table.
    """
    spec = get_gpu(gpu)  # unknown names fail here, listing the known GPUs
    costs = count_costs(gm)
    for node in gm.graph.nodes:
        cost = costs[node]
        node.meta[meta.COST] = cost
        node.meta[meta.ROOFLINE] = roofline(cost, spec)
    gm.meta[meta.GPU] = spec.name
