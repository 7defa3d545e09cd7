"""Fast plans for a fixed order, and a global lower bound on energy.

* :func:`fixed_order_plan` — clocks for a given order by Lagrangian dynamic programming: for a
  price ``λ`` on time, the DP finds the clocks minimising ``Σ (energy + λ·time)`` with every switch
  charged ``switch_energy + λ·latency`` exactly (O(n·C) per λ); partitions too short to pay their
  switch are raised to the maximum clock; ``λ`` is searched (log bisection) for the cheapest plan
  that meets the deadline. The best single global clock (what Zeus-style tuning finds) is tried
  too. This is the greedy baseline, the CP-SAT hint and the fallback.
* :func:`energy_lower_bound` — a valid bound on the energy of *any* legal schedule: drop order,
  switches and partition rules, keep ``Σ duration ≤ deadline``, and solve the LP relaxation of
  that multiple-choice knapsack exactly (per-task lower convex hulls, steepest savings first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from fxenergy.schedule.problem import Problem, Solution

_BISECTIONS = 24


def cost_arrays(problem: Problem, order: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Durations and energies as ``(n, C)`` float arrays, rows in ``order``."""
    dur = np.array([problem.tasks[t].durations for t in order], dtype=np.float64)
    en = np.array([problem.tasks[t].energies for t in order], dtype=np.float64)
    return dur.reshape(len(order), problem.num_clocks), en.reshape(len(order), problem.num_clocks)


def dp_clocks(
    dur: np.ndarray, en: np.ndarray, lam: float, switch_cost: float, start_clock: int = 0
) -> np.ndarray:
    """Clock per row minimising ``Σ (en + lam·dur) + switch_cost · switches`` (exact DP)."""
    n, c = dur.shape
    cost = en + lam * dur
    came_same = np.zeros((n, c), dtype=bool)
    came_from = np.zeros(n, dtype=np.int64)
    best = np.full(c, switch_cost)
    best[start_clock] = 0.0
    for p in range(n):
        j = int(np.argmin(best))
        switched = best[j] + switch_cost
        same = best <= switched
        came_same[p] = same
        came_from[p] = j
        best = np.where(same, best, switched) + cost[p]
    clocks = np.empty(n, dtype=np.int64)
    cur = int(np.argmin(best)) if n else start_clock
    for p in range(n - 1, -1, -1):
        clocks[p] = cur
        if not came_same[p, cur]:
            cur = int(came_from[p])
    return clocks


def repair_short_partitions(dur: np.ndarray, clocks: np.ndarray, min_time: int) -> np.ndarray:
    """Raise every non-max partition shorter than ``min_time`` to the maximum clock (index 0)."""
    clocks = clocks.copy()
    n = len(clocks)
    start = 0
    while start < n:
        stop = start
        while stop < n and clocks[stop] == clocks[start]:
            stop += 1
        if clocks[start] != 0:
            span = dur[np.arange(start, stop), clocks[start:stop]].sum()
            if span < min_time:
                clocks[start:stop] = 0
        start = stop
    return clocks


def totals(
    dur: np.ndarray, en: np.ndarray, clocks: np.ndarray, problem: Problem, start_clock: int = 0
) -> tuple[int, int]:
    """Time and energy (with switches) of per-row ``clocks``; matches ``validate.evaluate``."""
    rows = np.arange(len(clocks))
    prev = np.concatenate(([start_clock], clocks[:-1])) if len(clocks) else clocks
    switches = int(np.count_nonzero(clocks != prev))
    time = int(dur[rows, clocks].sum()) + switches * problem.switch.latency
    energy = int(en[rows, clocks].sum()) + switches * problem.switch.energy
    return time, energy


def fixed_order_plan(
    problem: Problem, order: Sequence[int], time_budget: int, start_clock: int = 0
) -> np.ndarray | None:
    """Cheapest clocks (per position of ``order``) found within ``time_budget``; None if none.

    Candidates: every single global clock, and the repaired Lagrangian DP plan for each ``λ``
    tried by a log bisection. The plan with the least energy whose time fits wins.
    """
    dur, en = cost_arrays(problem, order)
    min_time = problem.switch.min_partition_time
    best: tuple[int, np.ndarray] | None = None

    def consider(clocks: np.ndarray) -> int:
        nonlocal best
        time, energy = totals(dur, en, clocks, problem, start_clock)
        if time <= time_budget and (best is None or energy < best[0]):
            best = (energy, clocks)
        return time

    for c in range(problem.num_clocks):
        clocks = np.full(len(order), c, dtype=np.int64)
        consider(repair_short_partitions(dur, clocks, min_time))
    sw = lambda lam: problem.switch.energy + lam * problem.switch.latency  # noqa: E731
    plan = lambda lam: repair_short_partitions(  # noqa: E731
        dur, dp_clocks(dur, en, lam, sw(lam), start_clock), min_time
    )
    if consider(plan(0.0)) <= time_budget:
        return best[1] if best else None
    lo, hi = 1e-6, 1.0
    while consider(plan(hi)) > time_budget and hi < 1e12:
        lo, hi = hi, hi * 16
    for _ in range(_BISECTIONS):
        mid = math.sqrt(lo * hi)
        if consider(plan(mid)) <= time_budget:
            hi = mid
        else:
            lo = mid
        if hi / lo < 1.0 + 1e-3:
            break
    # the Lagrangian plans jump between λ_lo (too slow) and λ_hi (fits); splice them to spend
    # the slack the jump leaves (the duality gap of a discrete problem)
    for split in _splices(dur, en, plan(lo), plan(hi), problem, time_budget, start_clock):
        consider(repair_short_partitions(dur, split, min_time))
    return best[1] if best else None


def _splices(
    dur: np.ndarray,
    en: np.ndarray,
    slow: np.ndarray,
    fast: np.ndarray,
    problem: Problem,
    time_budget: int,
    start_clock: int,
    tries: int = 8,
) -> list[np.ndarray]:
    """Plans ``slow[:p] + fast[p:]`` (and the mirror) that fit, least energy first."""
    out: list[tuple[float, np.ndarray]] = []
    for first, second in ((slow, fast), (fast, slow)):
        time, energy = _splice_totals(dur, en, first, second, problem, start_clock)
        fits = np.flatnonzero(time <= time_budget)
        for p in fits[np.argsort(energy[fits])][:tries]:
            out.append((float(energy[p]), np.concatenate((first[:p], second[p:]))))
    out.sort(key=lambda item: item[0])
    return [clocks for _, clocks in out[:tries]]


def _splice_totals(
    dur: np.ndarray,
    en: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    problem: Problem,
    start_clock: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Time and energy of ``first[:p] + second[p:]`` for every split ``p`` in ``0..n``."""
    rows = np.arange(len(first))

    def prefix(values: np.ndarray) -> np.ndarray:
        return np.concatenate(([0.0], np.cumsum(values)))

    def changes(clocks: np.ndarray) -> np.ndarray:  # changes[i]: clock i differs from i-1
        return np.concatenate(([clocks[0] != start_clock], clocks[1:] != clocks[:-1]))

    n = len(first)
    sw_a, sw_b = prefix(changes(first)), prefix(changes(second))
    seam = np.zeros(n + 1)  # the change at position p itself, from first[p-1] to second[p]
    seam[:n] = second != np.concatenate(([start_clock], first[:-1]))
    after = sw_b[-1] - sw_b[np.minimum(np.arange(n + 1) + 1, n)]
    sw = sw_a + seam + after
    ta, tb = prefix(dur[rows, first]), prefix(dur[rows, second])
    ea, eb = prefix(en[rows, first]), prefix(en[rows, second])
    time = ta + (tb[-1] - tb) + sw * problem.switch.latency
    energy = ea + (eb[-1] - eb) + sw * problem.switch.energy
    return time, energy


def greedy_solution(problem: Problem, time_budget: int) -> Solution | None:
    """The fixed-order plan on the program order as a :class:`Solution` (None if none fits)."""
    order = list(range(problem.num_tasks))
    clocks = fixed_order_plan(problem, order, time_budget)
    if clocks is None:
        return None
    return Solution(tuple(order), tuple(int(c) for c in clocks))


def energy_lower_bound(problem: Problem, time_budget: int) -> float | None:
    """LP lower bound on the energy of every legal schedule within ``time_budget``.

    Returns None when even the fastest clock of every task misses the budget (then no schedule
    fits and there is nothing to bound).
    """
    base_time, base_energy = 0, 0
    steps: list[tuple[float, int, int]] = []  # (slope ΔE/ΔT < 0, ΔT, ΔE)
    for task in problem.tasks:
        hull = _lower_hull(task.durations, task.energies)
        base_time += hull[0][0]
        base_energy += hull[0][1]
        for (t0, e0), (t1, e1) in pairwise(hull):
            steps.append(((e1 - e0) / (t1 - t0), t1 - t0, e1 - e0))
    if base_time > time_budget:
        return None
    room = float(time_budget - base_time)
    bound = float(base_energy)
    for _slope, dt, de in sorted(steps):
        if room <= 0:
            break
        take = min(1.0, room / dt)
        bound += take * de
        room -= take * dt
    return bound


def _lower_hull(durations: Sequence[int], energies: Sequence[int]) -> list[tuple[int, int]]:
    """Lower convex hull of (time, energy) from the fastest point to the least-energy point."""
    pts = sorted(set(zip(durations, energies, strict=True)))
    fastest = min(pts, key=lambda p: (p[0], p[1]))
    e_min = min(e for _, e in pts)
    pts = [p for p in pts if p[0] >= fastest[0] and p[1] <= fastest[1]]
    hull: list[tuple[int, int]] = []
    for p in pts:
        if hull and p[0] == hull[-1][0]:
            continue
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) <= 0:
            hull.pop()
        hull.append(p)
        if p[1] == e_min:
            break
    # keep only the strictly energy-decreasing part: later points cost time and save nothing
    out = [hull[0]]
    for p in hull[1:]:
        if p[1] < out[-1][1]:
            out.append(p)
    return out


def _cross(o: tuple[int, int], a: tuple[int, int], b: tuple[int, int]) -> int:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
