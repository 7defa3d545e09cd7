"""Peak live activation memory of an fx node order, and orders that lower it.

The memory model (the same one torch._inductor's ``estimate_peak_memory`` uses): every node that
allocates (a non-view with tensor outputs) owns one buffer of its outputs' bytes; views and
``getitem`` add no bytes but extend their base buffer's life. A buffer is live from the step of
its producer through the step of its last reader; graph outputs stay live to the end; a buffer
nobody reads is live only during its producer's step. Memory *at* step t counts every buffer
alive during t (inputs not yet freed plus outputs just allocated):

    mem(t) = Σ_b size_b · [prod_b ≤ t ≤ last_b]         peak = max_t mem(t)

Placeholders and ``get_attr`` tensors (weights, inputs) are live throughout whatever the order,
so they are left out: the numbers are *activation* bytes.

Orders come from :func:`lpmf_order` (greedy least-peak-first, after inductor's
``topological_sort_lpmf``) and :func:`minimize_peak`, which starts from the best of the original
and greedy orders and improves windows around the peak with CP-SAT
(:mod:`fxenergy.schedule.cpsat.memory`). The result is never worse than the original order.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch.fx

from fxenergy.graph.semantics import activation_buffers, dependency_graph, memory_timeline

_FIXED = ("placeholder", "get_attr", "output")


@dataclass(frozen=True)
class MemoryProblem:
    """Plain data: nodes in the original order, ordering predecessors and activation buffers."""

    names: tuple[str, ...]
    preds: tuple[tuple[int, ...], ...]  #: data and order edges, as indices into names
    buf_sizes: tuple[int, ...]  #: bytes of each activation buffer (a storage)
    buf_producer: tuple[int, ...]  #: node that allocates each buffer
    buf_readers: tuple[tuple[int, ...], ...]  #: nodes that read each buffer, aliases included
    buf_escapes: tuple[bool, ...]  #: buffer reaches the graph output (live to the end)

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


def memory_problem(gm: torch.fx.GraphModule) -> MemoryProblem:
    """Build the plain problem from ``gm`` (node values must be known: capture stores them).

    Edges come from :func:`fxenergy.graph.semantics.dependency_graph` (data + side-effect order);
    buffers from :func:`fxenergy.graph.semantics.activation_buffers` (storages shared by
    views counted once; inputs and weights left out).
    """
    dag = dependency_graph(gm)
    sizes, users, producers, keep = activation_buffers(gm)
    names = [n.name for n in gm.graph.nodes if n.op not in _FIXED]
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
    )


def timeline(problem: MemoryProblem, order: Sequence[int]) -> list[int]:
    """Live activation bytes during each step of ``order``, by
    :func:`fxenergy.graph.semantics.memory_timeline` (InvalidScheduleError on a bad order)."""
    bufs = range(len(problem.buf_sizes))
    names = [str(v) for v in order]
    result = memory_timeline(
        names,
        {str(b): problem.buf_sizes[b] for b in bufs},
        {str(b): [str(r) for r in problem.buf_readers[b]] for b in bufs},
        producers={str(b): str(problem.buf_producer[b]) for b in bufs},
        keep={str(b) for b in bufs if problem.buf_escapes[b]},
    )
    return list(result.live_bytes)


def peak(problem: MemoryProblem, order: Sequence[int]) -> int:
    """Peak of :func:`timeline` (0 for an empty graph)."""
    return max(timeline(problem, order), default=0)


def is_topological(problem: MemoryProblem, order: Sequence[int]) -> bool:
    """True when ``order`` is a permutation that respects every predecessor edge."""
    if sorted(order) != list(range(len(problem.names))):
        return False
    pos = {v: t for t, v in enumerate(order)}
    return all(pos[u] < pos[v] for v, ps in enumerate(problem.preds) for u in ps)


def working_set_bound(problem: MemoryProblem, forced: Sequence[int] | None = None) -> int:
    """Lower bound on any order's peak: the largest of :func:`forced_live_bytes`, or all graph
    outputs together (live at the last step)."""
    forced = forced_live_bytes(problem) if forced is None else forced
    escaping = sum(s for s, e in zip(problem.buf_sizes, problem.buf_escapes, strict=True) if e)
    return max([*forced, escaping], default=0)


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


def lpmf_order(problem: MemoryProblem) -> list[int]:
    """Greedy least-peak-first order (inductor's ``topological_sort_lpmf`` on this model).

    Among ready nodes: if some fit under the peak so far, take the one leaving the least memory
    behind (allocation minus frees); otherwise take the smallest allocation. Ties: original index.
    """
    succs = problem.succs()
    indeg = [len(set(ps)) for ps in problem.preds]
    sizes, alloc = problem.buf_sizes, problem.node_alloc()
    left = [len(rs) + e for rs, e in zip(problem.buf_readers, problem.buf_escapes, strict=True)]
    reads_of = [sorted(set(bs)) for bs in problem.node_reads()]
    made_by: list[list[int]] = [[] for _ in problem.names]
    for b, v in enumerate(problem.buf_producer):
        made_by[v].append(b)
    ready = {v for v, d in enumerate(indeg) if d == 0}
    live = max_mem = 0
    order: list[int] = []

    def frees(v: int) -> int:  # bytes freed right after v runs
        freed = sum(sizes[b] for b in reads_of[v] if left[b] == 1)
        return freed + sum(sizes[b] for b in made_by[v] if left[b] == 0)

    while ready:
        gap = max_mem - live
        v = min(
            ready,
            key=lambda u: (
                alloc[u] if alloc[u] > gap else 0,
                alloc[u] - frees(u),
                u,
            ),
        )
        ready.remove(v)
        order.append(v)
        freed = frees(v)
        live += alloc[v]
        max_mem = max(max_mem, live)
        live -= freed
        for b in reads_of[v]:
            left[b] -= 1
        for s in set(succs[v]):
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.add(s)
    return order


def dfs_order(problem: MemoryProblem) -> list[int]:
    """Depth-first order visiting small nodes first (inductor's ``topological_sort_dfs``).

    A node's priority is the bytes it writes plus the bytes it reads; the outer loop and the
    predecessor visits both go in ascending priority, ties by original index.
    """
    reads = problem.node_alloc()
    for b, rs in enumerate(problem.buf_readers):
        for r in rs:
            reads[r] += problem.buf_sizes[b]
    seen: set[int] = set()
    order: list[int] = []

    def visit(root: int) -> None:  # iterative: training graphs are deeper than the stack
        stack = [(root, iter(sorted(set(problem.preds[root]), key=lambda u: (reads[u], u))))]
        seen.add(root)
        while stack:
            v, it = stack[-1]
            nxt = next((u for u in it if u not in seen), None)
            if nxt is None:
                stack.pop()
                order.append(v)
                continue
            seen.add(nxt)
            stack.append((nxt, iter(sorted(set(problem.preds[nxt]), key=lambda u: (reads[u], u)))))

    for v in sorted(range(len(problem.names)), key=lambda u: (reads[u], u)):
        if v not in seen:
            visit(v)
    return order


def bfs_order(problem: MemoryProblem) -> list[int]:
    """FIFO order: run first the ready node whose predecessors ran earliest (inductor's bfs)."""
    succs = problem.succs()
    indeg = [len(set(ps)) for ps in problem.preds]
    ran_at: dict[int, int] = {}
    heap = [([], v) for v, d in enumerate(indeg) if d == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, v = heapq.heappop(heap)
        ran_at[v] = len(order)
        order.append(v)
        for s in sorted(set(succs[v])):
            indeg[s] -= 1
            if indeg[s] == 0:
                heapq.heappush(heap, (sorted({ran_at[u] for u in problem.preds[s]}), s))
    return order


@dataclass(frozen=True)
class OrderResult:
    """An order and how it was found."""

    order: tuple[int, ...]
    peak_bytes: int
    original_peak_bytes: int
    lower_bound_bytes: int
    method: str  #: "original", "lpmf", "dfs", "bfs", "hint" or "cpsat" (the last that improved it)
    solve_time_s: float
    windows_improved: int = 0


def minimize_peak(
    problem: MemoryProblem,
    *,
    time_limit_s: float = 10.0,
    window: int = 48,
    hints: Sequence[Sequence[int]] = (),
    workers: int = 1,
) -> OrderResult:
    """An order of ``problem`` with the least peak found within ``time_limit_s``.

    Starts from the best of the original order, :func:`lpmf_order`, :func:`dfs_order`,
    :func:`bfs_order` and ``hints``; then solves
    windows of ``window`` consecutive nodes around the peak with CP-SAT (the whole graph when it
    is that small), keeping the rest fixed, until no window improves or time runs out.
    """
    from fxenergy.schedule.cpsat.memory import improve_windows

    t0 = time.perf_counter()
    original = list(range(len(problem.names)))
    candidates = [("original", original), ("lpmf", lpmf_order(problem))]
    candidates += [("dfs", dfs_order(problem)), ("bfs", bfs_order(problem))]
    candidates += [("hint", list(h)) for h in hints if is_topological(problem, h)]
    method, best = min(candidates, key=lambda c: peak(problem, c[1]))
    forced = forced_live_bytes(problem)
    bound = working_set_bound(problem, forced)
    # A quarter of the budget per window: enough to prove small windows optimal, and room to
    # move on to the next peak.
    order, improved = improve_windows(
        problem,
        best,
        window=window,
        deadline=t0 + time_limit_s,
        workers=workers,
        per_window_s=max(2.0, time_limit_s / 4),
        forced=forced,
        lower_bound=bound,
    )
    if improved:
        method = "cpsat"
    return OrderResult(
        order=tuple(order),
        peak_bytes=peak(problem, order),
        original_peak_bytes=peak(problem, original),
        lower_bound_bytes=bound,
        method=method,
        solve_time_s=time.perf_counter() - t0,
        windows_improved=improved,
    )


def l2_reuse_bytes(problem: MemoryProblem, order: Sequence[int], l2_bytes: int) -> list[int]:
    """Bytes each node of ``order`` can read from L2 instead of DRAM (indexed like ``names``).

    Estimate: a consumer placed right after the producer of a buffer reads it from L2 when the
    buffer fits in ``l2_bytes`` (it was just written, and nothing else ran in between to evict
    it). Everything else is assumed to come from DRAM. The cost model can subtract these bytes
    from a node's DRAM traffic to credit orders that keep data on chip.
    """
    out = [0] * len(problem.names)
    reads = problem.node_reads()
    for prev, cur in itertools.pairwise(order):
        out[cur] = sum(
            problem.buf_sizes[b]
            for b in set(reads[cur])
            if problem.buf_producer[b] == prev and problem.buf_sizes[b] <= l2_bytes
        )
    return out


def l2_reuse_by_node(gm: torch.fx.GraphModule, l2_bytes: int) -> dict[str, int]:
    """:func:`l2_reuse_bytes` for ``gm``'s current order, by node name (zeros omitted)."""
    problem = memory_problem(gm)
    reuse = l2_reuse_bytes(problem, range(len(problem.names)), l2_bytes)
    return {name: b for name, b in zip(problem.names, reuse, strict=True) if b}
