"""``SimulatedBackend`` (a virtual GPU driven by the DVFS model) and ``NullBackend`` (does nothing).

The simulator keeps a virtual clock (seconds) and a virtual energy meter (joules). Work is
accounted explicitly: ``execute(cost)`` advances both by the DVFS model's time and energy for
``cost`` at the SM clock in force, ``idle(seconds)`` by idle power.

Clock changes follow the one switch model (:mod:`fxenergy.schedule.switch`), the planner's:

* the **cycle** (``set_cycle``: the costs of the repeating work, e.g. a plan's partitions or a
  training step's graphs) is what the board's power cap averages over — every node runs at the
  cycle's effective clock — and its per-clock totals describe a transition window's work;
* ``switch_ahead(f)``: the work just run ended a partition and the runtime requested ``f``
  ``latency`` before its end: that window ran at the slower and hungrier of the two clocks;
* ``set_clock(f)``: a request with nothing to issue ahead from (a run's first partition): the
  window is the head of the work that follows.

So a plan run here costs exactly what the checker predicts for it. Everything it reports is
SIMULATED, and ``describe()`` says so.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fxenergy.cost.annotate import DEFAULT_GPU
from fxenergy.graph.meta import CostRecord
from fxenergy.hardware import GPUSpec, get_gpu
from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S
from fxenergy.runtime.backend import FrequencyBackend, SwitchEvent, nearest_clock_mhz
from fxenergy.schedule.switch import window_cost

log = logging.getLogger("fxenergy.runtime")


class DVFSLike(Protocol):
    """What the simulator needs from ``fxenergy.hardware.dvfs.DVFSModel``."""

    idle_power_w: float
    switch_latency_s: float

    def work_of(self, cost: CostRecord) -> Any: ...

    def effective_clock_mhz(self, mix: Sequence[Any], freq_mhz: float) -> float: ...

    def at_effective_clock(self, mix: Sequence[Any], f_eff_mhz: float) -> tuple[float, float]: ...

    def clocks_mhz(self) -> tuple[int, ...] | list[int]: ...


@dataclass(frozen=True)
class WorkRecord:
    """One piece of work (or idle time) the simulator accounted."""

    t_s: float  #: virtual time it started
    freq_mhz: int
    time_s: float
    energy_j: float
    label: str = ""


def _default_model(gpu: GPUSpec, switch_latency_s: float) -> DVFSLike:
    from fxenergy.hardware.dvfs import get_dvfs_model  # the model module is heavier; load late

    return get_dvfs_model(gpu.name, switch_latency_s=switch_latency_s)


class SimulatedBackend(FrequencyBackend):
    """A virtual GPU: clock, time and energy follow the DVFS model; nothing real is touched.

    Args:
        gpu: spec-table name or spec of the GPU to simulate.
        switch_latency_s: time from a clock request to the new clock in force.
        model: a DVFS model to use instead of ``get_dvfs_model(gpu, switch_latency_s)``; its own
            ``switch_latency_s`` then applies.
    """

    name = "sim"
    simulated = True

    def __init__(
        self,
        gpu: str | GPUSpec = DEFAULT_GPU,
        switch_latency_s: float = DEFAULT_SWITCH_LATENCY_S,
        *,
        model: DVFSLike | None = None,
    ) -> None:
        self.gpu = get_gpu(gpu)
        self.model = model if model is not None else _default_model(self.gpu, switch_latency_s)
        self._clocks = tuple(sorted({int(c) for c in self.model.clocks_mhz()}, reverse=True))
        self._current = self._clocks[0]
        self._time_s = 0.0
        self._energy_j = 0.0
        self._trace: list[SwitchEvent] = []
        self.work: list[WorkRecord] = []  #: every execute/idle call, in order
        self._memo: dict[tuple[CostRecord, int], tuple[float, float]] = {}
        self._executed: list[CostRecord] = []  # window costs without a cycle: the work so far
        self._executed_set: set[CostRecord] = set()
        self.set_cycle(None)

    @property
    def switch_latency_s(self) -> float:
        return self.model.switch_latency_s

    def supported_clocks_mhz(self) -> tuple[int, ...]:
        return self._clocks

    @property
    def current_clock_mhz(self) -> int:
        return self._current

    @property
    def trace(self) -> list[SwitchEvent]:
        return self._trace

    def now_s(self) -> float:
        """Virtual time in seconds since the backend was made."""
        return self._time_s

    def energy_j(self) -> float:
        """Virtual energy in joules since the backend was made."""
        return self._energy_j

    def _advance(self, time_s: float, energy_j: float, label: str) -> WorkRecord:
        record = WorkRecord(self._time_s, self._current, time_s, energy_j, label)
        self.work.append(record)
        self._time_s += time_s
        self._energy_j += energy_j
        return record

    def set_cycle(self, costs: Sequence[CostRecord] | None) -> None:
        """The repeating work the power cap averages over and transition windows are costed
        from (``None``: each executed node is its own cap window, and windows are costed from
        the work executed so far)."""
        key = None if costs is None else tuple(costs)
        if key is not None and key == getattr(self, "_cycle_key", None):
            return  # the same cycle again (a runtime per call): keep what was computed
        self._cycle_key = key
        self._cycle = None if costs is None else tuple(self.model.work_of(c) for c in costs)
        self._f_eff: dict[int, float] = {}
        self._profile: dict[int, tuple[float, float]] = {}
        self._memo.clear()

    def _clock_of(self, mhz: int) -> float:
        if mhz not in self._f_eff:
            self._f_eff[mhz] = self.model.effective_clock_mhz(self._cycle or (), mhz)
        return self._f_eff[mhz]

    def _cost_at(self, cost: CostRecord, mhz: int) -> tuple[float, float]:
        key = (cost, mhz)
        if (te := self._memo.get(key)) is None:  # a training loop runs the same work again
            work = (self.model.work_of(cost),)
            f = self._clock_of(mhz) if self._cycle is not None else None
            f = self.model.effective_clock_mhz(work, mhz) if f is None else f
            te = self._memo[key] = self.model.at_effective_clock(work, f)
        return te

    def profile(self, mhz: int) -> tuple[float, float]:
        """(time, energy) of the cycle (or the work run so far) at ``mhz``."""
        if self._cycle is None:
            return self._ran_so_far(mhz)
        if mhz not in self._profile:
            f = self._clock_of(mhz)
            parts = [self.model.at_effective_clock((w,), f) for w in self._cycle]
            self._profile[mhz] = (sum(t for t, _ in parts), sum(e for _, e in parts))
        return self._profile[mhz]

    def _ran_so_far(self, mhz: int) -> tuple[float, float]:
        parts = [self._cost_at(c, mhz) for c in self._executed]
        return sum(t for t, _ in parts), sum(e for _, e in parts)

    def execute(self, cost: CostRecord, label: str = "", share: float = 1.0) -> WorkRecord:
        """Run ``cost`` at the current clock: advance virtual time and energy by the model.

        ``share`` < 1 runs that part of the work (a computation split across a clock switch);
        the work counts once, whole, in what transition windows are costed from.
        """
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must lie in (0, 1], got {share}")
        if self._cycle is None and cost not in self._executed_set:
            self._executed.append(cost)
            self._executed_set.add(cost)
        time_s, energy_j = self._cost_at(cost, self._current)
        return self._advance(share * time_s, share * energy_j, label)

    def idle(self, seconds: float, label: str = "idle") -> WorkRecord:
        """Stay idle for ``seconds`` at the model's idle power."""
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"idle time must be a finite number of seconds >= 0, got {seconds}")
        return self._advance(seconds, seconds * self.model.idle_power_w, label)

    def _target(self, mhz: int) -> tuple[int, int | None]:
        target = nearest_clock_mhz(self._clocks, mhz)
        if target == mhz:
            return target, None
        msg = (
            f"{mhz} MHz is not a supported SM clock on the simulated {self.gpu.name}; "
            f"using the nearest, {target} MHz"
        )
        log.warning(msg)
        warnings.warn(msg, stacklevel=3)
        return target, round(float(mhz))

    def _switch(self, mhz: int, label: str, ahead: bool) -> int:
        target, requested = self._target(mhz)
        if target == self._current:
            return target
        latency = self.model.switch_latency_s
        work, other = (self._current, target) if ahead else (target, self._current)
        dt, de = window_cost(latency, *self.profile(work), *self.profile(other))
        at = self._time_s + dt - latency if ahead else self._time_s
        event = SwitchEvent(at, self._current, target, latency, de, label, requested)
        self._trace.append(event)
        self._time_s += dt
        self._energy_j += de
        self._current = target
        return target

    def switch_ahead(self, mhz: int, label: str = "") -> int:
        """Switch issued ``latency`` before the end of the work just run: its transition window
        ran that work's last ``latency`` seconds (recorded at the request time)."""
        return self._switch(mhz, label, ahead=True)

    def set_clock(self, mhz: int, label: str = "") -> int:
        """Switch requested now; the window runs the head of the work that follows."""
        return self._switch(mhz, label, ahead=False)

    def reset(self) -> None:
        """Back to the highest clock, at no cost: restoring after a run is outside its window."""
        self._current = self._clocks[0]

    def describe(self) -> str:
        return (
            f"SIMULATED {self.gpu.name} (DVFS model, switch latency "
            f"{self.model.switch_latency_s * 1e3:g} ms): times and energies are model predictions"
        )


class NullBackend(FrequencyBackend):
    """Changes nothing and measures nothing; for runs where clocks must stay as they are.

    ``set_clock`` only remembers the clock (the nearest of the GPU's, if one is given), so a
    rewritten module runs unchanged. ``energy_j`` is NaN: there is no counter.
    """

    name = "null"
    simulated = False
    has_energy_counter = False

    def __init__(self, gpu: str | GPUSpec | None = None) -> None:
        self.gpu = get_gpu(gpu) if gpu is not None else None
        self._clocks = self.gpu.supported_clocks_mhz() if self.gpu is not None else ()
        self._current = self._clocks[0] if self._clocks else 0

    def supported_clocks_mhz(self) -> tuple[int, ...]:
        return self._clocks

    @property
    def current_clock_mhz(self) -> int:
        return self._current

    @property
    def trace(self) -> list[SwitchEvent]:
        return []

    def set_clock(self, mhz: int, label: str = "") -> int:
        self._current = nearest_clock_mhz(self._clocks, mhz) if self._clocks else int(mhz)
        return self._current

    def reset(self) -> None:
        self._current = self._clocks[0] if self._clocks else 0

    def energy_j(self) -> float:
        return math.nan

    def describe(self) -> str:
        return "null: clocks untouched, no energy counter"
