"""Issue switches ahead on a real GPU: request each partition's clock ``latency`` before the
plan predicts the partition starts, so the new clock is in force at the boundary.

The host runs ahead of the GPU, so "now" on the host says nothing about where the stream is.
The schedule is anchored on CUDA events instead:

1. at the run's start the host records an *anchor* event; at each partition boundary a
   *boundary* event (recording is asynchronous: the host never waits);
2. a thread waits for the anchor (the GPU reached the run's start), notes the host time ``t0``,
   and for each planned request sleeps until ``t0 + at_s + correction`` and asks the controller
   for the clock;
3. ``correction`` is how late (or early) the GPU is against the prediction at the newest
   boundary it has passed, measured between CUDA events (``elapsed_time``, GPU timestamps), so
   later requests follow the real timeline as it comes in;
4. a request whose boundary has already passed (the GPU ran faster than predicted) is sent at
   once: that switch lands late, its window is the head of its partition, as the model prices a
   request with nothing to issue ahead from.

:func:`ahead_schedule` turns a plan's predicted partition times into the requests; it is the
same timeline the simulator follows (``fxenergy.schedule.switch``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fxenergy.runtime.controller import EventLike, SwitchController

log = logging.getLogger("fxenergy.runtime")

_POLL_S = 0.0005  #: how often the thread looks at boundary events while it waits


@dataclass(frozen=True)
class AheadRequest:
    """One planned request: clock ``clock_mhz`` at ``at_s`` seconds after the run's start, for
    the partition ``boundary`` (None: the next run's first partition) predicted at
    ``boundary_at_s``."""

    at_s: float
    clock_mhz: int
    boundary: int | None
    boundary_at_s: float
    label: str = ""


def ahead_schedule(
    times_s: Sequence[float],
    clocks_mhz: Sequence[int],
    latency_s: float,
    next_clock_mhz: int | None = None,
) -> tuple[list[float], list[AheadRequest]]:
    """Predicted partition starts and the requests that make each clock land on time.

    ``times_s[i]``: the plan's time of partition ``i`` (its transition windows included). The
    first partition's clock is left to the caller (requested at the start if it is not in force).
    """
    starts, t = [], 0.0
    for d in times_s:
        starts.append(t)
        t += d
    out = []
    for i in range(1, len(clocks_mhz)):
        if clocks_mhz[i] != clocks_mhz[i - 1]:
            at = max(starts[i] - latency_s, starts[i - 1])
            out.append(AheadRequest(at, clocks_mhz[i], i, starts[i], f"partition {i}"))
    if next_clock_mhz is not None and clocks_mhz and next_clock_mhz != clocks_mhz[-1]:
        at = max(t - latency_s, starts[-1])
        out.append(AheadRequest(at, next_clock_mhz, None, t, "next run"))
    return starts, out


class IssueAhead:
    """Runs one schedule of ahead requests per run, against boundary events.

    Args:
        controller: applies the clocks (no-op and dwell rules, restore, trace).
        event_factory: boundary events; they need ``elapsed_time`` (``torch.cuda.Event
            (enable_timing=True)``) for corrections, else the host time they were seen done.
        clock: host time source (seconds); ``sleep``: how to wait (both replaceable in tests).
    """

    def __init__(
        self,
        controller: SwitchController,
        event_factory: Callable[[], EventLike],
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.controller = controller
        self.event_factory = event_factory
        self.clock = clock
        self.sleep = sleep
        self.late = 0  #: requests sent after their boundary had passed
        self._marks: dict[int, Any] = {}
        self._starts: list[float] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def prepare(self, starts: Sequence[float]) -> Any:
        """Record the run's anchor event and forget the last run's boundaries; returns it."""
        anchor = self.event_factory()
        anchor.record()
        self._marks, self._starts = {}, list(starts)
        self._stop.clear()
        return anchor

    def begin(self, starts: Sequence[float], requests: Sequence[AheadRequest]) -> None:
        """Record the anchor event and start the run's schedule on a thread (returns at once).

        The previous run's thread, if it is still sending its last requests, keeps going: its
        requests come first in time.
        """
        anchor = self.prepare(starts)
        self._thread = threading.Thread(
            target=self._guarded, args=(anchor, list(requests)), name="fxenergy-ahead", daemon=True
        )
        self._thread.start()

    def boundary(self, index: int) -> None:
        """Record the event of partition ``index``'s start (host side, never waits)."""
        event = self.event_factory()
        event.record()
        self._marks[index] = event

    def finish(self, timeout_s: float = 1.0) -> None:
        """Stop the run's schedule: requests not sent yet are dropped."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout_s)
            self._thread = None

    def _guarded(self, anchor: Any, requests: list[AheadRequest]) -> None:
        try:
            self.run(anchor, requests)
        except BaseException as exc:  # surfaced by the controller on the host thread
            log.error("fxenergy: issue-ahead thread stopped: %s", exc)
            self.controller._error = exc

    def run(self, anchor: Any, requests: list[AheadRequest]) -> None:
        """The schedule of one run (the thread's body; callable directly in tests)."""
        anchor.synchronize()
        t0 = self.clock()
        for req in requests:
            while not self._stop.is_set():
                if req.boundary is not None and self._passed(req.boundary):
                    self.late += 1
                    break
                wait = t0 + req.at_s + self.correction(anchor, t0) - self.clock()
                if wait <= 0:
                    break
                self.sleep(min(wait, _POLL_S))
            if self._stop.is_set():
                return
            self.controller.apply_now(req.clock_mhz, req.label)

    def _passed(self, index: int) -> bool:
        event = self._marks.get(index)
        return event is not None and event.query()

    def correction(self, anchor: Any, t0: float) -> float:
        """Seconds the GPU is behind the prediction at the newest boundary it has passed."""
        done = [i for i, ev in list(self._marks.items()) if ev.query() and i < len(self._starts)]
        if not done:
            return 0.0
        i = max(done)
        return self._elapsed(anchor, self._marks[i], t0) - self._starts[i]

    def _elapsed(self, anchor: Any, event: Any, t0: float) -> float:
        try:
            return anchor.elapsed_time(event) / 1e3  # CUDA events: milliseconds between them
        except (AttributeError, RuntimeError):
            return self.clock() - t0  # no timing: when the host saw it done
