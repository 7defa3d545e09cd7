"""Pipeline-parallel DAGs of every torch schedule, their costs and their evaluator.

A pipeline iteration is a DAG of computations ``(stage, kind, microbatch)`` with kind ``F``
(forward), ``B`` (full backward), or the zero-bubble split ``I`` (input gradient) + ``W``
(weight gradient). Edges: each rank runs its computations in its schedule order,
``F(s, m) -> F(s+1, m)``, ``F(last, m) -> B|I(last, m)``, ``B|I(s+1, m) -> B|I(s, m)`` and
``I(s, m) -> W(s, m)``. An overlapped pair ``(F, B)`` of DualPipeV runs back to back and sends
both results after the pair: the forward's consumers also wait for the pair's backward.
Given an SM clock per computation, :func:`evaluate` is the single source of truth for time
and energy:

    T = longest path (every computation starts as soon as its predecessors finish)
    E = sum of computation energies + P_blocked * sum over GPUs of (H - busy time of the GPU)

with ``H = max(T, horizon)``: a GPU that is not computing waits on communication at the
blocked power ``P_blocked`` until the iteration (or a slower straggler pipeline) ends.
The planner itself (CP-SAT) lives in :mod:`fxenergy.schedule.cpsat.pipeline`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise

import networkx as nx

from fxenergy.pipeline.costs import ClockOption, ClockSplit, StageCosts  # noqa: F401 (re-exported)
from fxenergy.pipeline.orders import (
    LETTER,
    Action,
    Overlap,
    ScheduleError,
    canonical_schedule,
    rank_orders,
)

#: A computation: (stage, kind, microbatch); the same tuple torch's IR maps to.
Computation = Action
KINDS = tuple(LETTER)  #: forward, backward, backward_input, backward_weight


def label(c: Computation) -> str:
    """torch's action spelling: ``2F5`` is stage 2's forward of microbatch 5 (B, I, W alike)."""
    return f"{c[0]}{LETTER[c[1]]}{c[2]}"


@dataclass(frozen=True)
class PipelineDAG:
    """The computations of one training iteration, their per-rank order and dependencies."""

    schedule: str
    num_stages: int
    num_microbatches: int
    rank_orders: tuple[tuple[Computation, ...], ...]  #: per rank (GPU), in execution order
    source: str = "reference"  #: "torch" when the order came from torch's schedule IR
    overlaps: tuple[Overlap, ...] = ()  #: DualPipeV's overlapped (forward, backward) pairs
    #: fingerprint of the schedule's own DAG when this one moved its W computations
    placed_from: str | None = None

    @property
    def num_ranks(self) -> int:
        return len(self.rank_orders)

    @cached_property
    def fingerprint(self) -> str:
        """A hash of the per-rank orders: a saved plan is only valid for the same DAG."""
        text = "|".join(",".join(label(c) for c in order) for order in self.rank_orders)
        if self.overlaps:  # (plans saved before overlaps existed keep their fingerprint)
            text += "|" + ",".join(f"{label(f)}+{label(b)}" for f, b in self.overlaps)
        return hashlib.sha256(f"{self.schedule}:{text}".encode()).hexdigest()[:16]

    @cached_property
    def rank_of(self) -> dict[Computation, int]:
        return {c: r for r, order in enumerate(self.rank_orders) for c in order}

    def kinds(self) -> set[str]:
        """The computation kinds this DAG runs."""
        return {c[1] for order in self.rank_orders for c in order}

    def backward_of(self, stage: int, mb: int) -> Computation:
        """The computation that produces the input gradient: ``B`` or ``I``."""
        full = (stage, "backward", mb)
        return full if full in self.rank_of else (stage, "backward_input", mb)

    def data_edges(self) -> list[tuple[Computation, Computation]]:
        """Dependencies through activations and gradients (no rank order)."""
        out = []
        last = self.num_stages - 1
        for m in range(self.num_microbatches):
            for s in range(last):
                out.append(((s, "forward", m), (s + 1, "forward", m)))
                out.append((self.backward_of(s + 1, m), self.backward_of(s, m)))
            out.append(((last, "forward", m), self.backward_of(last, m)))
            for s in range(self.num_stages):
                if (s, "backward_weight", m) in self.rank_of:
                    out.append(((s, "backward_input", m), (s, "backward_weight", m)))
        return out

    def edges(self) -> list[tuple[Computation, Computation]]:
        """Every precedence edge: per-rank order, data dependencies, overlapped pairs' sends."""
        out = [(a, b) for order in self.rank_orders for a, b in pairwise(order)]
        data = self.data_edges()
        out += data
        pair_end = dict(self.overlaps)  # forward -> the backward it is paired with
        out += [(pair_end[u], v) for u, v in data if u in pair_end and pair_end[u] != v]
        return out

    @cached_property
    def graph(self) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_nodes_from(self.rank_of)
        g.add_edges_from(self.edges())
        return g

    @cached_property
    def topological(self) -> tuple[Computation, ...]:
        return tuple(nx.topological_sort(self.graph))

    @cached_property
    def predecessors(self) -> dict[Computation, tuple[Computation, ...]]:
        return {c: tuple(self.graph.predecessors(c)) for c in self.graph}

    @cached_property
    def successors(self) -> dict[Computation, tuple[Computation, ...]]:
        return {c: tuple(self.graph.successors(c)) for c in self.graph}

    @cached_property
    def index_arrays(self) -> tuple[dict[Computation, int], list[list[int]], list[list[int]]]:
        """Topological index of each computation, and predecessor/successor index lists."""
        index = {c: k for k, c in enumerate(self.topological)}
        preds = [[index[q] for q in self.predecessors[c]] for c in self.topological]
        succs = [[index[q] for q in self.successors[c]] for c in self.topological]
        return index, preds, succs


def build_dag(
    schedule: str, num_stages: int, num_microbatches: int, num_ranks: int | None = None
) -> PipelineDAG:
    """The iteration DAG of a torch.distributed.pipelining schedule.

    Args:
        schedule: one of :data:`~fxenergy.pipeline.orders.SCHEDULES` (case and dashes ignored).
        num_stages: pipeline stages (model chunks); multi-stage: ``num_ranks * chunks``.
        num_microbatches: microbatches per iteration.
        num_ranks: GPUs; defaults to ``num_stages`` (GPipe, 1F1B), else ``num_stages // 2``.

    Raises:
        ScheduleError: the shape is one torch's schedule refuses.
    """
    name = canonical_schedule(schedule)
    orders, overlaps, source = rank_orders(name, num_stages, num_microbatches, num_ranks)
    dag = PipelineDAG(
        name, num_stages, num_microbatches, tuple(map(tuple, orders)), source, tuple(overlaps)
    )
    if not nx.is_directed_acyclic_graph(dag.graph):  # a deadlocking order
        raise ScheduleError(f"{name} order for {num_stages} stages deadlocks")
    return dag


@dataclass(frozen=True)
class PlanEvaluation:
    """Time and energy of a pipeline plan, and where its slack lies."""

    iteration_time_s: float  #: makespan of the DAG
    horizon_s: float  #: time idle energy is counted to: max(makespan, straggler time)
    compute_energy_j: float
    blocked_energy_j: float
    rank_busy_s: tuple[float, ...]
    start_s: Mapping[Computation, float] = field(repr=False)
    slack_s: Mapping[Computation, float] = field(repr=False)
    critical_path: tuple[Computation, ...] = field(repr=False)

    @property
    def energy_j(self) -> float:
        return self.compute_energy_j + self.blocked_energy_j


def evaluate_pipeline(
    dag: PipelineDAG,
    costs: StageCosts,
    freqs_mhz: Mapping[Computation, int],
    horizon_s: float = 0.0,
    splits: Mapping[Computation, ClockSplit] | None = None,
) -> PlanEvaluation:
    """Time, energy, slack and critical path of running ``dag`` at the given clocks.

    ``splits`` runs part of some computations at a second clock (:class:`ClockSplit`).
    """
    order = dag.topological
    _, preds, succs = dag.index_arrays
    splits = splits or {}
    picked = [costs.run(c, freqs_mhz[c], splits.get(c)) for c in order]
    dur = [o.time_s for o in picked]
    n = len(order)
    start, finish = [0.0] * n, [0.0] * n
    for k in range(n):
        begin = 0.0
        for q in preds[k]:
            begin = max(begin, finish[q])
        start[k], finish[k] = begin, begin + dur[k]
    makespan = max(finish)
    latest = [0.0] * n
    for k in range(n - 1, -1, -1):
        end = makespan
        for q in succs[k]:
            end = min(end, latest[q] - dur[q])
        latest[k] = end
    rank_of = dag.rank_of
    busy = [0.0] * dag.num_ranks
    for k, c in enumerate(order):
        busy[rank_of[c]] += dur[k]
    horizon = max(makespan, horizon_s)
    compute = sum(o.energy_j for o in picked)
    blocked = costs.blocked_power_w * sum(horizon - b for b in busy)
    starts = dict(zip(order, start, strict=True))
    slack = {c: latest[k] - finish[k] for k, c in enumerate(order)}
    path = _critical_path(dag, starts, dict(zip(order, finish, strict=True)), makespan)
    return PlanEvaluation(makespan, horizon, compute, blocked, tuple(busy), starts, slack, path)


def _critical_path(
    dag: PipelineDAG, start: dict, finish: dict, makespan: float
) -> tuple[Computation, ...]:
    # Walk back from a computation ending at the makespan through predecessors that end
    # exactly when it starts (the ones that held it back).
    eps = 1e-9 * max(makespan, 1.0)
    node = max(finish, key=lambda c: finish[c])
    path = [node]
    while dag.predecessors[node]:
        node = max(dag.predecessors[node], key=lambda p: finish[p])
        if finish[node] < start[path[-1]] - eps:
            break
        path.append(node)
    return tuple(reversed(path))


def max_clock_plan(dag: PipelineDAG, costs: StageCosts) -> dict[Computation, int]:
    """Every computation at its highest clock: the all-max-clock baseline (Perseus's)."""
    return {c: max(costs.options[(c[0], c[1])]) for c in dag.topological}


def fastest_plan(dag: PipelineDAG, costs: StageCosts) -> dict[Computation, int]:
    """Every computation at its fastest measured option: the shortest iteration.

    On a noisy measured profile a lower clock can time faster than the highest one, so this
    plan can be shorter than :func:`max_clock_plan` (Bloom on A40: 7.129 s against 7.180 s).
    """
    return {c: costs.fastest(c).freq_mhz for c in dag.topological}


@dataclass(frozen=True)
class PipelinePlan:
    """A clock per computation, checked by :func:`evaluate` against the all-max-clock baseline."""

    dag: PipelineDAG
    freqs_mhz: Mapping[Computation, int] = field(repr=False)
    evaluation: PlanEvaluation
    baseline: PlanEvaluation
    deadline_s: float
    #: what produced the kept plan: "lp+mip", "lp+cpsat", "lp+greedy", "lp-nearest+greedy",
    #: "hint", "max-clock" or "fastest" ("+placed": with re-placed Ws)
    method: str
    lower_bound_j: float | None = None  #: LP relaxation bound at this deadline (None: unknown)
    #: computations that switch to a second clock partway (``--split-clocks``); empty: none
    splits: Mapping[Computation, ClockSplit] = field(default_factory=dict, repr=False)

    @property
    def savings(self) -> float:
        """Energy saved relative to every computation at its highest clock (a fraction)."""
        return 1.0 - self.evaluation.energy_j / self.baseline.energy_j

    def rank_plan(self, rank: int) -> list[tuple[Computation, int]]:
        """(computation, clock) for one rank, in the order the rank runs them."""
        return [(c, self.freqs_mhz[c]) for c in self.dag.rank_orders[rank]]

    def rank_splits(self, rank: int) -> dict[Computation, ClockSplit]:
        """The split computations of one rank (for the runner's ``ClockPlanHook``)."""
        return {c: self.splits[c] for c in self.dag.rank_orders[rank] if c in self.splits}

    def durations(self, costs: StageCosts) -> dict[Computation, float]:
        """Each computation's planned time (s), splits included."""
        return {c: costs.run(c, f, self.splits.get(c)).time_s for c, f in self.freqs_mhz.items()}

    def stage_rows(self, costs: StageCosts) -> list[dict]:
        """Per stage: clock range, busy time, energy, critical computations and largest slack."""
        rows = []
        ev = self.evaluation
        for s in range(self.dag.num_stages):
            comps = [c for c in self.dag.topological if c[0] == s]
            clocks = [self.freqs_mhz[c] for c in comps]
            clocks += [self.splits[c].then_mhz for c in comps if c in self.splits]
            runs = [costs.run(c, self.freqs_mhz[c], self.splits.get(c)) for c in comps]
            rows.append(
                {
                    "stage": s,
                    "rank": self.dag.rank_of[comps[0]],
                    "min_clock_mhz": min(clocks),
                    "max_clock_mhz": max(clocks),
                    "busy_s": sum(o.time_s for o in runs),
                    "energy_j": sum(o.energy_j for o in runs),
                    "critical": sum(ev.slack_s[c] <= 1e-9 * ev.iteration_time_s for c in comps),
                    "max_slack_s": max(ev.slack_s[c] for c in comps),
                }
            )
        return rows

    def to_json(self) -> dict:
        """A JSON-able summary: per-rank clock lists in execution order and the accounting."""
        ev = self.evaluation
        return {
            "schema": "fxenergy.pipeline-plan/1",
            "split_computations": len(self.splits),
            "schedule": self.dag.schedule,
            "num_stages": self.dag.num_stages,
            "num_microbatches": self.dag.num_microbatches,
            "order_source": self.dag.source,
            "dag_fingerprint": self.dag.fingerprint,
            "placed_from": self.dag.placed_from,
            "method": self.method,
            "deadline_s": self.deadline_s,
            "iteration_time_s": ev.iteration_time_s,
            "energy_j": ev.energy_j,
            "compute_energy_j": ev.compute_energy_j,
            "blocked_energy_j": ev.blocked_energy_j,
            "baseline_time_s": self.baseline.iteration_time_s,
            "baseline_energy_j": self.baseline.energy_j,
            "lower_bound_j": self.lower_bound_j,
            "critical_path": [label(c) for c in ev.critical_path],
            "ranks": [
                [self._entry(c, f) for c, f in self.rank_plan(r)] for r in range(self.dag.num_ranks)
            ],
        }

    def _entry(self, c: Computation, f: int) -> dict:
        ev = self.evaluation
        entry = {"action": label(c), "freq_mhz": f, "start_s": ev.start_s[c]}
        entry["slack_s"] = ev.slack_s[c]
        if c in self.splits:
            entry["then_mhz"] = self.splits[c].then_mhz
            entry["then_share"] = self.splits[c].share
            entry["then_after_s"] = self.splits[c].after_s
        return entry
