"""``measure()``: the time and GPU energy of a window of code, from NVML or the simulator.

On a real GPU the window is bracketed by ``torch.cuda.synchronize()`` (so it covers the GPU work,
not only its launch) and the energy is the difference of NVML's total-energy counter, which
refreshes about every 100 ms: a shorter window draws a warning, because its energy can be off by a
whole update period's worth. Under the simulator time and energy are virtual and count only work
run through the simulator (runtime partitions, ``execute``, ``idle``).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from fxenergy.errors import NvmlError
from fxenergy.runtime.backend import FrequencyBackend
from fxenergy.runtime.current import current_runtime

log = logging.getLogger("fxenergy.runtime")


@dataclass
class Measurement:
    """Filled in when the ``measure`` window closes; ``simulated`` says if it is a prediction."""

    backend: str
    simulated: bool
    time_s: float = math.nan
    energy_j: float = math.nan

    @property
    def avg_power_w(self) -> float:
        return self.energy_j / self.time_s if self.time_s > 0 else math.nan

    def __str__(self) -> str:
        tag = " (SIMULATED)" if self.simulated else ""
        return f"{self.time_s:.6g} s, {self.energy_j:.6g} J{tag}"


def read_energy_j(backend: FrequencyBackend) -> float:
    """The backend's energy counter, or NaN where it has none (logged)."""
    if not backend.has_energy_counter:
        return math.nan
    try:
        return backend.energy_j()
    except NvmlError as exc:
        log.warning("fxenergy: no energy reading: %s", exc)
        return math.nan


def synchronize_gpu(backend: FrequencyBackend) -> None:
    """Wait for queued GPU work when the backend measures a real GPU that torch has used."""
    if backend.simulated or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    torch.cuda.synchronize()


def _resolve(backend: FrequencyBackend | None) -> tuple[FrequencyBackend, bool]:
    """The backend to use and whether this call made it (and so must close it)."""
    if backend is not None:
        return backend, False
    from fxenergy.runtime.factory import get_backend

    runtime = current_runtime()
    if runtime is not None:
        return runtime.backend, False
    return get_backend("auto"), True


def _check_window(m: Measurement, backend: FrequencyBackend) -> None:
    period = backend.counter_update_period_s
    if m.time_s < period:
        warnings.warn(
            f"measured window of {m.time_s * 1e3:.1f} ms is shorter than the energy counter's "
            f"update period (~{period * 1e3:.0f} ms on {backend.name}): its energy is unreliable; "
            "measure a longer window (repeat the work inside it)",
            stacklevel=4,
        )
    if backend.simulated and m.time_s == 0:
        log.warning(
            "fxenergy: measure() on the simulator saw no simulated work: only work run through "
            "the simulator (a FrequencyRuntime's partitions, execute, idle) is accounted"
        )


@contextmanager
def measure(backend: FrequencyBackend | None = None) -> Iterator[Measurement]:
    """Measure the time and GPU energy of the ``with`` block.

    Args:
        backend: where to read time and energy; default: the current runtime's backend, else
            ``get_backend("auto")`` (NVML on a GPU, else the simulator, said in the log).

    Yields:
        A :class:`Measurement` whose ``time_s`` and ``energy_j`` are set when the block exits.
    """
    backend, owned = _resolve(backend)
    m = Measurement(backend.describe(), backend.simulated)
    try:
        synchronize_gpu(backend)
        t0, e0 = backend.now_s(), read_energy_j(backend)
        ok = False
        try:
            yield m
            ok = True
        finally:
            synchronize_gpu(backend)
            m.time_s = backend.now_s() - t0
            m.energy_j = read_energy_j(backend) - e0
        if ok:
            _check_window(m, backend)
    finally:
        close = getattr(backend, "close", None)
        if owned and close is not None:
            close()
