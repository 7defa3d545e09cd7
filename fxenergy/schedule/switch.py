"""The one model of a clock switch: plain data, no torch, no ortools.

What happens (NVML ``nvmlDeviceSetGpuLockedClocks`` on a running GPU): the CUDA stream never
stops; the new clock is in force ``latency`` after the request; in between the clock is moving
and the power controller is settling. The runtime **issues switches ahead**: it requests the
next partition's clock ``latency`` before the partition is predicted to start, so the clock lands
on the boundary. The ``latency`` seconds before the boundary, the *transition window*, run the
previous partition's work, and we charge them conservatively at the **slower and hungrier** of the
two clocks:

* the window's work runs at the speed of the slower clock (so a switch down stretches time);
* it draws the higher of the two clocks' powers (so a switch up costs energy early).

The work in the window is described by the cycle's average at each clock (``profile``: total
time and energy of the whole repeating cycle at that clock), so the cost of a switch depends only
on the two clocks. With ``T(c)``, ``P(c) = E(c) / T(c)`` and the window's work planned at clock
``p`` while the other clock is ``q``::

    slow   = max(T(p), T(q))
    done   = L · T(p) / slow                 planned time (at p) of the work the window runs
    Δtime  = L − done                        ≥ 0
    Δenergy = L · max(P(p), P(q)) − done · P(p)   ≥ 0

A switch ``a → b`` between partitions costs ``Δ(p=a, q=b)`` and its window lies in the tail of
the partition at ``a``. When nothing was there to issue ahead from (the very first partition of a
run that starts at the maximum clock), the request goes out at the partition's start and the
window is that partition's *head*: ``Δ(p=b, q=a)``.

Minimum partition length follows from that: a partition's own work (planned time at its clock)
must hold every window it hosts, ``time ≥ latency · windows`` — one for a switch out of it, one
more for a head window — otherwise two requests would overlap, or a window would run another
partition's work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SwitchModel:
    """The switch parameters of a problem.

    Attributes:
        latency: time (in the problem's time units) from a clock request to the clock in force.
        profile: ``(time per clock, energy per clock)`` of the cycle's work, describing what a
            transition window runs; None: the problem's own task totals (the usual case: the
            problem *is* the cycle).
    """

    latency: float = 0
    profile: tuple[tuple[float, ...], tuple[float, ...]] | None = None


def window_cost(
    latency: float, work_t: float, work_e: float, other_t: float, other_e: float
) -> tuple[float, float]:
    """Extra (time, energy) of one transition window (see the module docstring).

    Args:
        latency: the window's length.
        work_t, work_e: the cycle's time and energy at the clock its work was planned at.
        other_t, other_e: the same at the other clock of the switch.
    """
    if latency <= 0 or work_t <= 0:
        return 0.0, 0.0
    slow = max(work_t, other_t)
    done = latency * work_t / slow
    power = work_e / work_t
    other_power = other_e / other_t if other_t > 0 else 0.0
    return latency - done, latency * max(power, other_power) - done * power


@dataclass(frozen=True)
class SwitchCosts:
    """Every transition window's extra time and energy, by clock index.

    ``window[p][q]`` is ``(time, energy)`` of a window running work planned at clock ``p`` while
    the other clock of the switch is ``q``. A switch ``a → b`` issued ahead costs
    ``window[a][b]`` (:meth:`ahead`); a switch into ``b`` requested at the start of its partition
    (a run that starts at clock ``a``) costs ``window[b][a]`` (:meth:`late`).
    """

    latency: float
    window: tuple[tuple[tuple[float, float], ...], ...]

    def ahead(self, a: int, b: int) -> tuple[float, float]:
        """Extra (time, energy) of switching ``a → b`` issued ahead; (0, 0) when ``a == b``."""
        return self.window[a][b]

    def late(self, a: int, b: int) -> tuple[float, float]:
        """Extra (time, energy) of switching ``a → b`` at the start of the partition at ``b``."""
        return self.window[b][a]


def switch_costs(
    latency: float,
    clock_time: Sequence[float],
    clock_energy: Sequence[float],
    integer: bool = False,
) -> SwitchCosts:
    """The :class:`SwitchCosts` of a cycle whose work takes ``clock_time[c]``/``clock_energy[c]``
    at clock ``c`` (index 0 = the maximum); ``integer`` rounds every cost up."""

    def cost(p: int, q: int) -> tuple[float, float]:
        if p == q:
            return (0, 0)
        te = window_cost(latency, clock_time[p], clock_energy[p], clock_time[q], clock_energy[q])
        if not integer:
            return te
        return (_ceil(te[0]), _ceil(te[1]))

    n = len(clock_time)
    return SwitchCosts(latency, tuple(tuple(cost(p, q) for q in range(n)) for p in range(n)))


def _ceil(value: float) -> int:
    """Round up, forgiving float noise of a few ulps (1.0000000001 stays 1)."""
    return math.ceil(value - 1e-9 * max(1.0, abs(value)))


def windows_hosted(clocks: Sequence[int], cyclic: bool, start_clock: int = 0) -> list[int]:
    """Transition windows each partition (given by its clock, in run order) must hold.

    A partition followed by a switch holds that switch's window; in a non-cyclic run a first
    partition not at ``start_clock`` holds a head window. In a cyclic run the last partition
    is followed by the first (of the next run).
    """
    m = len(clocks)
    hosted = [0] * m
    for i in range(m - 1):
        hosted[i] += clocks[i] != clocks[i + 1]
    if not m:
        return hosted
    if cyclic:
        hosted[-1] += m > 1 and clocks[-1] != clocks[0]
    elif clocks[0] != start_clock:
        hosted[0] += 1
    return hosted


def short_partitions(
    times: Sequence[float], clocks: Sequence[int], latency: float, cyclic: bool
) -> list[int]:
    """Indices of partitions too short for the windows they host (``time < latency·windows``).

    In a cyclic run whose first and last partitions share a clock they are one partition across
    the wrap, so their times are added.
    """
    if latency <= 0:
        return []
    hosted = windows_hosted(clocks, cyclic)
    m = len(clocks)
    own = list(times)
    if cyclic and m > 1 and clocks[0] == clocks[-1]:
        own[0] = own[-1] = times[0] + times[-1]
        hosted[0] = hosted[-1] = hosted[0] + hosted[-1]
    return [i for i in range(m) if own[i] < latency * hosted[i]]


def sequence_cost(
    costs: SwitchCosts, clocks: Sequence[int], prev: int, head: bool
) -> tuple[float, float, int]:
    """Extra (time, energy) and count of the switches of a run of positions at ``clocks``,
    entered from clock ``prev`` (``head``: that entry switch is a head window)."""
    t = e = 0.0
    n = 0
    for i, c in enumerate(clocks):
        if c != prev:
            dt, de = costs.late(prev, c) if head and i == 0 else costs.ahead(prev, c)
            t, e, n = t + dt, e + de, n + 1
        prev = c
    return t, e, n


@dataclass(frozen=True)
class Timeline:
    """Predicted times (seconds from the run's start) of one run under issue-ahead.

    ``starts[i]``: partition ``i`` starts; ``requests[i]``: its clock is requested (None: no
    switch into it); ``end``: the run ends; ``next_request``: the request for the next run's
    first clock (None: none), issued ``latency`` before ``end``.
    """

    starts: tuple[float, ...]
    requests: tuple[float | None, ...]
    end: float
    next_request: float | None


def timeline(
    durations: Sequence[float],
    clocks: Sequence[int],
    costs: SwitchCosts,
    start_clock: int,
    next_clock: int | None,
) -> Timeline:
    """The issue-ahead timeline of partitions with planned ``durations`` at ``clocks``.

    ``start_clock``: the clock in force when the run starts (a first partition at another clock
    gets a head window, requested at time 0); ``next_clock``: what the next run starts at.
    """
    starts, requests = [], []
    t = 0.0
    prev = start_clock
    m = len(clocks)
    for i, (d, c) in enumerate(zip(durations, clocks, strict=True)):
        starts.append(t)
        if c != prev and i == 0:
            requests.append(0.0)
            t += costs.late(prev, c)[0]
        else:
            requests.append(None if c == prev else starts[-1] - costs.latency)
        t += d
        nxt = clocks[i + 1] if i + 1 < m else next_clock
        if nxt is not None and nxt != c:
            t += costs.ahead(c, nxt)[0]
        prev = c
    last = clocks[-1] if m else start_clock
    ahead = next_clock is not None and next_clock != last
    return Timeline(tuple(starts), tuple(requests), t, t - costs.latency if ahead else None)
