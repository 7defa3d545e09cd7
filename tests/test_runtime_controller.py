"""SwitchController with a fake event type: no-ops skipped, dwell enforced, order preserved."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import torch

from fxenergy.runtime import restore
from fxenergy.runtime.controller import SwitchController
from fxenergy.runtime.sim import NullBackend, SimulatedBackend

GPU = "A100-SXM4-80GB"


@pytest.fixture(autouse=True)
def _clean_restore_state() -> Iterator[None]:
    """Runtimes install exit/signal hooks: put the process back as it was after each test."""
    yield
    restore.uninstall()


class ManualEvent:
    """A CUDA-event stand-in the test completes by hand (the GPU reaching a boundary)."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self.recorded = False

    def record(self) -> None:
        self.recorded = True

    def query(self) -> bool:
        return self._done.is_set()

    def synchronize(self) -> None:
        assert self._done.wait(10), "test event never completed"

    def complete(self) -> None:
        self._done.set()


class RecordingBackend(NullBackend):
    """Null backend that remembers each real set_clock call and when it came."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__(GPU)
        self.calls: list[tuple[int, float, str]] = []
        self.fail_at = fail_at

    def set_clock(self, mhz: int, label: str = "") -> int:
        if self.fail_at is not None and mhz == self.fail_at:
            raise RuntimeError(f"refused {mhz}")
        self.calls.append((mhz, time.perf_counter(), label))
        return super().set_clock(mhz, label)


def _threaded(backend: RecordingBackend, **kw: float) -> tuple[SwitchController, list]:
    events: list[ManualEvent] = []

    def factory() -> ManualEvent:
        events.append(ManualEvent())
        return events[-1]

    ctl = SwitchController(backend, event_factory=factory, threaded=True, **kw)
    ctl.start()
    return ctl, events


def _wait_for(ctl: SwitchController, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(ctl.decisions) < n:
        assert time.monotonic() < deadline, ctl.decisions
        time.sleep(0.002)


def _outcomes(ctl: SwitchController) -> list[tuple[int, str]]:
    return [(d.request.clock_mhz, d.outcome) for d in ctl.decisions]


def test_request_returns_before_the_gpu_reaches_the_boundary() -> None:
    backend = RecordingBackend()
    ctl, events = _threaded(backend)
    ctl.request(900, "p0")
    assert events[0].recorded and backend.calls == []  # host did not wait
    events[0].complete()
    _wait_for(ctl, 1)
    assert [c[0] for c in backend.calls] == [900]
    ctl.close()


def test_order_preserved_and_noops_skipped() -> None:
    backend = RecordingBackend()
    ctl, events = _threaded(backend)
    for clock in (900, 900, 1200, 1410, 600):
        ctl.request(clock)
    for i, ev in enumerate(events):  # boundaries reached one by one
        ev.complete()
        _wait_for(ctl, i + 1)
    ctl.close()
    assert _outcomes(ctl) == [
        (900, "applied"),
        (900, "noop"),
        (1200, "applied"),
        (1410, "applied"),
        (600, "applied"),
    ]
    assert [c[0] for c in backend.calls] == [900, 1200, 1410, 600]


def test_boundaries_already_passed_are_superseded() -> None:
    backend = RecordingBackend()
    ctl, events = _threaded(backend)
    for clock in (900, 1200, 600):
        ctl.request(clock)
    for ev in reversed(events):  # the controller waits on the first; the rest are done by then
        ev.complete()
    _wait_for(ctl, 3)
    ctl.close()
    assert _outcomes(ctl) == [(900, "superseded"), (1200, "superseded"), (600, "applied")]
    assert [c[0] for c in backend.calls] == [600]


def test_dwell_delays_the_next_switch() -> None:
    backend = RecordingBackend()
    ctl, events = _threaded(backend, min_dwell_s=0.15)
    ctl.request(900)
    ctl.request(1200)
    for ev in events[:1]:
        ev.complete()
    _wait_for(ctl, 1)
    events[1].complete()
    _wait_for(ctl, 2)
    ctl.close()
    (f0, t0, _), (f1, t1, _) = backend.calls
    assert (f0, f1) == (900, 1200)
    assert t1 - t0 >= 0.15


def test_dwell_in_virtual_time_drops_a_switch_too_soon() -> None:
    sim = SimulatedBackend(GPU, switch_latency_s=0.001)
    ctl = SwitchController(sim, min_dwell_s=0.05, threaded=False)
    ctl.request(900)
    sim.idle(0.01)
    ctl.request(600)  # 11 ms after the last switch started: delayed
    assert sim.current_clock_mhz == 900
    sim.idle(0.1)
    ctl.request(1200)  # supersedes the delayed one; the dwell has passed
    ctl.request(1200)
    sim.idle(0.001)
    ctl.request(700)  # too soon again, and nothing comes after it: dropped at close
    ctl.close()
    assert _outcomes(ctl) == [
        (900, "applied"),
        (600, "superseded"),
        (1200, "applied"),
        (1200, "noop"),
        (700, "dropped"),
    ]
    assert [e.to_mhz for e in sim.trace] == [900, 1200]


def test_close_without_drain_drops_queued_and_restore_blocks_switching() -> None:
    backend = RecordingBackend()
    ctl, events = _threaded(backend)
    ctl.request(900)
    ctl.request(1200)
    ctl.request(600)
    events[0].complete()
    _wait_for(ctl, 1)
    ctl.close(drain=False, timeout_s=0.01)  # the thread is blocked on the 1200 boundary
    ctl.restore()
    assert backend.current_clock_mhz == 1410
    events[1].complete()  # the GPU gets there after all: too late to switch
    _wait_for(ctl, 3)
    assert sorted(_outcomes(ctl)) == [(600, "dropped"), (900, "applied"), (1200, "dropped")]
    assert [c[0] for c in backend.calls] == [900]


def test_controller_thread_error_surfaces_on_the_host() -> None:
    backend = RecordingBackend(fail_at=600)
    ctl, events = _threaded(backend)
    ctl.request(600)
    events[0].complete()
    deadline = time.monotonic() + 10
    while ctl._error is None:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    with pytest.raises(RuntimeError, match="refused 600"):
        ctl.request(900)
    ctl.close()


def test_negative_dwell_rejected() -> None:
    with pytest.raises(ValueError, match="min_dwell_s"):
        SwitchController(RecordingBackend(), min_dwell_s=-1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_events_do_not_stall_the_stream() -> None:
    from fxenergy.runtime.controller import cuda_event_factory

    backend = RecordingBackend()
    ctl = SwitchController(backend, event_factory=cuda_event_factory, threaded=True)
    ctl.start()
    a = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    for _ in range(50):  # ~100 ms of queued GPU work on a large GPU
        a = a @ a / 4096
    t0 = time.perf_counter()
    ctl.request(900)
    host_s = time.perf_counter() - t0
    applied_early = bool(backend.calls)
    torch.cuda.synchronize()
    _wait_for(ctl, 1)
    ctl.close()
    assert host_s < 0.01 and not applied_early  # queued, not waited for
    assert [c[0] for c in backend.calls] == [900]


class _FakeTime:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += dt


class _GpuEvent:
    """An event the fake GPU reaches at a known host time."""

    def __init__(self, clock: _FakeTime, at: float) -> None:
        self.clock, self.at = clock, at

    def record(self) -> None:
        return None

    def query(self) -> bool:
        return self.clock.t >= self.at

    def synchronize(self) -> None:
        self.clock.t = max(self.clock.t, self.at)

    def elapsed_time(self, end: _GpuEvent) -> float:
        return (end.at - self.at) * 1e3  # milliseconds, like CUDA events


def test_issue_ahead_requests_latency_before_each_boundary_and_follows_the_gpu() -> None:
    """Plan: 100 ms at 1410, 50 ms at 900, 200 ms at 1410; latency 10 ms. The GPU starts at
    t = 1 s but runs 20 ms late from partition 1 on: the first request goes at 1.09 (as
    predicted); once boundary 1 is seen at 1.12 the second follows it: 1.16, 10 ms before the
    real boundary at 1.17 (uncorrected it would have gone at 1.14)."""
    from fxenergy.runtime.ahead import IssueAhead, ahead_schedule

    clock = _FakeTime()
    reached = iter([1.0, 1.12, 1.17])  # anchor, boundary 1, boundary 2 (GPU times)
    applied: list[tuple[int, float]] = []

    class Stamped(NullBackend):
        def set_clock(self, mhz: int, label: str = "") -> int:
            applied.append((mhz, clock.t))
            return super().set_clock(mhz, label)

    ctl = SwitchController(Stamped(GPU), threaded=False)
    ahead = IssueAhead(ctl, lambda: _GpuEvent(clock, next(reached)), clock, clock.sleep)
    starts, requests = ahead_schedule([0.1, 0.05, 0.2], [1410, 900, 1410], 0.010)
    assert [(r.at_s, r.clock_mhz) for r in requests] == [
        (pytest.approx(0.09), 900),
        (pytest.approx(0.14), 1410),
    ]
    anchor = ahead.prepare(starts)
    ahead.boundary(1)  # the host runs ahead: it records both boundaries before the GPU is there
    ahead.boundary(2)
    ahead.run(anchor, requests)
    assert [m for m, _ in applied] == [900, 1410]
    assert applied[0][1] == pytest.approx(1.09, abs=1e-3)
    assert applied[1][1] == pytest.approx(1.16, abs=1e-3)
    assert ahead.late == 0


def test_issue_ahead_sends_at_once_when_the_boundary_has_passed() -> None:
    from fxenergy.runtime.ahead import IssueAhead, ahead_schedule

    clock = _FakeTime()
    reached = iter([0.0, 0.01])  # the GPU reaches boundary 1 far earlier than predicted
    ctl = SwitchController(NullBackend(GPU), threaded=False)
    ahead = IssueAhead(ctl, lambda: _GpuEvent(clock, next(reached)), clock, clock.sleep)
    starts, requests = ahead_schedule([0.5, 0.5], [1410, 900], 0.010)
    anchor = ahead.prepare(starts)
    ahead.boundary(1)
    ahead.run(anchor, requests)
    assert ahead.late == 1 and ctl.backend.current_clock_mhz == 900
    assert clock.t < 0.1  # it did not wait for the predicted 0.49 s


def test_carried_clock_lands_after_the_runtime_exits() -> None:
    """A runtime that keeps its clock for the next call (restore_on_exit=False) leaves while the
    GPU is still working: the switch queued at its last boundary is applied when the GPU gets
    there (not dropped), and the next runtime's thread starts after it."""
    from fxenergy.runtime.session import FrequencyRuntime, RuntimePartition

    backend = RecordingBackend()
    events: list[ManualEvent] = []

    def factory() -> ManualEvent:
        events.append(ManualEvent())
        return events[-1]

    parts = [RuntimePartition(0, 1200), RuntimePartition(1, 900)]  # no timeline: at boundaries
    rt = FrequencyRuntime(
        backend, parts, event_factory=factory, threaded=True, restore_on_exit=False
    )
    with rt:
        rt.enter_partition(0)
        rt.enter_partition(1)
    assert backend.calls == []  # the host left before the GPU reached either boundary
    events[0].complete()
    _wait_for(rt.controller, 1)
    events[1].complete()
    _wait_for(rt.controller, 2)
    assert _outcomes(rt.controller) == [(1200, "applied"), (900, "applied")]
    assert backend.current_clock_mhz == 900  # carried into the next call
    with rt:  # entering again waits for the finished thread, then runs as before
        rt.enter_partition(0)
    events[2].complete()
    _wait_for(rt.controller, 3)
    assert backend.current_clock_mhz == 1200
    rt.controller.restore()
