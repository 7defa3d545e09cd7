"""A clustered program order: tasks that want the same clock run next to each other.

Partitions pay a switch each, so a slow partition is worth more the longer it is. List
scheduling over the DAG (data and order edges) picks, among the ready tasks, one whose preferred
clock equals the previous task's, as long as it is not too far ahead of the earliest ready task
in program order (``max_lead``); otherwise it falls back to program order. A task's preferred clock
is ``argmin_c energy[c] + λ·duration[c]`` with ``λ`` the problem's mean power (energy units per
time unit): memory-bound tasks, whose time barely grows at low clocks, prefer low clocks;
compute-bound tasks prefer the maximum.

The order is legal by construction; it may raise peak memory, so callers compare it against the
memory bound (``validate.peak_memory``) before using it.
"""

from __future__ import annotations

import heapq

from fxenergy.schedule.problem import Problem


def preferred_clocks(problem: Problem) -> list[int]:
    """Each task's clock minimising ``energy + λ·duration`` at the mean power ``λ``."""
    total_t = sum(sum(t.durations) for t in problem.tasks)
    total_e = sum(sum(t.energies) for t in problem.tasks)
    lam = total_e / total_t if total_t else 0.0
    return [
        min(range(problem.num_clocks), key=lambda c, t=t: (t.energies[c] + lam * t.durations[c], c))
        for t in problem.tasks
    ]


def clustered_order(problem: Problem, max_lead: int = 64) -> list[int]:
    """A topological order that keeps tasks with the same preferred clock together."""
    n = problem.num_tasks
    klass = preferred_clocks(problem)
    indeg = [len(p) for p in problem.predecessors]
    ready_all: list[int] = [t for t in range(n) if not indeg[t]]
    by_class: dict[int, list[int]] = {}
    for t in ready_all:
        heapq.heappush(by_class.setdefault(klass[t], []), t)
    heapq.heapify(ready_all)
    done = [False] * n
    order: list[int] = []
    prev = None
    while len(order) < n:
        while done[ready_all[0]]:
            heapq.heappop(ready_all)
        first = ready_all[0]
        pick = (
            _same_class(by_class.get(prev, []), done, first, max_lead) if prev is not None else None
        )
        t = first if pick is None else pick
        done[t] = True
        order.append(t)
        prev = klass[t]
        for v in problem.successors[t]:
            indeg[v] -= 1
            if not indeg[v]:
                heapq.heappush(ready_all, v)
                heapq.heappush(by_class.setdefault(klass[v], []), v)
    return order


def _same_class(heap: list[int], done: list[bool], first: int, max_lead: int) -> int | None:
    """Earliest ready task of the wanted class, if it is within ``max_lead`` of ``first``."""
    while heap and done[heap[0]]:
        heapq.heappop(heap)
    if heap and heap[0] - first <= max_lead:
        return heap[0]
    return None
