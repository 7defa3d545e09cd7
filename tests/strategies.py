"""Hypothesis strategies for random scheduling problems (random DAGs with side effects).

Tasks get a kind: ``compute`` (time scales with 1/f), ``memory`` (time flat in f, energy drops at
lower clocks), ``noop`` (zero cost). A share of tasks are side-effectful (in-place, RNG,
collective): they are chained by order edges in program order, as the builder does.
"""

from __future__ import annotations

import math
from itertools import pairwise

from hypothesis import strategies as st

from fxenergy.schedule.problem import Problem, SwitchModel, Task


def _task(name: str, kind: str, base: int, clocks: tuple[int, ...], size: int, out: bool) -> Task:
    durations, energies = [], []
    for f in clocks:
        scale = clocks[0] / f
        d = 0 if kind == "noop" else (math.ceil(base * scale) if kind == "compute" else base)
        # power: static + dynamic ∝ f² (voltage ∝ f above a knee); energy = power · time
        p = 3 + (5 if kind == "compute" else 2) * (f / clocks[0]) ** 2
        durations.append(d)
        energies.append(math.ceil(p * d))
    return Task(name, tuple(durations), tuple(energies), size, out)


@st.composite
def problems(
    draw: st.DrawFn, min_tasks: int = 1, max_tasks: int = 7, max_clocks: int = 3
) -> Problem:
    """A random problem: DAG in program order, mixed task kinds, order edges, switch model."""
    n = draw(st.integers(min_tasks, max_tasks))
    nc = draw(st.integers(1, max_clocks))
    clocks = tuple(
        sorted(draw(st.sets(st.integers(5, 20), min_size=nc, max_size=nc)), reverse=True)
    )
    clocks = tuple(100 * c for c in clocks)
    tasks, data, effects = [], [], []
    for v in range(n):
        kind = draw(st.sampled_from(("compute", "memory", "memory", "noop")))
        base = draw(st.integers(1, 30))
        size = draw(st.integers(0, 8))
        parents = draw(st.sets(st.integers(0, v - 1), max_size=2)) if v else set()
        data += [(u, v) for u in sorted(parents)]
        if draw(st.booleans()) and draw(st.booleans()):  # about a quarter are side-effectful
            effects.append(v)
        tasks.append(_task(f"t{v}", kind, base, clocks, size, draw(st.booleans()) and v == n - 1))
    order = [(u, v) for u, v in pairwise(effects) if (u, v) not in data]
    switch = SwitchModel(latency=draw(st.integers(0, 6)))
    return Problem(
        tasks=tuple(tasks),
        clocks_mhz=clocks,
        data_edges=tuple(data),
        order_edges=tuple(order),
        switch=switch,
        memory_baseline_bytes=draw(st.integers(0, 4)),
        cyclic=draw(st.booleans()),
    )
