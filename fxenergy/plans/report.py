"""Rich tables for a :class:`~fxenergy.plans.plan.Plan` and the runtime's latest run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from fxenergy.hardware.power_params import calibration_note
from fxenergy.plans.plan import Plan


def _pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


def summary_table(plan: Plan, simulated: bool = True) -> Table:
    """Baseline (all ops at max clock) vs plan: time, energy, peak memory, switches."""
    how = "predicted by the DVFS model (simulated GPU)" if simulated else "predicted"
    table = Table(title=f"fxenergy plan for {plan.gpu} — {how}")
    table.add_column("")
    for col in ("baseline (max clock)", "plan", "change"):
        table.add_column(col, justify="right")
    b, p = plan.baseline, plan.predicted
    table.add_row(
        "time", f"{b.time_s * 1e3:.4f} ms", f"{p.time_s * 1e3:.4f} ms", _pct(plan.slowdown)
    )
    table.add_row("energy", f"{b.energy_j:.5g} J", f"{p.energy_j:.5g} J", _pct(-plan.energy_saving))
    table.add_row(
        "peak activation memory",
        f"{b.peak_memory_bytes / 2**20:.2f} MiB",
        f"{p.peak_memory_bytes / 2**20:.2f} MiB",
        _pct(p.peak_memory_bytes / b.peak_memory_bytes - 1 if b.peak_memory_bytes else 0.0),
    )
    table.add_row("clock switches", str(b.switches), str(p.switches), "")
    gap = "n/a" if plan.gap is None else f"{100 * plan.gap:.2f}%"
    table.caption = (
        f"budget: slowdown ≤ {100 * plan.max_slowdown:g}%, switch latency "
        f"{plan.switch_latency_s * 1e3:g} ms · solver {plan.status}, gap to bound {gap}, "
        f"{plan.solve_time_s:.2f} s"
    )
    return table


def partitions_table(plan: Plan, limit: int = 30) -> Table:
    """One row per partition: clock, nodes, time and energy shares."""
    table = Table(title=f"partitions ({len(plan.partitions)})")
    for col in ("#", "clock MHz", "nodes", "first .. last", "time ms", "energy J", "energy %"):
        table.add_column(col, justify="left" if col == "first .. last" else "right")
    total_e = sum(p.energy_j for p in plan.partitions) or 1.0
    shown = plan.partitions[:limit]
    for part in shown:
        span = part.nodes[0] if len(part.nodes) == 1 else f"{part.nodes[0]} .. {part.nodes[-1]}"
        table.add_row(
            str(part.index),
            str(part.clock_mhz),
            str(len(part.nodes)),
            span,
            f"{part.time_s * 1e3:.4f}",
            f"{part.energy_j:.4g}",
            f"{100 * part.energy_j / total_e:.1f}",
        )
    if len(plan.partitions) > limit:
        table.caption = f"{len(plan.partitions) - limit} more partitions not shown"
    return table


def run_table(run: Any) -> Table:
    """What the runtime did on the latest call (simulated or measured)."""
    kind = "SIMULATED" if run.simulated else "measured"
    table = Table(title=f"latest run on {run.backend} ({kind})")
    for col in ("time ms", "energy J", "switches", "no-op skipped"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{run.time_s * 1e3:.4f}", f"{run.energy_j:.5g}", str(run.switches), str(run.noop_skipped)
    )
    return table


def print_plan(
    plan: Plan, console: Console | None = None, run: Any = None, backend: Any = None
) -> None:
    """Print the plan summary, its partitions, notes and (if given) the latest run."""
    console = console or Console()
    simulated = backend is None or getattr(backend, "simulated", True)
    console.print(summary_table(plan, simulated=simulated))
    console.print(partitions_table(plan))
    for note in [*plan.notes, calibration_note(plan.gpu)]:
        console.print(f"[dim]note:[/] {note}", highlight=False)
    if run is not None:
        console.print(run_table(run))
