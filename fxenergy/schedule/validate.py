"""The one definition of what a schedule costs, and the checker every answer passes through.

Execution model (one GPU stream, the team convention):

* Tasks run one after another in ``solution.order``. A *partition* is a maximal run of
  consecutive tasks at one clock.
* The GPU starts at the maximum clock (index 0), or, for a ``cyclic`` problem (a loop that runs
  the graph again and again without restoring clocks), at the last partition's clock. Every
  change of clock between consecutive partitions, including into the first one, is a *switch*,
  costed by the one switch model (:mod:`fxenergy.schedule.switch`): the runtime requests it
  ``latency`` ahead, and the transition window before the boundary runs at the slower and
  hungrier of the two clocks (a non-cyclic run's first switch has nothing to issue ahead from:
  its window is the first partition's head). Nothing is paid to restore the clock after a
  non-cyclic run (the runtime does that outside the planned region).
* ``time = Σ duration[task][clock] + Σ window time``; ``energy`` likewise.
* A task's output is live from the step that produces it through the step of its last data
  consumer (graph outputs: through the last step; unread outputs: their own step only). The
  peak memory is ``memory_baseline_bytes + max over steps of the live bytes``.
* A partition's own work must hold the transition windows it hosts:
  ``time ≥ latency · windows`` (:func:`fxenergy.schedule.switch.short_partitions`).

The same functions evaluate an integer (solver) problem and its exact float twin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from fxenergy.errors import InvalidScheduleError
from fxenergy.memory.problem import MemoryProblem, buffers_problem
from fxenergy.memory.problem import live_bytes as _sweep
from fxenergy.schedule.problem import Problem, Solution
from fxenergy.schedule.switch import short_partitions, windows_hosted


@dataclass(frozen=True)
class Partition:
    """A maximal run of consecutive tasks (in execution order) at one clock, in solver terms
    (task ids, the problem's units). The plan file's form is ``plans.plan.PlanPartition``, the
    runtime's ``runtime.session.RuntimePartition`` (see docs/design.md)."""

    clock: int  #: clock index into ``Problem.clocks_mhz``
    clock_mhz: int
    tasks: tuple[int, ...]  #: task ids in execution order
    time: float  #: time units of the tasks (transition windows excluded)
    energy: float  #: energy units of the tasks (transition windows excluded)
    window_time: float = 0  #: extra time of the transition windows this partition hosts
    window_energy: float = 0  #: extra energy of those windows


@dataclass(frozen=True)
class Evaluation:
    """Time, energy, peak memory and switches of one solution, in the problem's units."""

    time: float  #: an integer for an integer problem
    energy: float
    peak_memory: int  #: bytes, including the problem's memory baseline
    switches: int
    partitions: tuple[Partition, ...]
    time_s: float
    energy_j: float

    def saving(self, reference: Evaluation) -> float:
        """Fraction of ``reference``'s energy this evaluation saves."""
        return 1.0 - self.energy / reference.energy if reference.energy else 0.0

    def slowdown(self, reference: Evaluation) -> float:
        """This evaluation's time over ``reference``'s, minus one."""
        return self.time / reference.time - 1.0 if reference.time else 0.0


def evaluate(problem: Problem, solution: Solution) -> Evaluation:
    """Time, energy, peak memory, switches and partitions of ``solution``.

    Raises:
        InvalidScheduleError: the order is not a permutation of the tasks, a clock is unknown,
            or a task runs before a task whose output it reads. Order edges are not checked
            here; :func:`check` checks every edge.
    """
    _check_shape(problem, solution)
    partitions = _with_windows(problem, _partitions(problem, solution))
    clocks = [p.clock for p in partitions]
    switches = sum(windows_hosted(clocks, problem.cyclic, problem.max_clock))
    time = sum(p.time + p.window_time for p in partitions)
    energy = sum(p.energy + p.window_energy for p in partitions)
    return Evaluation(
        time=time,
        energy=energy,
        peak_memory=peak_memory(problem, solution.order),
        switches=switches,
        partitions=partitions,
        time_s=problem.seconds(time),
        energy_j=problem.joules(energy),
    )


def _with_windows(problem: Problem, parts: tuple[Partition, ...]) -> tuple[Partition, ...]:
    """Partitions with the transition windows they host (issue-ahead tail, or a first head)."""
    costs = problem.switch_costs
    out = []
    m = len(parts)
    for i, part in enumerate(parts):
        dt = de = 0
        nxt = parts[i + 1].clock if i + 1 < m else (parts[0].clock if problem.cyclic else None)
        if nxt is not None and nxt != part.clock:
            dt, de = costs.ahead(part.clock, nxt)
        if i == 0 and not problem.cyclic and part.clock != problem.max_clock:
            ht, he = costs.late(problem.max_clock, part.clock)
            dt, de = dt + ht, de + he
        out.append(replace(part, window_time=dt, window_energy=de))
    return tuple(out)


def start_clock(problem: Problem, partitions: tuple[Partition, ...]) -> int:
    """Clock in force before the first task: the maximum, or (cyclic) the last partition's."""
    if problem.cyclic and partitions:
        return partitions[-1].clock
    return problem.max_clock


def check(problem: Problem, solution: Solution) -> None:
    """Raise :class:`InvalidScheduleError` unless ``solution`` is a legal schedule of ``problem``.

    Legal means: the order is a permutation of the tasks, every data and order edge points
    forward in it, every clock index exists, and every partition's own work holds the
    transition windows it hosts (``time >= latency * windows``).
    """
    _check_shape(problem, solution)
    pos = positions(solution.order)
    for u, v in problem.edges:
        if pos[u] >= pos[v]:
            kind = "data" if (u, v) in set(problem.data_edges) else "side-effect order"
            raise InvalidScheduleError(
                f"{kind} edge {problem.tasks[u].name} -> {problem.tasks[v].name} is reversed: "
                f"positions {pos[u]} and {pos[v]}"
            )
    partitions = _partitions(problem, solution)
    clocks = [p.clock for p in partitions]
    latency = problem.switch.latency
    short = short_partitions([p.time for p in partitions], clocks, latency, problem.cyclic)
    if short:
        part = partitions[short[0]]
        windows = windows_hosted(clocks, problem.cyclic, problem.max_clock)[short[0]]
        min_time = latency * windows
        raise InvalidScheduleError(
            f"partition starting at {problem.tasks[part.tasks[0]].name} runs {part.time} time "
            f"units at {part.clock_mhz} MHz, too short for its clock-switch windows ({min_time})"
        )


def baseline_solution(problem: Problem) -> Solution:
    """The reference schedule: program order, every task at the maximum clock."""
    return Solution.original(problem, problem.max_clock)


def baseline(problem: Problem) -> Evaluation:
    """Evaluation of :func:`baseline_solution`."""
    return evaluate(problem, baseline_solution(problem))


def deadline(problem: Problem, max_slowdown: float, reference_time: float | None = None) -> int:
    """Largest allowed time: ``floor((1 + max_slowdown) * baseline time)`` in time units."""
    if max_slowdown < 0:
        raise InvalidScheduleError(f"max_slowdown must be >= 0, got {max_slowdown}")
    ref = baseline(problem).time if reference_time is None else reference_time
    # the epsilon keeps e.g. 1.01 * 100 from rounding down to 100 through float error
    return math.floor((1.0 + max_slowdown) * ref + 1e-9)


def positions(order: tuple[int, ...] | list[int]) -> list[int]:
    """Position of each task id in ``order``."""
    pos = [0] * len(order)
    for p, t in enumerate(order):
        pos[t] = p
    return pos


def live_bytes(problem: Problem, order: tuple[int, ...] | list[int]) -> list[int]:
    """Live activation bytes at each step of ``order`` (memory baseline excluded): the one
    sweep of :mod:`fxenergy.memory.problem` over the tasks' outputs."""
    return _sweep(memory_problem(problem), order)


def memory_problem(problem: Problem) -> MemoryProblem:
    """The tasks' outputs as buffers of a :class:`~fxenergy.memory.problem.MemoryProblem`
    (without edges): each task with output bytes makes one, read by its data consumers."""
    bufs = [t for t, task in enumerate(problem.tasks) if task.output_bytes]
    return buffers_problem(
        problem.num_tasks,
        [problem.tasks[t].output_bytes for t in bufs],
        bufs,
        [problem.consumers[t] for t in bufs],
        [problem.tasks[t].is_output for t in bufs],
    )


def peak_memory(problem: Problem, order: tuple[int, ...] | list[int]) -> int:
    """Peak live bytes of ``order``, including the problem's memory baseline."""
    return problem.memory_baseline_bytes + max(live_bytes(problem, order), default=0)


def _partitions(problem: Problem, solution: Solution) -> tuple[Partition, ...]:
    parts: list[Partition] = []
    run: list[int] = []
    for t in solution.order:
        if run and solution.clocks[t] != solution.clocks[run[0]]:
            parts.append(_partition(problem, solution.clocks[run[0]], run))
            run = []
        run.append(t)
    if run:
        parts.append(_partition(problem, solution.clocks[run[0]], run))
    return tuple(parts)


def _partition(problem: Problem, clock: int, run: list[int]) -> Partition:
    return Partition(
        clock=clock,
        clock_mhz=problem.clocks_mhz[clock],
        tasks=tuple(run),
        time=sum(problem.tasks[t].durations[clock] for t in run),
        energy=sum(problem.tasks[t].energies[clock] for t in run),
    )


def _check_shape(problem: Problem, solution: Solution) -> None:
    n = problem.num_tasks
    if len(solution.order) != n or sorted(solution.order) != list(range(n)):
        raise InvalidScheduleError(f"the order must list each of the {n} tasks exactly once")
    if len(solution.clocks) != n:
        raise InvalidScheduleError(f"need one clock per task ({n}), got {len(solution.clocks)}")
    bad = [c for c in solution.clocks if not 0 <= c < problem.num_clocks]
    if bad:
        raise InvalidScheduleError(f"clock index {bad[0]} is not one of {problem.num_clocks}")
