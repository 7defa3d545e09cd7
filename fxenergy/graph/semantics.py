"""Pure graph algorithms shared by the analysis passes and the scheduler.

* :func:`dependency_graph`: the DAG every reordering must respect: data edges plus *order* edges
  that keep side effects (in-place mutation, RNG, I/O, asserts, collectives) in program order and
  keep readers of a mutated tensor on the right side of the mutation.
* :func:`dag_timing`: earliest/latest start, slack and the critical (longest) path of a DAG with
  node durations.
* :func:`memory_timeline`: live bytes after each step of any order, with storages shared by views
  counted once.

Only networkx and torch.fx are used; nothing here reads fxenergy's cost records, so a solver can
call these functions on plain names and numbers.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch
import torch.fx

from fxenergy.errors import InvalidScheduleError
from fxenergy.graph import meta

#: Base names (no overload, no trailing "_") of ops that draw random numbers.
_RNG_NAMES = frozenset(
    {
        "rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like",
        "bernoulli", "dropout", "native_dropout", "feature_dropout", "alpha_dropout",
        "feature_alpha_dropout", "dropout1d", "dropout2d", "dropout3d", "fused_dropout",
        "multinomial", "normal", "uniform", "poisson", "exponential", "geometric", "cauchy",
        "log_normal", "random", "rrelu", "rrelu_with_noise",
    }
)  # fmt: skip
_INPLACE_OPERATORS = frozenset(
    {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.setitem}
)
_DROPOUT_MODULES = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d)


# --- side effects ------------------------------------------------------------------------------


def op_name(node: torch.fx.Node) -> str:
    """Short name of what a node calls: ``add_`` for ``aten.add_.Tensor``, the method name, ..."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name.split("::")[-1]
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", str(target))


def _is_inplace_name(name: str) -> bool:
    return name.endswith("_") and not name.endswith("__")


def mutated_args(node: torch.fx.Node) -> list[torch.fx.Node]:
    """Input nodes whose storage ``node`` writes: in-place ops and methods, ``copy_``, ``out=``,
    ``inplace=True`` functions and modules (``nn.ReLU(inplace=True)``)."""
    first = [a for a in node.args[:1] if isinstance(a, torch.fx.Node)]
    if node.op == "call_module":
        return first if getattr(_submodule(node), "inplace", False) is True else []
    if node.op not in ("call_function", "call_method"):
        return []
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        written = []
        for i, arg in enumerate(target._schema.arguments):
            if arg.alias_info is None or not arg.alias_info.is_write:
                continue
            value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
            written.extend(v for v in _as_nodes(value))
        return written
    if node.kwargs.get("out") is not None:
        return _as_nodes(node.kwargs["out"])
    if node.kwargs.get("inplace") is True:
        return first
    if target in _INPLACE_OPERATORS or _is_inplace_name(op_name(node)):
        return first
    return []


def _submodule(node: torch.fx.Node) -> torch.nn.Module | None:
    mod = node.graph.owning_module
    try:
        return mod.get_submodule(str(node.target)) if mod is not None else None
    except AttributeError:
        return None


def _as_nodes(value: Any) -> list[torch.fx.Node]:
    if isinstance(value, torch.fx.Node):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, torch.fx.Node)]
    return []


def _is_rng(node: torch.fx.Node) -> bool:
    if node.op == "call_module":
        sub = _submodule(node)
        return isinstance(sub, _DROPOUT_MODULES) and sub.training and sub.p > 0
    name = op_name(node).lstrip("_").removesuffix("_")
    if name not in _RNG_NAMES:
        return False
    if name.endswith("dropout") and node.op == "call_function":
        # F.dropout(x, p, training): a no-op in eval mode, which symbolic traces record as such.
        training = node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True)
        return bool(training) if not isinstance(training, torch.fx.Node) else True
    return True


# --- collectives (branch `cycle`, issue 9): kept apart so a rewrite of this module can move it ---

#: functional collectives (and the wait that completes them) every rank must issue in one order
COLLECTIVE_OPS = frozenset(
    {
        "all_reduce",
        "all_reduce_coalesced",
        "all_gather_into_tensor",
        "all_gather_into_tensor_coalesced",
        "reduce_scatter_tensor",
        "reduce_scatter_tensor_coalesced",
        "all_to_all_single",
        "broadcast",
        "wait_tensor",
    }
)


def is_collective(node: torch.fx.Node) -> bool:
    """True for ``_c10d_functional`` collectives and ``wait_tensor``: two ranks that issued them
    in different orders would hang, so they are ordered like side effects (``Node.is_impure``
    is False for them)."""
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
        return False
    return target.namespace in ("_c10d_functional", "c10d_functional") and (
        target._opname in COLLECTIVE_OPS
    )


def is_side_effectful(node: torch.fx.Node) -> bool:
    """True for nodes whose relative order must be kept.

    That is: mutation (of inputs, or of a module's own state such as BatchNorm's running
    statistics in training), RNG, and what ``Node.is_impure`` reports (I/O, asserts, collectives).

    Placeholders and the output are not counted: they are pinned to the start and end anyway.
    """
    if node.op in ("placeholder", "output", "get_attr"):
        return False
    if mutated_args(node) or _is_rng(node) or is_collective(node):
        return True
    if node.op == "call_module" and _updates_own_state(_submodule(node)):
        return True
    try:
        return bool(node.is_impure())
    except (AssertionError, AttributeError, TypeError, RuntimeError):
        return False  # a module-less graph: the name-based checks above already ran


def _updates_own_state(mod: torch.nn.Module | None) -> bool:
    # BatchNorm in training mode updates running_mean/var: two calls must keep their order.
    bn = isinstance(mod, torch.nn.modules.batchnorm._NormBase)
    return bn and mod.training and getattr(mod, "track_running_stats", False)


# --- storages ----------------------------------------------------------------------------------


def _storage_key(t: torch.Tensor) -> Hashable | None:
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

    Keys compare equal exactly when two tensors share memory (a view and its base, a ``getitem``
    and its tuple), read from the fake values capture left in ``node.meta``. Nodes without a
    tensor value get an empty list; a tensor whose storage cannot be read gets its own key.
    """
    out: dict[str, list[tuple[Hashable, int]]] = {}
    for node in gm.graph.nodes:
        pairs: list[tuple[Hashable, int]] = []
        seen: set[Hashable] = set()
        for i, t in enumerate(meta.tensor_values(meta.node_value(node))):
            key = _storage_key(t) or (node.name, i)
            if key not in seen:
                seen.add(key)
                pairs.append((key, _tensor_nbytes(t)))
        out[node.name] = pairs
    return out


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
    readers: dict[Hashable, list[str]] = {}  # storage -> nodes that read a tensor in it
    for node in nodes:
        for src in node.all_input_nodes:
            for key, _ in storages.get(src.name, ()):
                readers.setdefault(key, []).append(node.name)
    for node in nodes:
        for target in mutated_args(node):
            keys = [k for k, _ in storages.get(target.name, ())] or [(target.name, 0)]
            for key in keys:
                for reader in readers.get(key, ()):
                    if index[reader] < index[node.name]:
                        _add_order_edge(dag, reader, node.name)
                    elif index[reader] > index[node.name]:
                        _add_order_edge(dag, node.name, reader)


# --- timing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DagTiming:
    """Result of :func:`dag_timing` (seconds, or whatever unit the durations were in)."""

    earliest_start: dict[str, float]
    latest_start: dict[str, float]
    slack: dict[str, float]
    critical: frozenset[str]  #: nodes whose slack is zero (within the tolerance)
    path: tuple[str, ...]  #: one longest path, source to sink
    length: float  #: makespan with unlimited parallelism (length of the longest path)
    serial: float  #: sum of all durations (makespan on one stream)


def dag_timing(
    dag: nx.DiGraph, durations: Mapping[str, float], rel_tol: float = 1e-9, abs_tol: float = 0.0
) -> DagTiming:
    """Forward/backward pass (CPM) over ``dag`` with node ``durations`` (missing nodes = 0).

    A node is critical when its slack is at most ``max(abs_tol, rel_tol * length)``, which absorbs
    floating-point error from summing durations in different orders.
    """
    order = list(nx.topological_sort(dag))
    dur = {n: float(durations.get(n, 0.0)) for n in order}
    es: dict[str, float] = {}
    best_pred: dict[str, str | None] = {}
    for n in order:
        preds = list(dag.predecessors(n))
        best = max(preds, key=lambda p: es[p] + dur[p], default=None)
        best_pred[n] = best
        es[n] = es[best] + dur[best] if best is not None else 0.0
    length = max((es[n] + dur[n] for n in order), default=0.0)
    ls: dict[str, float] = {}
    for n in reversed(order):
        finish = min((ls[s] for s in dag.successors(n)), default=length)
        ls[n] = finish - dur[n]
    tol = max(abs_tol, rel_tol * length)
    slack = {n: max(0.0, ls[n] - es[n]) for n in order}
    critical = frozenset(n for n in order if slack[n] <= tol)
    return DagTiming(es, ls, slack, critical, _longest_path(order, es, dur, best_pred), length,
                     math.fsum(dur.values()))  # fmt: skip


def _longest_path(
    order: Sequence[str],
    es: Mapping[str, float],
    dur: Mapping[str, float],
    best_pred: Mapping[str, str | None],
) -> tuple[str, ...]:
    if not order:
        return ()
    # The last-finishing node, ties broken by the latest in topological order (reaches the sink).
    pos = {n: i for i, n in enumerate(order)}
    end = max(order, key=lambda n: (es[n] + dur[n], pos[n]))
    path = [end]
    while (prev := best_pred[path[-1]]) is not None:
        path.append(prev)
    return tuple(reversed(path))


# --- memory timeline ---------------------------------------------------------------------------


def memory_timeline(
    order: Sequence[str],
    sizes: Mapping[str, int],
    users_or_last_use: Mapping[str, str | Iterable[str]],
    *,
    producers: Mapping[str, str] | None = None,
    keep: Iterable[str] = (),
) -> meta.MemoryTimeline:
    """Bytes live after each step of ``order``.

    Args:
        order: node names in execution order.
        sizes: bytes of each buffer (a storage; views of it are not separate buffers).
        users_or_last_use: per buffer, the nodes that read it (through any alias) or just the name
            of its last reader. Buffers not listed are freed right after they are produced.
        producers: node that allocates each buffer (default: the buffer's own name).
        keep: buffers live until the end (graph outputs).

    A buffer is live from its producer's step through its last reader's step inclusive: ``live[i]``
    is what is resident when node ``i`` has produced its output and before the inputs it was the
    last reader of are freed, so ``peak_bytes`` bounds the real allocation high-water mark.

    Raises:
        InvalidScheduleError: a buffer is read before it is produced in ``order``, or its
            producer is missing from ``order``.
    """
    pos = {name: i for i, name in enumerate(order)}
    producers = producers or {}
    keep = set(keep)
    spans: dict[str, tuple[int, int]] = {}
    for buf, nbytes in sizes.items():
        if nbytes <= 0:
            continue
        producer = producers.get(buf, buf)
        if producer not in pos:
            raise InvalidScheduleError(f"buffer {buf!r}: its producer {producer!r} is not in order")
        birth = pos[producer]
        death = max(birth, _last_use(buf, users_or_last_use.get(buf, ()), pos, birth))
        spans[buf] = (birth, len(order) - 1 if buf in keep else death)
    delta = [0] * (len(order) + 1)
    for buf, (birth, death) in spans.items():
        delta[birth] += sizes[buf]
        delta[death + 1] -= sizes[buf]
    live = []
    running = 0
    for i in range(len(order)):
        running += delta[i]
        live.append(running)
    return _summarize(order, live, spans, producers)


def _last_use(buf: str, users: str | Iterable[str], pos: Mapping[str, int], birth: int) -> int:
    users = [users] if isinstance(users, str) else list(users)
    last = birth
    for user in users:
        if user not in pos:
            continue
        if pos[user] < birth:
            raise InvalidScheduleError(f"{user!r} reads {buf!r} before it is produced")
        last = max(last, pos[user])
    return last


def _summarize(
    order: Sequence[str],
    live: list[int],
    spans: Mapping[str, tuple[int, int]],
    producers: Mapping[str, str],
) -> meta.MemoryTimeline:
    if not order:
        return meta.MemoryTimeline((), 0, "", ())
    peak_i = max(range(len(live)), key=lambda i: (live[i], -i))
    names: dict[str, None] = {}
    for buf, (birth, death) in sorted(spans.items(), key=lambda kv: kv[1][0]):
        if birth <= peak_i <= death:
            names[producers.get(buf, buf)] = None
    return meta.MemoryTimeline(tuple(live), live[peak_i], order[peak_i], tuple(names))


def activation_buffers(
    gm: torch.fx.GraphModule,
) -> tuple[dict[str, int], dict[str, list[str]], dict[str, str], set[str]]:
    """The arguments of :func:`memory_timeline` for ``gm``'s activations.

    Returns ``(sizes, users, producers, keep)``; buffers are named after the node that first
    produces a storage (``name`` or ``name#i`` for the i-th storage of a multi-output node).
    Storages of placeholders and ``get_attr`` nodes (inputs, parameters, buffers) are not
    activations and are left out; storages reaching the output are kept to the end.
    """
    storages = node_storages(gm)
    owner: dict[Hashable, str | None] = {}  # storage key -> buffer name (None: not an activation)
    sizes: dict[str, int] = {}
    producers: dict[str, str] = {}
    for node in gm.graph.nodes:
        for i, (key, nbytes) in enumerate(storages[node.name]):
            if key in owner:
                continue
            if node.op in ("placeholder", "get_attr"):
                owner[key] = None
                continue
            buf = node.name if i == 0 else f"{node.name}#{i}"
            owner[key], sizes[buf], producers[buf] = buf, nbytes, node.name
    users: dict[str, list[str]] = {b: [] for b in sizes}
    keep: set[str] = set()
    for node in gm.graph.nodes:
        for src in node.all_input_nodes:
            for key, _ in storages[src.name]:
                buf = owner.get(key)
                if buf is None:
                    continue
                users[buf].append(node.name)
                if node.op == "output":
                    keep.add(buf)
    return sizes, users, producers, keep
