"""Fast plans for a fixed order, and a global lower bound on energy.

* :func:`fixed_order_plan` — clocks for a given order by Lagrangian dynamic programming: for a
  price ``λ`` on time, the DP finds the clocks minimising ``Σ (energy + λ·time)`` with every switch
  charged ``switch_energy + λ·latency`` exactly (O(n·C) per λ); partitions too short to pay their
  switch are raised to the maximum clock; ``λ`` is swept on log grids (all at once) for the
  cheapest plan that meets the deadline. The best single global clock (what Zeus-style tuning
  finds) is tried too. This is the greedy baseline, the CP-SAT hint and the fallback.
* :func:`energy_lower_bound` — a valid bound on the energy of *any* legal schedule: drop order,
  switches and partition rules, keep ``Σ duration ≤ deadline``, and solve the LP relaxation of
  that multiple-choice knapsack exactly (per-task lower convex hulls, steepest savings first).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from operator import itemgetter

import numpy as np

from fxenergy.schedule.hull import lower_hull
from fxenergy.schedule.problem import Problem, Solution

_GRID = 32  #: λ values per DP sweep (all solved in one vectorised pass)


def cost_arrays(problem: Problem, order: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Durations and energies as ``(n, C)`` float arrays, rows in ``order``."""
    dur = np.array([problem.tasks[t].durations for t in order], dtype=np.float64)
    en = np.array([problem.tasks[t].energies for t in order], dtype=np.float64)
    return dur.reshape(len(order), problem.num_clocks), en.reshape(len(order), problem.num_clocks)


def dp_clocks(
    dur: np.ndarray,
    en: np.ndarray,
    lams: np.ndarray,
    switch_energy: float,
    switch_latency: float,
    start_clock: int = 0,
) -> np.ndarray:
    """Per ``λ`` in ``lams``, the clock per row minimising ``Σ (en + λ·dur)`` with every switch
    charged ``switch_energy + λ·switch_latency`` (exact DP, all ``λ`` at once).

    Returns:
        An ``(len(lams), n)`` array of clock indices.
    """
    n, c = dur.shape
    lams = np.asarray(lams, dtype=np.float64)
    nl = len(lams)
    sw = (switch_energy + lams * switch_latency)[:, None]  # (L, 1)
    came_same = np.zeros((n, nl, c), dtype=bool)
    came_from = np.zeros((n, nl), dtype=np.int64)
    best = np.repeat(sw, c, axis=1)
    best[:, start_clock] = 0.0
    rows = np.arange(nl)
    cost = en[:, None, :] + lams[None, :, None] * dur[:, None, :]  # (n, L, C)
    for p in range(n):
        j = best.argmin(axis=1)
        switched = best[rows, j][:, None] + sw
        same = best <= switched
        came_same[p] = same
        came_from[p] = j
        best = np.where(same, best, switched)
        best += cost[p]
    clocks = np.empty((nl, n), dtype=np.int64)
    cur = best.argmin(axis=1) if n else np.full(nl, start_clock)
    for p in range(n - 1, -1, -1):
        clocks[:, p] = cur
        cur = np.where(came_same[p, rows, cur], cur, came_from[p])
    return clocks


def repair_short_partitions(dur: np.ndarray, clocks: np.ndarray, min_time: int) -> np.ndarray:
    """Raise every non-max partition shorter than ``min_time`` to the maximum clock (index 0)."""
    n = len(clocks)
    if not n or min_time <= 0:
        return clocks.copy()
    starts = np.flatnonzero(np.concatenate(([True], clocks[1:] != clocks[:-1])))
    spans = np.add.reduceat(dur[np.arange(n), clocks], starts)
    short = (spans < min_time) & (clocks[starts] != 0)
    lengths = np.diff(np.concatenate((starts, [n])))
    return np.where(np.repeat(short, lengths), 0, clocks)


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

    Candidates: every single global clock, the repaired Lagrangian DP plan for each ``λ`` of two
    log sweeps, and splices of the plans either side of the budget. The plan with the least
    energy whose time fits wins.
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
    sw_e, sw_l = problem.switch.energy, problem.switch.latency

    def sweep(lams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Repaired DP plans for ``lams`` and whether each fits the budget."""
        plans = dp_clocks(dur, en, lams, sw_e, sw_l, start_clock)
        plans = np.stack([repair_short_partitions(dur, row, min_time) for row in plans])
        return plans, np.array([consider(row) <= time_budget for row in plans])

    # λ is a price of time in energy units per time unit: sweep it on a log grid around the
    # problem's own ratio, then once more between the last λ that misses and the first that fits
    scale = float(en.sum() / max(dur.sum(), 1.0))
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
    for split in _splices(dur, en, lo, hi, problem, time_budget, start_clock):
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


def greedy_solution(
    problem: Problem, time_budget: int, order: Sequence[int] | None = None
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
