"""CP-SAT: reorder a window of nodes to minimise peak live activation memory.

The window is ``k`` consecutive nodes of a fixed order; everything before and after stays put,
so the set of buffers alive at the window's edges is fixed and only the window's own peak can
change. Model (``s_i`` = position of node i in the window, ``p`` = step 0..k-1):

- ``AllDifferent(s)``; ``s_u + 1 ≤ s_v`` for every edge inside the window.
- buffer b is live at p when it has been produced (``a_bp``: ``s_prod ≤ p``) and is still read
  or escapes the window (``e_bp``: some reader has ``s_r ≥ p``); only the direction that forces
  a bool to 1 is encoded, which is exact for a minimisation:
  ``¬a_bp ⇒ s_prod ≥ p+1``, ``¬e_bp ⇒ s_r ≤ p-1 ∀r``, ``live_bp ≥ a_bp + e_bp − 1``.
- ``base + Σ_b size_b·live_bp ≤ peak`` for every p; minimise ``peak``.
- cut: ``peak ≥ max(base + max_i (bytes i reads + bytes i writes), max_i forced_i)``: the
  working-set bound, and the bytes every order must hold while a window node runs
  (:func:`fxenergy.memory.problem.forced_live_bytes`).
- hint: the current order; upper bound: the current window peak minus one byte (only strictly
  better windows are wanted).

The answer is checked with :func:`fxenergy.memory.problem.live_bytes` before it is accepted.
:func:`minimize_peak` is the whole search: the best of the original and the greedy orders of
:mod:`fxenergy.memory.order`, then CP-SAT windows around the peak.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from fxenergy.memory.order import bfs_order, dfs_order, lpmf_order
from fxenergy.memory.problem import (
    MemoryProblem,
    forced_live_bytes,
    is_topological,
    live_bytes,
    peak,
    working_set_bound,
    working_sets,
)


@dataclass
class WindowBuffer:
    """One buffer as the window sees it (positions are window-local)."""

    size: int
    producer: int | None  #: None: produced before the window
    readers: list[int] = field(default_factory=list)  #: includes the producer
    escapes: bool = False  #: still needed after the window


@dataclass
class Window:
    """A window ``order[start:start+len(nodes)]`` as plain data."""

    start: int
    nodes: list[int]
    preds: list[list[int]]
    buffers: list[WindowBuffer]
    base: int  #: bytes live through the whole window whatever its order
    cut: int = 0  #: a lower bound on the window's peak known from outside (forced live bytes)


def build_window(
    problem: MemoryProblem,
    order: Sequence[int],
    start: int,
    k: int,
    forced: Sequence[int] = (),
) -> Window:
    """Cut ``order[start:start+k]`` out of the problem (``forced``: per-node live bytes every
    order has, from :func:`fxenergy.memory.problem.forced_live_bytes`, used as a cut)."""
    n = len(order)
    stop = min(n, start + k)
    nodes = list(order[start:stop])
    local = {v: i for i, v in enumerate(nodes)}
    pos = {v: t for t, v in enumerate(order)}
    preds = [[local[u] for u in problem.preds[v] if u in local] for v in nodes]
    buffers, base = [], 0
    for b, size in enumerate(problem.buf_sizes):
        made = pos[problem.buf_producer[b]]
        reads = [pos[r] for r in problem.buf_readers[b]]
        last = n - 1 if problem.buf_escapes[b] else max([made, *reads])
        if last < start or made >= stop:
            continue
        escapes = problem.buf_escapes[b] or last >= stop
        producer = local.get(problem.buf_producer[b])
        if producer is None and escapes:
            base += size
            continue
        readers = [local[r] for r in problem.buf_readers[b] if r in local]
        if producer is not None:
            readers.append(producer)
        buffers.append(WindowBuffer(size, producer, readers, escapes))
    cut = max((forced[v] for v in nodes), default=0) if forced else 0
    return Window(start, nodes, preds, buffers, base, cut)


def _live_bool(model: cp_model.CpModel, s: list, buf: WindowBuffer, p: int, hint_step: list[int]):
    """A bool forced to 1 when ``buf`` is live at step p (the int 1 when always produced).

    ``hint_step`` holds the hint's position of every window node; each new bool gets its value under
    the hint, so the hint is a complete solution CP-SAT can start from.
    """
    if buf.producer is None:
        produced, hinted_produced = 1, True
    else:
        produced = model.NewBoolVar("")
        model.Add(s[buf.producer] >= p + 1).OnlyEnforceIf(produced.Not())
        hinted_produced = hint_step[buf.producer] <= p
        model.AddHint(produced, hinted_produced)
    if buf.escapes:
        return produced
    read_later = model.NewBoolVar("")
    for r in buf.readers:
        model.Add(s[r] <= p - 1).OnlyEnforceIf(read_later.Not())
    hinted_read = any(hint_step[r] >= p for r in buf.readers)
    model.AddHint(read_later, hinted_read)
    if isinstance(produced, int):
        return read_later
    live = model.NewBoolVar("")
    model.Add(live >= produced + read_later - 1)
    model.AddHint(live, hinted_produced and hinted_read)
    return live


def _working_set_cut(w: Window) -> int:
    """Every order holds the window's base and a node's working set while the node runs."""
    sets = working_sets([b.size for b in w.buffers], [b.readers for b in w.buffers], len(w.nodes))
    return max(w.base + max(sets, default=0), w.cut)


def solve_window(
    w: Window, hint: Sequence[int], upper: int, time_limit_s: float, workers: int = 1
) -> tuple[list[int], int] | None:
    """Best local order of the window (as window-local indices) and its peak, or None."""
    k = len(w.nodes)
    model = cp_model.CpModel()
    s = [model.NewIntVar(0, k - 1, f"s{i}") for i in range(k)]
    model.AddAllDifferent(s)
    for v, ps in enumerate(w.preds):
        for u in ps:
            model.Add(s[u] + 1 <= s[v])
    lower = _working_set_cut(w)
    if lower > upper:
        return None
    peak = model.NewIntVar(lower, upper, "peak")
    hint_step = [0] * k
    for i, t in enumerate(hint):
        hint_step[t] = i
        model.AddHint(s[t], i)
    for p in range(k):
        terms = [(buf.size, _live_bool(model, s, buf, p, hint_step)) for buf in w.buffers]
        const = w.base + sum(size for size, lit in terms if isinstance(lit, int))
        model.Add(
            const + sum(size * lit for size, lit in terms if not isinstance(lit, int)) <= peak
        )
    model.Minimize(peak)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.05, time_limit_s)
    solver.parameters.num_workers = workers
    status = solver.Solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    local = sorted(range(k), key=lambda i: solver.Value(s[i]))
    return local, int(solver.Value(peak))


def _starts(peak_step: int, n: int, k: int) -> list[int]:
    if n <= k:
        return [0]
    raw = [
        peak_step - k // 2,
        peak_step - k // 4,
        peak_step - 3 * k // 4,
        peak_step,
        peak_step - k + 1,
    ]
    out: list[int] = []
    for a in raw:
        a = min(max(0, a), n - k)
        if a not in out:
            out.append(a)
    return out


def improve_windows(
    problem: MemoryProblem,
    order: Sequence[int],
    *,
    window: int,
    deadline: float,
    workers: int = 1,
    per_window_s: float = 2.0,
    forced: Sequence[int] = (),
    lower_bound: int = 0,
) -> tuple[list[int], int]:
    """Improve ``order`` window by window around its peak until stuck or out of time.

    Returns the new order and how many windows improved it. Every accepted step lowers the
    window's peak as measured by :func:`~fxenergy.memory.problem.live_bytes` and keeps the
    order topological. Stops early when the peak meets ``max(lower_bound, max(forced))`` (the
    order is then optimal).
    """
    order = list(order)
    n, improved, tried = len(order), 0, set()
    bound = max(lower_bound, max(forced, default=0))
    while n and time.perf_counter() < deadline:
        tl = live_bytes(problem, order)
        peak_step = max(range(n), key=tl.__getitem__)
        if tl[peak_step] <= bound:
            break
        for a in _starts(peak_step, n, window):
            key = (a, tuple(order[a : a + window]))
            if key in tried or time.perf_counter() >= deadline:
                continue
            tried.add(key)
            if _try_window(problem, order, tl, a, window, deadline, workers, per_window_s, forced):
                improved += 1
                break
        else:
            break
    return order, improved


def _try_window(
    problem: MemoryProblem,
    order: list[int],
    tl: list[int],
    a: int,
    k: int,
    deadline: float,
    workers: int,
    per_window_s: float,
    forced: Sequence[int],
) -> bool:
    w = build_window(problem, order, a, k, forced)
    old = max(tl[a : a + len(w.nodes)])
    limit = min(per_window_s, deadline - time.perf_counter())
    # Ask only for strictly better windows: the hint already achieves ``old``.
    found = solve_window(w, list(range(len(w.nodes))), old - 1, limit, workers)
    if found is None or found[1] >= old:
        return False
    candidate = order[:a] + [w.nodes[i] for i in found[0]] + order[a + len(w.nodes) :]
    new_tl = live_bytes(problem, candidate)
    if not is_topological(problem, candidate) or max(new_tl[a : a + len(w.nodes)]) >= old:
        return False
    order[:] = candidate
    return True


@dataclass(frozen=True)
class OrderResult:
    """An order and how it was found."""

    order: tuple[int, ...]
    peak_bytes: int
    original_peak_bytes: int
    lower_bound_bytes: int
    method: str  #: "original", "lpmf", "dfs", "bfs", "hint" or "cpsat" (the last that improved it)
    solve_time_s: float
    windows_improved: int = 0


def minimize_peak(
    problem: MemoryProblem,
    *,
    time_limit_s: float = 10.0,
    window: int = 48,
    hints: Sequence[Sequence[int]] = (),
    workers: int = 1,
) -> OrderResult:
    """An order of ``problem`` with the least peak found within ``time_limit_s``.

    Starts from the best of the original order, the greedy orders of :mod:`fxenergy.memory.order`
    (``lpmf_order``, ``dfs_order``, ``bfs_order``) and ``hints``; then solves
    windows of ``window`` consecutive nodes around the peak with CP-SAT (the whole graph when it
    is that small), keeping the rest fixed, until no window improves or time runs out.
    """
    t0 = time.perf_counter()
    original = list(range(len(problem.names)))
    candidates = [("original", original), ("lpmf", lpmf_order(problem))]
    candidates += [("dfs", dfs_order(problem)), ("bfs", bfs_order(problem))]
    candidates += [("hint", list(h)) for h in hints if is_topological(problem, h)]
    method, best = min(candidates, key=lambda c: peak(problem, c[1]))
    forced = forced_live_bytes(problem)
    bound = working_set_bound(problem, forced)
    # A quarter of the budget per window: enough to prove small windows optimal, and room to
    # move on to the next peak.
    order, improved = improve_windows(
        problem,
        best,
        window=window,
        deadline=t0 + time_limit_s,
        workers=workers,
        per_window_s=max(2.0, time_limit_s / 4),
        forced=forced,
        lower_bound=bound,
    )
    if improved:
        method = "cpsat"
    return OrderResult(
        order=tuple(order),
        peak_bytes=peak(problem, order),
        original_peak_bytes=peak(problem, original),
        lower_bound_bytes=bound,
        method=method,
        solve_time_s=time.perf_counter() - t0,
        windows_improved=improved,
    )
