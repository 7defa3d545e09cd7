"""eliminate-redundancy: remove work that changes no output.

Rewrites, run to a fixed point (rules and their algebra in :mod:`fxenergy.redundancy.rules`):
common-subexpression elimination of pure ops, dead-code elimination that keeps every side
effect, no-op removal (same-type casts and copies, ``contiguous`` on contiguous tensors, identity
views, double transposes, ``x*1``-style identities, dropout in eval or at p=0, asserts proven by
the traced metadata) and folding of constant-only subgraphs into stored tensors. No rewrite
crosses, removes or merges an RNG, in-place or side-effectful node, so outputs stay identical bit
for bit.

Reads: ``meta.COST`` on every node (for the FLOPs and bytes saved) and the node values
(``val``/``tensor_meta``) for shape-dependent rules. Writes: ``gm.meta[meta.REDUNDANCY]``, a
:class:`fxenergy.graph.meta.RedundancyReport`. Preserves: the GPU choice only (costs of new constant
nodes are unknown until annotate-cost reruns).

Example::

    >>> import torch
    >>> from fxenergy.graph.pass_infra import Pipeline
    >>> class M(torch.nn.Module):
    ...     def forward(self, x):
    ...         return x.float().contiguous() * 1 + torch.relu(x) + torch.relu(x)
    >>> gm = torch.fx.symbolic_trace(M().eval())
    >>> gm = Pipeline.parse("annotate-cost,eliminate-redundancy")(gm).graph_module  # doctest: +SKIP
"""

from __future__ import annotations

import torch.fx
from torch.fx.passes.infra.pass_base import PassResult

from fxenergy.graph import meta
from fxenergy.graph.pass_infra import FxPass, register_pass
from fxenergy.redundancy.rules import eliminate


@register_pass
class EliminateRedundancy(FxPass):
    """CSE, side-effect-preserving DCE, no-op removal and constant folding, with a report.

    Args:
        fold: fold constant-only subgraphs (default True).
    """

    name = "eliminate-redundancy"
    required = (meta.COST,)
    provides = (meta.REDUNDANCY,)
    preserves = (meta.GPU, meta.REDUNDANCY, meta.CAPTURE)

    def __init__(self, fold: bool = True) -> None:
        super().__init__(**({} if fold else {"fold": False}))
        self.fold = fold

    def run(self, gm: torch.fx.GraphModule) -> PassResult:
        log = eliminate(gm, fold=self.fold, materialize=True)
        gm.meta[meta.REDUNDANCY] = log.report()
        return PassResult(gm, bool(log.removed))
