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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from itertools import pairwise

import numpy as np

from fxenergy.schedule.cpsat.graph import Tensor, Window, WindowResult, solve_window
from fxenergy.schedule.problem import Problem, Solution
from fxenergy.schedule.switch import sequence_cost
from fxenergy.schedule.validate import baseline_solution

_MIN_WINDOW_S = 0.2
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
    cuts = [*range(0, len(order), size), len(order)]
    spans = list(pairwise(cuts))
    ctx = _Context(problem, order, hint_clocks, spans, memory_bound)
    state = ctx.first_boundary()
    hint_time = ctx.span_time(0, len(order), state)
    # the hint's slack allocation is kept per window (so repeated blocks see equal budgets);
    # only slack a window leaves unused, or the hint left over, moves on to later windows
    carry = time_budget - hint_time
    out_order: list[int] = []
    out_clocks: list[int] = []
    counts = {"solved": 0, "optimal": 0, "reused": 0, "skipped": 0}
    res: WindowResult | None = None
    cache: dict[tuple, WindowResult] = {}
    tried: set[int] = set()
    with _progress_bar(progress, len(spans), len(order)) as advance:
        for w, (a, b) in enumerate(spans):
            left = time_limit_s - (_time.perf_counter() - started)
            budget = ctx.span_time(a, b, state) + carry
            window = ctx.window(w, a, b, state, budget, max_shift or _MAX_SHIFT)
            key = ctx.key(window)
            res = _from_local(window, cache.get(key))
            if res is not None and not _fits_memory(window, res):
                res = None
            if res is not None:
                counts["reused"] += 1
            elif left <= 0:  # out of time: the rest keeps the hint (still legal)
                res = WindowResult("SKIPPED", None, None, None, None)
                counts["skipped"] += 1
            else:
                # share the time among the distinct window contents not tried yet
                todo = ctx.contents[w:]
                per = max(_MIN_WINDOW_S, left / max(1, len(set(todo) - tried)))
                tried.add(ctx.contents[w])
                cap = int(ctx.span_energy(a, b, state)) if objective == "switches" else None
                res = solve_window(problem, window, objective, per, workers, cap)
                cache[key] = _to_local(window, res)
            if res.order is not None:
                counts["solved"] += 1
                counts["optimal"] += res.status == "OPTIMAL"
                w_order, w_clocks = list(res.order), list(res.clocks or ())
            else:
                w_order, w_clocks = order[a:b], hint_clocks[a:b]
            used = ctx.time_of(w_order, w_clocks, state)
            carry = budget - used
            state = ctx.boundary_after(w_order, w_clocks, state)
            out_order += w_order
            out_clocks += w_clocks
            advance(b - a, res.status, counts["reused"], counts["optimal"])
    clocks = [0] * problem.num_tasks
    for t, c in zip(out_order, out_clocks, strict=True):
        clocks[t] = c
    # one window holding every task with no shift limit is the whole problem: its status and
    # bound are global (not for "switches", whose window carries the hint's energy as a cap)
    whole = len(spans) == 1 and len(order) <= (max_shift or _MAX_SHIFT) + 1
    exact = whole and objective != "switches" and res is not None and res.order is not None
    notes = (
        f"CP-SAT: {len(spans)} windows of <= {size} tasks, {counts['solved']} solved "
        f"({counts['optimal']} proved optimal, {counts['reused']} reused from identical windows, "
        f"{counts['skipped']} kept the hint for lack of time) "
        f"in {_time.perf_counter() - started:.1f} s",
    )
    return WindowsRun(
        solution=Solution(tuple(out_order), tuple(clocks)),
        status="OPTIMAL" if exact and res.status == "OPTIMAL" else "FEASIBLE",
        bound=res.bound if exact else None,
        windows=len(spans),
        notes=notes,
        **counts,
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
        self.need = problem.switch.latency
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
            wt = self.win[t]
            readers = sorted({self.win[c] for c in self.p.consumers[t]} - {wt})
            for lo, hi in _fixed_ranges(wt, readers, task.is_output, windows):
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
        while pos >= 0 and clocks[pos] == c and run < 2 * self.need:
            run += self.p.tasks[order[pos]].durations[c]
            pos -= 1
        if pos < 0 and c == state.clock:
            run += state.run
        elif pos < 0 and state.head and not self.p.cyclic:
            run -= self.need
        return min(run, self.need)

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
    wt: int, readers: list[int], is_output: bool, windows: int
) -> list[tuple[int, int]]:
    """Window ranges ``[lo, hi)`` where a tensor made in window ``wt`` is live but unmodelled.

    Windows that read it model it themselves; the windows strictly between two readers (and,
    for a graph output, every window after its last reader) hold it whole.
    """
    bounds = [wt, *readers, windows] if is_output else [wt, *readers]
    return [(lo + 1, hi) for lo, hi in pairwise(bounds) if hi > lo + 1]


def _to_local(window: Window, res: WindowResult) -> WindowResult:
    """A window answer with task ids replaced by positions in ``window.tasks`` (for reuse)."""
    if res.order is None:
        return res
    local = {t: i for i, t in enumerate(window.tasks)}
    return replace(res, order=tuple(local[t] for t in res.order))


def _from_local(window: Window, res: WindowResult | None) -> WindowResult | None:
    """A cached answer mapped onto this window's tasks."""
    if res is None or res.order is None:
        return res
    return replace(res, order=tuple(window.tasks[i] for i in res.order))


def _fits_memory(window: Window, res: WindowResult) -> bool:
    """Whether a cached window answer keeps this window's live bytes under its bound."""
    if res.order is None:
        return True  # the hint: it fits whenever the hint fits
    pos = {t: k for k, t in enumerate(res.order)}
    n = len(res.order)
    delta = [0] * (n + 1)
    for x in window.tensors:
        first = 0 if x.producer is None else pos[x.producer]
        last = n - 1 if x.live_after else max([pos[r] for r in x.readers] + [first])
        delta[first] += x.size
        delta[last + 1] -= x.size
    live, run = 0, 0
    for k in range(n):
        run += delta[k]
        live = max(live, run)
    return window.fixed_live + live <= window.memory_bound


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


@contextmanager
def _progress_bar(enabled: bool, windows: int, tasks: int) -> Iterator:
    """A rich progress bar over windows; yields ``advance(tasks, status, reused, optimal)``."""
    if not enabled:
        yield lambda *_: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]scheduling[/] {task.fields[status]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "tasks · {task.fields[windows]} windows · {task.fields[optimal]} optimal · "
            "{task.fields[reused]} reused"
        ),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        job = bar.add_task("schedule", total=tasks, status="", windows=windows, reused=0, optimal=0)
        yield lambda n, status, reused, optimal: bar.update(
            job, advance=n, status=status, reused=reused, optimal=optimal
        )
