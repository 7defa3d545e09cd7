"""The energy–time frontier of a graph: one plan per slowdown budget, and its plot."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch.fx

from fxenergy.errors import FxEnergyError
from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S
from fxenergy.plans.plan import Savings
from fxenergy.plans.planner import DEFAULT_GPU, annotate, plan_graph

DEFAULT_SLOWDOWNS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.10, 0.15, 0.20)


@dataclass(frozen=True)
class FrontierPoint:
    """The best plan found within one slowdown budget (predicted by the DVFS model)."""

    max_slowdown: float
    time_s: float
    energy_j: float
    slowdown: float
    energy_saving: float
    switches: int
    partitions: int
    status: str


def frontier(
    gm: torch.fx.GraphModule,
    gpu: str = DEFAULT_GPU,
    slowdowns: Sequence[float] = DEFAULT_SLOWDOWNS,
    *,
    switch_latency_s: float = DEFAULT_SWITCH_LATENCY_S,
    time_limit_s: float = 10.0,
) -> list[FrontierPoint]:
    """Plan ``gm`` at each slowdown budget; points come back shortest time first.

    Each point's energy is never above the previous (tighter) one's: a plan that meets a tighter
    budget meets a looser one too, so the frontier keeps the better of the two.
    """
    gm = annotate(gm, gpu)

    def plan_at(s: float) -> tuple[Savings, int, str]:
        plan = plan_graph(gm, gpu, s, switch_latency_s=switch_latency_s, time_limit_s=time_limit_s)
        return plan, len(plan.partitions), plan.status

    return frontier_points(slowdowns, plan_at)


def frontier_points(
    slowdowns: Sequence[float], plan_at: Callable[[float], tuple[Savings, int, str]]
) -> list[FrontierPoint]:
    """The frontier from any planner: ``plan_at(budget)`` gives (plan, partitions, status).

    Used for one graph (:func:`frontier`) and for the one-cycle plans of a model with graph
    breaks (the CLI re-plans its cycle at each budget).
    """
    points: list[FrontierPoint] = []
    for s in sorted(slowdowns):
        plan, partitions, status = plan_at(s)
        point = FrontierPoint(
            max_slowdown=s,
            time_s=plan.predicted.time_s,
            energy_j=plan.predicted.energy_j,
            slowdown=plan.slowdown,
            energy_saving=plan.energy_saving,
            switches=plan.predicted.switches,
            partitions=partitions,
            status=status,
        )
        if points and points[-1].energy_j <= point.energy_j:
            point = replace(points[-1], max_slowdown=s)
        points.append(point)
    return points


def write_json(points: Sequence[FrontierPoint], path: str | Path, **header: Any) -> None:
    """Write the frontier (and a header such as model and GPU) as JSON."""
    data = {**header, "simulated": True, "points": [asdict(p) for p in points]}
    Path(path).write_text(json.dumps(data, indent=1))


def plot(points: Sequence[FrontierPoint], path: str | Path, title: str = "") -> None:
    """Energy vs time of the frontier as a PNG (needs matplotlib: pip install fxenergy[plot])."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise FxEnergyError(
            "plotting needs matplotlib: pip install 'fxenergy[plot]' (or drop --plot)"
        ) from exc
    fig, ax = plt.subplots(figsize=(7, 4.5))
    base_t = points[0].time_s / (1 + points[0].slowdown)
    base_e = points[0].energy_j / (1 - points[0].energy_saving)
    ax.plot([p.time_s * 1e3 for p in points], [p.energy_j for p in points], "o-", label="plans")
    ax.plot([base_t * 1e3], [base_e], "x", color="red", ms=9, label="all ops at max clock")
    for text, (t, e) in _labels(points):
        ax.annotate(text, (t, e), xytext=(5, 4), textcoords="offset points", fontsize=7)
    ax.set_xlabel("time per call (ms, simulated)")
    ax.set_ylabel("energy per call (J, simulated)")
    title = title or "energy–time frontier (DVFS model, simulated GPU)"
    ax.set_title(textwrap.fill(title, 70), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _labels(points: Sequence[FrontierPoint], near: float = 0.04) -> list[tuple[str, tuple]]:
    """One label per cluster of points closer than ``near`` (axis fraction): "7.5–20%" for
    budgets that gave the same plan, instead of labels printed over each other."""
    xs = [p.time_s * 1e3 for p in points]
    ys = [p.energy_j for p in points]
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    groups: list[list[int]] = []
    for i in range(len(points)):
        if groups:
            j = groups[-1][0]
            if abs(xs[i] - xs[j]) / span_x < near and abs(ys[i] - ys[j]) / span_y < near:
                groups[-1].append(i)
                continue
        groups.append([i])
    out = []
    for g in groups:
        lo, hi = points[g[0]].max_slowdown, points[g[-1]].max_slowdown
        text = f"{100 * lo:g}%" if lo == hi else f"{100 * lo:g}–{100 * hi:g}%"
        out.append((text, (xs[g[0]], ys[g[0]])))
    return out
