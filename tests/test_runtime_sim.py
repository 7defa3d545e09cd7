"""Simulated and null backends, FrequencyRuntime: simulated totals equal the DVFS prediction."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import ClassVar

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


class ToyModel:
    """A DVFS-like model simple enough to price by hand: a cost's ``flops`` are "size"; it takes
    ``size / f`` seconds at clock ``f`` MHz (no cap) at 100 W at 1000 MHz and 40 W at 500 MHz."""

    idle_power_w = 30.0
    switch_latency_s = 0.01
    power: ClassVar[dict[int, float]] = {1000: 100.0, 500: 40.0}

    def work_of(self, cost: CostRecord) -> float:
        return float(cost.flops)

    def effective_clock_mhz(self, mix: object, freq_mhz: float) -> float:
        return freq_mhz

    def at_effective_clock(self, mix: tuple, f: float) -> tuple[float, float]:
        t = sum(mix) / f
        return t, t * self.power[int(f)]

    def clocks_mhz(self) -> tuple[int, ...]:
        return (1000, 500)


def _size(n: int) -> CostRecord:
    return CostRecord(n, 0, 0, 0, "float32")


def test_issue_ahead_by_hand_cyclic() -> None:
    """A (size 100) at 1000 MHz then B (size 50) at 500 MHz, repeating. Cycle: T(1000) = 0.15 s,
    E = 15 J; T(500) = 0.3 s, E = 12 J. Down (ahead, in A's tail): the 10 ms window runs at
    500 MHz, the work of 5 ms at 1000: +5 ms, 10 ms · 100 W − 5 ms · 100 W = +0.5 J. Up (ahead,
    in B's tail): same speed, 10 ms · (100 − 40) W = +0.6 J. A run: 0.205 s, 15.1 J."""
    sim = SimulatedBackend(GPU, model=ToyModel())  # type: ignore[arg-type]
    parts = [RuntimePartition(0, 1000, _size(100)), RuntimePartition(1, 500, _size(50))]
    rt = FrequencyRuntime(sim, parts, next_clock_mhz=1000, restore_on_exit=False)
    for _ in range(2):  # the run starts at 1000 MHz (the maximum, then the previous run's)
        with rt:
            enter_partition(0)
            enter_partition(1)
        s = rt.summary()
        assert s.time_s == pytest.approx(0.205, rel=1e-12)
        assert s.energy_j == pytest.approx(15.1, rel=1e-12)
    # each request went out 10 ms before its boundary (0.105 s and 0.205 s into the run)
    assert [round(e.t_s, 9) for e in sim.trace] == [0.095, 0.195, 0.3, 0.4]
    assert [(e.from_mhz, e.to_mhz) for e in sim.trace] == [(1000, 500), (500, 1000)] * 2


def test_late_first_switch_by_hand() -> None:
    """B at 500 MHz first, then A at 1000, not repeated: the first request goes out at the
    start (a head window: B's speed, 1000 MHz power, +0.6 J), the second ahead (+0.6 J)."""
    sim = SimulatedBackend(GPU, model=ToyModel())  # type: ignore[arg-type]
    parts = [RuntimePartition(0, 500, _size(50)), RuntimePartition(1, 1000, _size(100))]
    with FrequencyRuntime(sim, parts) as rt:
        enter_partition(0)
        enter_partition(1)
    s = rt.summary()
    assert (s.time_s, s.energy_j) == (pytest.approx(0.2), pytest.approx(4 + 0.6 + 0.6 + 10))
    assert [round(e.t_s, 9) for e in s.trace] == [0.0, 0.09]


def _independent(parts: list[tuple[int, list[CostRecord]]], cyclic: bool) -> tuple[float, float]:
    """A second implementation of a run's totals: cap on the cycle's average power, then each
    switch's window (slower clock's speed, hungrier clock's power) written out directly."""
    mix = [MODEL.work_of(c) for _, cs in parts for c in cs]

    def at(f: int, costs: list[CostRecord]) -> tuple[float, float]:
        f_eff = MODEL.effective_clock_mhz(mix, f)
        pairs = [MODEL.at_effective_clock([MODEL.work_of(c)], f_eff) for c in costs]
        return sum(t for t, _ in pairs), sum(e for _, e in pairs)

    every = [c for _, cs in parts for c in cs]
    lat = MODEL.switch_latency_s
    time_s = energy_j = 0.0
    clocks = [f for f, _ in parts]
    # merge neighbours at one clock: they are one partition
    for i, (f, cs) in enumerate(parts):
        t, e = at(f, cs)
        time_s, energy_j = time_s + t, energy_j + e
        nxt = clocks[i + 1] if i + 1 < len(parts) else (clocks[0] if cyclic else None)
        if nxt is not None and nxt != f:  # ahead: the window runs this partition's work
            tf, ef = at(f, every)
            tn, en = at(nxt, every)
            work_in_window = lat * min(1.0, tf / tn)  # at f's speed, of the window's lat
            time_s += lat - work_in_window
            energy_j += lat * max(ef / tf, en / tn) - work_in_window * ef / tf
    if not cyclic and clocks[0] != max(CLOCKS):  # late first switch from the maximum
        tf, ef = at(clocks[0], every)
        tm, em = at(max(CLOCKS), every)
        done = lat * min(1.0, tf / tm)
        time_s += lat - done
        energy_j += lat * max(ef / tf, em / tm) - done * ef / tf
    return time_s, energy_j


costs = st.builds(_cost, st.floats(0.001, 500.0), st.floats(0.01, 4000.0), st.integers(0, 20))
partitions = st.lists(
    st.tuples(st.sampled_from(CLOCKS), st.lists(costs, min_size=1, max_size=3)),
    min_size=1,
    max_size=6,
)


@given(partitions, st.booleans())
def test_simulated_totals_equal_an_independent_computation(spec: list, cyclic: bool) -> None:
    parts = [RuntimePartition(i, f, tuple(cs)) for i, (f, cs) in enumerate(spec)]
    sim = SimulatedBackend(GPU, model=MODEL)
    nxt = spec[0][0] if cyclic else None
    if cyclic:  # steady state: the previous run left the first clock in force
        sim.set_clock(spec[0][0])
    with FrequencyRuntime(sim, parts, next_clock_mhz=nxt, restore_on_exit=not cyclic) as rt:
        for p in parts:
            enter_partition(p.index)
    s = rt.summary()
    time_s, energy_j = _independent(spec, cyclic)
    assert s.simulated and "SIMULATED" in s.backend
    assert s.time_s == pytest.approx(time_s, rel=1e-9)
    assert s.energy_j == pytest.approx(energy_j, rel=1e-9)
    if not cyclic:
        assert sim.current_clock_mhz == max(CLOCKS)  # restored on exit


def test_a_switch_prices_its_window_and_noops_are_free() -> None:
    sim = SimulatedBackend(GPU, switch_latency_s=0.02)
    sim.set_cycle([_cost(200.0, 100.0)])
    assert sim.set_clock(1410) == 1410 and sim.trace == []  # already there
    sim.set_clock(900, "down")  # late: the window is the head of the work after it
    ev = sim.trace[0]
    assert (ev.from_mhz, ev.to_mhz, ev.label, ev.latency_s, ev.t_s) == (1410, 900, "down", 0.02, 0)
    (t9, e9), (t14, e14) = sim.profile(900), sim.profile(1410)
    assert ev.energy_j == pytest.approx(0.02 * (e14 / t14 - e9 / t9))  # 900's speed, 1410's W
    assert sim.now_s() == 0.0 and sim.energy_j() == pytest.approx(ev.energy_j)
    sim.execute(_cost(200.0, 100.0))
    before = sim.now_s()
    sim.switch_ahead(1410, "up")  # ahead: the window was the tail of the work just run
    assert sim.trace[-1].t_s == pytest.approx(before - 0.02)
    sim.idle(1.5)
    with pytest.warns(UserWarning, match="nearest"):
        assert sim.set_clock(1000) == 1005
    assert sim.trace[-1].requested_mhz == 1000
    with pytest.raises(ValueError):
        sim.idle(-1.0)


def test_execute_follows_the_model_at_the_cycles_effective_clock() -> None:
    sim = SimulatedBackend(GPU)
    c = _cost(200.0, 100.0)
    fast = sim.execute(c)  # no cycle: the node is its own cap window
    assert fast.time_s == MODEL.time_s(c, 1410)
    big = _cost(5000.0, 10.0)  # a long GEMM: the cap acts on the mix it runs in
    sim.set_cycle([c, big])
    f_eff = MODEL.effective_clock_mhz([MODEL.work_of(c), MODEL.work_of(big)], 1410)
    mixed = sim.execute(c)
    assert mixed.time_s == MODEL.at_effective_clock([MODEL.work_of(c)], f_eff)[0]
    sim.set_clock(600)
    slow = sim.execute(c, "slow")
    assert slow.label == "slow" and slow.time_s > mixed.time_s


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
    assert [(e.from_mhz, e.to_mhz) for e in s.trace] == [(1410, 900), (900, 1410)] * 2


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
    spec = [(p.clock_mhz, list(p.costs())) for p in rt.partitions.values()]
    assert rt.summary().time_s == pytest.approx(_independent(spec, cyclic=False)[0], rel=1e-9)


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
    assert second.time_s == pytest.approx(_independent([(900, [_cost(5.0, 5.0)])], False)[0])


def test_a_chain_of_graphs_runs_one_cyclic_plan() -> None:
    """Forward / backward / step as three runtimes on one backend: the same ``cycle``, each
    requesting the next graph's first clock ahead, nothing reset between calls. A steady-state
    step equals the concatenated plan run as one cycle (tests/independent.py)."""
    from tests.independent import run_totals

    graphs = [
        [(1410, [_cost(300.0, 100.0)]), (900, [_cost(1.0, 3000.0)])],
        [(900, [_cost(2.0, 2500.0)]), (1410, [_cost(600.0, 200.0)])],
        [(705, [_cost(0.5, 4000.0)])],
    ]
    every = [c for g in graphs for _, cs in g for c in cs]
    sim = SimulatedBackend(GPU, model=MODEL)
    runtimes = []
    for k, g in enumerate(graphs):
        parts = [RuntimePartition(i, f, tuple(cs)) for i, (f, cs) in enumerate(g)]
        nxt = graphs[(k + 1) % len(graphs)][0][0]
        runtimes.append(
            FrequencyRuntime(sim, parts, cycle=every, next_clock_mhz=nxt, restore_on_exit=False)
        )
    totals = []
    for _ in range(3):  # steps; the first starts at the maximum clock, the others steady
        t0, e0 = sim.now_s(), sim.energy_j()
        for rt in runtimes:
            with rt:
                for index in sorted(rt.partitions):
                    enter_partition(index)
        totals.append((sim.now_s() - t0, sim.energy_j() - e0))
    time_s, energy_j = run_totals(MODEL, [p for g in graphs for p in g], cyclic=True)
    for step in totals:
        assert step[0] == pytest.approx(time_s, rel=1e-9)
        assert step[1] == pytest.approx(energy_j, rel=1e-9)
    assert sim.current_clock_mhz == 1410  # the next step's first clock, requested ahead
