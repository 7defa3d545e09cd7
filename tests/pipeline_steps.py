"""The training loop both gloo pipeline tests run on each rank, with and without a clock plan."""

from __future__ import annotations

from typing import Any


def run_steps(
    stages: list,
    sched: Any,
    rank_plan: list,
    opt: Any,
    backend: Any,
    batch: tuple[Any, Any],
    steps: int,
    planned: bool,
    splits: dict | None = None,
) -> dict:
    """``steps`` training steps of ``sched`` (under a :class:`ClockPlanHook` when ``planned``,
    with the plan's clock ``splits``): the losses, the clocks the hook asked for, the backend's
    switch trace, the starting clock."""
    from fxenergy.pipeline.runner import ClockPlanHook

    x, y = batch
    initial = backend.current_clock_mhz
    hook = ClockPlanHook(stages, rank_plan, backend, reset_on_exit=False, splits=splits)
    losses: list[float] = []
    for _ in range(steps):
        opt.zero_grad()
        step_losses: list = []
        if planned:
            with hook:
                sched.step(x, target=y, losses=step_losses)
        else:
            sched.step(x, target=y, losses=step_losses)
        opt.step()
        losses += [float(v.detach()) for v in step_losses]
    trace = [[e.label, e.to_mhz] for e in backend.trace]
    return {"losses": losses, "requests": hook.requests, "trace": trace, "initial": initial}
