"""CP-SAT model of one window of a graph schedule: an order and a clock per task.

Variables (``n`` tasks, positions ``0..n-1``, ``C`` clocks):

* ``x[t][k]`` — task ``t`` runs at position ``k`` (only for ``k`` within ``max_shift`` of its
  hint position and inside its ASAP/ALAP range in the window's DAG);
* ``b[t][c]`` — task ``t`` runs at clock ``c``; ``z[k][c]`` — position ``k`` runs at clock ``c``,
  linked by the clauses ``x[t][k] ∧ b[t][c] → z[k][c]``;
* ``s[k]`` — a switch before position ``k`` (``s[k] ≥ z[k][c] − z[k−1][c]``);
* ``wt[k]``, ``we[k]`` — time and energy of the transition window of the switch before
  position ``k`` (the one switch model, :mod:`fxenergy.schedule.switch`): for each clock ``b``,
  ``wt[k] ≥ Σ_a window[a][b]·z[k−1][a] − M·(1 − z[k][b])`` — exact, since one ``z[k−1][a]`` is 1;
* ``dur[k]``, ``acc[k]`` — duration of position ``k`` and time its partition has run so far,
  used to keep every partition long enough for the transition windows it hosts;
* ``l[m][k]`` — tensor ``m`` is live at position ``k`` (lower-bounded linearly by "produced at or
  before ``k``" and "some reader at or after ``k``"); the live bytes at each position stay under
  the memory bound.

Time is ``Σ dur(t, c)·b[t][c] + Σ wt``; energy likewise. Objectives: energy, peak memory,
or switches (at no more energy than the hint). The hint (a legal window schedule) is given to
CP-SAT and, when it meets the budgets, bounds the objective from above.
"""

from __future__ import annotations

from dataclasses import dataclass

from ortools.sat.python import cp_model

from fxenergy.schedule.problem import Problem

_STATUS = {
    cp_model.OPTIMAL: "OPTIMAL",
    cp_model.FEASIBLE: "FEASIBLE",
    cp_model.INFEASIBLE: "INFEASIBLE",
    cp_model.MODEL_INVALID: "MODEL_INVALID",
    cp_model.UNKNOWN: "UNKNOWN",
}


@dataclass(frozen=True)
class Tensor:
    """An activation whose liveness depends on the window's order.

    ``producer`` is a window task, or None for a tensor made before the window (live from the
    window's start). ``readers`` are window tasks that read it; ``live_after`` keeps it live to
    the window's end (read by a later window, or a graph output).
    """

    size: int
    producer: int | None
    readers: tuple[int, ...]
    live_after: bool


@dataclass(frozen=True)
class Window:
    """One window: its tasks in hint order, its boundary state and its budgets.

    Attributes:
        tasks: task ids in the hint's order.
        hint_clocks: the hint's clock per position.
        edges: precedence pairs between window tasks (task ids).
        incoming_clock: clock the GPU is at before the first position.
        incoming_run: time units the partition at ``incoming_clock`` has already run, less the
            windows it hosts already (may be negative after a head window).
        end_clock: the last position's clock (fixed, so the next window's start is known);
            None leaves it free (the graph's last window).
        end_min_run: time the last partition must have run by the window's end (less its head
            window, if it has one).
        time_budget: most time units the window may take (its tasks and switches).
        fixed_live: bytes live at every position whatever the order (baseline included).
        tensors: activations whose liveness the order decides.
        memory_bound: most bytes live at any position.
        max_shift: how far (positions) a task may move from its hint position.
        head: a switch into position 0 is a run's first switch, requested at its start (a
            head window in the first partition) rather than issued ahead.
    """

    tasks: tuple[int, ...]
    hint_clocks: tuple[int, ...]
    edges: tuple[tuple[int, int], ...]
    incoming_clock: int
    incoming_run: int
    end_clock: int | None
    end_min_run: int
    time_budget: int
    fixed_live: int
    tensors: tuple[Tensor, ...]
    memory_bound: int
    max_shift: int
    head: bool = False


@dataclass(frozen=True)
class WindowResult:
    """CP-SAT's answer for one window (``order`` None when it found nothing)."""

    status: str
    order: tuple[int, ...] | None
    clocks: tuple[int, ...] | None  #: clock per position of ``order``
    objective: float | None
    bound: float | None


def solve_window(
    problem: Problem,
    window: Window,
    objective: str = "energy",
    time_limit_s: float = 1.0,
    workers: int = 1,
    energy_cap: int | None = None,
) -> WindowResult:
    """Build and solve the CP-SAT model of ``window``.

    ``energy_cap`` bounds the window's energy (used by the ``switches`` objective).
    """
    model = _WindowModel(problem, window)
    model.build(objective, energy_cap)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.01, time_limit_s)
    solver.parameters.num_workers = max(1, workers)
    code = solver.solve(model.m)
    status = _STATUS.get(code, str(code))
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return WindowResult(status, None, None, None, None)
    order, clocks = model.read(solver)
    return WindowResult(status, order, clocks, solver.objective_value, solver.best_objective_bound)


class _WindowModel:
    """The CP-SAT model of one window, built in small named steps."""

    def __init__(self, problem: Problem, window: Window) -> None:
        self.p = problem
        self.w = window
        self.m = cp_model.CpModel()
        self.n = len(window.tasks)
        self.local = {t: i for i, t in enumerate(window.tasks)}
        self.ranges = _position_ranges(self.n, self._local_edges(), window.max_shift)

    def build(self, objective: str, energy_cap: int | None) -> None:
        self._add_positions()
        self._add_precedence()
        self._add_frequency_choice()
        self._add_switches()
        self._add_time_budget()
        self._add_min_partition()
        self._add_memory(objective == "memory")
        self._add_objective(objective, energy_cap)
        self._add_hint()

    def _local_edges(self) -> list[tuple[int, int]]:
        return [(self.local[u], self.local[v]) for u, v in self.w.edges]

    def _add_positions(self) -> None:
        """``x[i][k]``: every task at one position, every position holds one task."""
        self.x: list[dict[int, cp_model.IntVar]] = []
        by_pos: list[list[cp_model.IntVar]] = [[] for _ in range(self.n)]
        for i, (lo, hi) in enumerate(self.ranges):
            row = {k: self.m.new_bool_var(f"x{i}_{k}") for k in range(lo, hi + 1)}
            self.m.add_exactly_one(row.values())
            for k, var in row.items():
                by_pos[k].append(var)
            self.x.append(row)
        for k in range(self.n):
            self.m.add_exactly_one(by_pos[k])
        self.pos = [sum(k * v for k, v in row.items()) for row in self.x]

    def _add_precedence(self) -> None:
        """Data and side-effect edges point forward in the order."""
        for u, v in self._local_edges():
            self.m.add(self.pos[u] + 1 <= self.pos[v])

    def _add_frequency_choice(self) -> None:
        """``b[i][c]`` per task, ``z[k][c]`` per position, linked through ``x``."""
        nc = self.p.num_clocks
        self.b = [[self.m.new_bool_var(f"b{i}_{c}") for c in range(nc)] for i in range(self.n)]
        self.z = [[self.m.new_bool_var(f"z{k}_{c}") for c in range(nc)] for k in range(self.n)]
        for row in (*self.b, *self.z):
            self.m.add_exactly_one(row)
        for i, row in enumerate(self.x):
            for k, xv in row.items():
                for c in range(nc):
                    self.m.add_bool_or([xv.Not(), self.b[i][c].Not(), self.z[k][c]])
        if self.n and self.w.end_clock is not None:
            self.m.add(self.z[self.n - 1][self.w.end_clock] == 1)

    def _add_switches(self) -> None:
        """``s[k] = 1`` when position ``k``'s clock differs from position ``k−1``'s; ``wt[k]``,
        ``we[k]``: that switch's transition window."""
        nc = self.p.num_clocks
        self.s = [self.m.new_bool_var(f"s{k}") for k in range(self.n)]
        window = self.p.switch_costs.window
        self.wt: list[cp_model.LinearExprT] = []
        self.we: list[cp_model.LinearExprT] = []
        for k in range(self.n):
            for c in range(nc):
                prev = int(c == self.w.incoming_clock) if k == 0 else self.z[k - 1][c]
                self.m.add(self.s[k] >= self.z[k][c] - prev)
            for part, out in ((0, self.wt), (1, self.we)):
                out.append(self._window_term(k, window, part))

    def _window_term(self, k: int, window: tuple, part: int) -> cp_model.LinearExprT:
        """The window time (``part`` 0) or energy (1) of the switch before position ``k``."""
        nc = self.p.num_clocks
        a0 = self.w.incoming_clock
        if k == 0:  # the clock before is a constant
            cost = [window[b][a0] if self.w.head else window[a0][b] for b in range(nc)]
            return sum(int(cost[b][part]) * self.z[0][b] for b in range(nc))
        top = max(int(window[a][b][part]) for a in range(nc) for b in range(nc))
        if top == 0:
            return 0
        var = self.m.new_int_var(0, top, f"w{part}_{k}")
        for b in range(nc):
            into = sum(int(window[a][b][part]) * self.z[k - 1][a] for a in range(nc))
            self.m.add(var >= into - top * (1 - self.z[k][b]))
        return var

    def _task_terms(self, attr: str) -> cp_model.LinearExpr:
        return sum(
            getattr(self.p.tasks[t], attr)[c] * self.b[i][c]
            for i, t in enumerate(self.w.tasks)
            for c in range(self.p.num_clocks)
        )

    def _add_time_budget(self) -> None:
        self.time = self._task_terms("durations") + sum(self.wt)
        self.energy = self._task_terms("energies") + sum(self.we)
        self.m.add(self.time <= self.w.time_budget)

    def _add_min_partition(self) -> None:
        """Every partition's own time holds its transition windows (``latency`` each): the
        one out of it (a switch at the next position) and a head window into the first."""
        need = int(self.p.switch.latency)
        if need <= 0 or not self.n:
            return
        top = sum(max(self.p.tasks[t].durations) for t in self.w.tasks) + abs(self.w.incoming_run)
        dur = [self.m.new_int_var(0, top, f"dur{k}") for k in range(self.n)]
        acc = [self.m.new_int_var(-need, top, f"acc{k}") for k in range(self.n)]
        for i, row in enumerate(self.x):
            task = self.p.tasks[self.w.tasks[i]]
            own = sum(task.durations[c] * self.b[i][c] for c in range(self.p.num_clocks))
            for k, xv in row.items():
                self.m.add(dur[k] == own).only_enforce_if(xv)
        for k in range(self.n):
            prev = acc[k - 1] if k else self.w.incoming_run
            fresh = dur[k] - need if k == 0 and self.w.head else dur[k]
            self.m.add(acc[k] == fresh).only_enforce_if(self.s[k])
            self.m.add(acc[k] == prev + dur[k]).only_enforce_if(self.s[k].Not())
            if k + 1 < self.n:
                self.m.add(acc[k] >= need).only_enforce_if(self.s[k + 1])
        if not self.w.head and self.w.incoming_run < need:
            self.m.add(self.s[0] == 0)  # the open partition cannot host a window
        self.m.add(acc[self.n - 1] >= self.w.end_min_run)
        if self.w.end_clock is None:  # the run ends here: a head window must fit too
            self.m.add(acc[self.n - 1] >= 0)
        self.dur, self.acc = dur, acc

    def _add_memory(self, minimise: bool) -> None:
        """Live bytes at each position stay under the bound (or under ``peak`` when minimised).

        Liveness variables are made only at positions where the bound could bind: where every
        tensor that might be live there, live at once, would exceed it.
        """
        spans = [self._live_span(t) for t in self.w.tensors]
        most = [self.w.fixed_live] * self.n
        for tensor, (first, last) in zip(self.w.tensors, spans, strict=True):
            for k in range(first, last + 1):
                most[k] += tensor.size
        if minimise:
            self.peak = self.m.new_int_var(0, max(most, default=self.w.fixed_live), "peak")
            watch = set(range(self.n))
        else:
            watch = {k for k in range(self.n) if most[k] > self.w.memory_bound}
        live: dict[int, list[cp_model.LinearExpr]] = {k: [] for k in watch}
        for j, (tensor, (first, last)) in enumerate(zip(self.w.tensors, spans, strict=True)):
            for k in watch.intersection(range(first, last + 1)):
                live[k].append(tensor.size * self._live_var(j, tensor, k))
        cap = self.peak if minimise else self.w.memory_bound
        for terms in live.values():
            self.m.add(self.w.fixed_live + sum(terms) <= cap)

    def _live_span(self, tensor: Tensor) -> tuple[int, int]:
        """Positions where ``tensor`` might be live in some order of the window."""
        prod = None if tensor.producer is None else self.local[tensor.producer]
        first = 0 if prod is None else self.ranges[prod][0]
        if tensor.live_after:
            return first, self.n - 1
        ends = [self.ranges[self.local[r]][1] for r in tensor.readers]
        return first, max([*ends, *([] if prod is None else [self.ranges[prod][1]])])

    def _live_var(self, j: int, tensor: Tensor, k: int) -> cp_model.IntVar:
        """A literal forced to 1 when ``tensor`` is live at position ``k``."""
        prod = None if tensor.producer is None else self.local[tensor.producer]
        lv = self.m.new_bool_var(f"l{j}_{k}")
        made = 1 if prod is None else sum(v for kk, v in self.x[prod].items() if kk <= k)
        if tensor.live_after:
            self.m.add(lv >= made)
        elif prod is not None and not tensor.readers:
            self.m.add(lv >= self.x[prod].get(k, 0))
        for r in tensor.readers:
            later = sum(v for kk, v in self.x[self.local[r]].items() if kk >= k)
            self.m.add(lv >= made + later - 1)
        return lv

    def _add_objective(self, objective: str, energy_cap: int | None) -> None:
        if energy_cap is not None:
            self.m.add(self.energy <= energy_cap)
        if objective == "memory":
            self.m.minimize(self.peak)
        elif objective == "switches":
            self.m.minimize(sum(self.s))
        else:
            self.m.minimize(self.energy)

    def _add_hint(self) -> None:
        """The window's hint order and clocks, as a full CP-SAT hint."""
        clock_at = self.w.hint_clocks
        for k, t in enumerate(self.w.tasks):
            i = self.local[t]
            for kk, v in self.x[i].items():
                self.m.add_hint(v, kk == k)
            for c in range(self.p.num_clocks):
                self.m.add_hint(self.b[i][c], clock_at[k] == c)
                self.m.add_hint(self.z[k][c], clock_at[k] == c)
            prev = clock_at[k - 1] if k else self.w.incoming_clock
            self.m.add_hint(self.s[k], clock_at[k] != prev)

    def read(self, solver: cp_model.CpSolver) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The solved order (task ids) and clock per position."""
        at = [0] * self.n
        for i, row in enumerate(self.x):
            for k, v in row.items():
                if solver.boolean_value(v):
                    at[k] = i
        order = tuple(self.w.tasks[i] for i in at)
        clocks = tuple(
            next(c for c in range(self.p.num_clocks) if solver.boolean_value(self.b[i][c]))
            for i in at
        )
        return order, clocks


def _position_ranges(n: int, edges: list[tuple[int, int]], max_shift: int) -> list[tuple[int, int]]:
    """Feasible positions per task: ASAP/ALAP in the window DAG, within ``max_shift`` of hint."""
    anc = [0] * n  # bitsets of ancestors; tasks are in hint (topological) order
    preds: list[list[int]] = [[] for _ in range(n)]
    for u, v in edges:
        preds[v].append(u)
    for v in range(n):
        for u in preds[v]:
            anc[v] |= anc[u] | (1 << u)
    desc_count = [0] * n
    for v in range(n):
        a = anc[v]
        while a:
            low = a & -a
            desc_count[low.bit_length() - 1] += 1
            a ^= low
    return [
        (max(anc[i].bit_count(), i - max_shift), min(n - 1 - desc_count[i], i + max_shift))
        for i in range(n)
    ]
