"""Fast plans for a fixed order, and a global lower bound on energy.

* :func:`fixed_order_plan` — clocks for a given order by Lagrangian dynamic programming: for a
  price ``λ`` on time, the DP finds the clocks minimising ``Σ (energy + λ·time)`` with every switch
  ``a → b`` charged its transition window (:mod:`fxenergy.schedule.switch`) exactly (O(n·C²) per
  λ); partitions too short for their windows are repaired (raised to the maximum clock, or
  merged); ``λ`` is swept on log grids (all at once) for the
  cheapest plan that meets the deadline. The best single global clock (what Zeus-style tuning
  finds) is tried too. This is the greedy baseline, the CP-SAT hint and the fallback.
* :func:`energy_lower_bound` — a valid bound on the energy of *any* legal schedule: drop order,
  switches and partition rules, keep ``Σ duration ≤ deadline``, and solve the LP relaxation of
  that multiple-choice knapsack exactly (per-task lower convex hulls, steepest savings first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from operator import itemgetter

import numpy as np

from fxenergy.schedule.hull import lower_hull
from fxenergy.schedule.problem import Problem, Solution
from fxenergy.schedule.switch import short_partitions

_GRID = 32  #: λ values per DP sweep (all solved in one vectorised pass)


def cost_arrays(problem: Problem, order: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Durations and energies as ``(n, C)`` float arrays, rows in ``order``."""
    dur = np.array([problem.tasks[t].durations for t in order], dtype=np.float64)
    en = np.array([problem.tasks[t].energies for t in order], dtype=np.float64)
    return dur.reshape(len(order), problem.num_clocks), en.reshape(len(order), problem.num_clocks)


def window_arrays(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """``(C, C)`` arrays of the switch model's window time and energy, ``[p][q]``."""
    w = np.array(problem.switch_costs.window, dtype=np.float64).reshape(
        problem.num_clocks, problem.num_clocks, 2
    )
    return w[:, :, 0], w[:, :, 1]


def entry_costs(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """Cost of entering the first position at each clock: a head window from the maximum
    clock (non-cyclic), or nothing (cyclic: the wrap switch is priced by :func:`totals`)."""
    wt, we = window_arrays(problem)
    if problem.cyclic:
        return np.zeros(problem.num_clocks), np.zeros(problem.num_clocks)
    return wt[:, 0].copy(), we[:, 0].copy()  # late(0, c) = window[c][0]


def dp_clocks(
    dur: np.ndarray,
    en: np.ndarray,
    lams: np.ndarray,
    windows: tuple[np.ndarray, np.ndarray],
    entry: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Per ``λ`` in ``lams``, the clock per row minimising ``Σ (en + λ·dur)`` with every switch
    ``a → b`` charged its window ``we[a, b] + λ·wt[a, b]`` and the first row its ``entry``
    cost (exact DP, all ``λ`` at once, O(n·C²) per ``λ``).

    Returns:
        An ``(len(lams), n)`` array of clock indices.
    """
    n, c = dur.shape
    lams = np.asarray(lams, dtype=np.float64)
    nl = len(lams)
    wt, we = windows
    move = we[None, :, :] + lams[:, None, None] * wt[None, :, :]  # (L, from, to)
    best = entry[1][None, :] + lams[:, None] * entry[0][None, :]  # (L, C)
    came_from = np.zeros((n, nl, c), dtype=np.int16)
    cost = en[:, None, :] + lams[None, :, None] * dur[:, None, :]  # (n, L, C)
    for p in range(n):
        if p:
            via = best[:, :, None] + move  # (L, from, to)
            came_from[p] = via.argmin(axis=1)
            best = np.take_along_axis(via, came_from[p][:, None, :].astype(np.int64), 1)[:, 0]
        best = best + cost[p]
    clocks = np.empty((nl, n), dtype=np.int64)
    rows = np.arange(nl)
    cur = best.argmin(axis=1) if n else np.zeros(nl, dtype=np.int64)
    for p in range(n - 1, -1, -1):
        clocks[:, p] = cur
        cur = came_from[p, rows, cur].astype(np.int64)
    return clocks


def _runs(dur: np.ndarray, clocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start position, clock and planned time of every partition of per-row ``clocks``."""
    n = len(clocks)
    starts = np.flatnonzero(np.concatenate(([True], clocks[1:] != clocks[:-1])))
    return starts, clocks[starts], np.add.reduceat(dur[np.arange(n), clocks], starts)


def repair_short_partitions(dur: np.ndarray, clocks: np.ndarray, problem: Problem) -> np.ndarray:
    """Clocks whose partitions all hold their transition windows (the checker's rule).

    A short partition at a non-maximum clock is raised to the maximum; a short one at the
    maximum (it hosts a switch out of it) takes its left neighbour's clock. Both merge
    partitions, so this ends.
    """
    clocks = clocks.copy()
    n, latency = len(clocks), problem.switch.latency
    if not n or latency <= 0:
        return clocks
    while True:
        starts, part_clocks, times = _runs(dur, clocks)
        short = short_partitions(times.tolist(), part_clocks.tolist(), latency, problem.cyclic)
        if not short:
            return clocks
        ends = np.append(starts[1:], n)
        slow = [j for j in short if part_clocks[j] != 0]
        if slow:  # raise first; only then merge short max-clock partitions away
            for j in slow:
                clocks[starts[j] : ends[j]] = 0
            continue
        for j in short:
            k = j - 1 if j > 0 else j + 1
            if 0 <= k < len(part_clocks):
                clocks[starts[j] : ends[j]] = part_clocks[k]
            else:
                return np.zeros_like(clocks)  # cannot happen: a lone partition hosts nothing


def totals(
    dur: np.ndarray, en: np.ndarray, clocks: np.ndarray, problem: Problem
) -> tuple[float, float]:
    """Time and energy (with transition windows) of per-row ``clocks``; ``validate.evaluate``
    computes the same."""
    n = len(clocks)
    if not n:
        return 0.0, 0.0
    rows = np.arange(n)
    wt, we = window_arrays(problem)
    prev, nxt = clocks[:-1], clocks[1:]
    time = float(dur[rows, clocks].sum() + wt[prev, nxt].sum())
    energy = float(en[rows, clocks].sum() + we[prev, nxt].sum())
    first, last = clocks[0], clocks[-1]
    if problem.cyclic:
        time, energy = time + wt[last, first], energy + we[last, first]
    else:
        time, energy = time + wt[first, 0], energy + we[first, 0]
    return time, energy


def _legal(dur: np.ndarray, clocks: np.ndarray, problem: Problem) -> bool:
    if not len(clocks):
        return True
    _, part_clocks, times = _runs(dur, clocks)
    latency = problem.switch.latency
    return not short_partitions(times.tolist(), part_clocks.tolist(), latency, problem.cyclic)


def fixed_order_plan(
    problem: Problem, order: Sequence[int], time_budget: float
) -> np.ndarray | None:
    """Cheapest legal clocks (per position of ``order``) found within ``time_budget``; None if
    none.

    Candidates: every single global clock, the repaired Lagrangian DP plan for each ``λ`` of two
    log sweeps, and splices of the plans either side of the budget. The plan with the least
    energy whose time fits wins.
    """
    dur, en = cost_arrays(problem, order)
    windows, entry = window_arrays(problem), entry_costs(problem)
    best: tuple[float, np.ndarray] | None = None

    def consider(clocks: np.ndarray) -> float:
        nonlocal best
        clocks = repair_short_partitions(dur, clocks, problem)
        time, energy = totals(dur, en, clocks, problem)
        fits = time <= time_budget and _legal(dur, clocks, problem)
        if fits and (best is None or energy < best[0]):
            best = (energy, clocks)
        return time if fits else math.inf

    for c in range(problem.num_clocks):
        consider(np.full(len(order), c, dtype=np.int64))

    def sweep(lams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Repaired DP plans for ``lams`` and whether each fits the budget."""
        plans = dp_clocks(dur, en, lams, windows, entry)
        plans = np.stack([repair_short_partitions(dur, row, problem) for row in plans])
        return plans, np.array([consider(row) <= time_budget for row in plans])

    # λ is a price of time in energy units per time unit: sweep it on a log grid around the
    # problem's own ratio, then once more between the last λ that misses and the first that fits
    scale = float(en.sum() / max(dur.sum(), 1e-300))
    lams = np.concatenate(([0.0], scale * np.logspace(-4, 4, _GRID)))
    plans, fits = sweep(lams)
    if fits[0] or not fits.any():
        return best[1] if best else None
    first = int(np.argmax(fits))
    lo_lam, hi_lam = lams[first - 1], lams[first]
    lams = np.geomspace(max(lo_lam, hi_lam * 1e-3), hi_lam, _GRID)
    plans2, fits2 = sweep(lams)
    lo = plans[first - 1] if fits2.all() else plans2[int(np.argmax(fits2)) - 1]
    hi = plans2[int(np.argmax(fits2))] if fits2.any() else plans[first]
    # the Lagrangian plans jump between λ_lo (too slow) and λ_hi (fits); splice them to spend
    # the slack the jump leaves (the duality gap of a discrete problem)
    for split in _splices(dur, en, lo, hi, problem, time_budget):
        consider(split)
    return best[1] if best else None


def _splices(
    dur: np.ndarray,
    en: np.ndarray,
    slow: np.ndarray,
    fast: np.ndarray,
    problem: Problem,
    time_budget: float,
    tries: int = 8,
) -> list[np.ndarray]:
    """Plans ``slow[:p] + fast[p:]`` (and the mirror) that fit, least energy first."""
    out: list[tuple[float, np.ndarray]] = []
    for first, second in ((slow, fast), (fast, slow)):
        time, energy = _splice_totals(dur, en, first, second, problem)
        fits = np.flatnonzero(time <= time_budget)
        for p in fits[np.argsort(energy[fits])][:tries]:
            out.append((float(energy[p]), np.concatenate((first[:p], second[p:]))))
    out.sort(key=lambda item: item[0])
    return [clocks for _, clocks in out[:tries]]


def _splice_totals(
    dur: np.ndarray, en: np.ndarray, first: np.ndarray, second: np.ndarray, problem: Problem
) -> tuple[np.ndarray, np.ndarray]:
    """Time and energy of ``first[:p] + second[p:]`` for every split ``p`` in ``0..n``."""
    n = len(first)
    rows = np.arange(n)
    windows = window_arrays(problem)
    split = np.arange(n + 1)

    def prefix(values: np.ndarray) -> np.ndarray:
        return np.concatenate(([0.0], np.cumsum(values)))

    out = []
    for task_cost, w in zip((dur, en), windows, strict=True):
        moves_a = prefix(np.concatenate(([0.0], w[first[:-1], first[1:]])))  # moves into 0..i-1
        moves_b = prefix(np.concatenate(([0.0], w[second[:-1], second[1:]])))
        seam = np.zeros(n + 1)
        seam[1:n] = w[first[:-1], second[1:]]  # the move at p, from first[p-1] to second[p]
        total = prefix(task_cost[rows, first]) + (
            prefix(task_cost[rows, second])[-1] - prefix(task_cost[rows, second])
        )
        total += moves_a + seam + (moves_b[-1] - moves_b[np.minimum(split + 1, n)])
        head = np.where(split > 0, first[0], second[0])
        tail = np.where(split < n, second[-1], first[-1])
        total += w[tail, head] if problem.cyclic else w[head, 0]
        out.append(total)
    return out[0], out[1]


def greedy_solution(
    problem: Problem, time_budget: float, order: Sequence[int] | None = None
) -> Solution | None:
    """The fixed-order plan on ``order`` (default: program order) as a :class:`Solution`.

    Returns None if no plan fits ``time_budget``.
    """
    order = list(range(problem.num_tasks)) if order is None else list(order)
    clocks = fixed_order_plan(problem, order, time_budget)
    if clocks is None:
        return None
    by_task = [0] * problem.num_tasks
    for t, c in zip(order, clocks, strict=True):  # clocks come per position of ``order``
        by_task[t] = int(c)
    return Solution(tuple(order), tuple(by_task))


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
    return lower_hull(zip(durations, energies, strict=True), itemgetter(0), itemgetter(1))
