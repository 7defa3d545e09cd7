"""insert-frequency-switches: put a runtime call at the start of every plan partition.

Reads: the plan (an option) and the graph's node order, which must already be the plan's order
(run ``reorder{order=...}`` first). Writes: one ``call_function`` node per partition calling
:func:`fxenergy.runtime.enter_partition` with the partition's index, placed right before the
partition's first node and tagged ``node.meta["fxenergy.inserted"] = True`` (the plan fingerprint
ignores tagged nodes). The call is registered as side-effectful, so dead-code elimination keeps
it. Preserves every fxenergy analysis of the original nodes (inserted calls cost nothing).
"""

from __future__ import annotations

from pathlib import Path

import torch.fx
from torch.fx.passes.infra.pass_base import PassResult

from fxenergy.errors import PassError
from fxenergy.graph import meta
from fxenergy.graph.pass_infra import FxPass, register_pass
from fxenergy.plans.plan import Plan

INSERTED = "fxenergy.inserted"


def _enter_partition():  # imported lazily: the runtime pulls in backends
    from fxenergy.runtime import enter_partition

    return enter_partition


@register_pass
class InsertFrequencySwitches(FxPass):
    """Insert ``enter_partition(i)`` before the first node of each partition of a plan."""

    name = "insert-frequency-switches"
    preserves = (meta.COST, meta.ROOFLINE, meta.GPU, meta.TIMING, meta.CRITICAL_PATH)

    def __init__(self, plan: Plan | str) -> None:
        super().__init__(plan=plan if isinstance(plan, str) else "<Plan>")
        self.plan = Plan.load(Path(plan)) if isinstance(plan, str) else plan

    def run(self, gm: torch.fx.GraphModule) -> PassResult:
        self.plan.check_graph(gm)
        by_name = {n.name: n for n in gm.graph.nodes}
        position = {n.name: i for i, n in enumerate(gm.graph.nodes)}
        fn = _enter_partition()
        for part in self.plan.partitions:
            if not part.nodes:
                continue
            first = min(part.nodes, key=lambda n: position.get(n, -1))
            if first not in by_name:
                raise PassError(f"plan partition {part.index} names unknown node {first!r}")
            with gm.graph.inserting_before(by_name[first]):
                call = gm.graph.call_function(fn, (part.index,))
            call.meta[INSERTED] = True
            call.meta[meta.PARTITION] = part.index
            call.meta[meta.FREQUENCY] = part.clock_mhz
            for name in part.nodes:
                if name in by_name:
                    by_name[name].meta[meta.PARTITION] = part.index
                    by_name[name].meta[meta.FREQUENCY] = part.clock_mhz
        gm.graph.lint()
        gm.recompile()
        return PassResult(gm, True)
