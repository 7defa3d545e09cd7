"""A pipeline plan's clock switches under the one switch model, and a pass that merges them.

The planner treats clock switches as free (as Perseus does). On a GPU a switch is not free
(:mod:`fxenergy.schedule.switch`): the new clock is in force ``latency`` after the request and
the transition window runs at the slower and hungrier of the two clocks. A pipeline rank's
:class:`~fxenergy.pipeline.runner.ClockPlanHook` requests each computation's clock when the GPU
reaches that computation (the boundary), so every switch is a **late** one: its window is the
*head* of the computation that follows, costed ``window_cost(latency, new clock, old clock)``
from the rank's cycle (its forward/backward work at each clock) — exactly what the simulated GPU
(``SimulatedBackend.set_clock``) charges. Issuing ahead would need the boundary's time known
``latency`` in advance, but a computation starts when its peer's activation arrives, which the
rank does not know beforehand; the late switch is what the hook can promise.

:func:`switched_evaluation` evaluates a plan with those windows (splits' own included);
:mod:`fxenergy.pipeline.switch_fit` cuts a plan's switches where their windows do not pay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from fxenergy.pipeline.costs import ClockSplit, StageCosts
from fxenergy.pipeline.dag import Computation, PipelineDAG
from fxenergy.schedule.switch import window_cost

Profile = Callable[[int], tuple[float, float]]


def rank_profile(order: tuple[Computation, ...], costs: StageCosts) -> Profile:
    """(time, energy) at a clock of one rank's cycle: each of its (stage, kind) once, as the
    simulated GPU describes a window's work (the distinct work it has run)."""
    kinds = {(c[0], c[1]): c for c in order}
    memo: dict[int, tuple[float, float]] = {}

    def at(mhz: int) -> tuple[float, float]:
        if mhz not in memo:
            opts = [costs.option(c, mhz) for c in kinds.values()]
            memo[mhz] = (sum(o.time_s for o in opts), sum(o.energy_j for o in opts))
        return memo[mhz]

    return at


def switch_window(profile: Profile, latency_s: float, prev: int, new: int) -> tuple[float, float]:
    """Extra (time, energy) of a late switch ``prev → new``: the window is the head of the work
    at ``new`` (:func:`fxenergy.schedule.switch.window_cost`); (0, 0) when nothing changes."""
    if prev == new or latency_s <= 0:
        return 0.0, 0.0
    return window_cost(latency_s, *profile(new), *profile(prev))


def split_window(
    profile: Profile, latency_s: float, first: int, split: ClockSplit
) -> tuple[float, float]:
    """Extra (time, energy) of the switch inside a split computation.

    The switch's time within the computation is known (``split.after_s`` after its start), so
    the runtime issues it ``latency`` ahead: the window is the tail of the first part, at the
    slower and hungrier clock. A first part shorter than the latency cannot host it; that
    switch lands late (the window is the head of the second part).
    """
    if latency_s <= 0:
        return 0.0, 0.0
    if split.after_s >= latency_s:
        return window_cost(latency_s, *profile(first), *profile(split.then_mhz))
    return window_cost(latency_s, *profile(split.then_mhz), *profile(first))


def last_clock(c: Computation, freqs: Mapping[Computation, int], splits: Mapping) -> int:
    """The clock a computation ends at (its split's second clock, if split)."""
    return splits[c].then_mhz if c in splits else freqs[c]


def _hosted_windows(
    order: tuple[Computation, ...],
    profile: Profile,
    latency_s: float,
    freqs: Mapping[Computation, int],
    splits: Mapping[Computation, ClockSplit],
) -> Iterator[tuple[Computation, float, float]]:
    """Each computation of a rank with the extra (time, energy) of the windows it hosts: the
    late switch into it, and its split's own; the rank starts at its last clock (steady state)."""
    prev = last_clock(order[-1], freqs, splits)
    for c in order:
        dt, de = switch_window(profile, latency_s, prev, freqs[c])
        if c in splits:
            st, se = split_window(profile, latency_s, freqs[c], splits[c])
            dt, de = dt + st, de + se
        yield c, dt, de
        prev = last_clock(c, freqs, splits)


def rank_durations(
    order: tuple[Computation, ...],
    costs: StageCosts,
    profile: Profile,
    latency_s: float,
    freqs: Mapping[Computation, int],
    splits: Mapping[Computation, ClockSplit],
) -> tuple[list[float], float]:
    """One rank's computation times with their windows (in its order), and its compute energy
    with windows; the rank starts at its last clock (steady state)."""
    dur, energy = [], 0.0
    for c, dt, de in _hosted_windows(order, profile, latency_s, freqs, splits):
        o = costs.run(c, freqs[c], splits.get(c))
        dur.append(o.time_s + dt)
        energy += o.energy_j + de
    return dur, energy


def switched_durations(
    dag: PipelineDAG,
    costs: StageCosts,
    freqs: Mapping[Computation, int],
    latency_s: float,
    profiles: list[Profile],
    splits: Mapping[Computation, ClockSplit],
) -> tuple[list[float], float, list[float]]:
    """Each computation's time with its windows (topological order), the compute energy with
    windows, and each rank's busy time (see :func:`switched_evaluation`)."""
    index = dag.index_arrays[0]
    dur = [0.0] * len(index)
    energy = 0.0
    busy = []
    for order, profile in zip(dag.rank_orders, profiles, strict=True):
        times, e = rank_durations(order, costs, profile, latency_s, freqs, splits)
        for c, t in zip(order, times, strict=True):
            dur[index[c]] = t
        energy += e
        busy.append(sum(times))
    return dur, energy, busy


def switched_evaluation(
    dag: PipelineDAG,
    costs: StageCosts,
    freqs: Mapping[Computation, int],
    latency_s: float,
    profiles: list[Profile] | None = None,
    splits: Mapping[Computation, ClockSplit] | None = None,
    horizon_s: float = 0.0,
) -> tuple[float, float]:
    """(iteration time, energy) with a late switch's window at every clock change.

    In steady state a rank's first computation follows the previous iteration's last one, so
    the first switch of an iteration is counted against the rank's last clock. A split
    computation adds the window of its own switch (:func:`split_window`). Blocked energy is
    counted to ``max(iteration, horizon_s)`` (a straggler's horizon), as the evaluator does.
    """
    _, preds, _ = dag.index_arrays
    profiles = profiles or [rank_profile(order, costs) for order in dag.rank_orders]
    dur, energy, busy = switched_durations(dag, costs, freqs, latency_s, profiles, splits or {})
    finish = [0.0] * len(dur)
    for k in range(len(dur)):
        start = 0.0
        for q in preds[k]:
            if finish[q] > start:
                start = finish[q]
        finish[k] = start + dur[k]
    span = max(finish)
    until = max(span, horizon_s)
    return span, energy + costs.blocked_power_w * sum(until - b for b in busy)


def rank_windows(
    order: tuple[Computation, ...],
    costs: StageCosts,
    freqs: Mapping[Computation, int],
    latency_s: float,
    splits: Mapping[Computation, ClockSplit] | None = None,
) -> tuple[float, float]:
    """Extra (time, energy) of one rank's switch windows per steady iteration (it starts at its
    last clock), as :func:`switched_evaluation` charges them."""
    hosted = _hosted_windows(order, rank_profile(order, costs), latency_s, freqs, splits or {})
    extra = [(dt, de) for _, dt, de in hosted]
    return sum(dt for dt, _ in extra), sum(de for _, de in extra)
