"""What an fx node does besides computing its value: the one place fxenergy decides it.

Every consumer asks here: CSE, DCE and constant folding (:mod:`fxenergy.redundancy`), reordering
(``passes/reorder.py``), memory (:mod:`fxenergy.memory`) and scheduling (through
:func:`dependency_graph`).

* Effects. :func:`writes`: the inputs a node writes (the op schema's alias info where the target
  is an ``OpOverload``; ``out=``, ``inplace=True``, in-place names and modules otherwise).
  :func:`draws_random`: RNG (``torch.Tag.nondeterministic_seeded``, the same judgement for every
  dropout: it draws only in training with a probability above zero). :func:`is_collective`:
  ``_c10d_functional``/``c10d`` ops and ``torch.distributed`` calls, ``wait_tensor`` included.
  :func:`is_side_effectful`: any of those, module state updates, and what
  ``torch.fx.Node.is_impure`` reports (asserts, I/O, profiler ranges).
* Storages. :func:`storage_key`: the one storage identity (``StorageWeakRef``; a view and its
  base compare equal); :func:`node_storages` per node; :func:`readers_by_storage`.
* Aliases and readers. :func:`may_alias` (by op semantics, for graphs without values),
  :func:`possibly_mutated` (nodes that may share storage with a written tensor).
* :func:`dependency_graph`: data edges plus the order edges the effects above require.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import operator
import re
from collections.abc import Hashable, Sequence
from typing import Any

import networkx as nx
import torch
import torch.fx
from torch import nn

from fxenergy.graph import meta

_INPLACE_OPERATORS = frozenset(
    {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.setitem}
)
#: Op namespaces of collectives (functional, their autograd wrappers, and the c10d ops).
_COLLECTIVE_NAMESPACES = frozenset(
    {"_c10d_functional", "_c10d_functional_autograd", "c10d_functional", "c10d"}
)
#: Dropouts that return their input (or a same-valued view) when they draw nothing.
_DROPOUT = re.compile(r"(feature_)?(alpha_)?dropout([123]d)?_?")
#: Argument names of a drop probability (``p`` only on dropouts) and of a training flag.
_PROBABILITY_ARGS = ("dropout_p", "dropout")
_TRAINING_ARGS = ("train", "training")
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


# --- naming ------------------------------------------------------------------------------------


def op_name(node: torch.fx.Node) -> str:
    """Short name of what a node calls: ``add_`` for ``aten.add_.Tensor``, ``add`` for
    ``torch.add``, the method name, or the last part of a module path."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name.split("::")[-1]
    if isinstance(target, str):
        return target.rsplit(".", 1)[-1]
    return getattr(target, "__name__", str(target))


def submodule(node: torch.fx.Node) -> nn.Module | None:
    """The module a ``call_module`` node calls (None for other nodes or a module-less graph)."""
    owner = node.graph.owning_module
    if node.op != "call_module" or owner is None:
        return None
    try:
        return owner.get_submodule(str(node.target))
    except AttributeError:
        return None


def argument(node: torch.fx.Node, index: int, names: Sequence[str], default: Any = None) -> Any:
    """Positional argument ``index`` of a call node, else the first keyword in ``names``."""
    if len(node.args) > index:
        return node.args[index]
    return next((node.kwargs[n] for n in names if n in node.kwargs), default)


def _bind_schema(schema: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments by name under an op schema, defaults filled in."""
    bound = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(args):
            bound[arg.name] = args[i]
        elif arg.name in kwargs:
            bound[arg.name] = kwargs[arg.name]
        elif arg.has_default_value():
            bound[arg.name] = arg.default_value
    return bound


def call_arguments(node: torch.fx.Node) -> dict[str, Any] | None:
    """A call's arguments by name with defaults filled in, or None when they cannot be named.

    ``OpOverload``: its schema. Python functions: their signature. Other functions and methods:
    the schema of the aten op of the same name (torch's functions and methods share it).
    """
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return _bind_schema(target._schema, node.args, node.kwargs)
    if callable(target):
        try:
            bound = inspect.signature(target).bind(*node.args, **node.kwargs)
        except (TypeError, ValueError):
            pass
        else:
            bound.apply_defaults()
            return dict(bound.arguments)
    schemas = _aten_schemas(op_name(node))
    return _bind_schema(schemas[0], node.args, node.kwargs) if schemas else None


@functools.cache
def _aten_schemas(name: str) -> tuple[Any, ...]:
    packet = getattr(torch.ops.aten, name, None) if name.isidentifier() else None
    if not isinstance(packet, torch._ops.OpOverloadPacket):
        return ()
    return tuple(getattr(packet, o)._schema for o in packet.overloads())


def _as_nodes(value: Any) -> list[torch.fx.Node]:
    if isinstance(value, torch.fx.Node):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, torch.fx.Node)]
    return []


# --- effects -----------------------------------------------------------------------------------


def writes(node: torch.fx.Node) -> list[torch.fx.Node]:
    """Input nodes whose storage ``node`` may write.

    For an ``OpOverload`` the schema says (arguments whose alias info ``is_write``). Otherwise:
    ``out=``, ``inplace=True``, in-place operators and methods (``add_``, ``x[i] = y``), modules
    called with ``inplace=True`` (their first input), and modules marked ``_is_impure`` (every
    input: their effect is unknown).
    """
    first = [a for a in node.args[:1] if isinstance(a, torch.fx.Node)]
    if node.op == "call_module":
        mod = submodule(node)
        if getattr(mod, "_is_impure", False):
            return list(node.all_input_nodes)
        return first if getattr(mod, "inplace", False) is True else []
    if node.op not in ("call_function", "call_method"):
        return []
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        written = []
        for i, arg in enumerate(target._schema.arguments):
            if arg.alias_info is None or not arg.alias_info.is_write:
                continue
            value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
            written.extend(_as_nodes(value))
        return written
    if node.kwargs.get("out") is not None:
        return _as_nodes(node.kwargs["out"])
    if node.kwargs.get("inplace") is True:
        return first
    name = op_name(node)
    if target in _INPLACE_OPERATORS or (name.endswith("_") and not name.endswith("__")):
        return first
    return []


def is_dropout(node: torch.fx.Node) -> bool:
    """A dropout that returns its input's values when it draws nothing (module or function)."""
    if node.op == "call_module":
        return isinstance(submodule(node), nn.modules.dropout._DropoutNd)
    return node.op in ("call_function", "call_method") and bool(_DROPOUT.fullmatch(op_name(node)))


@functools.cache
def _seeded_name(name: str) -> bool:
    """True when an aten op of this name (or its in-place twin) draws from the RNG."""
    name = re.sub(r"^dropout[123]d$", "feature_dropout", name)  # F.dropout{1,2,3}d
    for candidate in dict.fromkeys((name, name.removesuffix("_"), name.lstrip("_"))):
        packet = getattr(torch.ops.aten, candidate, None) if candidate.isidentifier() else None
        if isinstance(packet, torch._ops.OpOverloadPacket) and any(
            torch.Tag.nondeterministic_seeded in getattr(packet, o).tags for o in packet.overloads()
        ):
            return True
    return False


def _is_seeded(node: torch.fx.Node) -> bool:
    if isinstance(node.target, torch._ops.OpOverload):
        return torch.Tag.nondeterministic_seeded in node.target.tags
    return _seeded_name(op_name(node))


def _statically_off(node: torch.fx.Node) -> bool:
    """The op's drop probability is a literal 0 or its training flag a literal False."""
    bound = call_arguments(node)
    if bound is None:
        return False
    dropout = is_dropout(node) or op_name(node) in ("native_dropout", "_fused_dropout")
    names = (*_PROBABILITY_ARGS, *(("p",) if dropout else ()))
    p = next((bound[n] for n in names if n in bound), None)
    off_p = isinstance(p, (int, float)) and not isinstance(p, bool) and p == 0
    return off_p or any(bound.get(n, None) is False for n in _TRAINING_ARGS)


def draws_random(node: torch.fx.Node) -> bool:
    """True when running ``node`` advances the RNG.

    Ops tagged ``torch.Tag.nondeterministic_seeded`` (functions and methods are matched to the
    aten op of their name) draw, unless their drop probability is a literal 0 or their training
    flag a literal False: dropout in eval or at p=0 returns its input and draws nothing (checked
    against torch: the RNG stream is unchanged). Attention with a literal ``dropout_p`` of 0 draws
    nothing either; a traced probability or flag is assumed to draw. Modules: dropouts in
    training with p > 0, and ``RReLU`` in training.
    """
    if node.op == "call_module":
        mod = submodule(node)
        if isinstance(mod, nn.modules.dropout._DropoutNd):
            return bool(mod.training) and mod.p > 0
        return isinstance(mod, nn.RReLU) and mod.training
    if node.op not in ("call_function", "call_method"):
        return False
    return _is_seeded(node) and not _statically_off(node)


def is_collective(node: torch.fx.Node) -> bool:
    """A collective or a wait on one: every rank must issue them in the same order."""
    target = node.target
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return target.namespace in _COLLECTIVE_NAMESPACES
    module = getattr(target, "__module__", None) or ""
    return node.op == "call_function" and module.startswith("torch.distributed")


def updates_own_state(node: torch.fx.Node) -> bool:
    """A module call that writes the module's own buffers: BatchNorm in training updates its
    running statistics (when it tracks them)."""
    mod = submodule(node)
    if not isinstance(mod, nn.modules.batchnorm._NormBase):
        return False
    return bool(mod.training) and bool(getattr(mod, "track_running_stats", False))


def is_side_effectful(node: torch.fx.Node) -> bool:
    """True for nodes that must keep their relative order and are never removed or merged.

    That is: writes to inputs or to a module's own state, RNG draws, collectives, modules marked
    ``_is_impure``, and what ``Node.is_impure`` reports besides RNG (asserts, I/O, profiler
    ranges). Placeholders, ``get_attr`` and the output are not counted: they are pinned anyway.
    """
    if node.op in ("placeholder", "output", "get_attr"):
        return False
    if writes(node) or draws_random(node) or is_collective(node) or updates_own_state(node):
        return True
    try:  # RNG is judged above (dropout in eval draws nothing), not by torch's blanket rule
        return bool(node.is_impure(impure_random=False))
    except (AssertionError, AttributeError, TypeError, RuntimeError):
        return False  # a module-less graph: the checks above already ran


# --- aliases -----------------------------------------------------------------------------------


def may_alias(node: torch.fx.Node) -> bool:
    """The node's result may share storage with an input (by op semantics, without values)."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return any(r.alias_info is not None for r in target._schema.returns)
    if node.op == "call_module":
        return isinstance(
            submodule(node), (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd)
        )
    return node.op in ("call_method", "call_function") and op_name(node) in VIEW_NAMES


def possibly_mutated(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """Nodes that may share storage with a tensor some node writes (the alias classes of every
    written input: views join their input's class, an in-place op joins what it wrote)."""
    parent: dict[torch.fx.Node, torch.fx.Node] = {}

    def find(n: torch.fx.Node) -> torch.fx.Node:
        while parent.get(n, n) is not n:
            n = parent[n]
        return n

    mutated: list[torch.fx.Node] = []
    for node in graph.nodes:
        written = writes(node)
        for src in node.all_input_nodes if may_alias(node) else written:
            parent[find(node)] = find(src)
        mutated.extend(written)
    roots = {find(n) for n in mutated}
    return {n for n in graph.nodes if find(n) in roots}


# --- storages ----------------------------------------------------------------------------------


def storage_key(t: torch.Tensor) -> Hashable | None:
    """The identity of ``t``'s storage: keys of a view and its base compare equal (None when the
    storage cannot be read)."""
    try:
        from torch.multiprocessing.reductions import StorageWeakRef

        return StorageWeakRef(t.untyped_storage())
    except (RuntimeError, NotImplementedError, TypeError, ImportError):
        return None


def _tensor_nbytes(t: torch.Tensor) -> int:
    try:
        return int(t.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError, TypeError):
        return t.numel() * t.element_size()


def node_storages(gm: torch.fx.GraphModule) -> dict[str, list[tuple[Hashable, int]]]:
    """For every node, the storages its output tensors live in as ``(key, nbytes)`` pairs.

    Keys (:func:`storage_key`) compare equal exactly when two tensors share memory (a view and its
    base, a ``getitem`` and its tuple), read from the fake values capture left in ``node.meta``.
    Nodes without a tensor value get an empty list; a tensor whose storage cannot be read gets
    its own key.
    """
    out: dict[str, list[tuple[Hashable, int]]] = {}
    for node in gm.graph.nodes:
        pairs: list[tuple[Hashable, int]] = []
        seen: set[Hashable] = set()
        for i, t in enumerate(meta.tensor_values(meta.node_value(node))):
            key = storage_key(t) or (node.name, i)
            if key not in seen:
                seen.add(key)
                pairs.append((key, _tensor_nbytes(t)))
        out[node.name] = pairs
    return out


def readers_by_storage(
    nodes: Sequence[torch.fx.Node], storages: dict[str, list[tuple[Hashable, int]]]
) -> dict[Hashable, list[str]]:
    """Storage key -> names of the nodes that read a tensor in it (through any alias)."""
    readers: dict[Hashable, list[str]] = {}
    for node in nodes:
        for src in node.all_input_nodes:
            for key, _ in storages.get(src.name, ()):
                readers.setdefault(key, []).append(node.name)
    return readers


# --- dependency graph --------------------------------------------------------------------------


def dependency_graph(gm: torch.fx.GraphModule) -> nx.DiGraph:
    """The DAG a reordering of ``gm`` must respect, on node names.

    Nodes carry ``index`` (program position) and ``op``; edges carry ``kind``: ``"data"`` (a node
    uses another's output) or ``"order"`` (kept for side effects: consecutive side-effectful nodes
    in program order; readers of a tensor before/after an in-place write to any alias of it; every
    side-effectful node before the output). Every edge goes forward in program order.
    """
    nodes = list(gm.graph.nodes)
    dag = nx.DiGraph()
    for i, node in enumerate(nodes):
        dag.add_node(node.name, index=i, op=node.op)
    for node in nodes:
        for src in node.all_input_nodes:
            dag.add_edge(src.name, node.name, kind="data")
    _add_side_effect_chain(dag, nodes)
    _add_mutation_edges(dag, nodes, gm)
    return dag


def _add_order_edge(dag: nx.DiGraph, src: str, dst: str) -> None:
    if src != dst and not dag.has_edge(src, dst):
        dag.add_edge(src, dst, kind="order")


def _add_side_effect_chain(dag: nx.DiGraph, nodes: Sequence[torch.fx.Node]) -> None:
    effectful = [n for n in nodes if is_side_effectful(n)]
    for a, b in itertools.pairwise(effectful):
        _add_order_edge(dag, a.name, b.name)
    outputs = [n for n in nodes if n.op == "output"]
    for n in effectful:
        for out in outputs:
            _add_order_edge(dag, n.name, out.name)


def _add_mutation_edges(
    dag: nx.DiGraph, nodes: Sequence[torch.fx.Node], gm: torch.fx.GraphModule
) -> None:
    storages = node_storages(gm)
    index = {n.name: i for i, n in enumerate(nodes)}
    readers = readers_by_storage(nodes, storages)
    for node in nodes:
        for target in writes(node):
            keys = [k for k, _ in storages.get(target.name, ())] or [(target.name, 0)]
            for key in keys:
                for reader in readers.get(key, ()):
                    if index[reader] < index[node.name]:
                        _add_order_edge(dag, reader, node.name)
                    elif index[reader] > index[node.name]:
                        _add_order_edge(dag, node.name, reader)
