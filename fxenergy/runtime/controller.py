"""The switching controller: carry out clock-switch requests without stalling the CUDA stream.

At a partition boundary the host thread only *records an event* on the current stream and queues
a request; it never waits for the GPU. A controller thread waits for the event (the GPU has
reached the boundary), then asks the backend for the clock. Timing model, in order:

1. **Order.** Requests are handled first in, first out; an older request is never applied after a
   newer one.
2. **Superseded.** When the thread finds that later boundaries have been reached too (their
   events are complete), only the newest is applied; the older ones are dropped as superseded —
   their partitions are already over.
3. **No-ops.** A request for the clock already in force is skipped (NVML is not called).
4. **Minimum dwell.** A switch less than ``min_dwell_s`` after the previous switch *started* is
   delayed until the dwell has passed; meanwhile a newer completed request supersedes it.
5. **Timed requests.** A request made with ``delay_s`` (a clock split's second clock: the switch
   inside a computation) is applied ``delay_s`` after the GPU reaches its point in the stream.
   It is not a boundary: it never supersedes the requests before it, and a newer *boundary*
   request the GPU reaches while it waits supersedes it (the computation ended sooner than
   planned: its second clock is no longer wanted).

Under the simulator the controller acts synchronously in virtual time (``threaded=False``): there
is no GPU to overlap with, and it keeps runs deterministic. Work is accounted per partition
there, so a delayed switch can only take effect at the next boundary; by then the newer request
supersedes it, i.e. a switch within the dwell is dropped. A request still pending at close is
dropped too (there is no work left to run at its clock). A timed request is applied at once there
(its delay counts towards the dwell), issued ahead when asked so.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from fxenergy.runtime.backend import FrequencyBackend, nearest_clock_mhz

log = logging.getLogger("fxenergy.runtime")

Outcome = Literal["applied", "noop", "superseded", "dropped"]
_KEEP_DECISIONS = 4096
_POLL_S = 0.0005  #: how often a waiting thread looks at newer boundary events


class EventLike(Protocol):
    """The part of ``torch.cuda.Event`` the controller uses."""

    def record(self) -> None: ...

    def query(self) -> bool: ...

    def synchronize(self) -> None: ...


class ImmediateEvent:
    """An event that is complete once recorded: CPU work has finished when the host reaches it."""

    def record(self) -> None:
        return None

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        return None


def cuda_event_factory() -> EventLike:
    """A ``torch.cuda.Event`` whose ``synchronize`` sleeps instead of spinning (blocking=True)."""
    import torch

    return torch.cuda.Event(blocking=True)


@dataclass(frozen=True)
class SwitchRequest:
    """One boundary's wish for a clock (``ahead``: issued ahead of the boundary, so the
    transition window is the previous work's tail; a simulator accounts it so).

    ``delay_s`` (None: a boundary request) makes it *timed*: due that long after the GPU reaches
    the point in the stream where it was made.
    """

    seq: int
    clock_mhz: int
    label: str = ""
    ahead: bool = False
    delay_s: float | None = None


@dataclass(frozen=True)
class Decision:
    """What the controller did with a request, at backend time ``t_s``."""

    request: SwitchRequest
    outcome: Outcome
    t_s: float


@dataclass
class _Queued:
    request: SwitchRequest
    event: EventLike
    seen_s: float | None = None  #: backend time the thread first saw the event complete


class SwitchController:
    """Applies switch requests to a backend off the hot path.

    Args:
        backend: the backend whose clock is switched.
        min_dwell_s: the least time between the starts of two switches (0 = no limit).
        event_factory: makes the event recorded at each boundary (``torch.cuda.Event`` on a GPU;
            a fake in tests; :class:`ImmediateEvent` for CPU work).
        threaded: run a controller thread (real GPUs) or act at once in backend time (simulator).
    """

    def __init__(
        self,
        backend: FrequencyBackend,
        *,
        min_dwell_s: float = 0.0,
        event_factory: Callable[[], EventLike] = ImmediateEvent,
        threaded: bool = True,
    ) -> None:
        if min_dwell_s < 0:
            raise ValueError(f"min_dwell_s must be >= 0, got {min_dwell_s}")
        self.backend = backend
        self.min_dwell_s = min_dwell_s
        self.event_factory = event_factory
        self.threaded = threaded
        #: the latest decisions (bounded: a training loop makes millions); ``totals`` counts all
        self.decisions: collections.deque[Decision] = collections.deque(maxlen=_KEEP_DECISIONS)
        self.totals: dict[str, int] = dict.fromkeys(("applied", "noop", "superseded", "dropped"), 0)
        self._seq = 0
        self._last_switch_s: float | None = None
        self._pending: SwitchRequest | None = None  # synchronous mode: a delayed request
        self._queue: collections.deque[_Queued] = collections.deque()
        self._cond = threading.Condition()
        self._backend_lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._dropping = False  # close(drain=False): what is still queued or waiting is dropped
        self._closed = False
        self._error: BaseException | None = None
        self._finishing: threading.Thread | None = None  # finish(): applying the rest

    # --- host side -----------------------------------------------------------------------------
    def start(self) -> None:
        """(Re)open for requests and start the controller thread (threaded mode); idempotent.

        After :meth:`finish`, waits for the finishing thread to apply what it still holds (the
        GPU reaching the previous run's last boundaries), so two threads never share a queue.
        """
        if self._finishing is not None:
            self._finishing.join()
            self._finishing = None
        if self._thread is None:
            self._stopping = self._dropping = self._closed = False
            self._last_switch_s = None
        if self.threaded and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fxenergy-clocks", daemon=True)
            self._thread.start()

    def request(
        self, clock_mhz: int, label: str = "", ahead: bool = False, delay_s: float | None = None
    ) -> SwitchRequest:
        """Ask for ``clock_mhz`` from this point of the stream on; returns at once.

        Args:
            clock_mhz: the clock wanted.
            label: names the request in decisions and the backend's trace.
            ahead: issued ahead of the point where the clock is wanted (a simulator accounts
                the transition window on the work before it).
            delay_s: make it a timed request, due ``delay_s`` seconds after the GPU reaches
                this point (None: a boundary request, due at once).
        """
        self.raise_if_failed()
        if delay_s is not None and not delay_s >= 0:
            raise ValueError(f"delay_s must be >= 0 seconds, got {delay_s}")
        req = SwitchRequest(self._seq, int(clock_mhz), label, ahead, delay_s)
        self._seq += 1
        if not self.threaded:
            self._request_now(req)
            return req
        event = self.event_factory()
        event.record()
        with self._cond:
            self._queue.append(_Queued(req, event))
            self._cond.notify()
        return req

    def apply_now(self, clock_mhz: int, label: str = "") -> None:
        """Set ``clock_mhz`` at once (the issue-ahead thread's call: it chose the moment)."""
        req = SwitchRequest(self._seq, int(clock_mhz), label, True)
        self._seq += 1
        self._apply(req)

    def raise_if_failed(self) -> None:
        """Re-raise, on the caller's thread, an error the controller thread hit."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self, drain: bool = True, timeout_s: float | None = None) -> None:
        """Stop the controller.

        Args:
            drain: apply what is queued as its events complete (waits up to ``timeout_s``,
                default 30 s); else drop it. A request whose event the thread is already
                waiting on cannot be interrupted (CUDA events are not): it is dropped when the
                GPU reaches it, and the join waits ``timeout_s`` (default 1 s) at most.
        """
        if self.threaded and self._thread is not None:
            with self._cond:
                if not drain:
                    self._dropping = True
                    self._drop_queued()
                self._stopping = True
                self._cond.notify()
            timeout = timeout_s if timeout_s is not None else (30.0 if drain else 1.0)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.info("fxenergy: clock controller still waiting on the GPU after %ss", timeout)
            self._thread = None
        if self._pending is not None:
            self._record(self._pending, "dropped")
            self._pending = None

    def finish(self) -> None:
        """Stop taking requests, but apply what is queued as the GPU reaches it, without waiting
        here: the thread ends when its queue is empty. For a runtime that carries its clock into
        the next call (``restore_on_exit=False``): a switch still queued at the end of a graph
        must land, or the next graph starts at the wrong clock (``close(drain=False)`` would
        drop it; ``close()`` would block the host until the GPU gets there)."""
        if self.threaded and self._thread is not None:
            with self._cond:
                self._stopping = True
                self._cond.notify()
            self._finishing, self._thread = self._thread, None
        if self._pending is not None:  # synchronous mode: a dwell-delayed request
            self._record(self._pending, "dropped")
            self._pending = None

    def restore(self) -> None:
        """Refuse further switches and reset the backend's clocks, once (signal-handler safe)."""
        with self._backend_lock:
            if not self._closed:
                self._closed = True
                self.backend.reset()

    # --- decisions -----------------------------------------------------------------------------
    def _record(self, req: SwitchRequest, outcome: Outcome) -> None:
        self.decisions.append(Decision(req, outcome, self.backend.now_s()))
        self.totals[outcome] += 1

    def _is_noop(self, req: SwitchRequest) -> bool:
        clocks = self.backend.supported_clocks_mhz()
        target = nearest_clock_mhz(clocks, req.clock_mhz) if clocks else req.clock_mhz
        return target == self.backend.current_clock_mhz

    def _dwell_left_s(self) -> float:
        if self._last_switch_s is None or self.min_dwell_s <= 0:
            return 0.0
        return self._last_switch_s + self.min_dwell_s - self.backend.now_s()

    def _due_in_s(self, item: _Queued) -> float:
        """How long until a timed request is due (0 for a boundary request)."""
        if item.request.delay_s is None or item.seen_s is None:
            return 0.0
        return item.seen_s + item.request.delay_s - self.backend.now_s()

    def _apply(self, req: SwitchRequest) -> None:
        with self._backend_lock:
            if self._closed:
                self._record(req, "dropped")
                return
            if self._is_noop(req):
                self._record(req, "noop")
                return
            start = self.backend.now_s()
            switch_ahead = getattr(self.backend, "switch_ahead", None)
            if req.ahead and switch_ahead is not None:
                switch_ahead(req.clock_mhz, req.label)
            else:
                self.backend.set_clock(req.clock_mhz, req.label)
            self._last_switch_s = start
            self._record(req, "applied")

    def _request_now(self, req: SwitchRequest) -> None:
        if self._pending is not None:
            self._record(self._pending, "superseded")
            self._pending = None
        if not self._is_noop(req) and self._dwell_left_s() - (req.delay_s or 0.0) > 0:
            self._pending = req  # delayed: the next boundary supersedes it, or close drops it
            return
        self._apply(req)

    # --- controller thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while (item := self._next()) is not None:
                item.event.synchronize()  # the GPU reached this boundary
                item = self._wait(self._newest_done(item))
                if self._abandoned():
                    self._record(item.request, "dropped")
                    continue
                self._apply(item.request)
        except BaseException as exc:  # surfaced on the host thread by raise_if_failed
            log.error("fxenergy: clock controller stopped: %s", exc)
            self._error = exc

    def _next(self) -> _Queued | None:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            return self._queue.popleft() if self._queue else None

    def _newest_done(self, item: _Queued) -> _Queued:
        """Skip to the newest queued boundary request the GPU has already reached.

        What it skips is superseded (a timed request among them too: its computation is over).
        Reached events are time-stamped here: a timed request's delay counts from that stamp.
        """
        with self._cond:
            now = self.backend.now_s()
            if item.seen_s is None:
                item.seen_s = now
            newest = -1
            for k, queued in enumerate(self._queue):
                if not queued.event.query():
                    break  # the stream reaches events in order: none after this one is done
                if queued.seen_s is None:
                    queued.seen_s = now
                if queued.request.delay_s is None:
                    newest = k
            for _ in range(newest + 1):
                self._record(item.request, "superseded")
                item = self._queue.popleft()
        return item

    def _wait(self, item: _Queued) -> _Queued:
        """Wait until a timed request is due and the dwell has passed; a newer boundary reached
        meanwhile supersedes it (looked at every ``_POLL_S`` while requests are queued)."""
        while self._must_wait(item.request):
            wait = max(self._due_in_s(item), self._dwell_left_s())
            if wait <= 0:
                break
            with self._cond:
                self._cond.wait(min(wait, _POLL_S) if self._queue else wait)
            item = self._newest_done(item)
        return item

    def _must_wait(self, req: SwitchRequest) -> bool:
        return not self._abandoned() and not self._is_noop(req)  # a no-op needs no dwell

    def _abandoned(self) -> bool:
        return self._closed or self._dropping

    def _drop_queued(self) -> None:
        while self._queue:
            self._record(self._queue.popleft().request, "dropped")

    # --- results -------------------------------------------------------------------------------
    def count(self, outcome: Outcome, since: dict[str, int] | None = None) -> int:
        """How many requests ended with ``outcome`` (since a snapshot of :attr:`totals`)."""
        return self.totals[outcome] - (since or {}).get(outcome, 0)
