"""Property tests of optimize on random fx graphs with in-place, RNG and side-effectful calls:
outputs (and side effects) identical, graph lints, the checker accepts the plan, the deadline
is met, energy never above the max-clock baseline, peak memory never above the bound."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

from fxenergy.graph import meta
from fxenergy.hardware.dvfs import get_dvfs_model
from fxenergy.plans.planner import annotate, apply_plan, plan_graph
from fxenergy.runtime import FrequencyRuntime, SimulatedBackend, restore
from fxenergy.schedule.build import build_problem
from fxenergy.schedule.problem import Solution
from fxenergy.schedule.validate import check
from tests.independent import run_totals

LOG: list[torch.Tensor] = []


def _record(x: torch.Tensor) -> torch.Tensor:
    """A side effect (runs on fake tensors too): remember the value seen."""
    LOG.append(x.detach().clone())
    return x


torch.fx.node.has_side_effect(_record)

D = 32
_OPS = ("matmul", "add", "relu", "mul", "inplace", "rng", "record", "softmax")


@st.composite
def programs(draw: st.DrawFn) -> torch.fx.GraphModule:
    """A random DAG program over (D, D) tensors mixing pure, in-place, RNG and logged ops."""
    g = torch.fx.Graph()
    root = torch.nn.Module()
    root.register_buffer("w", torch.randn(D, D) / D**0.5)
    values = [g.placeholder("x")]
    w = g.get_attr("w")
    for _ in range(draw(st.integers(2, 14))):
        op = draw(st.sampled_from(_OPS))
        a = draw(st.sampled_from(values))
        b = draw(st.sampled_from(values))
        if op == "matmul":
            v = g.call_function(torch.matmul, (a, w))
        elif op == "add":
            v = g.call_function(operator.add, (a, b))
        elif op == "relu":
            v = g.call_function(torch.relu, (a,))
        elif op == "mul":
            v = g.call_function(operator.mul, (a, b))
        elif op == "inplace":  # write into a fresh copy, read it afterwards
            c = g.call_method("clone", (a,))
            g.call_method("add_", (c, b))
            v = c
        elif op == "rng":
            v = g.call_function(operator.add, (a, g.call_function(torch.rand_like, (a,))))
        elif op == "record":
            v = g.call_function(_record, (a,))
        else:
            v = g.call_function(torch.softmax, (a, -1))
        values.append(v)
    outs = draw(st.lists(st.sampled_from(values[1:]), min_size=1, max_size=3, unique=True))
    g.output(tuple(outs))
    return torch.fx.GraphModule(root, g)


def _run(
    gm: torch.nn.Module, x: torch.Tensor
) -> tuple[tuple[torch.Tensor, ...], list[torch.Tensor]]:
    LOG.clear()
    torch.manual_seed(1234)
    out = gm(x)
    return tuple(t.clone() for t in out), list(LOG)


def _with_values(gm: torch.fx.GraphModule, x: torch.Tensor) -> torch.fx.GraphModule:
    """Fake values on every node of a hand-built graph (what capture does for a model)."""
    FakeTensorProp(gm, FakeTensorMode(allow_non_fake_inputs=True)).propagate(x)
    LOG.clear()
    return gm


@settings(max_examples=15, deadline=None)
@given(programs(), st.sampled_from([0.0, 0.02, 0.2]), st.sampled_from(["energy", "memory"]))
def test_optimize_random_programs(program, max_slowdown: float, objective: str) -> None:
    x = torch.randn(D, D)
    gm = annotate(_with_values(program, x), "H100-SXM5")
    plan = plan_graph(
        gm, "H100-SXM5", max_slowdown, switch_latency_s=0.0, objective=objective, time_limit_s=2
    )
    new = apply_plan(gm, plan)
    new.graph.lint()
    ref_out, ref_log = _run(program, x)
    new_out, new_log = _run(new, x)
    assert len(ref_out) == len(new_out)
    for a, b in zip(ref_out, new_out, strict=True):
        assert torch.equal(a, b)
    assert len(new_log) == len(ref_log)  # side effects in the same order with the same values
    assert all(torch.equal(a, b) for a, b in zip(ref_log, new_log, strict=True))
    # the plan is a legal schedule of the graph's own problem
    gp = build_problem(gm, get_dvfs_model("H100-SXM5", switch_latency_s=0.0))
    index = {n: i for i, n in enumerate(gp.names)}
    clock_index = {c: i for i, c in enumerate(gp.problem.clocks_mhz)}
    clocks = [0] * gp.problem.num_tasks
    for part in plan.partitions:
        for n in part.nodes:
            clocks[index[n]] = clock_index[part.clock_mhz]
    check(gp.problem, Solution(tuple(index[n] for n in plan.order), tuple(clocks)))
    base, pred = plan.baseline, plan.predicted
    assert pred.time_s <= base.time_s * (1 + max_slowdown) * (1 + 1e-6) + 1e-15
    assert pred.energy_j <= base.energy_j * (1 + 1e-9) + 1e-15
    assert pred.peak_memory_bytes <= base.peak_memory_bytes


@settings(max_examples=10, deadline=None)
@given(programs(), st.sampled_from([0.0, 0.02, 0.2]), st.sampled_from([0.0, 0.010, 0.050]))
def test_simulated_runs_equal_the_plan(program, max_slowdown: float, latency_s: float) -> None:
    """Steady state (second call): the simulator's totals are the plan's, within 1e-6, and an
    independent re-computation (tests/independent.py) agrees."""
    x = torch.randn(D, D)
    gm = annotate(_with_values(program, x), "H100-SXM5")
    plan = plan_graph(gm, "H100-SXM5", max_slowdown, switch_latency_s=latency_s, time_limit_s=2)
    new = apply_plan(gm, plan)
    sim = SimulatedBackend("H100-SXM5", switch_latency_s=latency_s)
    rt = FrequencyRuntime.from_plan(plan, sim, new, restore_on_exit=False)
    for _ in range(2):
        with rt:
            _run(new, x)
    run = rt.summary()
    assert run.time_s == pytest.approx(plan.predicted.time_s, rel=1e-6)
    assert run.energy_j == pytest.approx(plan.predicted.energy_j, rel=1e-6)
    costs = {n.name: n.meta.get(meta.COST) for n in new.graph.nodes}
    parts = [(p.clock_mhz, [costs[n] for n in p.nodes if costs[n]]) for p in plan.partitions]
    model = get_dvfs_model("H100-SXM5", switch_latency_s=latency_s)
    time_s, energy_j = run_totals(model, parts, cyclic=True)
    assert run.time_s == pytest.approx(time_s, rel=1e-6)
    assert run.energy_j == pytest.approx(energy_j, rel=1e-6)
    restore.uninstall()
