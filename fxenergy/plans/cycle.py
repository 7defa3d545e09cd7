"""A sequence of graphs planned as ONE cycle: concatenate their problems, split the solution.

A training step runs its compiled graphs (forward, backward, optimizer step) one after another,
and the step runs in a loop; a model with graph breaks runs its graphs one after another on every
call. Planned one graph at a time, each graph would be its own repeating cycle, which is not
what runs. Here the graphs' :class:`~fxenergy.schedule.problem.Problem` s are concatenated in
call order into one cyclic problem (the clock carries from graph to graph and from the last graph
back to the first), solved once, and the solution is split back into one order and one clock per
task for each graph. Partitions continue across graph boundaries: a graph may start at the clock
the previous graph ended with, at no switch.

Plain data only (no torch): problems in, problems and solutions out. The host work between two
graphs (Python, the optimizer's bookkeeping, dynamo's guards) is not in any problem, so it is
not planned: it runs at whatever clock is in force.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from fxenergy.errors import ScheduleProblemError
from fxenergy.schedule.problem import Problem, Solution, Task


@dataclasses.dataclass(frozen=True)
class CycleProblem:
    """One problem made of several graphs' problems, and where each graph's tasks sit in it.

    Attributes:
        problem: the concatenated problem (cyclic unless asked otherwise).
        spans: ``(start, stop)`` task ids of each graph, in call order.
    """

    problem: Problem
    spans: tuple[tuple[int, int], ...]

    def graph_of(self, task: int) -> int:
        """Index (in call order) of the graph that ``task`` belongs to."""
        for k, (start, stop) in enumerate(self.spans):
            if start <= task < stop:
                return k
        raise IndexError(f"task {task} is in no graph of this cycle")


def _check_compatible(problems: Sequence[Problem]) -> None:
    if not problems:
        raise ScheduleProblemError("a cycle needs at least one graph's problem")
    first = problems[0]
    for p in problems[1:]:
        same = (
            p.clocks_mhz == first.clocks_mhz
            and p.time_unit_s == first.time_unit_s
            and p.energy_unit_j == first.energy_unit_j
            and p.switch == first.switch
        )
        if not same:
            raise ScheduleProblemError(
                "problems of one cycle must share clocks, units and switch model; build them "
                "with the same clocks_mhz and units"
            )


def _sinks(p: Problem) -> list[int]:
    return [t for t in range(p.num_tasks) if not p.successors[t]]


def _sources(p: Problem) -> list[int]:
    return [t for t in range(p.num_tasks) if not p.predecessors[t]]


def concat_problems(
    problems: Sequence[Problem], *, cyclic: bool = True, prefix: str = "g"
) -> CycleProblem:
    """One problem running ``problems`` one after another, in the order given.

    Task ``t`` of graph ``k`` becomes task ``offset_k + t`` named ``f"{prefix}{k}.{name}"``.
    Edges are shifted by the offsets; consecutive graphs are chained (every task of graph ``k``
    runs before every task of graph ``k + 1``) by order edges from each sink of graph ``k`` to
    the first task of graph ``k + 1`` and from that task to the other sources of graph ``k + 1``.
    The memory baseline is the largest of the graphs' (their inputs and state overlap).

    Raises:
        ScheduleProblemError: no problems, or problems with different clocks, units or switch
            models.
    """
    _check_compatible(problems)
    tasks: list[Task] = []
    data: list[tuple[int, int]] = []
    order: list[tuple[int, int]] = []
    spans: list[tuple[int, int]] = []
    previous: tuple[int, Problem] | None = None  # the last non-empty graph: (offset, problem)
    for k, p in enumerate(problems):
        off = len(tasks)
        tasks += [dataclasses.replace(t, name=f"{prefix}{k}.{t.name}") for t in p.tasks]
        data += [(u + off, v + off) for u, v in p.data_edges]
        order += [(u + off, v + off) for u, v in p.order_edges]
        if previous is not None and p.num_tasks:
            # task 0 of a problem has no predecessor (edges point forward): the chain's hinge
            order += [(previous[0] + s, off) for s in _sinks(previous[1])]
            order += [(off, off + s) for s in _sources(p) if s != 0]
        if p.num_tasks:
            previous = (off, p)
        spans.append((off, len(tasks)))
    first_p = problems[0]
    data_set = set(data)
    problem = dataclasses.replace(
        first_p,
        tasks=tuple(tasks),
        data_edges=tuple(sorted(data_set)),
        order_edges=tuple(sorted(set(order) - data_set)),
        memory_baseline_bytes=max(p.memory_baseline_bytes for p in problems),
        cyclic=cyclic,
    )
    return CycleProblem(problem, tuple(spans))


def split_solution(cycle: CycleProblem, solution: Solution) -> list[Solution]:
    """Each graph's own order and clocks (task ids local to that graph's problem).

    Raises:
        ScheduleProblemError: the solution moves a task across a graph boundary.
    """
    out: list[Solution] = []
    pos = 0
    for k, (start, stop) in enumerate(cycle.spans):
        n = stop - start
        part = solution.order[pos : pos + n]
        if any(not start <= t < stop for t in part):
            raise ScheduleProblemError(
                f"the cycle's solution interleaves graph {k} with another graph; graphs run "
                "one after another"
            )
        out.append(Solution(tuple(t - start for t in part), tuple(solution.clocks[start:stop])))
        pos += n
    return out


def entry_clocks(cycle: CycleProblem, solution: Solution) -> list[int]:
    """The clock index in force when each graph starts: the previous graph's last task's clock
    (for the first graph of a cyclic problem: the last graph's; otherwise the maximum)."""
    last_of: list[int | None] = []
    pos = 0
    for start, stop in cycle.spans:
        n = stop - start
        last_of.append(solution.clocks[solution.order[pos + n - 1]] if n else None)
        pos += n
    entries: list[int] = []
    current = cycle.problem.max_clock
    if cycle.problem.cyclic:
        current = next((c for c in reversed(last_of) if c is not None), current)
    for c in last_of:
        entries.append(current)
        current = c if c is not None else current
    return entries
