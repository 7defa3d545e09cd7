"""Frequency runtime: backends (NVML, simulated, null), the switching controller, measurement.

Names are imported lazily, so ``import fxenergy.runtime.restore`` (or a backend alone) does not
pull in the rest; ``from fxenergy.runtime import enter_partition`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "FrequencyBackend": "fxenergy.runtime.backend",
    "SwitchEvent": "fxenergy.runtime.backend",
    "NvmlBackend": "fxenergy.runtime.nvml",
    "SimulatedBackend": "fxenergy.runtime.sim",
    "NullBackend": "fxenergy.runtime.sim",
    "get_backend": "fxenergy.runtime.factory",
    "BackendError": "fxenergy.runtime.factory",
    "SwitchController": "fxenergy.runtime.controller",
    "ImmediateEvent": "fxenergy.runtime.controller",
    "FrequencyRuntime": "fxenergy.runtime.session",
    "RuntimePartition": "fxenergy.runtime.session",
    "RuntimeSummary": "fxenergy.runtime.session",
    "enter_partition": "fxenergy.runtime.session",
    "current_runtime": "fxenergy.runtime.current",
    "measure": "fxenergy.runtime.meter",
    "Measurement": "fxenergy.runtime.meter",
    "profile_clocks": "fxenergy.runtime.profiler",
    "ProfileRows": "fxenergy.runtime.profiler",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fxenergy.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
