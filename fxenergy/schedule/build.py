"""Turn an annotated fx graph into a scheduling :class:`~fxenergy.schedule.problem.Problem`.

Reads ``meta.COST`` on every node (run ``annotate-cost`` first) and the nodes' fake values. Each
node other than placeholders and the output becomes a task whose duration and energy at every
candidate clock come from the DVFS model (the simulator's numbers: predictions, not
measurements).

Power cap: the board's power controller acts on average power over far longer than one node,
so the cap is applied to the *cycle* (by default this graph; a training step's graphs together
when given): at each candidate clock the cycle's effective clock is found once
(``DVFSModel.effective_clock_mhz`` of the cycle's mix) and every node runs at it. Applied per
node instead, an 8k GEMM alone looks capped, and slowing it looks far cheaper than it is in a mix.

Rounding: the solvers get integer units (1 / 4e6 of the baseline totals), every duration,
energy and switch cost rounded **up**; the exact float twin (``GraphProblem.exact``, seconds and
joules) is what plans are re-checked and reported on.

Memory: a task's output bytes are the bytes of the *new storages* it creates; a view aliases its
base, so it adds no bytes and, instead, an edge from the base's producer to each of the view's
consumers keeps the base alive as long as the view is read (a base whose storage reaches the
output, through any view, is a graph output). The buffers are
``fxenergy.memory.timeline.activation_buffers``. Parameters, buffers and inputs form
the fixed ``memory_baseline_bytes``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.fx

from fxenergy.errors import PassError
from fxenergy.graph import meta
from fxenergy.graph.meta import CostRecord
from fxenergy.graph.semantics import node_storages
from fxenergy.hardware.dvfs import DVFSModel
from fxenergy.memory.timeline import activation_buffers
from fxenergy.schedule.problem import Problem, SwitchModel, Task

#: time and energy are rounded to 1 / _RESOLUTION of the baseline total
_RESOLUTION = 4_000_000


@dataclass(frozen=True)
class GraphProblem:
    """A problem plus the fx node name of every task (task id -> name).

    ``problem`` is in integer units for the solvers; ``exact`` is the same problem in seconds
    and joules (floats), the one plans are checked and reported on.
    """

    problem: Problem
    names: tuple[str, ...]
    model: DVFSModel
    exact: Problem | None = None


def node_costs(
    model: DVFSModel,
    costs: Sequence[CostRecord],
    clocks_mhz: Sequence[float],
    cycle: Sequence[CostRecord] | None = None,
) -> list[list[tuple[float, float]]]:
    """(seconds, joules) of each cost at each clock, the power cap acting on ``cycle``'s average
    power (default: ``costs`` themselves)."""
    mix = tuple(model.work_of(c) for c in (costs if cycle is None else cycle))
    f_eff = [model.effective_clock_mhz(mix, f) for f in clocks_mhz] if mix else list(clocks_mhz)
    return [[model.at_effective_clock((model.work_of(c),), f) for f in f_eff] for c in costs]


def candidate_clocks(
    model: DVFSModel, count: int = 12, floor_ratio: float = 0.45, dense_ratio: float = 0.92
) -> tuple[int, ...]:
    """Candidate SM clocks: every supported clock down to ``dense_ratio`` of the maximum (where
    small slowdown budgets are spent, so each step matters), then ``count`` clocks spread evenly
    down to ``floor_ratio`` of it.

    Clocks far below the maximum never pay off for real work (static power dominates), so the
    search space stops there; pass explicit clocks to :func:`build_problem` to override.
    """
    spec = model.spec
    top = spec.max_clock_mhz
    clocks = {c for c in spec.supported_clocks_mhz() if c >= dense_ratio * top}
    floor = max(spec.min_clock_mhz, floor_ratio * top)
    high = min(clocks)
    step = (high - floor) / max(count, 1)
    clocks |= {spec.nearest_clock_mhz(high - i * step) for i in range(1, count + 1)}
    return tuple(sorted(clocks, reverse=True))


def _is_task(node: torch.fx.Node) -> bool:
    return node.op not in ("placeholder", "output")


def _order_edges(gm: torch.fx.GraphModule, index: dict[str, int]) -> set[tuple[int, int]]:
    """Edges that keep side-effectful nodes (in-place, RNG, I/O, asserts) in program order."""
    from fxenergy.graph.semantics import dependency_graph

    return {
        (index[u], index[v])
        for u, v in dependency_graph(gm).edges
        if u in index and v in index and index[u] < index[v]
    }


def build_problem(
    gm: torch.fx.GraphModule,
    model: DVFSModel,
    clocks_mhz: Sequence[int] | None = None,
    cyclic: bool = True,
    units: tuple[float, float] | None = None,
    cycle: Sequence[CostRecord] | None = None,
) -> GraphProblem:
    """The scheduling problem of an ``annotate-cost``-ed graph on ``model``'s GPU.

    ``cyclic`` (default): the graph runs in a loop and the clock is kept between runs, so the
    first partition starts at the last one's clock (see ``Problem.cyclic``). ``units``
    (seconds, joules per unit) fixes the integer units, so problems of several graphs can be
    chained; by default they are chosen from this graph's totals. ``cycle``: the costs of the
    whole repeating cycle this graph is part of (e.g. a training step's graphs), over which the
    power cap averages and whose per-clock totals describe a transition window; default: this
    graph.
    """
    nodes = [n for n in gm.graph.nodes if _is_task(n)]
    missing = [n.name for n in nodes if meta.COST not in n.meta]
    if missing:
        raise PassError(
            f"{len(missing)} nodes lack {meta.COST} (e.g. {missing[:3]}); run the annotate-cost "
            "pass before building a schedule"
        )
    clocks = tuple(sorted(set(clocks_mhz or candidate_clocks(model)), reverse=True))
    index = {n.name: i for i, n in enumerate(nodes)}
    raw = node_costs(model, [n.meta[meta.COST] for n in nodes], clocks, cycle)
    data_edges, out_bytes, escaping = _memory_edges(gm, nodes, index)
    facts = _GraphFacts(
        names=tuple(index),
        costs=raw,
        profile=None if cycle is None else _cycle_profile(model, cycle, clocks),
        clocks=clocks,
        data_edges=tuple(sorted(data_edges)),
        order_edges=tuple(sorted(_order_edges(gm, index) - data_edges)),
        output_bytes=tuple(out_bytes),
        outputs=frozenset(_output_tasks(gm, index) | escaping),
        baseline_bytes=_baseline_bytes(gm),
        switch_latency_s=model.switch_latency_s,
        cyclic=cyclic,
    )
    total_t = sum(r[0][0] for r in raw) or 1.0
    total_e = sum(r[0][1] for r in raw) or 1.0
    scale = units or (total_t / _RESOLUTION, total_e / _RESOLUTION)
    return GraphProblem(_problem(facts, scale), facts.names, model, exact=_problem(facts, None))


@dataclass(frozen=True)
class _GraphFacts:
    """What a graph's problem is made of, in seconds and joules (before any rounding)."""

    names: tuple[str, ...]
    costs: list[list[tuple[float, float]]]  #: per task, per clock: (seconds, joules)
    profile: tuple[tuple[float, ...], tuple[float, ...]] | None  #: the cycle's per-clock totals
    clocks: tuple[int, ...]
    data_edges: tuple[tuple[int, int], ...]
    order_edges: tuple[tuple[int, int], ...]
    output_bytes: tuple[int, ...]
    outputs: frozenset[int]
    baseline_bytes: int
    switch_latency_s: float
    cyclic: bool


def _cycle_profile(
    model: DVFSModel, cycle: Sequence[CostRecord], clocks: tuple[int, ...]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The cycle's total (seconds, joules) at each clock (what a transition window runs)."""
    per = node_costs(model, cycle, clocks, cycle)
    times, energies = (tuple(sum(r[c][k] for r in per) for c in range(len(clocks))) for k in (0, 1))
    return times, energies


def _problem(facts: _GraphFacts, scale: tuple[float, float] | None) -> Problem:
    """The problem in integer units of ``scale`` (seconds, joules per unit), every cost
    rounded up; ``None``: the exact float twin in seconds and joules."""

    def unit(v: float, u: float) -> float:
        return v if scale is None else _up(v / u)

    tu, eu = scale or (1.0, 1.0)
    tasks = tuple(
        Task(
            name=name,
            durations=tuple(unit(t, tu) for t, _ in facts.costs[i]),
            energies=tuple(unit(e, eu) for _, e in facts.costs[i]),
            output_bytes=facts.output_bytes[i],
            is_output=i in facts.outputs,
        )
        for i, name in enumerate(facts.names)
    )
    prof = None
    if facts.profile is not None:
        times, energies = facts.profile
        prof = (tuple(unit(t, tu) for t in times), tuple(unit(e, eu) for e in energies))
    return Problem(
        tasks=tasks,
        clocks_mhz=facts.clocks,
        data_edges=facts.data_edges,
        order_edges=facts.order_edges,
        switch=SwitchModel(latency=unit(facts.switch_latency_s, tu), profile=prof),
        memory_baseline_bytes=facts.baseline_bytes,
        time_unit_s=tu,
        energy_unit_j=eu,
        cyclic=facts.cyclic,
    )


def _up(value: float) -> int:
    """Round up to an integer unit, forgiving float noise of a few ulps."""
    return max(0, math.ceil(value - 1e-9 * max(1.0, abs(value))))


def _memory_edges(
    gm: torch.fx.GraphModule, nodes: Sequence[torch.fx.Node], index: dict[str, int]
) -> tuple[set[tuple[int, int]], list[int], set[int]]:
    """Data edges (including base-producer -> view-consumer), each task's new bytes and the
    tasks whose buffers reach the output, from the graph's activation buffers
    (:func:`fxenergy.memory.timeline.activation_buffers`)."""
    sizes, users, producers, keep = activation_buffers(gm)
    edges = {
        (index[src.name], index[n.name])
        for n in nodes
        for src in n.all_input_nodes
        if src.name in index
    }
    out_bytes = [0] * len(nodes)
    escaping: set[int] = set()
    for buf, nbytes in sizes.items():
        producer = index.get(producers[buf])
        if producer is None:
            continue
        out_bytes[producer] += nbytes
        if buf in keep:
            escaping.add(producer)
        # reading a view keeps the producer of its base storage alive
        edges |= {(producer, index[r]) for r in users[buf] if index.get(r, -1) > producer}
    return edges, out_bytes, escaping


def _output_tasks(gm: torch.fx.GraphModule, index: dict[str, int]) -> set[int]:
    out = next(n for n in gm.graph.nodes if n.op == "output")
    return {index[n.name] for n in out.all_input_nodes if n.name in index}


def _baseline_bytes(gm: torch.fx.GraphModule) -> int:
    storages = node_storages(gm)
    inputs = sum(
        nbytes for n in gm.graph.nodes if n.op == "placeholder" for _, nbytes in storages[n.name]
    )
    state = {id(t): t.numel() * t.element_size() for t in [*gm.parameters(), *gm.buffers()]}
    return inputs + sum(state.values())
