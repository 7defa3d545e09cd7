"""Effects, aliasing and the two structural rewrites of eliminate-redundancy: CSE and DCE.

A node is a *barrier* when it draws random numbers, mutates a tensor, or has a side effect
(asserts, I/O, collectives, runtime calls). Barriers are never removed, merged or folded, and CSE
forgets every expression it has seen when it passes one, so no rewrite moves work across them.
A node is *tainted* when some barrier mutates it or a tensor that may share its storage (the
alias classes below): a tainted node is never merged or replaced, since a rewrite that makes two
names share storage would let the mutation leak into the other.

The rewrite rules that remove no-ops and fold constants live in :mod:`fxenergy.redundancy.rules`;
:func:`fxenergy.redundancy.rules.eliminate` runs them all to a fixed point and reports what went.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn as nn

from fxenergy.graph import meta
from fxenergy.graph.semantics import is_side_effectful, mutated_args

#: Names (aten schema names, torch functions, tensor methods) whose result may alias an input.
VIEW_NAMES = frozenset(
    "view reshape transpose permute t expand squeeze unsqueeze flatten unflatten narrow select "
    "slice split split_with_sizes chunk unbind as_strided detach alias contiguous to type type_as "
    "expand_as view_as reshape_as movedim diagonal real imag getitem __getitem__ unfold "
    "swapaxes swapdims _unsafe_view lift_fresh "
    # casts to the same dtype and dropout in eval return their input itself
    "float double half bfloat16 int long bool cpu cuda dropout feature_dropout alpha_dropout "
    "feature_alpha_dropout dropout1d dropout2d dropout3d".split()
)
_DROPOUTS = frozenset(
    {"dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "dropout2d"}
)
_STATEFUL_IN_TRAIN = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


def target_name(node: torch.fx.Node) -> str:
    """A short name for what a node calls: ``add`` for aten.add.Tensor, torch.add, x.add."""
    t = node.target
    if isinstance(t, torch._ops.OpOverload):
        return t._schema.name.split("::")[-1]
    if isinstance(t, str):
        return t.rsplit(".", 1)[-1]
    return getattr(t, "__name__", str(t))


def submodule(node: torch.fx.Node) -> nn.Module | None:
    """The module a call_module node calls (None for other nodes)."""
    gm = node.graph.owning_module
    if node.op != "call_module" or gm is None:
        return None
    return gm.get_submodule(str(node.target))


def arg(node: torch.fx.Node, index: int, name: str, default: Any = None) -> Any:
    """Positional-or-keyword argument ``name`` of a call node."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def dropout_active(node: torch.fx.Node) -> bool | None:
    """For a dropout node: whether it draws random numbers; None if the node is no dropout."""
    mod = submodule(node)
    if mod is not None:
        if not isinstance(mod, nn.modules.dropout._DropoutNd):
            return None
        return bool(mod.training) and mod.p > 0
    name = target_name(node)
    if name not in _DROPOUTS:
        return None
    p = arg(node, 1, "p", 0.5)
    train = arg(node, 2, "train", arg(node, 2, "training", True))
    if not isinstance(p, (int, float)) or not isinstance(train, bool):
        return True  # a traced p or flag: assume the worst
    # aten.dropout / F.dropout return the input untouched, without drawing, at p=0 or in eval.
    return train and p > 0


def _module_mutates(mod: nn.Module) -> bool:
    if getattr(mod, "inplace", False) or getattr(mod, "_is_impure", False):
        return True
    # BatchNorm in training updates its running statistics.
    return bool(mod.training) and isinstance(mod, _STATEFUL_IN_TRAIN)


def is_barrier(node: torch.fx.Node) -> bool:
    """RNG, mutation or side effect: nothing moves across it and it is never removed.

    :func:`fxenergy.graph.semantics.is_side_effectful` decides, refined in two ways: dropout is a
    barrier only when it actually draws (eval or p=0 draws nothing), and modules that write
    their own state (BatchNorm in training, ``inplace=True`` activations) count as mutating.
    """
    if node.op in ("placeholder", "output", "get_attr"):
        return False
    active = dropout_active(node)
    if active is not None:
        return active
    if node.op == "call_module":
        mod = submodule(node)
        if mod is not None and _module_mutates(mod):
            return True
    if node.kwargs.get("inplace") is True or node.kwargs.get("out") is not None:
        return True
    return is_side_effectful(node)


def mutated_inputs(node: torch.fx.Node) -> list[torch.fx.Node]:
    """Inputs ``node`` may write: :func:`~fxenergy.graph.semantics.mutated_args` + module state."""
    if node.op == "call_module":
        mod = submodule(node)
        return list(node.all_input_nodes) if mod is not None and _module_mutates(mod) else []
    if node.kwargs.get("inplace") is True:
        return [a for a in node.args[:1] if isinstance(a, torch.fx.Node)]
    return mutated_args(node)


def _may_alias(node: torch.fx.Node) -> bool:
    t = node.target
    if isinstance(t, torch._ops.OpOverload):
        return any(r.alias_info is not None for r in t._schema.returns)
    if node.op == "call_module":
        mod = submodule(node)
        return isinstance(
            mod, (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd)
        )
    return node.op in ("call_method", "call_function") and target_name(node) in VIEW_NAMES


def tainted_nodes(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """Nodes whose storage some barrier may mutate (alias classes of every mutated argument)."""
    parent: dict[torch.fx.Node, torch.fx.Node] = {}

    def find(n: torch.fx.Node) -> torch.fx.Node:
        while parent.get(n, n) is not n:
            n = parent[n]
        return n

    mutated: list[torch.fx.Node] = []
    for node in graph.nodes:
        written = mutated_inputs(node)
        # A view shares its input's storage; an in-place op returns the tensor it wrote.
        for src in node.all_input_nodes if _may_alias(node) else written:
            parent[find(node)] = find(src)
        mutated.extend(written)
    roots = {find(n) for n in mutated}
    return {n for n in graph.nodes if find(n) in roots}


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
        if is_barrier(node):
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
        if node.users or node.op in ("placeholder", "output") or is_barrier(node):
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
        if node in tainted or is_barrier(node):
            continue
        for name, rule in rules:
            value = rule(node, tainted)
            # A mutated replacement would let readers of ``node`` see a later write.
            if value is not None and value is not node and value not in tainted:
                replace_with(node, value, name, log)
                changed = True
                break
    return changed
