"""Effects, aliasing and the two structural rewrites of eliminate-redundancy: CSE and DCE.

A node is a *barrier* when :func:`fxenergy.graph.semantics.is_side_effectful` says so: it draws
random numbers, writes a tensor or a module's state, or has a side effect (asserts, I/O,
collectives). Barriers are never removed, merged or folded, and CSE forgets every expression it
has seen when it passes one, so no rewrite moves work across them. A node is *tainted* when a
write may reach its storage (:func:`fxenergy.graph.semantics.possibly_mutated`): a tainted node
is never merged or replaced, since a rewrite that makes two names share storage would let the
mutation leak into the other.

The rewrite rules that remove no-ops and fold constants live in :mod:`fxenergy.redundancy.rules`;
:func:`fxenergy.redundancy.rules.eliminate` runs them all to a fixed point and reports what went.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx

from fxenergy.graph import meta
from fxenergy.graph.semantics import is_side_effectful


def _hashable(value: Any) -> Any:
    """A hashable key that tells 1, 1.0 and True apart; raises TypeError when there is none."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, *(_hashable(v) for v in value))
    if isinstance(value, dict):
        return ("dict", *((k, _hashable(v)) for k, v in sorted(value.items())))
    if isinstance(value, slice):
        return ("slice", _hashable(value.start), _hashable(value.stop), _hashable(value.step))
    if isinstance(value, torch.Tensor):
        raise TypeError("tensor constants are compared by identity, not merged")
    hash(value)
    return (type(value).__name__, value)


@dataclass
class Removal:
    """Book-keeping of one run of the rules: (rule, node name) pairs and their saved cost."""

    removed: list[tuple[str, str]] = field(default_factory=list)
    flops: int = 0
    bytes: int = 0

    def record(self, rule: str, node: torch.fx.Node, counted: bool = True) -> None:
        """Note that ``rule`` removed ``node``; add its cost unless ``counted`` is False."""
        self.removed.append((rule, node.name))
        cost = node.meta.get(meta.COST)
        if counted and cost is not None:
            self.flops += cost.flops
            self.bytes += cost.bytes_total

    def report(self) -> meta.RedundancyReport:
        """The frozen record stored under ``meta.REDUNDANCY``."""
        return meta.RedundancyReport(tuple(self.removed), self.flops, self.bytes)


def cse(graph: torch.fx.Graph, tainted: set[torch.fx.Node], log: Removal) -> bool:
    """Merge pure nodes that call the same target on the same arguments.

    Algebra: f(a, b) computed twice with no write in between is the same value, so the second
    use can read the first result. The table is cleared at every barrier (RNG, in-place or
    side-effectful node), so no merge crosses one.
    """
    seen: dict[Any, torch.fx.Node] = {}
    changed = False
    for node in list(graph.nodes):
        if is_side_effectful(node):
            seen.clear()
            continue
        if node.op in ("placeholder", "output") or node in tainted:
            continue
        try:
            key = (node.op, node.target, _hashable(node.args), _hashable(node.kwargs))
        except TypeError:
            continue
        first = seen.setdefault(key, node)
        if first is not node:
            node.replace_all_uses_with(first)
            log.record("cse", node)
            graph.erase_node(node)
            changed = True
    return changed


def dce(graph: torch.fx.Graph, log: Removal) -> bool:
    """Remove pure nodes whose value nobody reads; barriers always stay.

    Algebra: a value with no reader cannot change any output.
    """
    changed = False
    for node in reversed(list(graph.nodes)):
        if node.users or node.op in ("placeholder", "output") or is_side_effectful(node):
            continue
        log.record("dce", node)
        graph.erase_node(node)
        changed = True
    return changed


def replace_with(node: torch.fx.Node, value: torch.fx.Node, rule: str, log: Removal) -> None:
    """Route every reader of ``node`` to ``value`` and erase ``node``."""
    node.replace_all_uses_with(value)
    log.record(rule, node)
    node.graph.erase_node(node)


Rule = Callable[[torch.fx.Node, set[torch.fx.Node]], "torch.fx.Node | None"]


def apply_rules(
    graph: torch.fx.Graph,
    rules: Iterable[tuple[str, Rule]],
    tainted: set[torch.fx.Node],
    log: Removal,
) -> bool:
    """Apply local rules (node -> equivalent existing node, or None) once over the graph."""
    rules = list(rules)
    changed = False
    for node in list(graph.nodes):
        if node.op not in ("call_function", "call_method", "call_module"):
            continue
        if node in tainted or is_side_effectful(node):
            continue
        for name, rule in rules:
            value = rule(node, tainted)
            # A mutated replacement would let readers of ``node`` see a later write.
            if value is not None and value is not node and value not in tainted:
                replace_with(node, value, name, log)
                changed = True
                break
    return changed
