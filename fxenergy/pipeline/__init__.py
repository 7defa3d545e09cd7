"""torch.distributed.pipelining integration: schedule orders, per-rank clock plans, stage costs.

- :mod:`fxenergy.pipeline.orders`: per-rank orders of torch's pipeline schedules.
- :mod:`fxenergy.pipeline.runner`: :class:`~fxenergy.pipeline.runner.ClockPlanHook`
  switches clocks before each planned forward/backward; ``rank_plan_from_json`` loads a plan.
- :mod:`fxenergy.pipeline.stage_costs`: a pipeline profile predicted from stage modules.
"""
