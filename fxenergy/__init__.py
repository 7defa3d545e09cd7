"""fxenergy: compiler passes on torch.fx graphs that cut a model's GPU energy without slowing it.

The public API is imported lazily, so ``import fxenergy`` stays cheap and a CLI command pulls in
only what it uses.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from fxenergy.graph.capture import capture
from fxenergy.graph.capture_training import capture_training

_LAZY: dict[str, str] = {
    "optimize": "fxenergy.api",
    "OptimizedModule": "fxenergy.api",
    "backend": "fxenergy.training",
    "Plan": "fxenergy.plans.plan",
    "measure": "fxenergy.runtime",
    "get_backend": "fxenergy.runtime",
    "FxPass": "fxenergy.graph.pass_infra",
    "Pipeline": "fxenergy.graph.pass_infra",
    "register_pass": "fxenergy.graph.pass_infra",
    "get_pass": "fxenergy.graph.pass_infra",
    "run_passes": "fxenergy.graph.pass_infra",
    "GPUSpec": "fxenergy.hardware",
    "get_gpu": "fxenergy.hardware",
    "known_gpus": "fxenergy.hardware",
    "FxEnergyError": "fxenergy.errors",
}

#: Public submodules reachable as attributes (``fxenergy.meta.COST``).
_MODULES: dict[str, str] = {"meta": "fxenergy.graph.meta", "pipeline": "fxenergy.pipeline"}

__all__ = ["__version__", "capture", "capture_training", *_LAZY, *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fxenergy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
