"""Training steps (and models with graph breaks) planned as one cycle through ``torch.compile``.

``fxenergy.backend(...)`` makes the backend; see :mod:`fxenergy.training.backend`.
"""

from fxenergy.training.backend import CompiledGraph, EnergyBackend, backend
from fxenergy.training.cycle import CyclePlan, StepRun, plan_cycle

__all__ = ["CompiledGraph", "CyclePlan", "EnergyBackend", "StepRun", "backend", "plan_cycle"]
