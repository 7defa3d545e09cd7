"""Turn an annotated fx graph into a scheduling :class:`~fxenergy.schedule.problem.Problem`.

Reads ``meta.COST`` on every node (run ``annotate-cost`` first) and the nodes' fake values. Each
node other than placeholders and the output becomes a task whose duration and energy at every
candidate clock come from the DVFS model (the simulator's numbers: predictions, not
measurements), rounded to integer units fine enough that rounding moves totals by < 1e-5.

Memory: a task's output bytes are the bytes of the *new storages* it creates; a view aliases its
base, so it adds no bytes and, instead, an edge from the base's producer to each of the view's
consumers keeps the base alive as long as the view is read. Parameters, buffers and inputs form
the fixed ``memory_baseline_bytes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.fx

from fxenergy.errors import PassError
from fxenergy.graph import meta
from fxenergy.graph.semantics import storage_key
from fxenergy.hardware.dvfs import DVFSModel
from fxenergy.schedule.problem import Problem, SwitchModel, Task

#: time and energy are rounded to 1 / _RESOLUTION of the baseline total
_RESOLUTION = 4_000_000


@dataclass(frozen=True)
class GraphProblem:
    """A problem plus the fx node name of every task (task id -> name)."""

    problem: Problem
    names: tuple[str, ...]
    model: DVFSModel


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


def _storages(value: object) -> dict[int, int]:
    """Storage key -> bytes of every tensor in a node value."""
    out: dict[int, int] = {}
    for t in meta.tensor_values(value):
        try:
            key = storage_key(t) or id(t)  # the one storage identity (views share it)
            nbytes = t.untyped_storage().nbytes()
        except (NotImplementedError, RuntimeError, AttributeError):
            key, nbytes = id(t), t.numel() * t.element_size()
        out[key] = max(out.get(key, 0), int(nbytes))
    return out


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
    min_partition_factor: float = 1.0,
    cyclic: bool = True,
    units: tuple[float, float] | None = None,
) -> GraphProblem:
    """The scheduling problem of an ``annotate-cost``-ed graph on ``model``'s GPU.

    ``cyclic`` (default): the graph runs in a loop and the clock is kept between runs, so the
    first partition starts at the last one's clock (see ``Problem.cyclic``). ``units``
    (seconds, joules per unit) fixes the integer units, so problems of several graphs can be
    chained; by default they are chosen from this graph's totals.
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
    raw = [
        [(model.time_s(n.meta[meta.COST], f), model.energy_j(n.meta[meta.COST], f)) for f in clocks]
        for n in nodes
    ]
    total_t = sum(r[0][0] for r in raw) or 1.0
    total_e = sum(r[0][1] for r in raw) or 1.0
    t_unit, e_unit = units or (total_t / _RESOLUTION, total_e / _RESOLUTION)
    data_edges, out_bytes = _memory_edges(gm, nodes, index)
    outputs = _output_tasks(gm, index)
    tasks = tuple(
        Task(
            name=n.name,
            durations=tuple(round(t / t_unit) for t, _ in raw[i]),
            energies=tuple(round(e / e_unit) for _, e in raw[i]),
            output_bytes=out_bytes[i],
            is_output=i in outputs,
        )
        for i, n in enumerate(nodes)
    )
    switch = SwitchModel(
        latency=round(model.switch_latency_s / t_unit),
        energy=round(model.switch_energy_j() / e_unit),
        min_partition_factor=min_partition_factor,
    )
    problem = Problem(
        tasks=tasks,
        clocks_mhz=clocks,
        data_edges=tuple(sorted(data_edges)),
        order_edges=tuple(sorted(_order_edges(gm, index) - data_edges)),
        switch=switch,
        memory_baseline_bytes=_baseline_bytes(gm),
        time_unit_s=t_unit,
        energy_unit_j=e_unit,
        cyclic=cyclic,
    )
    return GraphProblem(problem, tuple(n.name for n in nodes), model)


def _memory_edges(
    gm: torch.fx.GraphModule, nodes: Sequence[torch.fx.Node], index: dict[str, int]
) -> tuple[set[tuple[int, int]], list[int]]:
    """Data edges (including base-producer -> view-consumer) and each task's new bytes."""
    storages = {n.name: _storages(meta.node_value(n)) for n in gm.graph.nodes}
    owner: dict[int, int] = {}  # storage key -> task that created it
    for n in gm.graph.nodes:
        if n.op in ("placeholder", "get_attr"):
            for key in storages[n.name]:
                owner.setdefault(key, -1)  # inputs and params: baseline, not activations
    edges: set[tuple[int, int]] = set()
    out_bytes = [0] * len(nodes)
    for i, n in enumerate(nodes):
        for key, nbytes in storages[n.name].items():
            if key not in owner:
                owner[key] = i
                out_bytes[i] += nbytes
        for src in n.all_input_nodes:
            if src.name in index:
                edges.add((index[src.name], i))
            # reading a view keeps the producer of its base storage alive
            for key in storages[src.name]:
                producer = owner.get(key, -1)
                if 0 <= producer < i:
                    edges.add((producer, i))
    return edges, out_bytes


def _output_tasks(gm: torch.fx.GraphModule, index: dict[str, int]) -> set[int]:
    out = next(n for n in gm.graph.nodes if n.op == "output")
    return {index[n.name] for n in out.all_input_nodes if n.name in index}


def _baseline_bytes(gm: torch.fx.GraphModule) -> int:
    inputs = sum(
        sum(_storages(meta.node_value(n)).values()) for n in gm.graph.nodes if n.op == "placeholder"
    )
    state = {id(t): t.numel() * t.element_size() for t in [*gm.parameters(), *gm.buffers()]}
    return inputs + sum(state.values())
