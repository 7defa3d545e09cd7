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

:func:`switched_evaluation` evaluates a plan with those windows; :func:`reduce_switches` merges
runs of equal clocks on a rank into a neighbouring run (one switch fewer per move) while that
meets the deadline or lowers the energy; :func:`drop_unpaid_splits` undoes the clock splits
(:class:`~fxenergy.pipeline.costs.ClockSplit`) whose own switch costs more than it saves. With
``latency_s = 0`` both return the plan unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

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


def switched_evaluation(
    dag: PipelineDAG,
    costs: StageCosts,
    freqs: Mapping[Computation, int],
    latency_s: float,
    profiles: list[Profile] | None = None,
    splits: Mapping[Computation, ClockSplit] | None = None,
) -> tuple[float, float]:
    """(iteration time, energy) with a late switch's window at every clock change.

    In steady state a rank's first computation follows the previous iteration's last one, so
    the first switch of an iteration is counted against the rank's last clock. A split
    computation adds the window of its own switch (:func:`split_window`).
    """
    index, preds, _ = dag.index_arrays
    profiles = profiles or [rank_profile(order, costs) for order in dag.rank_orders]
    splits = splits or {}
    dur = [0.0] * len(index)
    energy = 0.0
    busy = []
    for order, profile in zip(dag.rank_orders, profiles, strict=True):
        prev, total = last_clock(order[-1], freqs, splits), 0.0
        for c in order:
            f = freqs[c]
            o = costs.run(c, f, splits.get(c))
            dt, de = switch_window(profile, latency_s, prev, f)
            if c in splits:
                st, se = split_window(profile, latency_s, f, splits[c])
                dt, de = dt + st, de + se
            dur[index[c]] = o.time_s + dt
            energy += o.energy_j + de
            total += o.time_s + dt
            prev = last_clock(c, freqs, splits)
        busy.append(total)
    finish = [0.0] * len(dur)
    for k in range(len(dur)):
        start = 0.0
        for q in preds[k]:
            if finish[q] > start:
                start = finish[q]
        finish[k] = start + dur[k]
    span = max(finish)
    return span, energy + costs.blocked_power_w * sum(span - b for b in busy)


def _segments(order: tuple[Computation, ...], freqs: Mapping[Computation, int]) -> list[list]:
    runs: list[list] = []
    for c in order:
        if runs and freqs[runs[-1][0]] == freqs[c]:
            runs[-1].append(c)
        else:
            runs.append([c])
    return runs


def reduce_switches(
    dag: PipelineDAG,
    costs: StageCosts,
    freqs: Mapping[Computation, int],
    deadline_s: float,
    latency_s: float,
) -> dict[Computation, int]:
    """``freqs`` with runs of clocks merged where transition windows make that cheaper or faster.

    Sweeps every rank's runs of equal clocks and gives a run its left neighbour's, its right
    neighbour's or the fastest clock, keeping a move as soon as it improves (time over
    ``deadline_s``, energy) — both with windows — until a sweep finds nothing. Each move removes
    a switch or speeds a run up, so the all-fastest plan (no switch) is always reachable.
    """
    out = dict(freqs)
    if latency_s <= 0:
        return out
    profiles = [rank_profile(order, costs) for order in dag.rank_orders]

    def key(plan: Mapping[Computation, int]) -> tuple[float, float]:
        t, e = switched_evaluation(dag, costs, plan, latency_s, profiles)
        return (max(0.0, t - deadline_s * (1 + 1e-12)), e)

    best = key(out)
    improved = True
    while improved:
        improved = False
        for order in dag.rank_orders:
            i = 0
            while i < len(runs := _segments(order, out)):
                run = runs[i]
                targets = [out[runs[j][0]] for j in (i - 1, i + 1) if 0 <= j < len(runs)]
                targets.append(costs.fastest(run[0]).freq_mhz)
                for f in dict.fromkeys(targets):
                    if f == out[run[0]]:
                        continue
                    trial = {**out, **dict.fromkeys(run, f)}
                    if (k := key(trial)) < best:
                        out, best, improved = trial, k, True
                        break
                i += 1
    return out


def rank_windows(
    order: tuple[Computation, ...],
    costs: StageCosts,
    freqs: Mapping[Computation, int],
    latency_s: float,
    splits: Mapping[Computation, ClockSplit] | None = None,
) -> tuple[float, float]:
    """Extra (time, energy) of one rank's switch windows per steady iteration (it starts at its
    last clock), as :func:`switched_evaluation` charges them."""
    profile = rank_profile(order, costs)
    splits = splits or {}
    prev, t, e = last_clock(order[-1], freqs, splits), 0.0, 0.0
    for c in order:
        dt, de = switch_window(profile, latency_s, prev, freqs[c])
        if c in splits:
            st, se = split_window(profile, latency_s, freqs[c], splits[c])
            dt, de = dt + st, de + se
        t, e, prev = t + dt, e + de, last_clock(c, freqs, splits)
    return t, e


def drop_unpaid_splits(
    dag: PipelineDAG,
    costs: StageCosts,
    freqs: Mapping[Computation, int],
    splits: Mapping[Computation, ClockSplit],
    deadline_s: float,
    latency_s: float,
) -> tuple[dict[Computation, int], dict[Computation, ClockSplit]]:
    """Splits whose switch windows cost more than they save, undone.

    Each split in turn (least work at the second clock first) is tried whole at its first
    clock (faster) and whole at its second; a move is kept when it improves (time over
    ``deadline_s``, energy) with every window priced. With ``latency_s = 0`` nothing changes.
    """
    out_f, out_s = dict(freqs), dict(splits)
    if latency_s <= 0 or not splits:
        return out_f, out_s
    profiles = [rank_profile(order, costs) for order in dag.rank_orders]

    def key(f: Mapping, s: Mapping) -> tuple[float, float]:
        t, e = switched_evaluation(dag, costs, f, latency_s, profiles, s)
        return (max(0.0, t - deadline_s * (1 + 1e-12)), e)

    best = key(out_f, out_s)
    for c in sorted(splits, key=lambda c: splits[c].share):
        rest = {k: v for k, v in out_s.items() if k != c}
        for clock in (out_f[c], splits[c].then_mhz):
            trial = {**out_f, c: clock}
            if (k := key(trial, rest)) < best:
                out_f, out_s, best = trial, rest, k
                break
    return out_f, out_s
