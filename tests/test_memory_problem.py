"""fxenergy.memory.problem, the one live-bytes sweep, against independent computations."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxenergy.errors import InvalidScheduleError
from fxenergy.memory.problem import (
    buffers_problem,
    forced_live_bytes,
    live_bytes,
    peak,
    timeline,
    working_set_bound,
    working_sets,
)
from fxenergy.schedule.validate import live_bytes as schedule_live_bytes
from tests.strategies import problems as schedule_problems


def test_by_hand() -> None:
    # 0 makes a (10 B) read by 1 and 2; 1 makes b (20 B) read by 2; 2 makes c (30 B), an output.
    p = buffers_problem(3, [10, 20, 30], [0, 1, 2], [[1, 2], [2], []], [False, False, True])
    assert live_bytes(p, [0, 1, 2]) == [10, 30, 60]
    tl = timeline(p, [0, 1, 2])
    assert (tl.peak_bytes, tl.peak_step, tl.live_at_peak) == (60, 2, (0, 1, 2))
    assert working_sets([10, 20, 30], [[0, 1, 2], [1, 2], [2]], 3) == [10, 30, 60]
    # Without edges forced_live_bytes sees no ancestors and counts each buffer at its producer
    # only; the working sets still bound the peak.
    assert forced_live_bytes(p) == [10, 20, 30] and working_set_bound(p) == 60
    with pytest.raises(InvalidScheduleError, match="before it is produced"):
        live_bytes(p, [1, 0, 2])


@given(schedule_problems(max_tasks=8))
def test_matches_the_schedule_checker_on_every_order(problem) -> None:
    """The call schedule/validate.live_bytes can switch to: a task is a buffer of its output,
    read by its consumers, escaping when it is a graph output."""
    tasks = [t for t, task in enumerate(problem.tasks) if task.output_bytes]
    memory = buffers_problem(
        problem.num_tasks,
        [problem.tasks[t].output_bytes for t in tasks],
        tasks,
        [problem.consumers[t] for t in tasks],
        [problem.tasks[t].is_output for t in tasks],
    )
    order = list(range(problem.num_tasks))  # program order is topological
    assert live_bytes(memory, order) == schedule_live_bytes(problem, order)


@given(st.integers(1, 6), st.data())
def test_peak_is_at_least_every_bound_in_every_order(n: int, data: st.DataObject) -> None:
    sizes, producers, readers, escapes = [], [], [], []
    for v in range(n):
        for _ in range(data.draw(st.integers(0, 2))):
            sizes.append(data.draw(st.integers(1, 50)))
            producers.append(v)
            readers.append(sorted(data.draw(st.sets(st.integers(v, n - 1), max_size=2))))
            escapes.append(data.draw(st.booleans()))
    p = buffers_problem(n, sizes, producers, readers, escapes)
    bound = working_set_bound(p)  # no edges: every permutation where readers follow producers
    orders = [
        o
        for o in itertools.permutations(range(n))
        if all(o.index(r) >= o.index(producers[b]) for b, rs in enumerate(readers) for r in rs)
    ]
    assert orders and min(peak(p, o) for o in orders) >= bound
