"""Pipeline plans that meet their deadline with every clock switch's window priced.

:class:`~fxenergy.pipeline.planner.PipelinePlanner` plans as Perseus does, with switches
free. On a GPU a switch has a transition window (the one switch model,
:mod:`fxenergy.schedule.switch`; :mod:`fxenergy.pipeline.switch_aware` prices it for a
pipeline), so a switch-free plan that fills every slack runs past a tight deadline.
:func:`plan_with_windows` closes that: it plans, cuts the switches whose windows do not pay
(:func:`~fxenergy.pipeline.switch_fit.fit_switches`: deadline first, then energy), and
re-plans at a deadline tightened by the overrun the windows caused, keeping the least-energy
plan that meets the deadline *with* its windows. What it reports is what the simulated GPU
charges for the plan, so the figures are SIMULATED where the latency is the simulator's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from fxenergy.pipeline.costs import ClockOption, StageCosts
from fxenergy.pipeline.dag import PipelinePlan, evaluate_pipeline
from fxenergy.pipeline.placement import plan_with_placement
from fxenergy.pipeline.planner import PipelinePlanner
from fxenergy.pipeline.switch_aware import last_clock, switched_evaluation
from fxenergy.pipeline.switch_fit import fit_switches


@dataclass(frozen=True)
class WindowedPlan:
    """A plan and its iteration with every switch window priced."""

    plan: PipelinePlan  #: the clocks (and splits) that run; ``plan.evaluation`` counts no window
    latency_s: float  #: switch latency the windows were priced with
    iteration_time_s: float  #: with windows
    energy_j: float  #: with windows
    switches: int  #: clock switches per steady iteration, splits' own included
    replans: int  #: plans made at a tightened deadline

    @property
    def savings(self) -> float:
        """Energy saved against every computation at its highest clock (which never switches)."""
        return 1.0 - self.energy_j / self.plan.baseline.energy_j

    def to_json(self) -> dict:
        """``PipelinePlan.to_json()`` with the windowed figures added."""
        doc = self.plan.to_json()
        doc["switch_latency_s"] = self.latency_s
        doc["iteration_time_with_switches_s"] = self.iteration_time_s
        doc["energy_with_switches_j"] = self.energy_j
        doc["switches_per_iteration"] = self.switches
        return doc


def count_switches(plan: PipelinePlan) -> int:
    """Clock changes per steady iteration (each rank starts at its last clock), splits included."""
    n = len(plan.splits)
    for order in plan.dag.rank_orders:
        prev = last_clock(order[-1], plan.freqs_mhz, plan.splits)
        for c in order:
            n += plan.freqs_mhz[c] != prev
            prev = last_clock(c, plan.freqs_mhz, plan.splits)
    return n


def plan_with_windows(
    planner: PipelinePlanner, deadline_s: float, latency_s: float, replans: int = 3
) -> WindowedPlan:
    """The least-energy plan found that meets ``deadline_s`` with its switch windows priced.

    Starts: the planner's plan at the deadline (then re-planned at deadlines tightened by the
    overrun its windows caused); plans made with every clock's time padded by one or two
    windows' worth of its slow-down (:func:`padded_costs`: room left for the windows where the
    deadline cannot be tightened, e.g. at the all-max-clock iteration); with
    ``planner.split_clocks``, also plans without splits (a split's own window can cost more than
    it saves). Each start goes through :func:`~fxenergy.pipeline.switch_fit.fit_switches`;
    the least-energy plan that meets the deadline with its windows is kept.

    Args:
        planner: a :class:`~fxenergy.pipeline.planner.PipelinePlanner` (its
            ``split_clocks`` and polish settings apply).
        deadline_s: iteration time limit (s), windows included.
        latency_s: switch latency (s); 0 plans switch-free (the plan comes back unchanged).
        replans: at most this many re-plans at a deadline tightened by the last overrun.
    """
    best = _search(planner, deadline_s, latency_s, replans)
    if latency_s <= 0:
        return best
    split = planner.split_clocks
    if split:
        planner.split_clocks = False
        try:
            best = min(
                best, _search(planner, deadline_s, latency_s, replans), key=_order(deadline_s)
            )
        finally:
            planner.split_clocks = split
    for windows in (1, 2):
        padded = PipelinePlanner(
            planner.dag, padded_costs(planner.costs, latency_s, windows),
            straggler_s=planner.straggler_s, polish_s=planner.polish_s, workers=planner.workers,
        )  # fmt: skip
        if padded.shortest_s <= deadline_s * (1 + 1e-12):
            raw = plan_with_placement(padded, deadline_s)
            raw = replace(
                raw,
                baseline=best.plan.baseline,
                lower_bound_j=best.plan.lower_bound_j,
                method=f"{raw.method}+padded{windows}",
            )
            cand = _fitted(raw, planner, deadline_s, latency_s, 0)
            best = min(best, cand, key=_order(deadline_s))
    return best


def padded_costs(costs: StageCosts, latency_s: float, windows: float) -> StageCosts:
    """``costs`` with each clock's time padded by ``windows`` times what a late switch back to
    the fastest clock costs after it (``latency * (1 - t_fastest / t)``): planning on these
    leaves room for the transition windows the plan's switches will take."""
    options = {}
    for key, table in costs.options.items():
        fastest = min(o.time_s for o in table.values())
        options[key] = {
            f: ClockOption(f, o.time_s + windows * latency_s * (1 - fastest / o.time_s), o.energy_j)
            for f, o in table.items()
        }
    return StageCosts(options, costs.blocked_power_w, costs.backward_split)


def _search(
    planner: PipelinePlanner, deadline_s: float, latency_s: float, replans: int
) -> WindowedPlan:
    """Plan, fit the switches, re-plan at a deadline tightened by the overrun; the best kept."""
    horizon = planner.straggler_s or 0.0
    best: WindowedPlan | None = None
    target, made = deadline_s, 0
    while True:
        raw = plan_with_placement(planner, target)
        over = (
            switched_evaluation(
                raw.dag, planner.costs, raw.freqs_mhz, latency_s, splits=raw.splits,
                horizon_s=horizon,
            )[0]
            - deadline_s
        )  # fmt: skip
        cand = _fitted(raw, planner, deadline_s, latency_s, made)
        best = cand if best is None else min(best, cand, key=_order(deadline_s))
        target -= max(0.0, over)
        if over <= 0 or made >= replans or target < planner.shortest_s:
            return best
        made += 1


def _fitted(
    raw: PipelinePlan, planner: PipelinePlanner, deadline_s: float, latency_s: float, made: int
) -> WindowedPlan:
    """``raw``'s clocks through ``fit_switches``, scored with the planner's (true) costs."""
    costs, horizon = planner.costs, planner.straggler_s or 0.0
    freqs, splits = fit_switches(
        raw.dag, costs, raw.freqs_mhz, raw.splits, deadline_s, latency_s, horizon
    )
    kept = replace(
        raw,
        freqs_mhz=freqs,
        splits=splits,
        evaluation=evaluate_pipeline(raw.dag, costs, freqs, horizon, splits),
        deadline_s=deadline_s,
    )
    span, energy = switched_evaluation(
        kept.dag, costs, freqs, latency_s, splits=splits, horizon_s=horizon
    )
    return WindowedPlan(kept, latency_s, span, energy, count_switches(kept), made)


def _order(deadline_s: float) -> Callable[[WindowedPlan], tuple[float, float]]:
    """Sort key: time over the deadline first, then energy."""
    return lambda p: (max(0.0, p.iteration_time_s - deadline_s * (1 + 1e-12)), p.energy_j)
