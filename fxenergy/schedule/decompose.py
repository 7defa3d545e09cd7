"""Plan big graphs window by window, each window a small CP-SAT model.

The hint (the fixed-order DP plan, or the baseline) is cut into consecutive windows of
``window_size`` tasks. Windows are solved in order; each may reorder its own tasks and choose
their clocks, but

* its last task keeps the hint's clock, so the next window starts from a known clock (for a
  cyclic problem the first window starts from the hint's last clock, which the last window
  keeps);
* the partition open at the cut has run at least as long as the hint's did (capped at the
  switch latency, the most one window needs), so the next window's hint stays legal;
* its time budget is the hint's time for the window plus whatever earlier windows left unused;
* tensors made before the window and read after it count as fixed live bytes; the others are
  modelled.

So every window's hint is feasible, each window is no worse than the hint on the objective, and
the stitched plan meets the global deadline and memory bound whenever the hint does. Windows
with identical content and boundary state (repeated transformer blocks) reuse one answer.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from fxenergy.schedule.cpsat.graph import Tensor, Window, WindowResult
from fxenergy.schedule.problem import Problem, Solution
from fxenergy.schedule.progress import progress_bar
from fxenergy.schedule.switch import sequence_cost
from fxenergy.schedule.validate import baseline_solution
from fxenergy.schedule.window_solver import WindowSolver

_MAX_SHIFT = 16  #: positions a task may move within its window (keeps models small)


@dataclass(frozen=True)
class WindowsRun:
    """The stitched plan and what happened on the way."""

    solution: Solution | None
    status: str  #: OPTIMAL (one window holding the whole problem, proved) or FEASIBLE
    bound: float | None  #: CP-SAT's bound on the objective when one window is the whole problem
    windows: int
    solved: int  #: windows where CP-SAT returned a plan
    optimal: int  #: windows CP-SAT proved optimal
    reused: int  #: windows answered from an identical earlier window
    skipped: int  #: windows left at the hint because the time limit ran out
    notes: tuple[str, ...]


def solve_windows(
    problem: Problem,
    objective: str,
    time_budget: int,
    memory_bound: int,
    hint: Solution | None,
    time_limit_s: float,
    progress: bool = True,
    window_size: int = 48,
    max_shift: int | None = None,
    workers: int = 1,
) -> WindowsRun:
    """Solve ``problem`` window by window starting from ``hint`` (default: the baseline)."""
    started = _time.perf_counter()
    hint = hint or baseline_solution(problem)
    order = list(hint.order)
    hint_clocks = [hint.clocks[t] for t in order]
    size = _aligned_size(problem, order, max(1, window_size))
    spans = list(pairwise([*range(0, len(order), size), len(order)]))
    ctx = _Context(problem, order, hint_clocks, spans, memory_bound)
    run = WindowSolver(ctx, objective, started + time_limit_s, max_shift or _MAX_SHIFT, workers)
    state = ctx.first_boundary()
    # the hint's slack allocation is kept per window (so repeated blocks see equal budgets);
    # only slack a window leaves unused, or the hint left over, moves on to later windows
    unused_budget = time_budget - ctx.span_time(0, len(order), state)
    out_order: list[int] = []
    out_clocks: list[int] = []
    res: WindowResult | None = None
    with progress_bar(progress, len(spans), len(order)) as advance:
        for w, (a, b) in enumerate(spans):
            budget = ctx.span_time(a, b, state) + unused_budget
            window = ctx.window(w, a, b, state, budget, run.max_shift)
            res = run.solve(w, window, ctx.span_energy(a, b, state))
            if res.order is not None:
                w_order, w_clocks = list(res.order), list(res.clocks or ())
            else:
                w_order, w_clocks = order[a:b], hint_clocks[a:b]
            unused_budget = budget - ctx.time_of(w_order, w_clocks, state)
            state = ctx.boundary_after(w_order, w_clocks, state)
            out_order += w_order
            out_clocks += w_clocks
            advance(b - a, res.status, run.counts["reused"], run.counts["optimal"])
    note = (
        f"CP-SAT: {len(spans)} windows of <= {size} tasks, {run.counts['solved']} solved "
        f"({run.counts['optimal']} proved optimal, {run.counts['reused']} reused from identical "
        f"windows, {run.counts['skipped']} kept the hint for lack of time) "
        f"in {_time.perf_counter() - started:.1f} s"
    )
    whole = len(spans) == 1 and len(order) <= run.max_shift + 1
    return _stitched(problem, objective, out_order, out_clocks, res, whole, run.counts, note)


def _stitched(
    problem: Problem,
    objective: str,
    order: list[int],
    clocks_in_order: list[int],
    last: WindowResult | None,
    whole: bool,
    counts: dict[str, int],
    note: str,
) -> WindowsRun:
    """The run's answer from the windows' orders and clocks; ``whole``: one window held every
    task with no shift limit, so its status and bound are global (not for "switches", whose
    window carries the hint's energy as a cap)."""
    clocks = [0] * problem.num_tasks
    for t, c in zip(order, clocks_in_order, strict=True):
        clocks[t] = c
    exact = whole and objective != "switches" and last is not None and last.order is not None
    return WindowsRun(
        solution=Solution(tuple(order), tuple(clocks)),
        status="OPTIMAL" if exact and last.status == "OPTIMAL" else "FEASIBLE",
        bound=last.bound if exact else None,
        windows=counts["windows"],
        notes=(note,),
        **{k: v for k, v in counts.items() if k != "windows"},
    )


@dataclass(frozen=True)
class _Boundary:
    clock: int  #: clock before the window
    run: float  #: time the open partition has run, less windows it hosts (capped at latency)
    head: bool = False  #: a switch at the window's start is the run's first (non-cyclic) one


class _Context:
    """Per-problem data the windows share: hint costs, window of each task, memory facts."""

    def __init__(
        self,
        problem: Problem,
        order: list[int],
        hint_clocks: list[int],
        spans: list[tuple[int, int]],
        memory_bound: int,
    ) -> None:
        self.p = problem
        self.order = order
        self.hint_clocks = hint_clocks
        self.memory_bound = memory_bound
        self.min_partition_time = problem.switch.latency
        self.win = [0] * problem.num_tasks
        for w, (a, b) in enumerate(spans):
            for pos in range(a, b):
                self.win[order[pos]] = w
        self.fixed = self._fixed_live(len(spans))
        sig = [hash((t.durations, t.energies)) for t in problem.tasks]
        self.contents = [hash(tuple(sig[t] for t in order[a:b])) for a, b in spans]

    def _fixed_live(self, windows: int) -> list[int]:
        """Bytes live through each whole window: made earlier, read later (or graph outputs)."""
        diff = [0] * (windows + 1)
        for t, task in enumerate(self.p.tasks):
            if not task.output_bytes:
                continue
            producer_window = self.win[t]
            readers = sorted({self.win[c] for c in self.p.consumers[t]} - {producer_window})
            for lo, hi in _fixed_ranges(producer_window, readers, task.is_output, windows):
                diff[lo] += task.output_bytes
                diff[hi] -= task.output_bytes
        out, run = [], self.p.memory_baseline_bytes
        for w in range(windows):
            run += diff[w]
            out.append(run)
        return out

    def first_boundary(self) -> _Boundary:
        """The clock before the first task: the maximum, or (cyclic) the hint's last clock."""
        if not self.p.cyclic or not self.order:
            return _Boundary(clock=0, run=0, head=True)
        n = len(self.order)
        return _Boundary(clock=self.hint_clocks[-1], run=self.hint_run_at(n))

    def _switches(self, clocks: list[int], state: _Boundary) -> tuple[float, float]:
        t, e, _ = sequence_cost(self.p.switch_costs, clocks, state.clock, state.head)
        return t, e

    def time_of(self, order: list[int], clocks: list[int], state: _Boundary) -> float:
        tasks = sum(self.p.tasks[t].durations[c] for t, c in zip(order, clocks, strict=True))
        return tasks + self._switches(clocks, state)[0]

    def span_time(self, a: int, b: int, state: _Boundary) -> float:
        return self.time_of(self.order[a:b], self.hint_clocks[a:b], state)

    def span_energy(self, a: int, b: int, state: _Boundary) -> float:
        clocks = self.hint_clocks[a:b]
        tasks = sum(
            self.p.tasks[t].energies[c] for t, c in zip(self.order[a:b], clocks, strict=True)
        )
        return tasks + self._switches(clocks, state)[1]

    def hint_run_at(self, b: int) -> float:
        """Time the hint's partition open at position ``b - 1`` has run by its end, less a
        head window it hosts (capped at the latency)."""
        return self.run_back(self.order[:b], self.hint_clocks[:b], _Boundary(0, 0, True))

    def run_back(self, order: list[int], clocks: list[int], state: _Boundary) -> float:
        """Run of the partition open at the end of ``order`` (entered from ``state``)."""
        c, run, pos = clocks[-1], 0.0, len(order) - 1
        while pos >= 0 and clocks[pos] == c and run < 2 * self.min_partition_time:
            run += self.p.tasks[order[pos]].durations[c]
            pos -= 1
        if pos < 0 and c == state.clock:
            run += state.run
        elif pos < 0 and state.head and not self.p.cyclic:
            run -= self.min_partition_time
        return min(run, self.min_partition_time)

    def window(
        self, w: int, a: int, b: int, state: _Boundary, budget: int, max_shift: int
    ) -> Window:
        tasks = tuple(self.order[a:b])
        inside = set(tasks)
        edges = tuple((u, v) for u in tasks for v in self.p.successors[u] if v in inside)
        last = b == len(self.order)
        end_clock = None if last and not self.p.cyclic else self.hint_clocks[b - 1]
        return Window(
            tasks=tasks,
            hint_clocks=tuple(self.hint_clocks[a:b]),
            edges=edges,
            incoming_clock=state.clock,
            incoming_run=int(state.run),
            end_clock=end_clock,
            end_min_run=0 if end_clock is None else int(self.hint_run_at(b)),
            time_budget=int(budget),
            fixed_live=self.fixed[w],
            tensors=self._tensors(w, tasks, inside),
            memory_bound=self.memory_bound,
            max_shift=max_shift,
            head=state.head,
        )

    def _tensors(self, w: int, tasks: tuple[int, ...], inside: set[int]) -> tuple[Tensor, ...]:
        out: list[Tensor] = []
        seen: set[int] = set()
        for t in tasks:
            for u in self.p.predecessors[t]:  # tensors from earlier windows read here
                if u in inside or u in seen or not self.p.tasks[u].output_bytes:
                    continue
                if t not in self.p.consumers[u]:
                    continue
                seen.add(u)
                out.append(self._tensor(u, None, w, inside))
            if self.p.tasks[t].output_bytes:
                out.append(self._tensor(t, t, w, inside))
        return tuple(x for x in out if x is not None)

    def _tensor(self, t: int, producer: int | None, w: int, inside: set[int]) -> Tensor:
        readers = tuple(c for c in self.p.consumers[t] if c in inside)
        after = self.p.tasks[t].is_output or any(self.win[c] > w for c in self.p.consumers[t])
        return Tensor(self.p.tasks[t].output_bytes, producer, readers, after)

    def key(self, window: Window) -> tuple:
        """Content of a window up to renaming of its tasks, memory budget aside.

        A cached answer is reused only if it also fits this window's memory headroom
        (:func:`_fits_memory`): optimal under a looser bound and feasible under this one means
        optimal here too; under a tighter bound it is still a legal, hint-or-better answer.
        """
        local = {t: i for i, t in enumerate(window.tasks)}
        tasks = tuple((self.p.tasks[t].durations, self.p.tasks[t].energies) for t in window.tasks)
        tensors = tuple(
            (
                x.size,
                None if x.producer is None else local[x.producer],
                tuple(local[r] for r in x.readers),
                x.live_after,
            )
            for x in window.tensors
        )
        edges = tuple((local[u], local[v]) for u, v in window.edges)
        return (
            tasks,
            tensors,
            edges,
            window.hint_clocks,
            window.incoming_clock,
            window.incoming_run,
            window.end_clock,
            window.end_min_run,
            window.head,
            window.time_budget,
            window.max_shift,
        )

    def boundary_after(self, order: list[int], clocks: list[int], state: _Boundary) -> _Boundary:
        return _Boundary(clock=clocks[-1], run=self.run_back(order, clocks, state))


def _fixed_ranges(
    producer_window: int, readers: list[int], is_output: bool, windows: int
) -> list[tuple[int, int]]:
    """Window ranges ``[lo, hi)`` where a tensor made in window ``producer_window`` is live but
    unmodelled.

    Windows that read it model it themselves; the windows strictly between two readers (and,
    for a graph output, every window after its last reader) hold it whole.
    """
    bounds = [producer_window, *readers]
    bounds += [windows] if is_output else []
    return [(lo + 1, hi) for lo, hi in pairwise(bounds) if hi > lo + 1]


def _aligned_size(problem: Problem, order: list[int], size: int) -> int:
    """A window size that is a multiple of the graph's repeat period, when it has one.

    Transformer graphs repeat one block per layer; windows that line up with the blocks see
    identical content and reuse each other's answers. The period is the smallest shift under
    which at least 90 % of the task cost signatures repeat; the size stays within 2x of
    ``size``.
    """
    sig = np.array([hash((problem.tasks[t].durations, problem.tasks[t].energies)) for t in order])
    n = len(sig)
    for period in range(max(2, size // 4), min(4 * size, n // 3) + 1):
        if np.count_nonzero(sig[:-period] == sig[period:]) >= 0.9 * (n - period):
            return period * max(1, round(size / period))
    return size
