"""Simulated and null backends, FrequencyRuntime: simulated totals equal the DVFS prediction."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.fx
from hypothesis import given
from hypothesis import strategies as st

from fxenergy.errors import PlanMismatchError
from fxenergy.graph.meta import COST, CostRecord
from fxenergy.hardware.dvfs import get_dvfs_model
from fxenergy.plans.plan import Plan, PlanMetrics, PlanPartition
from fxenergy.runtime import (
    FrequencyRuntime,
    NullBackend,
    RuntimePartition,
    SimulatedBackend,
    current_runtime,
    enter_partition,
    get_backend,
    restore,
)

GPU = "A100-SXM4-80GB"


@pytest.fixture(autouse=True)
def _clean_restore_state() -> Iterator[None]:
    """Runtimes install exit/signal hooks: put the process back as it was after each test."""
    yield
    restore.uninstall()


MODEL = get_dvfs_model(GPU, switch_latency_s=0.010)
CLOCKS = MODEL.clocks_mhz()


def _cost(gflops: float, mbytes: float, kernels: int = 1) -> CostRecord:
    flops = int(gflops * 1e9)
    return CostRecord(
        flops=flops,
        macs=flops // 2,
        bytes_read=int(mbytes * 1e6),
        bytes_written=int(mbytes * 1e5),
        dtype="bfloat16",
        kernels=kernels,
        matmul_flops=flops,
    )


def _predict(parts: list[RuntimePartition]) -> tuple[float, float, int]:
    """The plan's own accounting, written out from the DVFS model (team convention)."""
    time_s = energy_j = 0.0
    switches = 0
    clock = max(CLOCKS)
    for p in parts:
        if p.clock_mhz != clock:
            switches += 1
            clock = p.clock_mhz
        time_s += sum(MODEL.time_s(c, clock) for c in p.costs())
        energy_j += sum(MODEL.energy_j(c, clock) for c in p.costs())
    stall = switches * MODEL.switch_latency_s
    return time_s + stall, energy_j + stall * MODEL.idle_power_w, switches


costs = st.builds(_cost, st.floats(0.001, 500.0), st.floats(0.01, 4000.0), st.integers(0, 20))
partitions = st.lists(
    st.tuples(st.sampled_from(CLOCKS), st.lists(costs, min_size=1, max_size=3)),
    min_size=1,
    max_size=6,
)


@given(partitions)
def test_simulated_totals_equal_dvfs_prediction(spec: list) -> None:
    parts = [RuntimePartition(i, f, tuple(cs)) for i, (f, cs) in enumerate(spec)]
    sim = SimulatedBackend(GPU, model=MODEL)
    with FrequencyRuntime(sim, parts) as rt:
        for p in parts:
            enter_partition(p.index)
    s = rt.summary()
    time_s, energy_j, switches = _predict(parts)
    assert s.simulated and "SIMULATED" in s.backend
    assert s.switches == switches
    assert s.time_s == pytest.approx(time_s, rel=1e-12)
    assert s.energy_j == pytest.approx(energy_j, rel=1e-12)
    assert sim.current_clock_mhz == max(CLOCKS)  # restored on exit


def test_switch_costs_latency_at_idle_power_and_noops_are_free() -> None:
    sim = SimulatedBackend(GPU, switch_latency_s=0.02)
    assert sim.set_clock(1410) == 1410 and sim.trace == []  # already there
    sim.set_clock(900, "down")
    ev = sim.trace[0]
    assert (ev.from_mhz, ev.to_mhz, ev.label, ev.latency_s) == (1410, 900, "down", 0.02)
    assert ev.energy_j == pytest.approx(0.02 * sim.model.idle_power_w)
    assert sim.now_s() == pytest.approx(0.02) and sim.energy_j() == pytest.approx(ev.energy_j)
    sim.idle(1.5)
    assert sim.energy_j() == pytest.approx(ev.energy_j + 1.5 * sim.model.idle_power_w)
    with pytest.warns(UserWarning, match="nearest"):
        assert sim.set_clock(1000) == 1005
    assert sim.trace[-1].requested_mhz == 1000
    with pytest.raises(ValueError):
        sim.idle(-1.0)


def test_execute_follows_the_model_at_the_current_clock() -> None:
    sim = SimulatedBackend(GPU)
    c = _cost(200.0, 100.0)
    fast = sim.execute(c)
    sim.set_clock(600)
    slow = sim.execute(c, "slow")
    assert fast.time_s == MODEL.time_s(c, 1410) and slow.time_s == MODEL.time_s(c, 600)
    assert slow.energy_j == MODEL.energy_j(c, 600) and slow.label == "slow"
    assert slow.time_s > fast.time_s  # compute-bound work slows down at a lower clock


def test_null_backend_changes_and_measures_nothing() -> None:
    null = get_backend("null", gpu=GPU)
    assert isinstance(null, NullBackend)
    assert null.set_clock(1000) == 1005 and null.trace == []
    assert math.isnan(null.energy_j())
    null.reset()
    assert null.current_clock_mhz == 1410


def test_enter_partition_without_runtime_is_a_noop() -> None:
    assert current_runtime() is None
    enter_partition(3)  # nothing to do, nothing raised


class _Two(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ x) + 1


def _rewritten() -> torch.fx.GraphModule:
    """A traced module with enter_partition calls, as the rewrite pass makes them."""
    gm = torch.fx.symbolic_trace(_Two())
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    for index, node in enumerate(nodes[:2]):
        with gm.graph.inserting_before(node):
            gm.graph.call_function(enter_partition, (index,))
        node.meta[COST] = _cost(10.0 * (index + 1), 50.0)
    gm.graph.eliminate_dead_code()  # must keep the side-effectful calls
    gm.recompile()
    return gm


def test_rewritten_module_runs_plainly_and_under_the_simulator() -> None:
    gm = _rewritten()
    calls = [n for n in gm.graph.nodes if n.target is enter_partition]
    assert len(calls) == 2
    x = torch.randn(8, 8)
    expected = _Two()(x)
    assert torch.equal(gm(x), expected)  # no runtime: plain run
    parts = [
        RuntimePartition(0, 900, _cost(10.0, 50.0)),
        RuntimePartition(1, 1410, _cost(20.0, 50.0)),
    ]
    with FrequencyRuntime(SimulatedBackend(GPU, model=MODEL), parts) as rt:
        assert current_runtime() is rt
        assert torch.equal(gm(x), expected)
        assert torch.equal(gm(x), expected)  # a second call: partition 1 then 0 again
    assert current_runtime() is None
    s = rt.summary()
    assert s.switches == 4  # 1410→900, 900→1410, again
    one = MODEL.time_s(parts[0].cost, 900) + MODEL.time_s(parts[1].cost, 1410)
    assert s.time_s == pytest.approx(2 * one + 4 * MODEL.switch_latency_s)


def test_from_plan_reads_node_costs() -> None:
    gm = _rewritten()
    by_name = {n.name: n for n in gm.graph.nodes if COST in n.meta}
    names = list(by_name)
    metrics = PlanMetrics(time_s=1.0, energy_j=1.0, peak_memory_bytes=0)
    plan = Plan(
        fingerprint="x",
        gpu=GPU,
        max_slowdown=0.0,
        switch_latency_s=0.01,
        order=tuple(names),
        partitions=(
            PlanPartition(0, 1200, (names[0],), 0.0, 0.0),
            PlanPartition(1, 1410, (names[1],), 0.0, 0.0),
        ),
        predicted=metrics,
        baseline=metrics,
        status="TEST",
    )
    rt = FrequencyRuntime.from_plan(plan, SimulatedBackend(GPU, model=MODEL), gm)
    assert rt.partitions[0].costs() == (by_name[names[0]].meta[COST],)
    with rt:
        gm(torch.randn(4, 4))
    expect = MODEL.time_s(rt.partitions[0].costs()[0], 1200) + MODEL.time_s(
        rt.partitions[1].costs()[0], 1410
    )
    assert rt.summary().time_s == pytest.approx(expect + 2 * MODEL.switch_latency_s)


def test_unknown_partition_index_is_refused() -> None:
    with (
        FrequencyRuntime(SimulatedBackend(GPU, model=MODEL), [RuntimePartition(0, 900)]),
        pytest.raises(PlanMismatchError, match="same plan"),
    ):
        enter_partition(5)


def test_exception_inside_runtime_restores_clock() -> None:
    sim = SimulatedBackend(GPU, model=MODEL)
    with (
        pytest.raises(KeyError),
        FrequencyRuntime(sim, [RuntimePartition(0, 600, _cost(1.0, 1.0))]),
    ):
        enter_partition(0)
        assert sim.current_clock_mhz == 600
        raise KeyError("boom")
    assert sim.current_clock_mhz == 1410 and current_runtime() is None


def test_reentered_runtime_summarizes_each_entry() -> None:
    sim = SimulatedBackend(GPU, model=MODEL)
    rt = FrequencyRuntime(sim, [RuntimePartition(0, 900, _cost(5.0, 5.0))])
    with rt:
        enter_partition(0)
        enter_partition(0)  # same clock: a no-op
    first = rt.summary()
    with rt:
        enter_partition(0)
    second = rt.summary()
    assert (first.switches, first.noop_skipped) == (1, 1)
    assert (second.switches, second.noop_skipped) == (1, 0)  # back to 900 after the reset
    assert second.time_s == pytest.approx(MODEL.time_s(_cost(5.0, 5.0), 900) + 0.010)
