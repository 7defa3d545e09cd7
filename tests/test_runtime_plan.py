"""Simulated steady-state runs of ``fxenergy.optimize`` equal the plan (within 1e-6), and both
equal an independent re-computation (tests/independent.py), with switch latency 0, 10, 50 ms."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.fx
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

from fxenergy.api import optimize
from fxenergy.graph import meta
from fxenergy.hardware.dvfs import get_dvfs_model
from fxenergy.models.cnn import SmallResNet
from fxenergy.models.gpt import Block, GPTConfig
from fxenergy.plans.planner import annotate, plan_graph
from fxenergy.runtime import FrequencyRuntime, SimulatedBackend, enter_partition, restore
from tests.independent import run_totals

GPU = "A100-SXM4-80GB"


@pytest.fixture(autouse=True)
def _clean_restore_state() -> Iterator[None]:
    yield
    restore.uninstall()


def _cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return SmallResNet().eval(), torch.randn(16, 3, 32, 32)


def _block() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return Block(GPTConfig(d_model=512, n_head=8)).eval(), torch.randn(8, 128, 512)


@pytest.mark.parametrize("make", [_cnn, _block], ids=["cnn", "transformer-block"])
@pytest.mark.parametrize("latency_s", [0.0, 0.010, 0.050])
def test_steady_state_runs_equal_the_plan(make, latency_s: float) -> None:
    net, x = make()
    opt = optimize(
        net,
        (x,),
        gpu=GPU,
        max_slowdown=0.05,
        backend="sim",
        switch_latency_s=latency_s,
        time_limit_s=3,
    )
    plan = opt.plan
    assert plan.extra["cyclic"]
    assert torch.equal(opt(x), net(x))  # first call: from the maximum clock
    opt(x)  # steady state: the previous call requested the first partition's clock ahead
    run = opt.last_run
    assert run is not None and run.simulated
    assert run.time_s == pytest.approx(plan.predicted.time_s, rel=1e-6)
    assert run.energy_j == pytest.approx(plan.predicted.energy_j, rel=1e-6)
    assert run.switches == plan.predicted.switches
    costs = {n.name: n.meta.get(meta.COST) for n in opt.graph_module.graph.nodes}
    parts = [(p.clock_mhz, [costs[n] for n in p.nodes if costs[n]]) for p in plan.partitions]
    model = get_dvfs_model(GPU, switch_latency_s=latency_s)
    time_s, energy_j = run_totals(model, parts, cyclic=True)
    assert plan.predicted.time_s == pytest.approx(time_s, rel=1e-6)
    assert plan.predicted.energy_j == pytest.approx(energy_j, rel=1e-6)
    assert plan.predicted.time_s <= plan.baseline.time_s * 1.05 * (1 + 1e-12)
    restore.restore_all()


def _mixed_graph(dim: int = 8192, matmuls: int = 8, elementwise: int = 400) -> torch.fx.GraphModule:
    """GEMMs (compute-bound) then a long elementwise chain (memory-bound), on fake tensors: long
    enough (~0.75 s on an A100) that switching pays even at 50 ms latency."""
    g = torch.fx.Graph()
    x, w = g.placeholder("x"), g.placeholder("w")
    v = x
    for _ in range(matmuls):
        v = g.call_function(torch.matmul, (v, w))
    for i in range(elementwise):
        v = g.call_function(torch.add if i % 2 else torch.mul, (v, x))
    g.output(v)
    gm = torch.fx.GraphModule(torch.nn.Module(), g)
    mode = FakeTensorMode()
    with mode:
        args = (torch.empty(dim, dim), torch.empty(dim, dim))
    FakeTensorProp(gm, mode).propagate(*args)
    return annotate(gm, GPU)


@pytest.mark.parametrize("latency_s", [0.010, 0.050])
def test_switching_plan_runs_as_planned(latency_s: float) -> None:
    gm = _mixed_graph()
    plan = plan_graph(gm, GPU, 0.01, switch_latency_s=latency_s, time_limit_s=3)
    assert plan.predicted.switches >= 2 and plan.energy_saving > 0  # it does switch
    sim = SimulatedBackend(GPU, switch_latency_s=latency_s)
    rt = FrequencyRuntime.from_plan(plan, sim, gm, restore_on_exit=False)
    for _ in range(2):  # what the rewritten module does, without computing 8k GEMMs on a CPU
        with rt:
            for part in plan.partitions:
                enter_partition(part.index)
    run = rt.summary()  # the second run: steady state
    assert run.time_s == pytest.approx(plan.predicted.time_s, rel=1e-6)
    assert run.energy_j == pytest.approx(plan.predicted.energy_j, rel=1e-6)
    costs = {n.name: n.meta.get(meta.COST) for n in gm.graph.nodes}
    parts = [(p.clock_mhz, [costs[n] for n in p.nodes if costs[n]]) for p in plan.partitions]
    model = get_dvfs_model(GPU, switch_latency_s=latency_s)
    time_s, energy_j = run_totals(model, parts, cyclic=True)
    assert plan.predicted.time_s == pytest.approx(time_s, rel=1e-6)
    assert plan.predicted.energy_j == pytest.approx(energy_j, rel=1e-6)
    assert plan.predicted.time_s <= plan.baseline.time_s * 1.01 * (1 + 1e-12)
    # every request went out `latency` before its predicted boundary, in the partition before
    starts = [0.0]
    for p in plan.partitions:
        starts.append(starts[-1] + p.time_s)
    first = len(sim.trace) - run.switches
    boundaries = [
        starts[i]
        for i in range(1, len(starts))
        if i == len(starts) - 1
        or (plan.partitions[i].clock_mhz != plan.partitions[i - 1].clock_mhz)
    ]
    t0 = sim.trace[first].t_s + latency_s - boundaries[0]
    got = [e.t_s - t0 + latency_s for e in sim.trace[first:]]
    assert got == pytest.approx(boundaries, rel=1e-9, abs=1e-12)
