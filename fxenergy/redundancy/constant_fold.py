"""Fold subgraphs that depend only on constants (masks, position ids, rotary tables).

Algebra: a pure node whose inputs are all constants computes the same bits on every call, so
its value can be computed once and stored; readers then read the stored tensor.

A node is constant when it is a ``get_attr`` of a tensor that needs no gradient (folding a
trainable parameter would cut it out of training) or a non-tensor, or a pure, non-random,
unmutated call whose inputs are all constant (creation ops such as ``arange`` have none).
Uninitialised allocations (``empty*``) are never constant. Shapes count as constants only when
the graph already baked them in as integers (export with static shapes): a ``size()`` call on a
placeholder is not constant. Values are computed only when every input is a real tensor: on
meta or fake weights the cone is reported as ``foldable-meta`` and left in place, its cost not
counted as saved.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._pytree import tree_flatten

from fxenergy.graph.semantics import is_side_effectful, op_name
from fxenergy.redundancy.eliminate import Removal

FOLDED_PREFIX = "_fxenergy_folded_"


def _attr(gm: torch.fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _is_real(value: Any) -> bool:
    leaves, _ = tree_flatten(value)
    return all(
        not isinstance(v, torch.Tensor) or (not isinstance(v, FakeTensor) and not v.is_meta)
        for v in leaves
    )


def _constant_attr(value: Any) -> bool:
    """A tensor that needs no gradient, a non-tensor, or a pure subgraph (a higher-order op's
    body, e.g. export's ``wrap_with_set_grad_enabled`` around rotary tables)."""
    if isinstance(value, torch.fx.GraphModule):
        # Asserts inside may stay: on constant inputs they pass at fold time or never.
        return not any(
            is_side_effectful(n) and not op_name(n).startswith("_assert") for n in value.graph.nodes
        )
    if isinstance(value, torch.nn.Module):
        return False
    return not getattr(value, "requires_grad", False)


def constant_nodes(gm: torch.fx.GraphModule, tainted: set[torch.fx.Node]) -> set[torch.fx.Node]:
    """Nodes whose value depends only on constants (see the module docstring)."""
    consts: set[torch.fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            value = _attr(gm, str(node.target))
            if _constant_attr(value):
                consts.add(node)
        elif node.op in ("call_function", "call_method"):
            if node in tainted or is_side_effectful(node) or op_name(node).startswith("empty"):
                continue
            if all(i in consts for i in node.all_input_nodes):
                consts.add(node)
    return consts


def _frontier(consts: set[torch.fx.Node]) -> list[torch.fx.Node]:
    """Constant calls read by some non-constant node: the values worth storing."""
    return [n for n in consts if n.op != "get_attr" and any(u not in consts for u in n.users)]


def _cone(target: torch.fx.Node) -> set[torch.fx.Node]:
    """``target`` and everything it reads, transitively."""
    cone: set[torch.fx.Node] = set()
    stack = [target]
    while stack:
        n = stack.pop()
        if n not in cone:
            cone.add(n)
            stack.extend(n.all_input_nodes)
    return cone


def _evaluate(gm: torch.fx.GraphModule, target: torch.fx.Node) -> Any:
    """Run the constant cone of ``target`` eagerly, in graph order, on the module's tensors."""
    cone = _cone(target)
    env: dict[torch.fx.Node, Any] = {}
    with torch.no_grad():
        for n in gm.graph.nodes:
            if n not in cone:
                continue
            args = torch.fx.node.map_arg(n.args, env.__getitem__)
            kwargs = torch.fx.node.map_arg(n.kwargs, env.__getitem__)
            if n.op == "get_attr":
                env[n] = _attr(gm, str(n.target))
            elif n.op == "call_method":
                env[n] = getattr(args[0], str(n.target))(*args[1:], **kwargs)
            else:
                env[n] = n.target(*args, **kwargs)
            if not _is_real(env[n]):
                raise ValueError("meta or fake tensor in a constant cone")
    return env[target]


def _store(gm: torch.fx.GraphModule, node: torch.fx.Node, value: torch.Tensor) -> None:
    index = sum(1 for name, _ in gm.named_buffers() if name.startswith(FOLDED_PREFIX))
    name = f"{FOLDED_PREFIX}{index}"
    gm.register_buffer(name, value, persistent=False)
    with gm.graph.inserting_before(node):
        attr = gm.graph.get_attr(name)
    attr.meta.update({k: v for k, v in node.meta.items() if k in ("val", "tensor_meta")})
    node.replace_all_uses_with(attr)


def fold_constants(
    gm: torch.fx.GraphModule,
    tainted: set[torch.fx.Node],
    log: Removal,
    materialize: bool,
    reported: set[str],
) -> bool:
    """Replace each constant frontier node by a stored tensor and drop its dead cone.

    With ``materialize=False`` nothing changes: the cones are recorded once as ``fold-constant``
    (what folding would remove, as find-redundancy reports it). Returns whether the graph changed.
    """
    consts = constant_nodes(gm, tainted)
    stored = False
    meta_cone: set[torch.fx.Node] = set()
    for node in sorted(_frontier(consts), key=lambda n: n.name):
        if not materialize:
            continue
        try:
            value = _evaluate(gm, node)
        except Exception:  # meta/fake inputs, or an op that cannot run eagerly here
            meta_cone |= _cone(node)
            continue
        if isinstance(value, torch.Tensor):
            _store(gm, node, value)
            stored = True
    if not materialize:
        for n in consts:
            if n.op != "get_attr" and n.name not in reported:
                reported.add(n.name)
                log.record("fold-constant", n)
        return False
    for n in meta_cone:
        if n.op != "get_attr" and n.name not in reported:
            reported.add(n.name)
            log.record("foldable-meta", n, counted=False)
    for n in reversed(list(gm.graph.nodes)):
        if n in consts and n.op != "get_attr" and not n.users:
            log.record("fold-constant", n)
            gm.graph.erase_node(n)
    return stored
