"""Critical path of a DAG with node durations: earliest/latest start, slack, one longest path.

Used by the critical-path pass on :func:`fxenergy.graph.semantics.dependency_graph`; works on
any networkx DAG of names and numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import networkx as nx


@dataclass(frozen=True)
class DagTiming:
    """Result of :func:`dag_timing` (seconds, or whatever unit the durations were in)."""

    earliest_start: dict[str, float]
    latest_start: dict[str, float]
    slack: dict[str, float]
    critical: frozenset[str]  #: nodes whose slack is zero (within the tolerance)
    path: tuple[str, ...]  #: one longest path, source to sink
    length: float  #: makespan with unlimited parallelism (length of the longest path)
    serial: float  #: sum of all durations (makespan on one stream)


def dag_timing(
    dag: nx.DiGraph, durations: Mapping[str, float], rel_tol: float = 1e-9, abs_tol: float = 0.0
) -> DagTiming:
    """Forward/backward pass (CPM) over ``dag`` with node ``durations`` (missing nodes = 0).

    A node is critical when its slack is at most ``max(abs_tol, rel_tol * length)``, which absorbs
    floating-point error from summing durations in different orders.
    """
    order = list(nx.topological_sort(dag))
    dur = {n: float(durations.get(n, 0.0)) for n in order}
    es: dict[str, float] = {}
    best_pred: dict[str, str | None] = {}
    for n in order:
        preds = list(dag.predecessors(n))
        best = max(preds, key=lambda p: es[p] + dur[p], default=None)
        best_pred[n] = best
        es[n] = es[best] + dur[best] if best is not None else 0.0
    length = max((es[n] + dur[n] for n in order), default=0.0)
    ls: dict[str, float] = {}
    for n in reversed(order):
        finish = min((ls[s] for s in dag.successors(n)), default=length)
        ls[n] = finish - dur[n]
    tol = max(abs_tol, rel_tol * length)
    slack = {n: max(0.0, ls[n] - es[n]) for n in order}
    critical = frozenset(n for n in order if slack[n] <= tol)
    return DagTiming(es, ls, slack, critical, _longest_path(order, es, dur, best_pred), length,
                     math.fsum(dur.values()))  # fmt: skip


def _longest_path(
    order: Sequence[str],
    es: Mapping[str, float],
    dur: Mapping[str, float],
    best_pred: Mapping[str, str | None],
) -> tuple[str, ...]:
    if not order:
        return ()
    # The last-finishing node, ties broken by the latest in topological order (reaches the sink).
    pos = {n: i for i, n in enumerate(order)}
    end = max(order, key=lambda n: (es[n] + dur[n], pos[n]))
    path = [end]
    while (prev := best_pred[path[-1]]) is not None:
        path.append(prev)
    return tuple(reversed(path))
