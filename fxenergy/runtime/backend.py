"""The FrequencyBackend interface every runtime backend implements.

A backend owns one GPU's SM clock and energy counter. Implementations: ``NvmlBackend`` (a real
GPU through nvidia-ml-py), ``SimulatedBackend`` (a virtual clock and energy meter driven by the
DVFS model) and ``NullBackend`` (does nothing; for machines where clocks cannot be changed).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True)
class SwitchEvent:
    """One clock change a backend carried out (or skipped)."""

    t_s: float  #: backend time of the request (virtual for the simulator, monotonic for NVML)
    from_mhz: int
    to_mhz: int
    latency_s: float
    energy_j: float  #: energy spent during the switch (simulator only; 0 where unknown)
    label: str = ""  #: what asked for it (partition name, pipeline action, ...)
    requested_mhz: int | None = None  #: the clock asked for, where it was not supported


def nearest_clock_mhz(clocks_mhz: tuple[int, ...], mhz: float) -> int:
    """The clock in ``clocks_mhz`` nearest to ``mhz`` (ties go to the higher clock)."""
    if mhz in clocks_mhz:  # the usual case, on every boundary: keep it cheap
        return int(mhz)
    return min(clocks_mhz, key=lambda c: (abs(c - mhz), -c))


class FrequencyBackend(ABC):
    """Set and reset one GPU's SM clock and read its energy counter."""

    name: str = "abstract"
    simulated: bool = False
    has_energy_counter: bool = True
    #: how often the energy counter refreshes; windows shorter than this are unreliable
    counter_update_period_s: float = 0.0

    @abstractmethod
    def supported_clocks_mhz(self) -> tuple[int, ...]:
        """Supported SM clocks, highest first."""

    @property
    @abstractmethod
    def current_clock_mhz(self) -> int:
        """The SM clock in force now."""

    @abstractmethod
    def set_clock(self, mhz: int, label: str = "") -> int:
        """Lock the SM clock at ``mhz`` (nearest supported); return the clock actually set."""

    @abstractmethod
    def reset(self) -> None:
        """Put the clocks back as they were before this backend touched them."""

    @abstractmethod
    def energy_j(self) -> float:
        """A monotonically increasing energy counter in joules."""

    @property
    @abstractmethod
    def trace(self) -> list[SwitchEvent]:
        """Every switch carried out so far, in order."""

    def now_s(self) -> float:
        """The backend's clock in seconds (virtual for the simulator, monotonic otherwise)."""
        return time.perf_counter()

    def describe(self) -> str:
        """One line saying what this backend is (and whether it is simulated)."""
        return self.name

    def __enter__(self) -> FrequencyBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.reset()
