"""Rich tables for a :class:`~fxenergy.plans.plan.Plan` and the runtime's latest run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from fxenergy.hardware.power_params import calibration_note
from fxenergy.plans.plan import Plan


def fmt_count(x: float, unit: str = "") -> str:
    """``1.23 M`` style (SI prefixes), as ``fxenergy report`` prints sizes."""
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}".rstrip()


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
    fixed = int(plan.extra.get("memory_baseline_bytes", 0))
    b_act, p_act = b.peak_memory_bytes - fixed, p.peak_memory_bytes - fixed
    label = "peak activation memory" if "memory_baseline_bytes" in plan.extra else "peak memory"
    table.add_row(
        label, fmt_count(b_act, "B"), fmt_count(p_act, "B"), _pct(p_act / b_act - 1 if b_act else 0)
    )
    if fixed:
        table.add_row("weights + inputs (always live)", fmt_count(fixed, "B"), "", "")
    table.add_row("clock switches", str(b.switches), str(p.switches), "")
    # A gap to a lower bound is >= 0; older plans could store a negative one (a bound that did
    # not hold for one-clock cyclic plans, fixed in the planner): never print it negative.
    gap = "n/a" if plan.gap is None else f"{100 * max(plan.gap, 0.0):.2f}%"
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
