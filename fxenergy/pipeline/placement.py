"""Where each weight-gradient computation (W) runs in a zero-bubble schedule, and loading it.

A zero-bubble schedule splits a backward into I (input gradient: the previous stage waits on
it) and W (weight gradient: nothing waits on it within the iteration), so W can fill bubbles.
torch's schedules place every W by a fixed rule. :func:`place_weight_gradients` re-places them
for given durations (the clocks of a plan) by list scheduling, as the zero-bubble paper's own
greedy does: every other computation keeps torch's order on its rank, and a pending W runs in
a gap when it ends before the next computation's inputs arrive. What the schedule allows is
kept: a W runs after its I on the same rank, and a rank never holds more pending Ws (weight
gradients whose activations are still alive) than torch's own order makes it hold, so peak
memory is torch's.

:func:`load_rank_orders` hands a placed DAG to a torch schedule object on a real rank: it
re-lowers torch's ``pipeline_order`` (compute actions) into ``pipeline_order_with_comms``
with torch's own lowering, so communication is derived the way torch derives it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from fxenergy.pipeline.dag import Computation, PipelineDAG
from fxenergy.pipeline.orders import ScheduleError

WEIGHT, INPUT = "backward_weight", "backward_input"


def pending_cap(order: tuple[Computation, ...]) -> int:
    """Most Ws a rank holds pending (I done, W not yet) at any point of an order."""
    pending = peak = 0
    for c in order:
        pending += (c[1] == INPUT) - (c[1] == WEIGHT)
        peak = max(peak, pending)
    return peak


def place_weight_gradients(
    dag: PipelineDAG, durations_s: Mapping[Computation, float]
) -> PipelineDAG:
    """A DAG with each rank's Ws moved into the gaps that the given durations leave.

    Args:
        dag: a schedule's DAG with I/W-split backwards (others are returned unchanged).
        durations_s: time of every computation (e.g. at a plan's clocks).

    Returns:
        The re-placed DAG (``placed_from`` = the original's fingerprint), or ``dag`` itself
        when it has no W, has overlapped pairs, or placement changes nothing.
    """
    if WEIGHT not in dag.kinds() or dag.overlaps:
        return dag
    data_preds: dict[Computation, list[Computation]] = {c: [] for c in dag.rank_of}
    for u, v in dag.data_edges():
        data_preds[v].append(u)
    seq = [[c for c in order if c[1] != WEIGHT] for order in dag.rank_orders]
    caps = [pending_cap(order) for order in dag.rank_orders]
    out: list[list[Computation]] = [[] for _ in seq]
    pending: list[deque[Computation]] = [deque() for _ in seq]
    clock, ptr, finish = [0.0] * len(seq), [0] * len(seq), {}
    while any(ptr[r] < len(seq[r]) for r in range(len(seq))):
        progress = False
        for r in range(len(seq)):
            while ptr[r] < len(seq[r]):
                c = seq[r][ptr[r]]
                if any(p not in finish for p in data_preds[c]):
                    break  # an input is not computed yet: another rank must advance first
                ready = max((finish[p] for p in data_preds[c]), default=0.0)
                q = pending[r]
                while q and (
                    clock[r] + durations_s[q[0]] <= ready or (c[1] == INPUT and len(q) >= caps[r])
                ):
                    clock[r] = _run(q.popleft(), clock[r], durations_s, finish, out[r])
                clock[r] = _run(c, max(clock[r], ready), durations_s, finish, out[r])
                if c[1] == INPUT:
                    q.append((c[0], WEIGHT, c[2]))
                ptr[r] += 1
                progress = True
        if not progress:
            raise ScheduleError(f"{dag.schedule}: W placement found no runnable computation")
    for r, q in enumerate(pending):
        out[r] += q
    orders = tuple(tuple(o) for o in out)
    if orders == dag.rank_orders:
        return dag
    return PipelineDAG(
        dag.schedule, dag.num_stages, dag.num_microbatches, orders,
        f"{dag.source}+placed", dag.overlaps, dag.placed_from or dag.fingerprint,
    )  # fmt: skip


def _run(c: Computation, at: float, dur: Mapping, finish: dict, out: list) -> float:
    finish[c] = at + dur[c]
    out.append(c)
    return finish[c]


def load_rank_orders(schedule: Any, dag: PipelineDAG) -> None:
    """Make a torch ``_PipelineScheduleRuntime`` run ``dag``'s per-rank orders.

    Builds torch ``_Action`` lists (overlapped pairs as ``OVERLAP_F_B``) and lowers them
    with the schedule's own ``_prepare_schedule_with_comms``; the schedule's numerics are
    untouched, only the position of each computation changes.

    Raises:
        ScheduleError: the schedule object is not one that runs a compute IR.
    """
    from torch.distributed.pipelining.schedules import _Action, _ComputationType

    if not hasattr(schedule, "_prepare_schedule_with_comms"):
        raise ScheduleError(
            f"{type(schedule).__name__} runs a fixed order; only IR-driven schedules "
            "(multi-stage ones) can run a re-placed order"
        )
    kind = {"forward": "F", "backward": "B", INPUT: "I", WEIGHT: "W"}

    def action(c: Computation) -> _Action:
        return _Action(c[0], _ComputationType(kind[c[1]]), c[2])

    pair_of = dict(dag.overlaps)
    paired = set(pair_of.values())
    actions: dict[int, list] = {}
    for rank, order in enumerate(dag.rank_orders):
        acts = []
        for c in order:
            if c in pair_of:
                sub = (action(c), action(pair_of[c]))
                acts.append(_Action(-1, _ComputationType.OVERLAP_F_B, None, sub))
            elif c not in paired:
                acts.append(action(c))
        actions[rank] = acts
    schedule.pipeline_order = actions
    schedule._prepare_schedule_with_comms(actions)


def plan_with_placement(planner: Any, deadline_s: float | None = None) -> Any:
    """The better of the schedule's own W placement and one re-placed for the plan's clocks.

    Plans ``planner.dag`` at ``deadline_s``, re-places its Ws for the planned durations
    (:func:`place_weight_gradients`), plans the re-placed DAG at the same deadline and keeps
    the plan with less energy. Savings stay counted against the schedule's own all-max-clock
    iteration. A DAG without W comes back as ``planner.plan(deadline_s)``.

    Args:
        planner: a :class:`~fxenergy.pipeline.planner.PipelinePlanner`.
        deadline_s: as for ``planner.plan``.
    """
    from dataclasses import replace

    from fxenergy.pipeline.planner import PipelinePlanner

    plan = planner.plan(deadline_s)
    placed = place_weight_gradients(planner.dag, plan.durations(planner.costs))
    if placed is planner.dag:
        return plan
    other = PipelinePlanner(
        placed, planner.costs, straggler_s=planner.straggler_s,
        polish_s=planner.polish_s, workers=planner.workers, split_clocks=planner.split_clocks,
    )  # fmt: skip
    if other.shortest_s > plan.deadline_s:
        return plan  # the re-placed order cannot meet this deadline at all
    alt = other.plan(plan.deadline_s)
    if alt.evaluation.energy_j < plan.evaluation.energy_j:
        return replace(alt, baseline=plan.baseline, method=f"{alt.method}+placed")
    return plan


def placed_dag_from_json(doc: dict, dag: PipelineDAG) -> PipelineDAG:
    """The DAG a saved plan runs: ``dag`` itself, or its re-placed variant from the plan.

    Args:
        doc: ``PipelinePlan.to_json()`` output.
        dag: the schedule's own DAG (``build_dag`` of the same shape).

    Raises:
        ScheduleError: the plan is for another DAG, or its orders are not a re-placement.
    """
    if doc.get("dag_fingerprint") == dag.fingerprint:
        return dag
    if doc.get("placed_from") != dag.fingerprint:
        raise ScheduleError("the plan's W placement was made for another pipeline; plan again")
    from fxenergy.pipeline.orders import KIND_OF

    def parse(label: str) -> Computation:
        for k, letter in enumerate(label):
            if letter in KIND_OF:
                return (int(label[:k]), KIND_OF[letter], int(label[k + 1 :]))
        raise ScheduleError(f"bad action {label!r} in the plan")

    orders = tuple(tuple(parse(e["action"]) for e in rank) for rank in doc["ranks"])
    if sorted(map(sorted, orders)) != sorted(map(sorted, dag.rank_orders)):
        raise ScheduleError("the plan's orders run other computations than the schedule's")
    placed = PipelineDAG(
        dag.schedule, dag.num_stages, dag.num_microbatches, orders,
        f"{dag.source}+placed", dag.overlaps, dag.fingerprint,
    )  # fmt: skip
    if placed.fingerprint != doc["dag_fingerprint"]:
        raise ScheduleError("the plan's orders do not match its fingerprint; plan again")
    return placed
