"""``get_backend``: pick the NVML, simulated or null backend by name, or automatically."""

from __future__ import annotations

import logging

from fxenergy.cost.annotate import DEFAULT_GPU
from fxenergy.errors import FxEnergyError, NvmlError
from fxenergy.hardware import GPUSpec
from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S
from fxenergy.runtime.backend import FrequencyBackend
from fxenergy.runtime.nvml import NvmlBackend
from fxenergy.runtime.sim import NullBackend, SimulatedBackend

log = logging.getLogger("fxenergy.runtime")

KINDS = ("auto", "nvml", "sim", "null")


class BackendError(FxEnergyError, ValueError):
    """An unknown backend name."""


def get_backend(
    kind: str = "auto",
    gpu: str | GPUSpec | None = None,
    device_index: int | None = None,
    *,
    switch_latency_s: float = DEFAULT_SWITCH_LATENCY_S,
) -> FrequencyBackend:
    """Make a frequency backend.

    Args:
        kind: ``"nvml"`` (a real GPU), ``"sim"`` (the DVFS-model GPU), ``"null"`` (touch
            nothing) or ``"auto"``: NVML when it works here, else the simulator (logged as a
            warning that says SIMULATED).
        gpu: spec-table GPU name; for NVML it overrides the name NVML reports, for the
            simulator it picks the GPU (default A100-SXM4-80GB, said in the log).
        device_index: NVML device index; default: torch's current CUDA device (by UUID).
        switch_latency_s: the simulator's clock-switch stall.

    Raises:
        NvmlError: ``kind="nvml"`` on a machine without a usable NVIDIA GPU (says what to do).
        BackendError: an unknown ``kind``.
    """
    if kind == "nvml":
        return NvmlBackend(device_index, gpu)
    if kind == "sim":
        return _simulated(gpu, switch_latency_s)
    if kind == "null":
        return NullBackend(gpu)
    if kind == "auto":
        return _auto(gpu, device_index, switch_latency_s)
    raise BackendError(f"unknown backend {kind!r}; choose one of {', '.join(KINDS)}")


def _simulated(gpu: str | GPUSpec | None, switch_latency_s: float) -> SimulatedBackend:
    if gpu is None:
        log.info("fxenergy: no GPU named for the simulator; simulating %s", DEFAULT_GPU)
        gpu = DEFAULT_GPU
    return SimulatedBackend(gpu, switch_latency_s)


def _auto(
    gpu: str | GPUSpec | None, device_index: int | None, switch_latency_s: float
) -> FrequencyBackend:
    try:
        backend = NvmlBackend(device_index, gpu)
    except NvmlError as exc:
        sim = _simulated(gpu, switch_latency_s)
        log.warning("fxenergy: NVML is not usable here (%s); using the %s", exc, sim.describe())
        return sim
    log.info("fxenergy: using %s", backend.describe())
    return backend
