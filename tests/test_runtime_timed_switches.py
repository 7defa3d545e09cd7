"""Clock splits at run time: timed controller requests and ClockPlanHook's second switch."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fxenergy.errors import PlanMismatchError
from fxenergy.hardware.profiles import read_profile
from fxenergy.pipeline.costs import ClockSplit
from fxenergy.pipeline.dag import StageCosts, build_dag
from fxenergy.pipeline.planner import PipelinePlanner
from fxenergy.pipeline.runner import (
    ClockPlanHook,
    expected_switches,
    rank_plan_from_json,
    rank_splits_from_json,
)
from fxenergy.runtime.controller import SwitchController
from fxenergy.runtime.sim import SimulatedBackend
from tests.test_runtime_controller import (
    RecordingBackend,
    _outcomes,
    _threaded,
    _wait_for,
)

GPU = "A100-SXM4-80GB"
PROFILE = Path(__file__).parent / "data" / "perseus_a100_4stage.csv"


def _at(backend: RecordingBackend, mhz: int) -> float:
    return next(t for f, t, _ in backend.calls if f == mhz)


def test_timed_request_waits_its_delay_after_the_boundary() -> None:
    backend = RecordingBackend()
    ctl, events = _threaded(backend)
    ctl.request(900, "0F0")
    ctl.request(1200, "0F0~", ahead=True, delay_s=0.08)
    t0 = time.perf_counter()
    for ev in events:  # both sit at the same point of the stream
        ev.complete()
    _wait_for(ctl, 2)
    ctl.close()
    assert _outcomes(ctl) == [(900, "applied"), (1200, "applied")]  # never supersedes its own
    assert _at(backend, 1200) - t0 >= 0.079
    assert _at(backend, 1200) - _at(backend, 900) < 1.0  # not waiting for anything else


def test_timed_request_at_zero_delay_follows_its_boundary_request() -> None:
    backend = RecordingBackend()
    ctl, events = _threaded(backend)
    ctl.request(900)
    ctl.request(1200, delay_s=0.0)
    for ev in events:
        ev.complete()
    _wait_for(ctl, 2)
    ctl.close()
    assert [c[0] for c in backend.calls] == [900, 1200]


def test_next_boundary_supersedes_a_waiting_timed_request() -> None:
    """The computation ended sooner than planned: its second clock is dropped as superseded and
    the next boundary's clock applied when the GPU gets there, not after the delay."""
    backend = RecordingBackend()
    ctl, events = _threaded(backend)
    ctl.request(900, "0F0")
    ctl.request(1200, "0F0~", delay_s=5.0)
    ctl.request(600, "0B0")
    events[0].complete()
    events[1].complete()
    _wait_for(ctl, 1)
    t0 = time.perf_counter()
    events[2].complete()
    _wait_for(ctl, 3)
    ctl.close()
    assert _outcomes(ctl) == [(900, "applied"), (1200, "superseded"), (600, "applied")]
    assert _at(backend, 600) - t0 < 1.0
    assert ctl.count("superseded") == 1


def test_boundaries_passed_together_skip_the_timed_request_in_between() -> None:
    backend = RecordingBackend()
    ctl, events = _threaded(backend)
    for clock, delay in ((900, None), (1200, 0.5), (600, None)):
        ctl.request(clock, delay_s=delay)
    for ev in reversed(events):
        ev.complete()
    _wait_for(ctl, 3)
    ctl.close()
    assert _outcomes(ctl) == [(900, "superseded"), (1200, "superseded"), (600, "applied")]


def test_close_drains_a_timed_request_at_its_time_or_drops_it() -> None:
    backend = RecordingBackend()
    ctl, events = _threaded(backend)
    ctl.request(1200, delay_s=0.05)
    events[0].complete()
    t0 = time.perf_counter()
    ctl.close()  # drain: the GPU is in the computation; its second clock still lands
    assert time.perf_counter() - t0 >= 0.04
    assert _outcomes(ctl) == [(1200, "applied")]

    backend = RecordingBackend()
    ctl, events = _threaded(backend)
    ctl.request(1200, delay_s=5.0)
    events[0].complete()
    time.sleep(0.02)
    t0 = time.perf_counter()
    ctl.close(drain=False)
    assert time.perf_counter() - t0 < 1.0
    assert _outcomes(ctl) == [(1200, "dropped")] and backend.calls == []


def test_negative_delay_rejected() -> None:
    with pytest.raises(ValueError, match="delay_s"):
        SwitchController(RecordingBackend(), threaded=False).request(900, delay_s=-0.1)


class FakeStage:
    stage_index = 0

    def forward_one_chunk(self, mb: int, *args, **kwargs) -> str:
        return f"F{mb}"

    def backward_one_chunk(self, mb: int, *args, **kwargs) -> str:
        if mb < 0:
            raise ZeroDivisionError
        return f"B{mb}"


PLAN = {(0, "forward", 0): 1200, (0, "backward", 0): 1005}
SPLITS = {
    (0, "forward", 0): ClockSplit(900, 0.4, after_s=0.06),  # issued 50 ms after the boundary
    (0, "backward", 0): ClockSplit(1410, 0.9, after_s=0.004),  # shorter than the latency
}


class AheadBackend(RecordingBackend):
    """Remembers which switches were issued ahead (the simulator's ``switch_ahead``)."""

    switch_latency_s = 0.01

    def switch_ahead(self, mhz: int, label: str = "") -> int:
        return super().set_clock(mhz, label + " ahead")


def test_hook_synchronous_requests_both_clocks_ahead_or_late() -> None:
    backend = AheadBackend()
    stage = FakeStage()
    with ClockPlanHook(stage, PLAN, backend, splits=SPLITS) as hook:
        assert not hook.controller.threaded
        stage.forward_one_chunk(0)
        stage.backward_one_chunk(0)
    assert hook.requests == [("0F0", 1200), ("0F0~", 900), ("0B0", 1005), ("0B0~", 1410)]
    assert [(f, label) for f, _, label in backend.calls] == [
        (1200, "0F0"),
        (900, "0F0~ ahead"),  # 60 ms > 10 ms latency: issued ahead of the split point
        (1005, "0B0"),
        (1410, "0B0~"),  # 4 ms < latency: lands late
    ]
    assert hook.late_splits == 1
    assert backend.current_clock_mhz == 1410  # reset on exit


def test_hook_threaded_times_the_second_clock_from_the_boundary() -> None:
    backend = AheadBackend()
    ctl, events = _threaded(backend)
    stage = FakeStage()
    with ClockPlanHook(stage, PLAN, backend, controller=ctl, splits=SPLITS):
        stage.forward_one_chunk(0)
        assert backend.calls == []  # the host did not wait for the GPU
        t0 = time.perf_counter()
        events[0].complete()
        events[1].complete()
        _wait_for(ctl, 2)
        assert _at(backend, 900) - t0 >= 0.049
    ctl.close()
    assert _outcomes(ctl) == [(1200, "applied"), (900, "applied")]


def test_hook_restores_clocks_and_drops_the_pending_split_when_a_computation_raises() -> None:
    backend = AheadBackend()
    ctl, events = _threaded(backend)
    stage = FakeStage()
    plan = {**PLAN, (0, "backward", -1): 1005}
    splits = {(0, "forward", 0): ClockSplit(900, 0.4, after_s=5.0)}
    with (
        pytest.raises(ZeroDivisionError),
        ClockPlanHook(stage, plan, backend, controller=ctl, splits=splits),
    ):
        stage.forward_one_chunk(0)
        events[0].complete()
        events[1].complete()
        _wait_for(ctl, 1)  # 1200 applied, 900 waiting out its 5 s
        stage.backward_one_chunk(-1)
    assert backend.current_clock_mhz == 1410
    assert (900, "dropped") in _outcomes(ctl)
    assert [c[0] for c in backend.calls] == [1200]


def test_splits_must_belong_to_the_plan() -> None:
    with pytest.raises(PlanMismatchError, match="0W3"):
        ClockPlanHook(
            FakeStage(),
            PLAN,
            AheadBackend(),
            splits={(0, "backward_weight", 3): SPLITS[(0, "forward", 0)]},
        )


def test_rank_splits_round_trip_and_expected_switches() -> None:
    dag = build_dag("1F1B", 2, 4, 2)
    costs = StageCosts.from_profile(read_profile(PROFILE), 2, 83.64, [0, 1])
    planner = PipelinePlanner(dag, costs, polish_s=0.0, split_clocks=True)
    plan = planner.plan(planner.all_max_s * 1.05)
    doc = plan.to_json()
    assert plan.splits
    for rank in range(2):
        splits = rank_splits_from_json(doc, rank, dag.fingerprint)
        assert splits == plan.rank_splits(rank)
        steps = rank_plan_from_json(doc, rank, dag.fingerprint)
        backend = SimulatedBackend(GPU)
        stage = FakeStage()
        stage.stage_index = rank
        initial = backend.current_clock_mhz
        with ClockPlanHook(stage, steps, backend, splits=splits, reset_on_exit=False):
            for (_, kind, mb), _ in steps:
                (stage.forward_one_chunk if kind == "forward" else stage.backward_one_chunk)(mb)
        want = expected_switches(steps, initial, 1, splits)
        assert [e.to_mhz for e in backend.trace] == want
        assert len(want) > len(expected_switches(steps, initial, 1))
    with pytest.raises(PlanMismatchError):
        rank_splits_from_json(doc, 0, build_dag("GPipe", 2, 4, 2).fingerprint)
