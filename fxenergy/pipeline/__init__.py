"""torch.distributed.pipelining integration: schedule orders, per-rank clock plans, stage costs.

- :func:`energy_schedule` (:mod:`fxenergy.pipeline.online`): wrap a torch pipeline schedule so
  its iterations profile themselves online, get planned, and follow the plan (one line).
- :mod:`fxenergy.pipeline.orders`: per-rank orders of torch's pipeline schedules.
- :mod:`fxenergy.pipeline.runner`: :class:`~fxenergy.pipeline.runner.ClockPlanHook`
  switches clocks at the GPU boundary of each planned forward/backward; ``rank_plan_from_json``
  loads a plan.
- :mod:`fxenergy.pipeline.stage_costs`: a pipeline profile predicted from stage modules.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EnergySchedule", "energy_schedule"]


def __getattr__(name: str) -> Any:
    if name in __all__:  # lazy: importing fxenergy.pipeline.dag stays light
        from fxenergy.pipeline import online

        return getattr(online, name)
    raise AttributeError(f"module 'fxenergy.pipeline' has no attribute {name!r}")
