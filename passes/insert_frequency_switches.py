"""insert-frequency-switches: put a runtime call at the start of every plan partition.

Reads: the plan (an option) and the graph's node order, which must already be the plan's order
(run ``reorder{order=...}`` first). Writes: one ``call_function`` node per partition calling
:func:`fxenergy.runtime.enter_partition` with the partition's index, placed right before the
partition's first *movable* node (not a placeholder or get_attr: torch.export puts every
get_attr at the top, where a switch would run before the previous partition's work) and
tagged ``node.meta["fxenergy.inserted"] = True`` (the plan fingerprint ignores tagged nodes).
The call is registered as side-effectful, so dead-code elimination keeps it.
Preserves every fxenergy analysis of the original nodes (inserted calls cost nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
        unknown = [n for p in self.plan.partitions for n in p.nodes if n not in by_name]
        if unknown:
            raise PassError(f"plan partitions name unknown nodes, e.g. {unknown[0]!r}")
        anchors = _anchors(gm, self.plan)
        fn = _enter_partition()
        for part in self.plan.partitions:
            if not part.nodes:
                continue
            with gm.graph.inserting_before(anchors[part.index]):
                call = gm.graph.call_function(fn, (part.index,))
            call.meta[INSERTED] = True
            call.meta[meta.PARTITION] = part.index
            call.meta[meta.FREQUENCY] = part.clock_mhz
            for name in part.nodes:
                by_name[name].meta[meta.PARTITION] = part.index
                by_name[name].meta[meta.FREQUENCY] = part.clock_mhz
        gm.graph.lint()
        gm.recompile()
        return PassResult(gm, True)


def _movable(node: torch.fx.Node) -> bool:
    """Nodes that do work where they stand (get_attr and placeholders sit at the top)."""
    return node.op not in ("placeholder", "get_attr", "output")


def _anchors(gm: torch.fx.GraphModule, plan: Plan) -> dict[int, torch.fx.Node]:
    """The node each partition's switch goes before: its first movable node in graph order.

    A partition with no movable node (only get_attr nodes) keeps its switch, placed before the
    next partition's anchor (or the output), so every switch the plan counts still happens.
    """
    position = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    nodes = list(gm.graph.nodes)
    output = next(n for n in reversed(nodes) if n.op == "output")
    anchors: dict[int, torch.fx.Node] = {}
    pending: list[int] = []
    for part in plan.partitions:
        if not part.nodes:
            continue
        movable = [position[n] for n in part.nodes if _movable(nodes[position[n]])]
        if not movable:
            pending.append(part.index)
            continue
        anchor = nodes[min(movable)]
        for idx in (*pending, part.index):
            anchors[idx] = anchor
        pending = []
    for idx in pending:
        anchors[idx] = output
    return anchors


def partition_trace(gm: torch.fx.GraphModule, runtime: Any, *args: Any) -> dict[str, int | None]:
    """Run a rewritten module node by node under ``runtime`` (a ``FrequencyRuntime``, entered
    here) and record the partition in force when each node ran: ``{node name: partition}``.

    This is the check that switches sit where the plan says: every planned node should report
    its own partition (``node.meta[meta.PARTITION]``).
    """
    seen: dict[str, int | None] = {}

    class _Tracer(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            out = super().run_node(n)  # a switch call changes the partition as it runs
            if not n.meta.get(INSERTED) and n.op not in ("placeholder", "output"):
                seen[n.name] = runtime.active_partition
            return out

    with runtime:
        _Tracer(gm).run(*args)
    return seen
