"""``be.report()``: every compiled graph, every cycle planned, and what the runs cost."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from fxenergy.training.backend import EnergyBackend
    from fxenergy.training.cycle import CyclePlan


def _pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


def graphs_table(be: EnergyBackend) -> Table:
    """One row per compiled graph: kind, nodes, calls, its current plan."""
    t = Table(title="compiled graphs", title_justify="left")
    for col in ("#", "kind", "nodes", "calls", "all-max ms", "plan", "partitions", "clocks MHz"):
        t.add_column(col, justify="right" if col not in ("kind", "plan") else "left")
    for g in be.graphs:
        p = g.plan
        clocks = sorted({x.clock_mhz for x in p.partitions}, reverse=True)
        where = f"cycle {p.extra['cycle']}" if "cycle" in p.extra else p.status.lower()
        t.add_row(
            str(g.index),
            g.kind + (f" ({g.label})" if g.label else ""),
            str(g.nodes),
            str(len(g.runs)),
            f"{p.baseline.time_s * 1e3:.4g}",
            where,
            str(len(p.partitions)),
            ", ".join(map(str, clocks)),
        )
    return t


def _steady(cyc: CyclePlan) -> tuple[float, float] | None:
    """Time and energy of the latest completed run of ``cyc`` (steady state from the second)."""
    if not cyc.runs:
        return None
    run = cyc.runs[-1]
    return run.time_s, run.energy_j


def cycles_table(be: EnergyBackend) -> Table:
    """One row per cycle planned: its graphs, predicted and run cost against all-max."""
    simulated = be.frequency_backend.simulated if be.graphs else True
    measured = "simulated" if simulated else "measured"
    t = Table(
        title=f"cycles planned (graphs in call order; Δ against all-max; runs {measured})",
        title_justify="left",
    )
    for col in ("cycle", "graphs", "status", "all-max ms", "plan Δt", "plan ΔE", "sw", "runs"):
        t.add_column(col, justify="left" if col in ("graphs", "status") else "right")
    t.add_column("last run Δt", justify="right")
    t.add_column("last run ΔE", justify="right")
    for cyc in be.cycles:
        steady = _steady(cyc)
        base = cyc.baseline
        t.add_row(
            str(cyc.index) + ("*" if cyc is be.active_cycle else ""),
            " → ".join(str(g) for g in cyc.sequence),
            cyc.status,
            f"{base.time_s * 1e3:.4g}",
            _pct(cyc.slowdown),
            _pct(-cyc.energy_saving),
            str(cyc.predicted.switches),
            str(len(cyc.runs)),
            _pct(steady[0] / base.time_s - 1) if steady and base.time_s else "-",
            _pct(steady[1] / base.energy_j - 1) if steady and base.energy_j else "-",
        )
    return t


def print_backend_report(be: EnergyBackend, console: Any = None) -> None:
    """Print the backend's graphs, cycles and events; numbers are the DVFS model's when the
    runtime is simulated, and say so."""
    console = console or Console()
    console.print(graphs_table(be))
    if be.cycles:
        console.print(cycles_table(be))
    else:
        console.print("no cycle planned yet: the graphs still run at the maximum clock")
    for line in be.events:
        console.print(f"  • {line}")
    console.print(
        "Host work between graphs (Python, dynamo guards, an uncompiled optimizer step) is not "
        "planned: it runs at whatever clock is in force."
    )
    if be.graphs and be.frequency_backend.simulated:
        console.print(f"[bold]SIMULATED[/]: {be.frequency_backend.describe()}")
