"""Local rewrite rules of eliminate-redundancy (no-ops, asserts, constant folding) and the driver.

Every rule maps a node to an existing node holding the same bits, or to None. Each carries its
algebra in a comment; a rule that needs shapes, strides or dtypes reads them from the node's
value (``node.meta["val"]`` or ``tensor_meta``) and does nothing when they are unknown.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.fx

from fxenergy.graph import meta
from fxenergy.graph.semantics import (
    argument,
    draws_random,
    is_dropout,
    is_side_effectful,
    op_name,
    possibly_mutated,
)
from fxenergy.redundancy.eliminate import Removal, Rule, apply_rules, cse, dce

_CASTS = frozenset(
    "to type type_as _to_copy float double half bfloat16 int long bool clone".split()
)
_VIEWS = frozenset(
    "view reshape _unsafe_view expand expand_as view_as reshape_as flatten slice".split()
)
_TRANSPOSES = frozenset({"t", "transpose", "swapaxes", "swapdims", "permute"})


def _info(node: Any) -> tuple[tuple[int, ...], torch.dtype, tuple[int, ...], Any] | None:
    """(shape, dtype, strides, device-or-None) of a node's single tensor value, if known."""
    if not isinstance(node, torch.fx.Node):
        return None
    v = meta.node_value(node)
    if isinstance(v, torch.Tensor):
        return tuple(v.shape), v.dtype, tuple(v.stride()), v.device
    if v is not None and hasattr(v, "stride") and hasattr(v, "dtype"):  # TensorMetadata
        return tuple(v.shape), v.dtype, tuple(v.stride), None
    return None


def _same_value_layout(node: torch.fx.Node, src: Any) -> bool:
    """Output and ``src`` have equal shape, dtype, strides and (where both are known) device."""
    a, b = _info(node), _info(src)
    if a is None or b is None or a[:3] != b[:3]:
        return False
    return a[3] is None or b[3] is None or a[3] == b[3]


def noop_cast(node: torch.fx.Node, _: set[torch.fx.Node]) -> torch.fx.Node | None:
    """cast(x) -> x when dtype, device, shape and strides do not change; clone(x) -> x likewise.

    Algebra: converting a value to the type and place it already has returns the same bits; a
    copy holds the same bits as its source (neither side is mutated: tainted nodes are skipped).
    """
    if op_name(node) not in _CASTS or node.kwargs.get("copy") is True:
        return None
    src = node.args[0] if node.args else None
    return src if _same_value_layout(node, src) else None


def noop_contiguous(node: torch.fx.Node, _: set[torch.fx.Node]) -> torch.fx.Node | None:
    """contiguous(x) -> x when x is already contiguous in the requested format.

    Algebra: contiguous returns its input unchanged when the layout already matches.
    """
    if op_name(node) != "contiguous":
        return None
    src = node.args[0] if node.args else None
    return src if _same_value_layout(node, src) else None


def identity_view(node: torch.fx.Node, _: set[torch.fx.Node]) -> torch.fx.Node | None:
    """view/reshape/expand/flatten/full slice of x to x's own shape and strides -> x.

    Algebra: a view with the source's shape and strides over the same storage is the source.
    """
    if op_name(node) not in _VIEWS:
        return None
    src = node.args[0] if node.args else None
    return src if _same_value_layout(node, src) else None


def _perm_of(node: torch.fx.Node, ndim: int) -> tuple[int, ...] | None:
    """The dimension permutation a transpose-like node applies, or None if not static."""
    name = op_name(node)
    if name == "t":
        return tuple(reversed(range(ndim))) if ndim <= 2 else None
    if name == "permute":
        dims = node.args[1:] if len(node.args) > 2 else argument(node, 1, ("dims",))
        if isinstance(dims, (list, tuple)) and all(isinstance(d, int) for d in dims):
            return tuple(d % ndim for d in dims)
        return None
    a, b = argument(node, 1, ("dim0",)), argument(node, 2, ("dim1",))
    if not (isinstance(a, int) and isinstance(b, int)):
        return None
    perm = list(range(ndim))
    perm[a % ndim], perm[b % ndim] = perm[b % ndim], perm[a % ndim]
    return tuple(perm)


def double_transpose(node: torch.fx.Node, _: set[torch.fx.Node]) -> torch.fx.Node | None:
    """permute_q(permute_p(x)) -> x when q∘p is the identity (t(t(x)), transpose twice, ...).

    Algebra: out[i] = x[p[q[i]]]; if p[q[i]] == i for all i the double view is x itself.
    """
    inner = node.args[0] if node.args else None
    if op_name(node) not in _TRANSPOSES or not isinstance(inner, torch.fx.Node):
        return None
    if op_name(inner) not in _TRANSPOSES or is_side_effectful(inner):
        return None
    src = inner.args[0] if inner.args else None
    info = _info(src)
    if info is None:
        return None
    ndim = len(info[0])
    p, q = _perm_of(inner, ndim), _perm_of(node, ndim)
    if p is None or q is None or any(p[q[i]] != i for i in range(ndim)):
        return None
    return src if _same_value_layout(node, src) else None


def _scalar(value: Any, *targets: float) -> bool:
    return type(value) in (int, float) and any(value == t for t in targets)


def _identity_operand(node: torch.fx.Node) -> Any:
    """The tensor operand x of x*1, 1*x, x/1, x-0, x+(-0.0), or x+0 on integers; else None."""
    name, args = op_name(node), node.args
    if len(args) != 2 or node.kwargs.get("alpha", 1) != 1:
        return None
    x, y = args
    if name in ("mul", "__mul__", "__rmul__") and isinstance(y, torch.fx.Node):
        x, y = y, x  # 1 * x
    if name in ("mul", "__mul__", "__rmul__", "div", "truediv", "true_divide", "__truediv__"):
        # x*1 and x/1 are exact in IEEE-754 (and for integers).
        return x if _scalar(y, 1) else None
    if name in ("sub", "__sub__"):
        # x - 0 == x exactly, including x = -0.0 (-0.0 - 0 = -0.0).
        return x if _scalar(y, 0) else None
    if name in ("add", "__add__", "__radd__"):
        if isinstance(y, torch.fx.Node):
            x, y = y, x
        info = _info(x)
        if isinstance(y, float) and y == 0 and str(y).startswith("-"):
            return x  # x + (-0.0) == x bit for bit, -0.0 included
        # x + 0 is NOT bit-exact on floats: -0.0 + 0 = +0.0. Only integers and bools qualify.
        if _scalar(y, 0) and info is not None and not info[1].is_floating_point:
            return x if not info[1].is_complex else None
    return None


def arithmetic_identity(node: torch.fx.Node, _: set[torch.fx.Node]) -> torch.fx.Node | None:
    """x*1, x/1, x-0, x+(-0.0) -> x (and x+0 -> x on integer dtypes) when dtype and shape stay.

    Algebra: see :func:`_identity_operand`; the dtype/shape check rules out type promotion
    (int*1.0 is float) and broadcasting.
    """
    x = _identity_operand(node)
    if not isinstance(x, torch.fx.Node):
        return None
    a, b = _info(node), _info(x)
    return x if a is not None and b is not None and a[:2] == b[:2] else None


def dropout_eval(node: torch.fx.Node, _: set[torch.fx.Node]) -> torch.fx.Node | None:
    """dropout(x, p, train=False) -> x and dropout(x, 0, train) -> x.

    Algebra: in eval or at p=0, dropout returns its input and draws no random numbers (checked
    against torch: the RNG stream is unchanged), so later random ops are unaffected.
    """
    inactive = is_dropout(node) and not draws_random(node)
    if inactive and node.args and isinstance(node.args[0], torch.fx.Node):
        return node.args[0]
    return None


RULES: tuple[tuple[str, Rule], ...] = (
    ("noop-cast", noop_cast),
    ("noop-contiguous", noop_contiguous),
    ("identity-view", identity_view),
    ("double-transpose", double_transpose),
    ("arith-identity", arithmetic_identity),
    ("dropout-eval", dropout_eval),
)


def _assert_holds(node: torch.fx.Node) -> bool:
    """A metadata/scalar assert whose condition is statically true on the node's inputs."""
    name = op_name(node)
    if name in ("_assert_scalar", "_assert") and node.args:
        return node.args[0] is True
    if name != "_assert_tensor_metadata" or not node.args:
        return False
    v = meta.node_value(node.args[0]) if isinstance(node.args[0], torch.fx.Node) else None
    if not isinstance(v, torch.Tensor):
        return False
    want = {
        "size": argument(node, 1, ("size",)),
        "stride": argument(node, 2, ("stride",)),
        "dtype": argument(node, 3, ("dtype",)),
        "device": node.kwargs.get("device"),
        "layout": node.kwargs.get("layout"),
    }
    have = {
        "size": list(v.shape),
        "stride": list(v.stride()),
        "dtype": v.dtype,
        "device": v.device,
        "layout": v.layout,
    }
    return all(w is None or _norm(w) == _norm(have[k]) for k, w in want.items())


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    if isinstance(value, str):
        return torch.device(value)
    return value


def remove_safe_asserts(graph: torch.fx.Graph, log: Removal) -> bool:
    """Drop asserts proven true from the fake values (the check runs once, at trace time).

    Algebra: assert(True) does nothing; a metadata assert on a tensor whose traced dtype, shape,
    strides and device equal the asserted ones is true for every input the graph accepts.
    """
    changed = False
    for node in list(graph.nodes):
        if node.op == "call_function" and not node.users and _assert_holds(node):
            log.record("assert-metadata", node)
            graph.erase_node(node)
            changed = True
    return changed


def eliminate(
    gm: torch.fx.GraphModule, *, fold: bool = True, materialize: bool = True, max_rounds: int = 8
) -> Removal:
    """Run every rule, CSE, DCE and constant folding to a fixed point; return what went.

    Args:
        gm: the module to rewrite in place.
        fold: fold subgraphs that depend only on constants.
        materialize: compute folded values (False: only report foldable nodes, as the
            find-redundancy analysis does on a copy).
        max_rounds: bound on fixed-point rounds.
    """
    from fxenergy.redundancy.constant_fold import (
        fold_constants,  # rules import nothing from folding
    )

    log = Removal()
    reported: set[str] = set()
    graph = gm.graph
    for _ in itertools.repeat(None, max_rounds):
        changed = remove_safe_asserts(graph, log)
        changed |= apply_rules(graph, RULES, possibly_mutated(graph), log)
        changed |= cse(graph, possibly_mutated(graph), log)
        changed |= dce(graph, log)
        if fold:
            changed |= fold_constants(gm, possibly_mutated(graph), log, materialize, reported)
        if not changed:
            break
    graph.lint()
    gm.recompile()
    return log


__all__ = [
    "RULES",
    "arithmetic_identity",
    "double_transpose",
    "dropout_eval",
    "eliminate",
    "identity_view",
    "noop_cast",
    "noop_contiguous",
    "remove_safe_asserts",
]
