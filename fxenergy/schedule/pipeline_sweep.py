"""Slack on a pipeline DAG under a deadline, and the greedy slow-down sweep that uses it.

:class:`SlackTracker` keeps exact earliest and latest finish times as computations grow;
:func:`slow_down_greedily` is one linear topological sweep that gives each computation the
slowest clock that still fits (the planner's step after rounding the LP).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: schedule/ does not import pipeline/ at run time
    from fxenergy.pipeline.costs import ClockOption, StageCosts
    from fxenergy.pipeline.dag import Computation, PipelineDAG


def slow_down_greedily(
    dag: PipelineDAG,
    costs: StageCosts,
    freqs: Mapping[Computation, int],
    deadline_s: float,
    fixed_horizon: bool = False,
    options: Mapping[Computation, Sequence[ClockOption]] | None = None,
) -> dict[Computation, int]:
    """One pass of single-computation moves to slower clocks that still fit.

    Computations are visited in topological order; each takes the slowest option (of
    ``options[c]`` if given, else its candidates) that fits in its float (the time it can
    grow without pushing the iteration past the deadline) and lowers the energy. In this
    order a computation's predecessors are final when it is visited (its finish time is
    computed then) and its successors are untouched (its latest finish, against the deadline,
    is still exact), so the pass is linear in the DAG's size.
    """
    p = costs.blocked_power_w
    per_s = 0.0 if fixed_horizon else p * dag.num_ranks
    out = dict(freqs)
    dur = [costs.option(c, out[c]).time_s for c in dag.topological]
    initial = SlackTracker(dag, list(dur), deadline_s, per_s)
    latest, span, preds = initial.latest, initial.span, initial.preds
    finish = [0.0] * len(dur)
    for k, c in enumerate(dag.topological):
        start = max([finish[q] for q in preds[k]], default=0.0)
        finish[k] = start + dur[k]
        tail = deadline_s - latest[k]  # longest path after k (successors unchanged so far)
        span = max(span, finish[k] + tail)
        slack = latest[k] - finish[k]
        if slack <= 1e-12 or (options is not None and c not in options):
            continue
        now = costs.option(c, out[c])
        for o in reversed(costs.candidates(c) if options is None else options[c]):
            extra = o.time_s - now.time_s
            if extra <= 0:
                break
            if extra > slack:
                continue
            gain = (o.energy_j - p * o.time_s) - (now.energy_j - p * now.time_s)
            if gain + per_s * max(0.0, finish[k] + extra + tail - span) < 0:
                out[c] = o.freq_mhz
                dur[k] += extra
                finish[k] += extra
                span = max(span, finish[k] + tail)
                break
    return out


class SlackTracker:
    """Exact floats of a DAG's computations under a deadline, updated as computations grow.

    Finish times (earliest) and latest finish times (against the deadline) are kept; growing a
    computation pushes its descendants' finish times forward and its ancestors' latest times
    back, stopping where slack absorbs the change, so a move costs only the region it touches.
    """

    def __init__(self, dag: PipelineDAG, dur: list[float], deadline_s: float, per_s: float):
        self.index, self.preds, self.succs = dag.index_arrays
        self.dur, self.deadline_s, self.per_s = dur, deadline_s, per_s
        n, preds, succs = len(dur), self.preds, self.succs
        finish = [0.0] * n
        for k in range(n):
            start = 0.0
            for q in preds[k]:
                if finish[q] > start:
                    start = finish[q]
            finish[k] = start + dur[k]
        latest = [0.0] * n
        for k in range(n - 1, -1, -1):
            end = deadline_s
            for q in succs[k]:
                if latest[q] - dur[q] < end:
                    end = latest[q] - dur[q]
            latest[k] = end
        self.finish, self.latest, self.span = finish, latest, max(finish, default=0.0)

    def float_of(self, k: int) -> float:
        """How long computation ``k`` can grow before the iteration passes the deadline."""
        return self.latest[k] - self.finish[k]

    def try_grow(self, k: int, extra: float, gain_j: float) -> bool:
        """Lengthen computation ``k`` by ``extra`` s if it fits and lowers the energy.

        ``gain_j`` is the change in effective energy; a longer makespan adds ``per_s`` J/s.
        """
        slack = self.latest[k] - self.finish[k]
        if extra > slack:
            return False
        grow = max(0.0, extra - (slack - (self.deadline_s - self.span)))
        if gain_j + self.per_s * grow >= 0:
            return False
        self._grow(k, extra)
        return True

    def _grow(self, k: int, extra: float) -> None:
        dur, finish, latest, preds, succs = (
            self.dur,
            self.finish,
            self.latest,
            self.preds,
            self.succs,
        )
        dur[k] += extra
        finish[k] += extra
        span = max(self.span, finish[k])
        todo = [k]  # forward: topological indices, smallest first
        while todo:
            j = heapq.heappop(todo)
            for s in succs[j]:
                start = max(finish[q] for q in preds[s])
                if start + dur[s] > finish[s]:
                    finish[s] = start + dur[s]
                    span = max(span, finish[s])
                    heapq.heappush(todo, s)
        self.span = span
        todo = [-q for q in preds[k]]  # backward: largest index first
        heapq.heapify(todo)
        seen = set(todo)
        while todo:
            j = -heapq.heappop(todo)
            seen.discard(-j)
            end = min((latest[q] - dur[q] for q in succs[j]), default=self.deadline_s)
            end = min(end, self.deadline_s)
            if end < latest[j]:
                latest[j] = end
                for q in preds[j]:
                    if -q not in seen:
                        seen.add(-q)
                        heapq.heappush(todo, -q)
