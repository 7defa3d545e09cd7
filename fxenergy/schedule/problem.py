"""The scheduler's input and output as plain data: no torch, no ortools.

A :class:`Problem` lists tasks (fx nodes or coarsened groups) in program order, each with an
integer duration and energy at every candidate SM clock, the bytes of its output, and the edges
that constrain reordering. A :class:`Solution` is an order plus a clock per task. What a solution
*costs* (time, energy, peak memory, switches) is defined once, in :mod:`fxenergy.schedule.validate`.

Units are integers so that CP-SAT can reason exactly: ``time_unit_s`` and ``energy_unit_j`` say
what one unit is (the builder rounds the DVFS model's seconds and joules to them).

Example:
    >>> p = Problem(
    ...     tasks=(Task("mm", (10, 12), (50, 46)), Task("relu", (4, 4), (8, 6), is_output=True)),
    ...     clocks_mhz=(1410, 1110),
    ...     data_edges=((0, 1),),
    ... )
    >>> p.num_tasks, p.max_clock
    (2, 0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise

from fxenergy.errors import ScheduleProblemError
from fxenergy.schedule.switch import SwitchCosts, SwitchModel, switch_costs

__all__ = ["Problem", "Solution", "SwitchModel", "Task"]


@dataclass(frozen=True)
class Task:
    """One schedulable unit, usually an fx node.

    Attributes:
        name: node name (unique in the problem).
        durations: time units at each clock of :attr:`Problem.clocks_mhz` (same length).
        energies: energy units at each clock.
        output_bytes: activation bytes this task's output occupies while live.
        is_output: the output is a graph output, so it stays live to the end.
    """

    name: str
    durations: tuple[int, ...]
    energies: tuple[int, ...]
    output_bytes: int = 0
    is_output: bool = False


@dataclass(frozen=True)
class Problem:
    """Tasks in program order, candidate clocks, edges, switch model and memory baseline.

    Attributes:
        tasks: tasks in their original (program) order; a task's index is its id.
        clocks_mhz: candidate SM clocks, highest first (index 0 is the maximum clock, at which
            the GPU starts).
        data_edges: ``(producer, consumer)`` pairs; the consumer reads the producer's output.
        order_edges: ``(earlier, later)`` pairs between side-effectful tasks (in-place, RNG,
            collectives, I/O) that must keep their relative order.
        switch: latency of a clock change (what a switch costs is :attr:`switch_costs`).
        memory_baseline_bytes: bytes always live (weights, inputs): added to every live count.
        cyclic: the graph runs again and again (a training or serving loop) and the clock is
            kept between runs, so the first partition starts at the *last* partition's clock
            instead of the maximum: a plan that is one slower clock throughout never switches.
        time_unit_s: seconds per time unit.
        energy_unit_j: joules per energy unit.
    """

    tasks: tuple[Task, ...]
    clocks_mhz: tuple[int, ...]
    data_edges: tuple[tuple[int, int], ...] = ()
    order_edges: tuple[tuple[int, int], ...] = ()
    switch: SwitchModel = field(default_factory=SwitchModel)
    memory_baseline_bytes: int = 0
    cyclic: bool = False
    time_unit_s: float = 1e-6
    energy_unit_j: float = 1e-6

    def __post_init__(self) -> None:
        _check_clocks(self.clocks_mhz)
        for task in self.tasks:
            _check_task(task, len(self.clocks_mhz))
        n = len(self.tasks)
        for kind, edges in (("data", self.data_edges), ("order", self.order_edges)):
            for u, v in edges:
                if not (0 <= u < v < n):
                    raise ScheduleProblemError(
                        f"{kind} edge ({u}, {v}) must join two tasks with u < v < {n}: tasks are "
                        "listed in program order, so every edge points forward"
                    )
        if len({t.name for t in self.tasks}) != n:
            raise ScheduleProblemError("task names must be unique; rename the duplicates")
        if not self.switch.latency >= 0:
            raise ScheduleProblemError("switch latency must be >= 0")

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def num_clocks(self) -> int:
        return len(self.clocks_mhz)

    @property
    def max_clock(self) -> int:
        """Index of the maximum clock (always 0: clocks are listed highest first)."""
        return 0

    @cached_property
    def integer(self) -> bool:
        """Durations and energies are integers (a solver problem; else an exact float one)."""
        return all(isinstance(v, int) for t in self.tasks for v in (*t.durations, *t.energies))

    @cached_property
    def profile(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(time, energy) of the cycle per clock: the switch model's, or the tasks' sums."""
        if self.switch.profile is not None:
            return self.switch.profile
        times = tuple(sum(t.durations[c] for t in self.tasks) for c in range(self.num_clocks))
        energies = tuple(sum(t.energies[c] for t in self.tasks) for c in range(self.num_clocks))
        return times, energies

    @cached_property
    def switch_costs(self) -> SwitchCosts:
        """Extra time and energy of every switch (rounded up for an integer problem)."""
        times, energies = self.profile
        return switch_costs(self.switch.latency, times, energies, integer=self.integer)

    @cached_property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """Data and order edges together, deduplicated and sorted."""
        return tuple(sorted(set(self.data_edges) | set(self.order_edges)))

    @cached_property
    def successors(self) -> tuple[tuple[int, ...], ...]:
        """Tasks that must run after each task (data or order edge)."""
        return _adjacency(self.num_tasks, self.edges, forward=True)

    @cached_property
    def predecessors(self) -> tuple[tuple[int, ...], ...]:
        """Tasks that must run before each task (data or order edge)."""
        return _adjacency(self.num_tasks, self.edges, forward=False)

    @cached_property
    def consumers(self) -> tuple[tuple[int, ...], ...]:
        """Tasks that read each task's output (data edges only)."""
        return _adjacency(self.num_tasks, tuple(sorted(set(self.data_edges))), forward=True)

    def seconds(self, time_units: float) -> float:
        return time_units * self.time_unit_s

    def joules(self, energy_units: float) -> float:
        return energy_units * self.energy_unit_j


@dataclass(frozen=True)
class Solution:
    """An execution order and a clock per task.

    Attributes:
        order: task ids in execution order (a permutation of ``range(num_tasks)``).
        clocks: clock index of each task, indexed by task id (not by position).
    """

    order: tuple[int, ...]
    clocks: tuple[int, ...]

    @staticmethod
    def original(problem: Problem, clock: int = 0) -> Solution:
        """Program order with every task at one clock (default: the maximum)."""
        n = problem.num_tasks
        return Solution(tuple(range(n)), (clock,) * n)


def _check_clocks(clocks: tuple[int, ...]) -> None:
    if not clocks:
        raise ScheduleProblemError("a problem needs at least one candidate clock")
    if any(a <= b for a, b in pairwise(clocks)):
        raise ScheduleProblemError(f"clocks_mhz must be strictly decreasing, got {clocks}")


def _check_task(task: Task, num_clocks: int) -> None:
    if len(task.durations) != num_clocks or len(task.energies) != num_clocks:
        raise ScheduleProblemError(
            f"task {task.name!r} needs one duration and one energy per clock ({num_clocks})"
        )
    costs = (*task.durations, *task.energies)
    bad_cost = any(not isinstance(v, int | float) or not 0 <= v < math.inf for v in costs)
    if bad_cost or not isinstance(task.output_bytes, int) or task.output_bytes < 0:
        raise ScheduleProblemError(
            f"task {task.name!r}: durations and energies must be finite numbers >= 0 (integers "
            "for the solvers: round seconds and joules up to time_unit_s / energy_unit_j) and "
            "output_bytes an integer >= 0"
        )


def _adjacency(
    n: int, edges: tuple[tuple[int, int], ...], forward: bool
) -> tuple[tuple[int, ...], ...]:
    adj: list[list[int]] = [[] for _ in range(n)]
    for u, v in edges:
        if forward:
            adj[u].append(v)
        else:
            adj[v].append(u)
    return tuple(tuple(a) for a in adj)
