"""``SimulatedBackend`` (a virtual GPU driven by the DVFS model) and ``NullBackend`` (does nothing).

The simulator keeps a virtual clock (seconds) and a virtual energy meter (joules). Work is
accounted explicitly: ``execute(cost)`` advances both by the DVFS model's time and energy for
``cost`` at the SM clock in force, ``idle(seconds)`` by idle power. A clock change stalls the GPU
for ``switch_latency_s`` at the model's idle power (the team convention the scheduler's checker
uses too), so a plan run here costs exactly what the model predicts for it. Everything it reports
is SIMULATED, and ``describe()`` says so.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Protocol

from fxenergy.graph.meta import CostRecord
from fxenergy.hardware import GPUSpec, get_gpu
from fxenergy.runtime.backend import FrequencyBackend, SwitchEvent, nearest_clock_mhz

log = logging.getLogger("fxenergy.runtime")

DEFAULT_SWITCH_LATENCY_S = 0.010


class DVFSLike(Protocol):
    """What the simulator needs from ``fxenergy.hardware.dvfs.DVFSModel``."""

    idle_power_w: float
    switch_latency_s: float

    def time_s(self, cost: CostRecord, freq_mhz: int) -> float: ...

    def energy_j(self, cost: CostRecord, freq_mhz: int) -> float: ...

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
        switch_latency_s: how long a clock change stalls the GPU (at idle power).
        model: a DVFS model to use instead of ``get_dvfs_model(gpu, switch_latency_s)``; its own
            ``switch_latency_s`` then applies.
    """

    name = "sim"
    simulated = True

    def __init__(
        self,
        gpu: str | GPUSpec = "A100-SXM4-80GB",
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

    def execute(self, cost: CostRecord, label: str = "") -> WorkRecord:
        """Run ``cost`` at the current clock: advance virtual time and energy by the model."""
        key = (cost, self._current)
        if (te := self._memo.get(key)) is None:  # a training loop runs the same work again
            te = self._memo[key] = (
                self.model.time_s(cost, self._current),
                self.model.energy_j(cost, self._current),
            )
        return self._advance(te[0], te[1], label)

    def idle(self, seconds: float, label: str = "idle") -> WorkRecord:
        """Stay idle for ``seconds`` at the model's idle power."""
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"idle time must be a finite number of seconds >= 0, got {seconds}")
        return self._advance(seconds, seconds * self.model.idle_power_w, label)

    def set_clock(self, mhz: int, label: str = "") -> int:
        """Switch the virtual clock; a real change stalls ``switch_latency_s`` at idle power."""
        target = nearest_clock_mhz(self._clocks, mhz)
        requested = None
        if target != mhz:
            requested = round(float(mhz))
            msg = (
                f"{mhz} MHz is not a supported SM clock on the simulated {self.gpu.name}; "
                f"using the nearest, {target} MHz"
            )
            log.warning(msg)
            warnings.warn(msg, stacklevel=2)
        if target == self._current:
            return target
        latency = self.model.switch_latency_s
        energy = latency * self.model.idle_power_w
        event = SwitchEvent(self._time_s, self._current, target, latency, energy, label, requested)
        self._trace.append(event)
        self._time_s += latency
        self._energy_j += energy
        self._current = target
        return target

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
