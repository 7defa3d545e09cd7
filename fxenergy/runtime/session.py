"""``FrequencyRuntime``: the object an optimized module runs under, and ``enter_partition``.

The rewrite pass puts a ``call_function`` node calling :func:`enter_partition` (registered with
``torch.fx.node.has_side_effect``, so dead-code elimination keeps it) at the start of each plan
partition. At run time that call finds the current runtime (a context variable) and asks its
controller for the partition's clock; with no runtime it does nothing, so a rewritten module
still runs plainly.

Switches are **issued ahead** (the one switch model, :mod:`fxenergy.schedule.switch`): the
clock of partition ``j`` is requested ``latency`` before ``j`` is predicted to start, so it lands
on the boundary; the transition window is the previous partition's tail. A run's first
partition, when its clock is not in force, is requested at the start (a head window). After the
last partition the next run's first clock is requested ahead (``next_clock_mhz``; a cyclic
plan's own first clock), so a loop never stops at a switch.

* Real GPU: :class:`~fxenergy.runtime.ahead.IssueAhead` times the requests from the plan's
  predicted partition times, anchored on CUDA events and corrected as boundaries pass. Nothing
  on the call path waits for the GPU (no ``synchronize``: that is :func:`measure`'s job, so
  ``summary()`` has no time or energy on a real GPU — measure a window instead).
* Simulator: the runtime *accounts the work*: entering partition ``j`` runs the partition that
  just ended (its ``cost``) at the clock in force, then switches ahead; leaving the runtime runs
  the last one and requests ``next_clock_mhz`` ahead. The power cap averages over the cycle
  (``cycle``; default: all partitions). The simulated totals are exactly the checker's
  prediction for the plan.
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch
import torch.fx

from fxenergy.errors import PlanMismatchError
from fxenergy.graph import meta
from fxenergy.graph.meta import CostRecord
from fxenergy.runtime import restore
from fxenergy.runtime.ahead import IssueAhead, ahead_schedule
from fxenergy.runtime.backend import FrequencyBackend, SwitchEvent
from fxenergy.runtime.controller import (
    EventLike,
    ImmediateEvent,
    SwitchController,
    cuda_event_factory,
)
from fxenergy.runtime.current import CURRENT
from fxenergy.runtime.meter import read_energy_j
from fxenergy.runtime.sim import NullBackend, SimulatedBackend

if TYPE_CHECKING:
    from fxenergy.plans.plan import Plan

log = logging.getLogger("fxenergy.runtime")


@dataclass(frozen=True)
class RuntimePartition:
    """One plan partition as the runtime sees it: no node names (a pipeline stage or a
    hand-built runtime has none), the cost records the simulator charges instead.
    ``FrequencyRuntime.from_plan`` makes them from a ``PlanPartition`` and the graph's costs.

    ``cost`` is the partition's work for the simulator: one record, or one per node (the plan's
    own accounting: the model is applied per node and summed); ``None`` where unknown.
    """

    index: int
    clock_mhz: int
    cost: CostRecord | tuple[CostRecord, ...] | None = None
    label: str = ""
    time_s: float | None = None  #: predicted time (windows included): issue-ahead timing

    def costs(self) -> tuple[CostRecord, ...]:
        if self.cost is None:
            return ()
        return (self.cost,) if isinstance(self.cost, CostRecord) else tuple(self.cost)


@dataclass(frozen=True)
class RuntimeSummary:
    """What a runtime did; ``simulated`` says whether the numbers are model predictions."""

    backend: str
    simulated: bool
    time_s: float
    energy_j: float
    switches: int
    trace: tuple[SwitchEvent, ...]
    noop_skipped: int
    superseded: int
    dropped: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the trace as a list of dicts)."""
        d = {k: v for k, v in self.__dict__.items() if k != "trace"}
        d["trace"] = [e.__dict__ for e in self.trace]
        return d


@torch.fx.node.has_side_effect
def enter_partition(index: int) -> None:
    """Start plan partition ``index``: switch to its clock (no-op without a current runtime)."""
    runtime = CURRENT.get()
    if runtime is not None:
        runtime.enter_partition(index)


def _check_sim_matches_plan(
    plan: Plan, backend: FrequencyBackend, uncosted: list[str], have_gm: bool
) -> None:
    """Say why simulated totals would differ from the plan's prediction, if they will."""
    latency = getattr(backend, "switch_latency_s", plan.switch_latency_s)
    if abs(latency - plan.switch_latency_s) > 1e-12:
        log.warning(
            "fxenergy: the simulator's switch latency (%g s) is not the plan's (%g s)",
            latency,
            plan.switch_latency_s,
        )
    if have_gm and uncosted:
        log.warning(
            "fxenergy: %d planned nodes have no fxenergy.cost (e.g. %s); the simulator skips them",
            len(uncosted),
            ", ".join(uncosted[:3]),
        )


def _default_threaded(backend: FrequencyBackend) -> bool:
    # Only a real GPU has a stream to overlap with; the simulator and null act at once.
    return not (backend.simulated or isinstance(backend, NullBackend))


def _default_events(threaded: bool) -> Callable[[], EventLike]:
    return cuda_event_factory if threaded and torch.cuda.is_available() else ImmediateEvent


def _timing_events() -> EventLike:
    """A CUDA event that can time itself against another (issue-ahead corrections)."""
    return torch.cuda.Event(enable_timing=True, blocking=True)


class FrequencyRuntime:
    """Runs a rewritten module's partitions at their planned clocks.

    Use as a context manager: it becomes the current runtime, starts the controller, and on
    exit (normal, exception, SIGINT, SIGTERM, interpreter exit) restores the clocks.

    Args:
        backend: where clocks are set (NVML, simulator, null).
        partitions: the plan's partitions, by index.
        min_dwell_s: least time between two switches (see ``controller``); 0 = none.
        event_factory: boundary events; default ``torch.cuda.Event`` on a GPU, else immediate.
        threaded: use a controller thread; default: only for real GPUs.
        restore_on_exit: reset the backend's clocks when the runtime exits.
        switch_latency_s: request-to-clock latency for issue-ahead timing (real GPU); default:
            the backend's, else requests go out at the boundaries (late).
        next_clock_mhz: the clock the next run starts at, requested ahead at the end of this
            one (a cyclic plan's first clock; the next graph's in a chain); None: nothing.
        cycle: costs the simulated power cap averages over and transition windows are costed
            from; default: every partition's costs (the plan is the cycle).
    """

    def __init__(
        self,
        backend: FrequencyBackend,
        partitions: Sequence[RuntimePartition],
        *,
        min_dwell_s: float = 0.0,
        event_factory: Callable[[], EventLike] | None = None,
        threaded: bool | None = None,
        restore_on_exit: bool = True,
        switch_latency_s: float | None = None,
        next_clock_mhz: int | None = None,
        cycle: Sequence[CostRecord] | None = None,
    ) -> None:
        self.backend = backend
        self.partitions = {p.index: p for p in partitions}
        if len(self.partitions) != len(partitions):
            raise PlanMismatchError("runtime partitions have duplicate indices")
        threaded = _default_threaded(backend) if threaded is None else threaded
        self.controller = SwitchController(
            backend,
            min_dwell_s=min_dwell_s,
            event_factory=event_factory or _default_events(threaded),
            threaded=threaded,
        )
        self.restore_on_exit = restore_on_exit
        self.next_clock_mhz = next_clock_mhz
        self._null = isinstance(backend, NullBackend) and not threaded
        latency = getattr(backend, "switch_latency_s", None)
        self.switch_latency_s = latency if switch_latency_s is None else switch_latency_s
        self._ahead = self._issue_ahead(threaded, event_factory)
        if isinstance(backend, SimulatedBackend):
            backend.set_cycle(cycle if cycle is not None else self._all_costs())
        self._active: RuntimePartition | None = None
        self._token: contextvars.Token[FrequencyRuntime | None] | None = None
        # time, energy, trace length, decision totals at entry: summary() covers one entry
        self._start: tuple[float, float, int, dict[str, int]] | None = None
        self._end: tuple[float, float] | None = None
        self._warn_costless()

    def _all_costs(self) -> list[CostRecord]:
        return [c for i in sorted(self.partitions) for c in self.partitions[i].costs()]

    def _issue_ahead(
        self, threaded: bool, event_factory: Callable[[], EventLike] | None
    ) -> IssueAhead | None:
        """The issue-ahead scheduler for a real GPU, when the plan's timeline is known."""
        parts = [self.partitions[i] for i in sorted(self.partitions)]
        timed = parts and all(p.time_s is not None for p in parts)
        if not threaded or not timed or self.switch_latency_s is None:
            return None
        if event_factory is None:
            event_factory = _timing_events if torch.cuda.is_available() else ImmediateEvent
        return IssueAhead(self.controller, event_factory)

    @classmethod
    def from_plan(
        cls,
        plan: Plan,
        backend: FrequencyBackend,
        gm: torch.fx.GraphModule | None = None,
        **kwargs: Any,
    ) -> FrequencyRuntime:
        """Partitions from a :class:`~fxenergy.plans.plan.Plan`; node costs from ``gm`` if given."""
        costs = {n.name: n.meta.get(meta.COST) for n in gm.graph.nodes} if gm is not None else {}
        parts, uncosted = [], []
        for p in plan.partitions:
            node_costs = tuple(c for c in (costs.get(n) for n in p.nodes) if c is not None)
            uncosted += [n for n in p.nodes if costs.get(n) is None]
            label = f"partition {p.index} @ {p.clock_mhz} MHz"
            parts.append(
                RuntimePartition(p.index, p.clock_mhz, node_costs or None, label, p.time_s)
            )
        if backend.simulated:
            _check_sim_matches_plan(plan, backend, uncosted, gm is not None)
        if plan.extra.get("cyclic") and plan.partitions:
            kwargs.setdefault("next_clock_mhz", plan.partitions[0].clock_mhz)
        kwargs.setdefault("switch_latency_s", plan.switch_latency_s)
        return cls(backend, parts, **kwargs)

    def _warn_costless(self) -> None:
        if not self.backend.simulated:
            return
        costless = sorted(i for i, p in self.partitions.items() if p.cost is None)
        if costless:
            log.warning(
                "fxenergy: simulated runtime: partitions %s carry no cost, so their work is not "
                "in the simulated totals",
                costless,
            )

    # --- context manager -----------------------------------------------------------------------
    def __enter__(self) -> FrequencyRuntime:
        if self._token is not None:
            raise RuntimeError("this FrequencyRuntime is already entered")
        restore.protect(self)
        self._start = (*self._reading(), len(self.backend.trace), dict(self.controller.totals))
        self._end = None
        self._active = None
        self.controller.start()
        if self._ahead is not None:
            self._begin_ahead()
        self._token = CURRENT.set(self)
        return self

    def _reading(self) -> tuple[float, float]:
        """Time and energy now: the simulator's; a real GPU's mean nothing without a
        synchronize, which the call path never does (use ``measure()``)."""
        if not self.backend.simulated:
            return math.nan, math.nan
        return self.backend.now_s(), read_energy_j(self.backend)

    def _begin_ahead(self) -> None:
        """Request the first clock if it is not in force, and start the run's ahead schedule."""
        assert self._ahead is not None and self.switch_latency_s is not None
        parts = [self.partitions[i] for i in sorted(self.partitions)]
        first = parts[0]
        self.controller.request(first.clock_mhz, first.label or f"partition {first.index}")
        starts, requests = ahead_schedule(
            [p.time_s or 0.0 for p in parts],
            [p.clock_mhz for p in parts],
            self.switch_latency_s,
            self.next_clock_mhz,
        )
        self._ahead.begin(starts, requests)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._finish_work()
            if self.restore_on_exit:
                if self._ahead is not None:
                    self._ahead.finish()  # clocks are reset below: the rest is moot
                self.controller.close(drain=False)  # the work is over: what is queued is moot
            else:  # the clock carries into the next call: what is queued must still land
                self.controller.finish()
            self._end = self._reading()
        finally:
            if self._token is not None:
                CURRENT.reset(self._token)
                self._token = None
            if self.restore_on_exit:
                self.controller.restore()
            restore.release(self)
        if exc_type is None:
            self.controller.raise_if_failed()

    def _finish_work(self) -> None:
        if self.backend.simulated:
            self._account(self._active)
            if self.next_clock_mhz is not None and self._active is not None:
                self.controller.request(self.next_clock_mhz, "next run", ahead=True)
        self._active = None

    def restore(self) -> None:
        """Restorer protocol (atexit, signals): stop switching and reset the clocks."""
        if self._ahead is not None:
            self._ahead.finish()
        self.controller.restore()

    # --- boundaries ----------------------------------------------------------------------------
    def enter_partition(self, index: int) -> None:
        """Account the partition that just ended (simulator) and request ``index``'s clock."""
        part = self.partitions.get(index)
        if part is None:
            raise PlanMismatchError(
                f"enter_partition({index}), but this runtime has partitions "
                f"{sorted(self.partitions)}: build the FrequencyRuntime from the same plan as "
                "the rewritten module"
            )
        if self._null:  # nothing to switch or account: keep the boundary nearly free
            self._active = part
            return
        label = part.label or f"partition {index}"
        if self._ahead is not None:  # the ahead thread requests the clocks; mark the boundary
            self._ahead.boundary(index)
        elif self.backend.simulated:
            self._account(self._active)
            self.controller.request(part.clock_mhz, label, ahead=self._active is not None)
        else:
            self.controller.request(part.clock_mhz, label)
        self._active = part

    @property
    def active_partition(self) -> int | None:
        """Index of the partition running now (None before the first switch call); a tracing
        interpreter reads it per node to record which partition each node ran in."""
        return self._active.index if self._active is not None else None

    def _account(self, part: RuntimePartition | None) -> None:
        if part is None:
            return
        assert isinstance(self.backend, SimulatedBackend)
        label = part.label or f"partition {part.index}"
        for cost in part.costs():
            self.backend.execute(cost, label)

    # --- results -------------------------------------------------------------------------------
    def summary(self) -> RuntimeSummary:
        """Time, energy and switches since the runtime was entered (up to its exit, if over)."""
        if self._start is None:
            raise RuntimeError("the runtime has not been entered yet")
        t0, e0, n0, d0 = self._start
        t1, e1 = self._end if self._end is not None else self._reading()
        trace = tuple(self.backend.trace[n0:])
        return RuntimeSummary(
            backend=self.backend.describe(),
            simulated=self.backend.simulated,
            time_s=t1 - t0,
            energy_j=e1 - e0,
            switches=len(trace),
            trace=trace,
            noop_skipped=self.controller.count("noop", since=d0),
            superseded=self.controller.count("superseded", since=d0),
            dropped=self.controller.count("dropped", since=d0),
        )
