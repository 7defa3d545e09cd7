"""Graph-level memory as plain data: buffers, the live-bytes sweep, the peak and its bounds.

This is the one implementation of activation memory over a node order; the memory-timeline
pass, memory-aware reordering (:mod:`fxenergy.memory.order`) and the CP-SAT window solver
(:mod:`fxenergy.schedule.cpsat.memory`) all use it. No torch, no solver: a
:class:`MemoryProblem` is nodes, ordering predecessors and buffers (a storage each; views of it
are not separate buffers), as :func:`fxenergy.memory.order.memory_problem` reads them from a graph.

The model (the one torch._inductor's ``estimate_peak_memory`` uses): a buffer is live from the
step of its producer through the step of its last reader inclusive; a buffer that escapes (a
graph output) stays live to the last step; a buffer nobody reads is live during its producer's
step only. Memory *at* step t counts every buffer alive during t::

    live(t) = Σ_b size_b · [prod_b ≤ t ≤ last_b]          peak = max_t live(t)

so the peak bounds the real allocation high-water mark (the inputs a node was the last reader of
are still held while it runs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from fxenergy.errors import InvalidScheduleError


@dataclass(frozen=True)
class MemoryProblem:
    """Plain data: nodes in the original order, ordering predecessors and activation buffers."""

    names: tuple[str, ...]
    preds: tuple[tuple[int, ...], ...]  #: data and order edges, as indices into names
    buf_sizes: tuple[int, ...]  #: bytes of each activation buffer (a storage)
    buf_producer: tuple[int, ...]  #: node that allocates each buffer
    buf_readers: tuple[tuple[int, ...], ...]  #: nodes that read each buffer, aliases included
    buf_escapes: tuple[bool, ...]  #: buffer reaches the graph output (live to the end)
    buf_names: tuple[str, ...] = ()  #: optional names of the buffers, for messages

    def succs(self) -> list[list[int]]:
        """Successor lists (the inverse of ``preds``)."""
        out: list[list[int]] = [[] for _ in self.names]
        for v, ps in enumerate(self.preds):
            for u in ps:
                out[u].append(v)
        return out

    def node_alloc(self) -> list[int]:
        """Bytes each node allocates."""
        out = [0] * len(self.names)
        for b, v in enumerate(self.buf_producer):
            out[v] += self.buf_sizes[b]
        return out

    def node_reads(self) -> list[list[int]]:
        """Buffers each node reads."""
        out: list[list[int]] = [[] for _ in self.names]
        for b, rs in enumerate(self.buf_readers):
            for r in rs:
                out[r].append(b)
        return out

    def buffer_name(self, b: int) -> str:
        """Name of buffer ``b`` (its producer's name when none was given)."""
        return self.buf_names[b] if self.buf_names else self.names[self.buf_producer[b]]


@dataclass(frozen=True)
class Timeline:
    """Live bytes during each step of an order, and where the peak is."""

    live_bytes: tuple[int, ...]
    peak_bytes: int
    peak_step: int  #: the first step at the peak (-1 for an empty order)
    live_at_peak: tuple[int, ...]  #: buffers live at the peak step, by producing step


def problem_from_names(
    order: Sequence[str],
    sizes: Mapping[str, int],
    users_or_last_use: Mapping[str, str | Iterable[str]],
    *,
    producers: Mapping[str, str] | None = None,
    keep: Iterable[str] = (),
) -> MemoryProblem:
    """A problem (without edges) over ``order`` from buffers given by name.

    Args:
        order: node names in execution order; they become the problem's nodes.
        sizes: bytes of each buffer; buffers of zero bytes are left out.
        users_or_last_use: per buffer, the nodes that read it (through any alias) or just the
            name of its last reader; readers not in ``order`` are ignored.
        producers: node that allocates each buffer (default: the buffer's own name).
        keep: buffers live until the end (graph outputs).

    Raises:
        InvalidScheduleError: a buffer's producer is not in ``order``.
    """
    index = {name: i for i, name in enumerate(order)}
    producers, keep = producers or {}, set(keep)
    bufs = [b for b, nbytes in sizes.items() if nbytes > 0]
    made: list[int] = []
    readers: list[tuple[int, ...]] = []
    for buf in bufs:
        producer = producers.get(buf, buf)
        if producer not in index:
            raise InvalidScheduleError(f"buffer {buf!r}: its producer {producer!r} is not in order")
        made.append(index[producer])
        users = users_or_last_use.get(buf, ())
        users = [users] if isinstance(users, str) else users
        readers.append(tuple(index[u] for u in users if u in index))
    return MemoryProblem(
        names=tuple(order),
        preds=((),) * len(order),
        buf_sizes=tuple(sizes[b] for b in bufs),
        buf_producer=tuple(made),
        buf_readers=tuple(readers),
        buf_escapes=tuple(b in keep for b in bufs),
        buf_names=tuple(bufs),
    )


def buffers_problem(
    num_nodes: int,
    sizes: Sequence[int],
    producers: Sequence[int],
    readers: Sequence[Iterable[int]],
    escapes: Sequence[bool],
) -> MemoryProblem:
    """A problem (without edges) over nodes ``0..num_nodes-1`` from buffers given by index:
    buffer b has ``sizes[b]`` bytes, is made by ``producers[b]``, read by ``readers[b]`` and
    lives to the end when ``escapes[b]``. What a scheduler with its own task type passes to
    :func:`live_bytes`."""
    return MemoryProblem(
        names=tuple(str(v) for v in range(num_nodes)),
        preds=((),) * num_nodes,
        buf_sizes=tuple(sizes),
        buf_producer=tuple(producers),
        buf_readers=tuple(tuple(r) for r in readers),
        buf_escapes=tuple(bool(e) for e in escapes),
    )


def buffer_spans(problem: MemoryProblem, order: Sequence[int]) -> list[tuple[int, int]]:
    """``(first, last)`` step each buffer is live in ``order`` (both inclusive).

    Raises:
        InvalidScheduleError: a buffer is read before it is produced, or its producer is not in
            ``order``.
    """
    pos = {v: t for t, v in enumerate(order)}
    end = len(order) - 1
    spans = []
    for b, made in enumerate(problem.buf_producer):
        if made not in pos:
            raise InvalidScheduleError(
                f"buffer {problem.buffer_name(b)!r}: its producer is not in order"
            )
        birth = last = pos[made]
        for r in problem.buf_readers[b]:
            step = pos.get(r)
            if step is None:
                continue
            if step < birth:
                raise InvalidScheduleError(
                    f"{problem.names[r]!r} reads {problem.buffer_name(b)!r} before it is produced"
                )
            last = max(last, step)
        spans.append((birth, end if problem.buf_escapes[b] else last))
    return spans


def live_bytes(problem: MemoryProblem, order: Sequence[int]) -> list[int]:
    """Live activation bytes during each step of ``order`` (the one sweep)."""
    delta = [0] * (len(order) + 1)
    for (birth, death), size in zip(buffer_spans(problem, order), problem.buf_sizes, strict=True):
        delta[birth] += size
        delta[death + 1] -= size
    live, running = [], 0
    for step in range(len(order)):
        running += delta[step]
        live.append(running)
    return live


def peak(problem: MemoryProblem, order: Sequence[int]) -> int:
    """Peak of :func:`live_bytes` (0 for an empty order)."""
    return max(live_bytes(problem, order), default=0)


def timeline(problem: MemoryProblem, order: Sequence[int]) -> Timeline:
    """:func:`live_bytes` with the peak, its first step and the buffers live there."""
    spans = buffer_spans(problem, order)
    live = live_bytes(problem, order)
    if not live:
        return Timeline((), 0, -1, ())
    step = max(range(len(live)), key=lambda t: (live[t], -t))
    by_birth = sorted(range(len(spans)), key=lambda b: spans[b][0])
    at_peak = tuple(b for b in by_birth if spans[b][0] <= step <= spans[b][1])
    return Timeline(tuple(live), live[step], step, at_peak)


def is_topological(problem: MemoryProblem, order: Sequence[int]) -> bool:
    """True when ``order`` is a permutation that respects every predecessor edge."""
    if sorted(order) != list(range(len(problem.names))):
        return False
    pos = {v: t for t, v in enumerate(order)}
    return all(pos[u] < pos[v] for v, ps in enumerate(problem.preds) for u in ps)


def working_sets(sizes: Sequence[int], users: Sequence[Iterable[int]], num_nodes: int) -> list[int]:
    """Bytes each node touches: the buffers it reads or writes (``users[b]``: nodes of buffer b,
    the producer included), each counted once per node. Any order holds them all at that step."""
    out = [0] * num_nodes
    for size, nodes in zip(sizes, users, strict=True):
        for v in set(nodes):
            out[v] += size
    return out


def working_set_bound(problem: MemoryProblem, forced: Sequence[int] | None = None) -> int:
    """Lower bound on any order's peak: the largest of :func:`forced_live_bytes`, a node's
    :func:`working_sets` (included in the former when readers descend from producers, as in a
    graph's problem), or all graph outputs together (live at the last step)."""
    forced = forced_live_bytes(problem) if forced is None else forced
    users = [(p, *rs) for p, rs in zip(problem.buf_producer, problem.buf_readers, strict=True)]
    touched = working_sets(problem.buf_sizes, users, len(problem.names))
    escaping = sum(s for s, e in zip(problem.buf_sizes, problem.buf_escapes, strict=True) if e)
    return max([*forced, *touched, escaping], default=0)


def forced_live_bytes(problem: MemoryProblem) -> list[int]:
    """Bytes live while node v runs in *every* order: its working set, widened by dependences.

    When node v runs, a buffer must be live if its producer is v or an ancestor of v and it is
    read by v or a descendant of v (or escapes): whatever the order, it was made before and is
    read after. For b alone that is every v in ``desc*(prod_b) ∩ ⋃_r anc*(r)``; the bound is
    the sum at v. Its maximum includes the plain working set (v's inputs and outputs) and,
    on training graphs, every activation saved for the backward pass at the loss.
    """
    n = len(problem.names)
    anc, desc = [0] * n, [0] * n
    for v in range(n):  # the original order is topological
        anc[v] = 1 << v
        for u in problem.preds[v]:
            anc[v] |= anc[u]
    succs = problem.succs()
    for v in reversed(range(n)):
        desc[v] = 1 << v
        for w in succs[v]:
            desc[v] |= desc[w]
    forced = [0] * n
    everyone = (1 << n) - 1
    for b, size in enumerate(problem.buf_sizes):
        made = problem.buf_producer[b]
        until = everyone if problem.buf_escapes[b] else anc[made]
        for r in problem.buf_readers[b]:
            until |= anc[r]
        live = desc[made] & until
        while live:
            low = live & -live
            forced[low.bit_length() - 1] += size
            live ^= low
    return forced
