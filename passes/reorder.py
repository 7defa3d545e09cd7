"""reorder: change the order of a graph's nodes, never its dataflow or its side effects.

Two modes:

- ``reorder{order=[...]}`` applies a given order of node names (the scheduler's plan). Every
  node other than placeholders, ``get_attr`` and the output must be listed exactly once, and the
  order must respect :func:`fxenergy.graph.semantics.dependency_graph` (data edges and the
  order edges between side-effectful, in-place and RNG nodes); otherwise InvalidScheduleError
  says which edge it breaks.
- ``reorder{objective=memory}`` minimises peak live activation memory with
  :func:`fxenergy.schedule.cpsat.memory.minimize_peak` (greedy orders, then CP-SAT on windows
  around the peak, bounded by ``time_limit_s``); the result is never worse than the current order.

Reads: node values (capture's fake tensors). Writes: the node order. Preserves every per-node
analysis and the DAG ones (cost, roofline, timing, critical path); drops memory timelines, which
depend on the order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch.fx
from torch.fx.passes.infra.pass_base import PassResult

from fxenergy.errors import InvalidScheduleError, PassError
from fxenergy.graph import meta
from fxenergy.graph.pass_infra import FxPass, register_pass
from fxenergy.graph.semantics import dependency_graph
from fxenergy.memory.timeline import memory_problem
from fxenergy.schedule.cpsat.memory import minimize_peak

log = logging.getLogger(__name__)
_PINNED = ("placeholder", "get_attr", "output")


def check_order(gm: torch.fx.GraphModule, order: Sequence[str]) -> None:
    """Raise InvalidScheduleError unless ``order`` is a valid order of ``gm``'s movable nodes."""
    movable = [n.name for n in gm.graph.nodes if n.op not in _PINNED]
    pinned = {n.name for n in gm.graph.nodes if n.op in _PINNED}
    listed = [name for name in order if name not in pinned]
    if sorted(listed) != sorted(movable):
        missing = sorted(set(movable) - set(listed))[:5]
        extra = sorted(set(listed) - set(movable))[:5]
        dup = len(listed) - len(set(listed))
        raise InvalidScheduleError(
            f"order must list each of the graph's {len(movable)} compute nodes once "
            f"(missing {missing}, unknown {extra}, {dup} duplicates); make the order from "
            "this graph (after every rewrite) and pass node names"
        )
    pos = {name: i for i, name in enumerate(listed)}
    for u, v, kind in dependency_graph(gm).edges(data="kind"):
        if u in pos and v in pos and pos[u] >= pos[v]:
            raise InvalidScheduleError(
                f"order puts {v!r} before {u!r}, breaking a {kind} edge; an order must keep "
                "data dependencies and the order of side-effectful/in-place/RNG nodes"
            )


def apply_order(gm: torch.fx.GraphModule, order: Sequence[str]) -> bool:
    """Move ``gm``'s compute nodes into ``order`` (validated first); True if anything moved."""
    check_order(gm, order)
    by_name = {n.name: n for n in gm.graph.nodes}
    listed = [by_name[name] for name in order if by_name[name].op not in _PINNED]
    before = [n for n in gm.graph.nodes if n.op not in _PINNED]
    if listed == before:
        return False
    output = next(n for n in gm.graph.nodes if n.op == "output")
    for node in listed:
        output.prepend(node)  # each goes last among compute nodes: the list's order results
    gm.graph.lint()
    gm.recompile()
    return True


@register_pass
class Reorder(FxPass):
    """Reorder nodes: to a given ``order`` or to minimise peak activation memory.

    Args:
        objective: ``"memory"`` (default when no order is given).
        order: node names to apply instead of optimising.
        time_limit_s: solver budget for the memory objective.
        window: nodes per CP-SAT window.
    """

    name = "reorder"
    preserves = (
        meta.COST, meta.ROOFLINE, meta.TIMING, meta.CRITICAL_PATH, meta.GPU, meta.MODULE,
        meta.REDUNDANCY, meta.CAPTURE, meta.FREQUENCY, meta.PARTITION,
    )  # fmt: skip

    def __init__(
        self,
        objective: str | None = None,
        order: Sequence[str] | None = None,
        time_limit_s: float = 10.0,
        window: int = 48,
    ) -> None:
        if (objective is None) == (order is None) and objective is not None:
            raise PassError("reorder takes either objective=memory or order=[...], not both")
        objective = objective or ("memory" if order is None else None)
        if objective not in (None, "memory"):
            raise PassError(f"unknown reorder objective {objective!r}; use objective=memory")
        opts = {"objective": objective} if order is None else {"order": list(order)}
        if order is None and (time_limit_s != 10.0 or window != 48):
            opts.update(time_limit_s=time_limit_s, window=window)
        super().__init__(**opts)
        self.objective, self.order = objective, order
        self.time_limit_s, self.window = time_limit_s, window

    def run(self, gm: torch.fx.GraphModule) -> PassResult:
        if self.order is not None:
            return PassResult(gm, apply_order(gm, list(self.order)))
        problem = memory_problem(gm)
        result = minimize_peak(problem, time_limit_s=self.time_limit_s, window=self.window)
        log.info(
            "reorder: peak %d -> %d bytes (%s, lower bound %d, %.2fs)",
            result.original_peak_bytes, result.peak_bytes, result.method,
            result.lower_bound_bytes, result.solve_time_s,
        )  # fmt: skip
        if result.peak_bytes >= result.original_peak_bytes:
            return PassResult(gm, False)
        return PassResult(gm, apply_order(gm, [problem.names[v] for v in result.order]))
