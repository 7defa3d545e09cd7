"""Property tests of memory-aware ordering on random small problems: the result is a valid order,
never worse than the original or any greedy order, and (the graph fitting one CP-SAT window)
exactly the brute-force optimum."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from fxenergy.memory.order import bfs_order, dfs_order, l2_reuse_bytes, lpmf_order
from fxenergy.memory.problem import MemoryProblem, is_topological, peak, working_set_bound
from fxenergy.schedule.cpsat.memory import minimize_peak


@st.composite
def problems(draw: st.DrawFn, max_nodes: int = 7) -> MemoryProblem:
    n = draw(st.integers(1, max_nodes))
    preds = [
        sorted(draw(st.sets(st.integers(0, v - 1), max_size=2))) if v else [] for v in range(n)
    ]
    succs = [[w for w in range(n) if v in preds[w]] for v in range(n)]
    sizes, producer, readers, escapes = [], [], [], []
    for v in range(n):
        for _ in range(draw(st.integers(0, 2))):
            sizes.append(draw(st.integers(1, 64)))
            producer.append(v)
            readers.append(
                tuple(sorted(draw(st.sets(st.sampled_from(succs[v]))) if succs[v] else ()))
            )
            escapes.append(draw(st.booleans()) and draw(st.booleans()))
    return MemoryProblem(
        names=tuple(f"n{v}" for v in range(n)),
        preds=tuple(tuple(p) for p in preds),
        buf_sizes=tuple(sizes),
        buf_producer=tuple(producer),
        buf_readers=tuple(readers),
        buf_escapes=tuple(escapes),
    )


def _optimum(problem: MemoryProblem) -> int:
    n = len(problem.names)
    return min(
        peak(problem, order)
        for order in itertools.permutations(range(n))
        if is_topological(problem, order)
    )


@settings(max_examples=20)
@given(problems())
def test_minimize_peak_is_valid_never_worse_and_optimal_on_small_graphs(p: MemoryProblem) -> None:
    result = minimize_peak(p, time_limit_s=5.0, window=16)
    assert is_topological(p, result.order)
    assert result.peak_bytes == peak(p, result.order)
    assert result.peak_bytes <= result.original_peak_bytes == peak(p, range(len(p.names)))
    for greedy in (lpmf_order(p), dfs_order(p), bfs_order(p)):
        assert is_topological(p, greedy)
        assert result.peak_bytes <= peak(p, greedy)
    assert working_set_bound(p) <= result.peak_bytes == _optimum(p)


@given(problems(), st.integers(0, 64))
def test_l2_reuse_only_credits_adjacent_producer_consumer_pairs(p: MemoryProblem, l2: int) -> None:
    order = list(range(len(p.names)))
    reuse = l2_reuse_bytes(p, order, l2)
    for t, v in enumerate(order):
        prev = order[t - 1] if t else None
        expected = sum(
            size
            for size, made, rs in zip(p.buf_sizes, p.buf_producer, p.buf_readers, strict=True)
            if made == prev and v in rs and size <= l2
        )
        assert reuse[v] == expected
