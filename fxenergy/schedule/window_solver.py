"""One window's answer for :mod:`fxenergy.schedule.decompose`: reused from an identical
earlier window when it fits, the hint when time has run out, otherwise CP-SAT's."""

from __future__ import annotations

import time as _time
from dataclasses import replace
from typing import Protocol

from fxenergy.memory.problem import buffers_problem, live_bytes
from fxenergy.schedule.cpsat.graph import Window, WindowResult, solve_window
from fxenergy.schedule.problem import Problem

_MIN_WINDOW_S = 0.2


class WindowContext(Protocol):
    """What the solver needs of the decomposition: the problem, each window's content hash
    (``contents``) and a window's reuse key."""

    p: Problem
    contents: list[int]

    def key(self, window: Window) -> tuple: ...


class WindowSolver:
    """Answers one window at a time: from an identical earlier window when its answer fits,
    from the hint when time has run out, otherwise from CP-SAT with a share of the time left."""

    def __init__(
        self, ctx: WindowContext, objective: str, deadline: float, max_shift: int, workers: int
    ) -> None:
        self.ctx, self.objective, self.deadline = ctx, objective, deadline
        self.max_shift, self.workers = max_shift, workers
        self.counts = {"windows": 0, "solved": 0, "optimal": 0, "reused": 0, "skipped": 0}
        self.cache: dict[tuple, WindowResult] = {}
        self.tried: set[int] = set()

    def solve(self, w: int, window: Window, hint_energy: float) -> WindowResult:
        """Window ``w``'s answer (``hint_energy``: the hint's energy there, the cap for
        "switches")."""
        self.counts["windows"] += 1
        left = self.deadline - _time.perf_counter()
        key = self.ctx.key(window)
        res = _from_local(window, self.cache.get(key))
        if res is not None and not _fits_memory(window, res):
            res = None
        if res is not None:
            self.counts["reused"] += 1
        elif left <= 0:  # out of time: the rest keeps the hint (still legal)
            res = WindowResult("SKIPPED", None, None, None, None)
            self.counts["skipped"] += 1
        else:
            # share the time among the distinct window contents not tried yet
            todo = set(self.ctx.contents[w:]) - self.tried
            per = max(_MIN_WINDOW_S, left / max(1, len(todo)))
            self.tried.add(self.ctx.contents[w])
            cap = int(hint_energy) if self.objective == "switches" else None
            res = solve_window(self.ctx.p, window, self.objective, per, self.workers, cap)
            self.cache[key] = _to_local(window, res)
        if res.order is not None:
            self.counts["solved"] += 1
            self.counts["optimal"] += res.status == "OPTIMAL"
        return res


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
    tensors = window.tensors
    live = live_bytes(
        buffers_problem(
            len(res.order),
            [x.size for x in tensors],
            [0 if x.producer is None else pos[x.producer] for x in tensors],  # made before: 0
            [[pos[r] for r in x.readers] for x in tensors],
            [x.live_after for x in tensors],
        ),
        range(len(res.order)),
    )
    return window.fixed_live + max(live, default=0) <= window.memory_bound
