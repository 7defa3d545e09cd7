"""Cut a pipeline plan's clock switches where their transition windows do not pay.

:func:`fit_switches` takes a plan (clocks and clock splits) and, with every window priced by
:func:`~fxenergy.pipeline.switch_aware.switched_evaluation`'s model, undoes the splits that do
not pay (:func:`drop_unpaid_splits`), crashes the critical runs until the deadline holds (the
move costing least energy per second gained), then merges runs of one clock on a rank into a
neighbour's. :func:`reduce_switches` is the same pass for a plan without splits (the online
path's). A move changes one rank, so :class:`_Windowed` rescores only that rank and the longest
path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from fxenergy.pipeline.costs import ClockSplit, StageCosts
from fxenergy.pipeline.dag import Computation, PipelineDAG
from fxenergy.pipeline.switch_aware import last_clock, rank_durations, rank_profile
from fxenergy.schedule.cpsat.pipeline_lp import finish_times


def _segments(
    order: tuple[Computation, ...], freqs: Mapping[Computation, int], splits: Mapping
) -> list[list]:
    """Runs of one clock on a rank; a split computation ends its run (it changes clock)."""
    runs: list[list] = []
    for c in order:
        prev = runs[-1][-1] if runs else None
        if prev is not None and prev not in splits and freqs[prev] == freqs[c]:
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
    """``freqs`` with runs of clocks merged where transition windows make that cheaper or faster
    (:func:`fit_switches` of a plan without splits)."""
    return fit_switches(dag, costs, freqs, {}, deadline_s, latency_s)[0]


class _Windowed:
    """(iteration, energy) with windows of a plan whose moves change one rank at a time: each
    rank's times and energy are kept, so a move recomputes its own rank and the longest path."""

    def __init__(
        self,
        dag: PipelineDAG,
        costs: StageCosts,
        latency_s: float,
        freqs: Mapping[Computation, int],
        splits: Mapping[Computation, ClockSplit],
        horizon_s: float = 0.0,
    ) -> None:
        self.dag, self.costs, self.latency_s, self.horizon_s = dag, costs, latency_s, horizon_s
        index, self.preds, self.succs = dag.index_arrays
        self.profiles = [rank_profile(order, costs) for order in dag.rank_orders]
        self.slots = [[index[c] for c in order] for order in dag.rank_orders]
        self.ranks = [self.rank(r, freqs, splits) for r in range(dag.num_ranks)]
        self.dur = [0.0] * len(index)
        for r, (times, _) in enumerate(self.ranks):
            self._place(self.dur, r, times)

    def rank(self, r: int, freqs: Mapping, splits: Mapping) -> tuple[list[float], float]:
        """Rank ``r``'s times with windows and compute energy with windows."""
        order = self.dag.rank_orders[r]
        return rank_durations(order, self.costs, self.profiles[r], self.latency_s, freqs, splits)

    def _place(self, dur: list[float], r: int, times: list[float]) -> None:
        for k, t in zip(self.slots[r], times, strict=True):
            dur[k] = t

    def score(self, r: int, ranked: tuple[list[float], float]) -> tuple[float, float]:
        """(iteration, energy) with rank ``r`` replaced by ``ranked`` (from :meth:`rank`)."""
        dur = list(self.dur)
        self._place(dur, r, ranked[0])
        finish = [0.0] * len(dur)
        for k, preds in enumerate(self.preds):
            start = 0.0
            for q in preds:
                if finish[q] > start:
                    start = finish[q]
            finish[k] = start + dur[k]
        span = max(finish)
        until = max(span, self.horizon_s)
        energy = blocked = 0.0
        for q, (times, e) in enumerate(self.ranks):
            times, e = ranked if q == r else (times, e)
            energy += e
            blocked += until - sum(times)
        return span, energy + self.costs.blocked_power_w * blocked

    def accept(self, r: int, ranked: tuple[list[float], float]) -> None:
        """Make rank ``r``'s new times and energy the plan's."""
        self.ranks[r] = ranked
        self._place(self.dur, r, ranked[0])


def _late_then_energy(scored: tuple[float, float], deadline_s: float) -> tuple[float, float]:
    """Sort key of a windowed (iteration, energy): time over the deadline first, then energy."""
    span, energy = scored
    return (max(0.0, span - deadline_s * (1 + 1e-12)), energy)


def fit_switches(
    dag: PipelineDAG,
    costs: StageCosts,
    freqs: Mapping[Computation, int],
    splits: Mapping[Computation, ClockSplit],
    deadline_s: float,
    latency_s: float,
    horizon_s: float = 0.0,
) -> tuple[dict[Computation, int], dict[Computation, ClockSplit]]:
    """A plan's switches cut where transition windows make that cheaper or faster.

    Undoes the splits that do not pay (:func:`drop_unpaid_splits`); while the iteration with
    windows overruns ``deadline_s``, takes the move on a critical run that costs least energy
    per second gained (crashing); then sweeps every rank's runs of equal clocks and gives a run
    its left neighbour's, its right neighbour's, its next faster or the fastest clock (a split
    inside a reassigned run is undone), keeping a move as soon as it improves (time over
    ``deadline_s``, energy) — both with windows, blocked energy counted to ``max(iteration,
    horizon_s)`` — until a sweep finds nothing. Each move removes a switch or speeds a run up,
    so the all-fastest plan (no switch) is always reachable. With ``latency_s = 0`` the plan
    comes back unchanged.
    """
    out, cut = drop_unpaid_splits(dag, costs, freqs, splits, deadline_s, latency_s, horizon_s)
    if latency_s <= 0:
        return out, cut
    state = _Windowed(dag, costs, latency_s, out, cut, horizon_s)
    out, cut = _crash(state, out, cut, deadline_s)
    best = _late_then_energy(state.score(0, state.ranks[0]), deadline_s)
    improved = True
    while improved:
        improved = False
        for r, order in enumerate(dag.rank_orders):
            i = 0
            while i < len(runs := _segments(order, out, cut)):
                run = runs[i]
                for f in _run_moves(costs, runs, i, out, cut):
                    trial = {**out, **dict.fromkeys(run, f)}
                    rest = {c: v for c, v in cut.items() if c not in run}
                    ranked = state.rank(r, trial, rest)
                    if (k := _late_then_energy(state.score(r, ranked), deadline_s)) < best:
                        out, cut, best, improved = trial, rest, k, True
                        state.accept(r, ranked)
                        break
                i += 1
    return out, cut


def _run_moves(costs: StageCosts, runs: list[list], i: int, out: Mapping, cut: Mapping) -> list:
    """Clocks run ``i`` may take: its neighbours' (merging a switch away), its next faster one,
    the fastest; its own when the run ends in a split (undoing the split)."""
    run = runs[i]
    targets = [last_clock(runs[i - 1][-1], out, cut)] if i > 0 else []
    targets += [out[runs[i + 1][0]]] if i + 1 < len(runs) else []
    targets += [_faster(costs, run[0], out[run[0]]), costs.fastest(run[0]).freq_mhz]
    own = out[run[0]]
    return [f for f in dict.fromkeys(targets) if f != own or run[-1] in cut]


def _crash(state: _Windowed, out: dict, cut: dict, deadline_s: float) -> tuple[dict, dict]:
    """While the iteration with windows overruns ``deadline_s``: the move on a critical run that
    costs least energy per second gained (the time-cost trade-off's crashing step).

    Moves are priced from their own rank (time gained on its critical computations, energy
    with the blocked-power change); the few best are then scored exactly.
    """
    dag, costs = state.dag, state.costs
    index = dag.index_arrays[0]
    p, ranks = costs.blocked_power_w, dag.num_ranks
    moves: dict[int, list] = {}  # a rank's moves and their own times, kept until it changes
    for _ in range(4 * len(index)):
        finish, latest = finish_times(state.dur, state.preds, state.succs)
        span = max(finish)
        if span <= deadline_s * (1 + 1e-12):
            break
        tight = {c for c, k in index.items() if latest[k] - finish[k] <= 1e-9 * span}
        ranked = []
        for r, order in enumerate(dag.rank_orders):
            if r not in moves:
                moves[r] = _rank_moves(state, r, out, cut)
            old, old_e = state.ranks[r]
            for run, f, (new, new_e) in moves[r]:
                if not tight.intersection(run):
                    continue
                pairs = zip(order, old, new, strict=True)
                gain = sum(a - b for c, a, b in pairs if c in tight)
                if gain > 1e-12 * span:
                    de = new_e - old_e - p * (ranks * gain + sum(new) - sum(old))
                    ranked.append((de / gain, len(ranked), r, run, f, (new, new_e)))
        pick = _best_exact(state, sorted(ranked, key=lambda m: m[:2]), span)
        if pick is None:
            break
        r, run, f, new_rank = pick
        out = {**out, **dict.fromkeys(run, f)}
        cut = {c: v for c, v in cut.items() if c not in run}
        state.accept(r, new_rank)
        del moves[r]  # the other ranks' moves only read their own clocks: still valid
    return out, cut


def _rank_moves(state: _Windowed, r: int, out: dict, cut: dict) -> list:
    """Every move of rank ``r``'s runs: (run, clock, the rank's times and energy after it)."""
    runs = _segments(state.dag.rank_orders[r], out, cut)
    found = []
    for i, run in enumerate(runs):
        for f in _run_moves(state.costs, runs, i, out, cut):
            trial = {**out, **dict.fromkeys(run, f)}
            rest = {c: v for c, v in cut.items() if c not in run}
            found.append((run, f, state.rank(r, trial, rest)))
    return found


def _best_exact(state: _Windowed, ranked: list, span: float, chunk: int = 6) -> tuple | None:
    """The exactly cheapest (per second gained) of the best-estimated moves: the first chunk of
    ``ranked`` in which any move shortens the iteration (a parallel critical path can make an
    estimate's gain vanish), else the next chunk."""
    base_e = state.score(0, state.ranks[0])[1]
    for lo in range(0, len(ranked), chunk):
        pick, price = None, math.inf
        for _, _, r, run, f, new_rank in ranked[lo : lo + chunk]:
            t, e = state.score(r, new_rank)
            if t < span * (1 - 1e-12) and (e - base_e) / (span - t) < price:
                pick, price = (r, run, f, new_rank), (e - base_e) / (span - t)
        if pick is not None:
            return pick
    return None


def _faster(costs: StageCosts, c: Computation, freq_mhz: int) -> int:
    """The next faster candidate clock of ``c`` than ``freq_mhz`` (itself if none)."""
    now = costs.option(c, freq_mhz).time_s
    quicker = [o for o in costs.candidates(c) if o.time_s < now]
    return quicker[-1].freq_mhz if quicker else freq_mhz


def drop_unpaid_splits(
    dag: PipelineDAG,
    costs: StageCosts,
    freqs: Mapping[Computation, int],
    splits: Mapping[Computation, ClockSplit],
    deadline_s: float,
    latency_s: float,
    horizon_s: float = 0.0,
) -> tuple[dict[Computation, int], dict[Computation, ClockSplit]]:
    """Splits whose switch windows cost more than they save, undone.

    Each split in turn (least work at the second clock first) is tried whole at its first
    clock (faster) and whole at its second; a move is kept when it improves (time over
    ``deadline_s``, energy) with every window priced, blocked energy counted to
    ``max(iteration, horizon_s)``. With ``latency_s = 0`` nothing changes.
    """
    out_f, out_s = dict(freqs), dict(splits)
    if latency_s <= 0 or not splits:
        return out_f, out_s
    state = _Windowed(dag, costs, latency_s, out_f, out_s, horizon_s)
    best = _late_then_energy(state.score(0, state.ranks[0]), deadline_s)
    for c in sorted(splits, key=lambda c: splits[c].share):
        r = dag.rank_of[c]
        rest = {k: v for k, v in out_s.items() if k != c}
        for clock in (out_f[c], splits[c].then_mhz):
            trial = {**out_f, c: clock}
            ranked = state.rank(r, trial, rest)
            if (k := _late_then_energy(state.score(r, ranked), deadline_s)) < best:
                out_f, out_s, best = trial, rest, k
                state.accept(r, ranked)
                break
    return out_f, out_s
