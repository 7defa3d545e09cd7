"""Node orders that lower peak live activation memory: greedy and graph-search heuristics.

The memory model and its arithmetic are :mod:`fxenergy.memory.problem`'s; a graph's problem
comes from :func:`fxenergy.memory.timeline.memory_problem`. The orders here follow
torch._inductor's (``topological_sort_lpmf``, ``_dfs``, ``_bfs``);
:func:`fxenergy.schedule.cpsat.memory.minimize_peak` starts from the best of them and improves
windows around the peak with CP-SAT. :func:`l2_reuse_bytes` estimates what an order saves in
DRAM traffic by reading a buffer straight after it is written.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence

import torch.fx

from fxenergy.memory.problem import MemoryProblem
from fxenergy.memory.timeline import memory_problem


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
