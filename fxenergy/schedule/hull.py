"""The lower convex hull of a task's (time, energy) options: one helper for every planner.

Both the single-GPU scheduler's LP bound (:mod:`fxenergy.schedule.greedy`) and the pipeline
planner's LP relaxation (:mod:`fxenergy.schedule.cpsat.pipeline`) replace a task's discrete
clock options by the piecewise-linear lower envelope through them: any mix of two options on
it is a valid relaxation, and its vertices are the options worth rounding to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def lower_hull(
    items: Iterable[T], time: Callable[[T], float], energy: Callable[[T], float]
) -> list[T]:
    """Lower convex hull of ``(time(item), energy(item))``, fastest first.

    The hull runs from the fastest option (the least energy among equally fast ones) to the
    least-energy option, energy strictly decreasing: options slower and no cheaper than the
    fastest, and points past the least-energy one, are left out (they cost time and save
    nothing). Exact for integer coordinates.

    Args:
        items: options (any objects); at least one.
        time: an option's duration.
        energy: an option's energy (or effective energy).

    Returns:
        The hull's vertices, as the given objects, in increasing time.
    """
    pts = sorted(items, key=lambda o: (time(o), energy(o)))
    if not pts:
        return []
    first = pts[0]
    e_min = min(energy(o) for o in pts)
    hull: list[T] = []
    for o in pts:
        if energy(o) > energy(first) or (hull and time(o) == time(hull[-1])):
            continue
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], o, time, energy) <= 0:
            hull.pop()
        hull.append(o)
        if energy(o) == e_min:
            break
    out = [hull[0]]
    for o in hull[1:]:
        if energy(o) < energy(out[-1]):
            out.append(o)
    return out


def _cross(a: T, b: T, c: T, time: Callable[[T], float], energy: Callable[[T], float]) -> float:
    ta, tb, tc = time(a), time(b), time(c)
    ea, eb, ec = energy(a), energy(b), energy(c)
    return (tb - ta) * (ec - ea) - (eb - ea) * (tc - ta)
