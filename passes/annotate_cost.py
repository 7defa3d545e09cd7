"""annotate-cost: FLOPs, MACs, bytes and the roofline time of every node.

Reads: ``node.meta["val"]`` of the placeholders (fake values from :func:`fxenergy.capture`).
Writes: ``meta.COST`` (:class:`~fxenergy.graph.meta.CostRecord`) and ``meta.ROOFLINE``
(:class:`~fxenergy.graph.meta.RooflineRecord`) on every node (placeholders and outputs get zero-cost
records), ``gm.meta[meta.GPU]``. Analysis: changes nothing else, preserves everything.

Costs are counted at the aten level under a dispatch mode over fake tensors
(:func:`fxenergy.cost.counter.count_costs`), so symbolic and export captures agree.

Example::

    >>> import torch
    >>> from fxenergy.graph.capture import capture
    >>> from fxenergy.cost import graph_totals
    >>> gm = capture(torch.nn.Linear(64, 32), torch.randn(8, 64))
    >>> gm = AnnotateCost(gpu="A100-SXM4-80GB")(gm).graph_module
    >>> graph_totals(gm).macs
    16384
"""

from __future__ import annotations

import torch.fx
from torch.fx.passes.infra.pass_base import PassResult

from fxenergy.cost.annotate import COST_ANALYSES, DEFAULT_GPU, annotate_costs
from fxenergy.graph.pass_infra import FxPass, register_pass
from fxenergy.hardware.specs import get_gpu


@register_pass
class AnnotateCost(FxPass):
    """Annotate each node with its aten-level cost and its roofline on one GPU."""

    name = "annotate-cost"
    provides = COST_ANALYSES
    is_analysis = True

    def __init__(self, gpu: str = DEFAULT_GPU) -> None:
        super().__init__(**({} if gpu == DEFAULT_GPU else {"gpu": gpu}))
        self.spec = get_gpu(gpu)  # unknown names fail here, listing the known GPUs

    def run(self, gm: torch.fx.GraphModule) -> PassResult:
        annotate_costs(gm, self.spec.name)
        return PassResult(gm, False)
