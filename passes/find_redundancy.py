"""find-redundancy: report what eliminate-redundancy would remove, changing nothing.

Runs the same rules on a copy of the graph (sharing the module's parameters, so no weights are
copied) with constant folding in report-only mode: constant cones are listed as
``fold-constant`` without computing them, so the analysis also works on meta-device graphs.

Reads: ``meta.COST`` on every node. Writes: ``gm.meta[meta.REDUNDANCY]``, a
:class:`fxenergy.graph.meta.RedundancyReport` (the report CLI shows it as "redundant work").
Preserves everything (analysis).
"""

from __future__ import annotations

import torch.fx
from torch.fx.passes.infra.pass_base import PassResult

from fxenergy.graph import meta
from fxenergy.graph.pass_infra import FxPass, register_pass
from fxenergy.redundancy.rules import eliminate


def scratch_copy(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A module with a copy of ``gm``'s graph over the same submodules and tensors.

    Node metadata is copied shallowly (frozen records and fake tensors are shared, not cloned).
    """
    graph = torch.fx.Graph()
    out = graph.graph_copy(gm.graph, {})
    graph.output(out)
    return torch.fx.GraphModule(gm, graph)


@register_pass
class FindRedundancy(FxPass):
    """Report removable work (CSE, dead code, no-ops, constant cones) without rewriting."""

    name = "find-redundancy"
    required = (meta.COST,)
    provides = (meta.REDUNDANCY,)
    is_analysis = True

    def run(self, gm: torch.fx.GraphModule) -> PassResult:
        log = eliminate(scratch_copy(gm), fold=True, materialize=False)
        gm.meta[meta.REDUNDANCY] = log.report()
        return PassResult(gm, False)
