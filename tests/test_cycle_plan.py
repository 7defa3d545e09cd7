"""plans/cycle.py (graphs concatenated into one cyclic problem) and switch placement on export
graphs (a switch goes before the partition's first movable node, never among the get_attrs)."""

from __future__ import annotations

import torch
from torch import nn

from fxenergy.graph.capture import capture
from fxenergy.plans.cycle import concat_problems, entry_clocks, split_solution
from fxenergy.plans.plan import Plan, PlanMetrics, PlanPartition, graph_fingerprint
from fxenergy.plans.planner import annotate, apply_plan
from fxenergy.runtime.session import FrequencyRuntime
from fxenergy.runtime.sim import SimulatedBackend
from fxenergy.schedule.problem import Problem, Solution, Task
from fxenergy.schedule.validate import check, evaluate
from passes.insert_frequency_switches import partition_trace


def _problem(tag: str, n: int) -> Problem:
    tasks = tuple(Task(f"{tag}{i}", (10, 14), (50, 40)) for i in range(n))
    return Problem(tasks, (1410, 1110), data_edges=tuple((i, i + 1) for i in range(n - 1)))


def test_concat_chains_graphs_and_split_roundtrips() -> None:
    a, b = _problem("a", 3), _problem("b", 2)
    cyc = concat_problems([a, b, a])
    p = cyc.problem
    assert p.cyclic and p.num_tasks == 8 and cyc.spans == ((0, 3), (3, 5), (5, 8))
    assert p.tasks[3].name == "g1.b0" and cyc.graph_of(6) == 2
    assert (2, 3) in p.edges and (4, 5) in p.edges  # graph k's sink before graph k+1's first
    clocks = (0, 0, 1, 1, 1, 1, 0, 0)  # graph 1 continues graph 0's last partition
    sol = Solution(tuple(range(8)), clocks)
    check(p, sol)
    ev = evaluate(p, sol)
    assert ev.switches == 2 and len(ev.partitions) == 3
    local = split_solution(cyc, sol)
    assert [s.clocks for s in local] == [(0, 0, 1), (1, 1), (1, 0, 0)]
    assert entry_clocks(cyc, sol) == [0, 1, 1]  # the first graph enters at the last one's clock


def test_split_refuses_interleaved_graphs() -> None:
    import pytest

    from fxenergy.errors import ScheduleProblemError

    cyc = concat_problems([_problem("a", 2), _problem("b", 2)])
    with pytest.raises(ScheduleProblemError, match="interleaves"):
        split_solution(cyc, Solution((0, 2, 1, 3), (0,) * 4))


class _TwoBranches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(16, 16)
        self.b = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x).relu() + self.b(x).sigmoid()


def test_export_graph_swapped_branches_run_in_their_own_partitions() -> None:
    torch.manual_seed(0)
    model = _TwoBranches()
    x = torch.randn(4, 16)
    gm = annotate(capture(model, (x,), method="export"), "A100-SXM4-80GB")
    nodes = [n for n in gm.graph.nodes if n.op not in ("placeholder", "output")]
    assert nodes[0].op == "get_attr"  # export puts every parameter at the top
    # newer torch.export adds an input-guard call (a side effect: it stays first, so it opens
    # b's partition here)
    guards = [n.name for n in nodes if n.op == "call_module" and n.target == "_guards_fn"]
    branch_b = [*guards, *(n.name for n in nodes if n.meta.get("fxenergy.module") == "b")]
    rest = [n.name for n in nodes if n.name not in branch_b]
    assert branch_b and rest
    # b's branch first at one clock, then a's branch and the add at another; the get_attrs of
    # both branches stay at the top of the graph, in their own partitions
    order = tuple(branch_b + rest)
    zero = PlanMetrics(0.0, 0.0, 0)
    plan = Plan(
        fingerprint=graph_fingerprint(gm),
        gpu="A100-SXM4-80GB",
        max_slowdown=0.0,
        switch_latency_s=0.0,
        order=order,
        partitions=(
            PlanPartition(0, 1110, tuple(branch_b), 0.0, 0.0),
            PlanPartition(1, 1410, tuple(rest), 0.0, 0.0),
        ),
        predicted=zero,
        baseline=zero,
        status="TEST",
    )
    rewritten = apply_plan(gm, plan)
    sim = SimulatedBackend("A100-SXM4-80GB", switch_latency_s=0.0)
    rt = FrequencyRuntime.from_plan(plan, sim, rewritten)
    seen = partition_trace(rewritten, rt, x)
    movable = [n.name for n in rewritten.graph.nodes if n.name in seen and n.op != "get_attr"]
    assert movable
    for name in movable:
        want = 0 if name in branch_b else 1
        assert seen[name] == want, f"{name} ran in partition {seen[name]}, planned {want}"
    torch.testing.assert_close(rewritten(x), model(x), rtol=0, atol=0)
