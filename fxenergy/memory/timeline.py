"""Activation memory of an fx graph: its :class:`~fxenergy.memory.problem.MemoryProblem` and
its live-bytes timeline by node name.

Buffers and edges come from :mod:`fxenergy.graph.semantics` (storages shared by views counted
once; inputs and weights left out; data and side-effect order edges); the arithmetic is
:mod:`fxenergy.memory.problem`'s, the one live-bytes sweep.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import torch.fx

from fxenergy.graph import meta
from fxenergy.graph.semantics import dependency_graph, node_storages, readers_by_storage
from fxenergy.memory.problem import MemoryProblem, problem_from_names, timeline

_PINNED = ("placeholder", "get_attr", "output")


def activation_buffers(
    gm: torch.fx.GraphModule,
) -> tuple[dict[str, int], dict[str, list[str]], dict[str, str], set[str]]:
    """The buffers of ``gm``'s activations, as :func:`memory_timeline` takes them.

    Returns ``(sizes, users, producers, keep)``; buffers are named after the node that first
    produces a storage (``name`` or ``name#i`` for the i-th storage of a multi-output node).
    Storages of placeholders and ``get_attr`` nodes (inputs, parameters, buffers) are not
    activations and are left out; storages reaching the output are kept to the end.
    """
    nodes = list(gm.graph.nodes)
    storages = node_storages(gm)
    owner: dict[Hashable, str | None] = {}  # storage key -> buffer name (None: not an activation)
    sizes: dict[str, int] = {}
    producers: dict[str, str] = {}
    for node in nodes:
        for i, (key, nbytes) in enumerate(storages[node.name]):
            if key in owner:
                continue
            if node.op in ("placeholder", "get_attr"):
                owner[key] = None
                continue
            buf = node.name if i == 0 else f"{node.name}#{i}"
            owner[key], sizes[buf], producers[buf] = buf, nbytes, node.name
    readers = readers_by_storage(nodes, storages)
    outputs = {n.name for n in nodes if n.op == "output"}
    users = {buf: list(readers.get(key, ())) for key, buf in owner.items() if buf is not None}
    keep = {buf for buf, names in users.items() if outputs.intersection(names)}
    return sizes, users, producers, keep


def memory_problem(gm: torch.fx.GraphModule) -> MemoryProblem:
    """The plain problem of ``gm``'s movable nodes (node values must be known: capture stores
    them). Placeholders, ``get_attr`` and the output are pinned and left out."""
    dag = dependency_graph(gm)
    sizes, users, producers, keep = activation_buffers(gm)
    names = [n.name for n in gm.graph.nodes if n.op not in _PINNED]
    index = {name: i for i, name in enumerate(names)}
    preds = tuple(
        tuple(sorted({index[u] for u in dag.predecessors(name) if u in index})) for name in names
    )
    bufs = [b for b in sizes if sizes[b] > 0 and producers.get(b, b) in index]
    return MemoryProblem(
        names=tuple(names),
        preds=preds,
        buf_sizes=tuple(sizes[b] for b in bufs),
        buf_producer=tuple(index[producers.get(b, b)] for b in bufs),
        buf_readers=tuple(
            tuple(sorted({index[u] for u in users.get(b, ()) if u in index})) for b in bufs
        ),
        buf_escapes=tuple(b in keep for b in bufs),
        buf_names=tuple(bufs),
    )


def memory_timeline(
    order: Sequence[str],
    sizes: Mapping[str, int],
    users_or_last_use: Mapping[str, str | Iterable[str]],
    *,
    producers: Mapping[str, str] | None = None,
    keep: Iterable[str] = (),
) -> meta.MemoryTimeline:
    """Bytes live after each step of ``order``, by name.

    Args:
        order: node names in execution order.
        sizes: bytes of each buffer (a storage; views of it are not separate buffers).
        users_or_last_use: per buffer, the nodes that read it (through any alias) or just the name
            of its last reader. Buffers not listed are freed right after they are produced.
        producers: node that allocates each buffer (default: the buffer's own name).
        keep: buffers live until the end (graph outputs).

    A buffer is live from its producer's step through its last reader's step inclusive (see
    :mod:`fxenergy.memory.problem`), so ``peak_bytes`` bounds the real allocation high-water mark.

    Raises:
        InvalidScheduleError: a buffer is read before it is produced in ``order``, or its
            producer is missing from ``order``.
    """
    problem = problem_from_names(order, sizes, users_or_last_use, producers=producers, keep=keep)
    result = timeline(problem, range(len(order)))
    if not order:
        return meta.MemoryTimeline((), 0, "", ())
    live_at_peak = dict.fromkeys(
        problem.names[problem.buf_producer[b]] for b in result.live_at_peak
    )
    return meta.MemoryTimeline(
        result.live_bytes, result.peak_bytes, order[result.peak_step], tuple(live_at_peak)
    )


def graph_memory_timeline(gm: torch.fx.GraphModule) -> meta.MemoryTimeline:
    """The memory timeline of ``gm`` in its current node order (every node a step)."""
    sizes, users, producers, keep = activation_buffers(gm)
    order = [n.name for n in gm.graph.nodes]
    return memory_timeline(order, sizes, users, producers=producers, keep=keep)
