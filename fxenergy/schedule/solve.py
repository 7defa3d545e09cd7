"""Public entry point: :func:`solve` a scheduling :class:`~fxenergy.schedule.problem.Problem`.

``solve`` never returns a plan worse than the baseline (program order, maximum clock) and never
crashes on a hard input: every candidate (CP-SAT windows, the fixed-order greedy plan, the
baseline) is checked by :func:`~fxenergy.schedule.validate.check` and measured by
:func:`~fxenergy.schedule.validate.evaluate`; the best one that meets the deadline and the memory
bound wins, and ``notes`` says why.
"""

from __future__ import annotations

import math
import time as _time
from dataclasses import dataclass
from typing import Literal

from fxenergy.errors import InvalidScheduleError, ScheduleProblemError
from fxenergy.memory.problem import working_set_bound
from fxenergy.schedule import cluster, greedy
from fxenergy.schedule.problem import Problem, Solution
from fxenergy.schedule.validate import (
    Evaluation,
    baseline_solution,
    check,
    deadline,
    evaluate,
    memory_problem,
    peak_memory,
)

Objective = Literal["energy", "memory", "switches"]
OBJECTIVES: tuple[str, ...] = ("energy", "memory", "switches")


@dataclass(frozen=True)
class ScheduleResult:
    """What :func:`solve` decided, and how sure it is.

    Attributes:
        solution: the chosen order and clocks (always legal).
        evaluation: its time, energy, peak memory and partitions.
        baseline: the program order at the maximum clock.
        status: ``OPTIMAL`` (proved), ``FEASIBLE`` (CP-SAT plan, not proved optimal), ``GREEDY``
            (fixed-order DP plan) or ``BASELINE`` (nothing better was found; see ``notes``).
        objective: what was minimised.
        bound: a valid lower bound on the objective over all legal plans (energy units for
            ``energy``, bytes for ``memory``, switches for ``switches``); None if unknown.
        gap: ``(value - bound) / value``; None if no bound.
        deadline: largest allowed time (time units).
        memory_bound: largest allowed peak memory (bytes).
        notes: why this plan was chosen, and anything that went wrong on the way.
        solve_time_s: wall time of :func:`solve`.
    """

    solution: Solution
    evaluation: Evaluation
    baseline: Evaluation
    status: str
    objective: str
    bound: float | None
    gap: float | None
    deadline: int
    memory_bound: int
    notes: tuple[str, ...]
    solve_time_s: float

    @property
    def energy_saving(self) -> float:
        """Fraction of the baseline energy saved."""
        return self.evaluation.saving(self.baseline)

    @property
    def slowdown(self) -> float:
        """Time over the baseline time, minus one."""
        return self.evaluation.slowdown(self.baseline)


def objective_value(objective: str, ev: Evaluation) -> tuple[int, ...]:
    """Sort key of an evaluation under ``objective`` (lexicographic tie-breaks: energy, time)."""
    if objective == "energy":
        return (ev.energy, ev.time)
    if objective == "memory":
        return (ev.peak_memory, ev.energy, ev.time)
    return (ev.switches, ev.energy, ev.time)


def solve(
    problem: Problem,
    max_slowdown: float = 0.01,
    objective: Objective = "energy",
    memory_bound: int | None = None,
    time_limit_s: float = 30.0,
    progress: bool = True,
    window_size: int = 48,
    use_cpsat: bool = True,
    exact: Problem | None = None,
) -> ScheduleResult:
    """Choose an order and a clock per task: least ``objective`` within the budgets.

    Args:
        problem: the tasks, clocks, edges and switch model.
        max_slowdown: allowed time over the baseline time (0.01 = 1 %).
        objective: ``"energy"`` (default), ``"memory"`` (least peak live memory) or
            ``"switches"`` (fewest clock switches at no more energy than the greedy plan).
        memory_bound: largest allowed peak memory in bytes; default: the baseline's peak.
        time_limit_s: wall-clock budget for the whole solve (CP-SAT windows share it).
        progress: show a rich progress bar over the CP-SAT windows.
        window_size: tasks per CP-SAT window (larger: better plans, slower).
        use_cpsat: False skips CP-SAT and returns the best of the greedy plan and the baseline.
        exact: the same problem in unrounded floats (seconds, joules; see
            ``schedule.build``): the integer deadline is taken from its baseline time, and every
            candidate is re-evaluated on it and refused if it misses the deadline there.

    Returns:
        A :class:`ScheduleResult`, never worse than the baseline on ``objective``.

    Raises:
        ScheduleProblemError: unknown objective or a negative slowdown.
    """
    if objective not in OBJECTIVES:
        raise ScheduleProblemError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if max_slowdown < 0:
        raise ScheduleProblemError(f"max_slowdown must be >= 0, got {max_slowdown}")
    started = _time.perf_counter()
    base_sol = baseline_solution(problem)
    base = evaluate(problem, base_sol)
    limit = _deadline_units(problem, max_slowdown, base, exact)
    mem = base.peak_memory if memory_bound is None else memory_bound
    notes: list[str] = []
    candidates: list[tuple[str, Solution]] = [("BASELINE", base_sol)]
    cpsat_bound: float | None = None
    if _degenerate(problem, base):
        notes.append("degenerate problem (no tasks or no time/energy): the baseline is the plan")
    else:
        greedy_sol = _greedy(problem, objective, limit, mem, candidates)
        if use_cpsat:
            search = (time_limit_s, started, progress, window_size)
            cpsat_bound = _cpsat_candidates(
                candidates, problem, objective, limit, mem, greedy_sol, *search, notes
            )
    run = _Run(problem, objective, limit, mem, base, notes, exact, max_slowdown, started)
    return _best(run, candidates, cpsat_bound)


@dataclass(frozen=True)
class _Run:
    """What one :func:`solve` call fixed before choosing among its candidates."""

    problem: Problem
    objective: str
    limit: int
    mem: int
    base: Evaluation
    notes: list[str]
    exact: Problem | None
    max_slowdown: float
    started: float


def _best(
    run: _Run, candidates: list[tuple[str, Solution]], cpsat_bound: float | None
) -> ScheduleResult:
    """The best legal candidate, with its bound and gap (``OPTIMAL`` when the gap closes)."""
    problem, objective = run.problem, run.objective
    cap = _energy_cap(problem, objective, candidates)
    status, solution, ev = _pick(
        problem,
        candidates,
        objective,
        (run.limit, run.mem, cap),
        run.base,
        run.notes,
        run.exact,
        run.max_slowdown,
    )
    bound = _bound(problem, objective, run.limit, cpsat_bound, cap, run.base)
    gap = _gap(objective_value(objective, ev)[0], bound)
    if status != "BASELINE" and gap is not None and gap <= 1e-12:
        status = "OPTIMAL"
    return ScheduleResult(
        solution=solution,
        evaluation=ev,
        baseline=run.base,
        status=status,
        objective=objective,
        bound=bound,
        gap=gap,
        deadline=run.limit,
        memory_bound=run.mem,
        notes=tuple(run.notes),
        solve_time_s=_time.perf_counter() - run.started,
    )


def _deadline_units(
    problem: Problem, max_slowdown: float, base: Evaluation, exact: Problem | None
) -> int:
    """The deadline in integer time units; with ``exact`` (rounded-up durations), the float
    deadline in integer units, never below the baseline's own time (which always qualifies)."""
    limit = deadline(problem, max_slowdown, base.time)
    if exact is None:
        return limit
    exact_limit = (1.0 + max_slowdown) * evaluate(exact, baseline_solution(exact)).time_s
    tight = math.floor(exact_limit / problem.time_unit_s * (1 + 1e-12))
    return max(min(limit, tight), base.time)


def _greedy(
    problem: Problem,
    objective: str,
    limit: int,
    mem: int,
    candidates: list[tuple[str, Solution]],
) -> Solution | None:
    """Fixed-order DP plans on the program order and on the clustered order (if it fits ``mem``);
    both become candidates, the better one is returned as the CP-SAT hint."""
    plans = []
    order = cluster.clustered_order(problem)
    orders = [list(range(problem.num_tasks))]
    if order != orders[0] and peak_memory(problem, order) <= mem:
        orders.append(order)
    for o in orders:
        sol = greedy.greedy_solution(problem, limit, o)
        if sol is not None:
            candidates.append(("GREEDY", sol))
            plans.append(sol)
    if not plans:
        return None
    return min(plans, key=lambda sol: objective_value(objective, evaluate(problem, sol)))


def _degenerate(problem: Problem, base: Evaluation) -> bool:
    return problem.num_tasks == 0 or base.time == 0 or base.energy == 0


def _cpsat_candidates(
    candidates: list[tuple[str, Solution]],
    problem: Problem,
    objective: str,
    limit: int,
    mem: int,
    hint: Solution | None,
    time_limit_s: float,
    started: float,
    progress: bool,
    window_size: int,
    notes: list[str],
) -> float | None:
    """Append CP-SAT's stitched plan to ``candidates``; return its global bound, if it has one."""
    from fxenergy.schedule.decompose import solve_windows

    try:
        run = solve_windows(
            problem,
            objective=objective,
            time_budget=limit,
            memory_bound=mem,
            hint=hint,
            time_limit_s=time_limit_s - (_time.perf_counter() - started),
            progress=progress,
            window_size=window_size,
        )
    except ImportError as exc:  # ortools missing: the greedy plan still stands
        notes.append(f"CP-SAT unavailable ({exc}); install ortools for reordering")
        return None
    notes.extend(run.notes)
    if run.solution is not None:
        candidates.append((run.status, run.solution))
    return run.bound


def _pick(
    problem: Problem,
    candidates: list[tuple[str, Solution]],
    objective: str,
    budgets: tuple[int, int, int | None],
    base: Evaluation,
    notes: list[str],
    exact: Problem | None = None,
    max_slowdown: float = 0.0,
) -> tuple[str, Solution, Evaluation]:
    """The best legal candidate within the budgets (time, memory, energy cap) — re-checked on
    the ``exact`` float problem when given; the baseline if none is."""
    limit, mem, energy_cap = budgets
    exact_limit = None
    if exact is not None:
        exact_limit = (1.0 + max_slowdown) * evaluate(exact, baseline_solution(exact)).time
    best: tuple[str, Solution, Evaluation] | None = None
    for status, sol in candidates:
        try:
            check(problem, sol)
            if exact is not None and status != "BASELINE":
                _check_exact(exact, sol, exact_limit)
        except InvalidScheduleError as exc:
            notes.append(f"{status} candidate rejected by the checker: {exc}")
            continue
        ev = evaluate(problem, sol)
        over_cap = energy_cap is not None and ev.energy > energy_cap
        if ev.time > limit or (ev.peak_memory > mem and status != "BASELINE") or over_cap:
            notes.append(
                f"{status} candidate misses the budget (time {ev.time}, peak {ev.peak_memory})"
            )
            continue
        # the baseline keeps ties (no change without a gain); between plans, ties go to the
        # later candidate: CP-SAT's plan is window-optimal around the greedy one
        key, best_key = objective_value(objective, ev), best and objective_value(objective, best[2])
        if best is None or key < best_key or (key == best_key and best[0] != "BASELINE"):
            best = (status, sol, ev)
    if best is None:  # only a capped baseline can get here: it is still the safe answer
        best = ("BASELINE", candidates[0][1], base)
    if best[0] == "BASELINE":
        if base.peak_memory > mem:
            notes.append(
                f"memory bound {mem} B is below the baseline peak {base.peak_memory} B and no "
                "plan met it: returning the baseline"
            )
        if len(candidates) > 1:
            notes.append("no plan beat the baseline within the budget: returning the baseline")
    return best


def _check_exact(exact: Problem, sol: Solution, limit: float | None) -> None:
    """The float re-check: legal on the unrounded problem, and within its deadline."""
    check(exact, sol)
    time = evaluate(exact, sol).time
    if limit is not None and time > limit * (1 + 1e-12):
        raise InvalidScheduleError(
            f"in unrounded floats the plan takes {exact.seconds(time):.9g} s, over the "
            f"deadline {exact.seconds(limit):.9g} s"
        )


def _energy_cap(
    problem: Problem, objective: str, candidates: list[tuple[str, Solution]]
) -> int | None:
    """For ``switches``: the greedy plan's energy, which fewer switches must not exceed."""
    if objective != "switches":
        return None
    energies = [evaluate(problem, sol).energy for status, sol in candidates if status == "GREEDY"]
    return min(energies) if energies else None


def _bound(
    problem: Problem,
    objective: str,
    limit: int,
    cpsat_bound: float | None,
    energy_cap: int | None,
    base: Evaluation,
) -> float | None:
    """The best valid lower bound on the objective over every legal plan."""
    bounds = [cpsat_bound] if cpsat_bound is not None else []
    if objective == "energy":
        lp = greedy.energy_lower_bound(problem, limit)
        bounds += [] if lp is None else [lp]
    elif objective == "memory":
        bounds.append(_working_set_bound(problem))
    else:
        bounds.append(_switches_bound(problem, limit, energy_cap, base))
    return max(bounds) if bounds else None


def _switches_bound(
    problem: Problem, limit: int, energy_cap: int | None, base: Evaluation
) -> float:
    """Fewest switches of any legal plan within the deadline and under ``energy_cap``.

    Below the baseline's energy some task runs below the maximum clock. A run that starts at
    the maximum (non-cyclic) then switches at least once. A repeating (cyclic) run at one lower
    clock never switches, so the bound is 0 when such a plan fits; otherwise its clock changes
    and comes back around the loop: at least 2 switches.
    """
    if energy_cap is None or energy_cap >= base.energy:
        return 0.0
    if not problem.cyclic:
        return 1.0
    for c in range(1, problem.num_clocks):
        ev = evaluate(problem, Solution.original(problem, c))
        if ev.time <= limit and ev.energy <= energy_cap:
            return 0.0
    return 2.0


def _working_set_bound(problem: Problem) -> int:
    """Peak-memory lower bound: a task's inputs and output are live together, and so are all
    graph outputs at the last step (:func:`fxenergy.memory.problem.working_set_bound`)."""
    return problem.memory_baseline_bytes + working_set_bound(memory_problem(problem), forced=[])


def _gap(value: float, bound: float | None) -> float | None:
    if bound is None:
        return None
    if value <= 0:
        return 0.0
    return max(0.0, (value - bound) / value)
