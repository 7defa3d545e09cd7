"""``fxenergy pipeline --from-run DIR``: plan again from a saved online run; measured vs plan.

``DIR`` is the ``save_dir`` of an :func:`fxenergy.pipeline.energy_schedule` run. The one-clock
profile it measured is extrapolated and planned with the run's own parameters (the same plan
the run made, which is checked), then a table per rank sets what the run measured in its steady
iterations beside what the plan predicted, and the iteration beside the all-max-clock baseline
(the profiling iterations).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from rich.table import Table


def add_from_run_args(p: argparse.ArgumentParser) -> None:
    """The ``--from-run`` option of ``fxenergy pipeline``."""
    p.add_argument(
        "--from-run",
        type=Path,
        default=None,
        metavar="DIR",
        help="plan from the profile an energy_schedule run saved in DIR; measured vs predicted",
    )


def _fmt(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _pct(measured: float, predicted: float) -> str:
    if not (math.isfinite(measured) and math.isfinite(predicted) and predicted):
        return "n/a"
    return f"{100 * (measured / predicted - 1):+.1f}%"


def run_from_run(args: argparse.Namespace) -> int:
    """Print the re-made plan and the run's measured vs predicted numbers; save the plan."""
    from fxenergy.cli import console
    from fxenergy.pipeline.online_plan import RunRecord, compare_run

    run = RunRecord.load(args.from_run)
    m = run.meta
    report = compare_run(run)
    kind = "SIMULATED" if m["simulated"] else "measured"
    console.print(
        f"{m['schedule']} run: {m['num_stages']} stages x {m['num_microbatches']} microbatches on "
        f"{m['num_ranks']} ranks, {m['gpu']} ({m['backend']}); profiled at {m['reference_mhz']} "
        f"MHz; plan again from its profile: "
        + ("the same plan the run made" if report["same_plan_as_run"] else "ANOTHER plan")
    )
    for step in m.get("refinement") or []:  # each plan judged by its own measured iteration
        console.print(
            f"after iteration {step['iteration']}: plan measured {step['measured_s']:.4f} s "
            f"({kind}) vs {step['predicted_s']:.4f} s predicted, deadline {step['budget_s']:.4f}"
            f" s: {step['verdict']}"
        )
    if m.get("fallback"):
        console.print(f"no plan met the deadline as measured: the run fell back to {m['fallback']}")
    observed = [o for o in m.get("observed_sm_mhz") or [] if o is not None]
    if observed:
        console.print(
            f"SM clock under load while profiling ({kind}): "
            + ", ".join(f"{o:.0f}" for o in observed)
            + f" MHz per rank (set: {m['reference_mhz']} MHz; lower = power-cap throttling)"
        )
    table = Table(title=f"per rank, steady iterations ({kind} vs predicted)")
    for col in ("rank", "busy s", "predicted", "diff", "energy J", "predicted", "diff"):
        table.add_column(col, justify="right")
    for r in report["ranks"]:
        table.add_row(
            str(r["rank"]),
            _fmt(r["measured_busy_s"]),
            _fmt(r["predicted_busy_s"]),
            _pct(r["measured_busy_s"], r["predicted_busy_s"]),
            _fmt(r["measured_j"], 1),
            _fmt(r["predicted_compute_j"], 1),
            _pct(r["measured_j"], r["predicted_compute_j"]) if m["simulated"] else "(+blocked)",
        )
    console.print(table)
    for phase, name in (("baseline", "all-max-clock (profiling)"), ("planned", "plan")):
        (tp, ep), (tm, em, n) = report[phase]["predicted"], report[phase]["measured"]
        console.print(
            f"{name}: iteration {_fmt(tm)} s {kind} vs {_fmt(tp)} s predicted ({_pct(tm, tp)}); "
            f"energy {_fmt(em, 1)} J vs {_fmt(ep, 1)} J ({_pct(em, ep)}); {n} iterations"
        )
    (_, e0), (_, e1) = report["baseline"]["predicted"], report["planned"]["predicted"]
    e0m, e1m = report["baseline"]["measured"][1], report["planned"]["measured"][1]
    console.print(
        f"energy saved vs all-max-clock: {_fmt(100 * (1 - e1m / e0m), 2)}% {kind}, "
        f"{_fmt(100 * (1 - e1 / e0), 2)}% predicted"
    )
    if getattr(args, "out", None):
        args.out.write_text(json.dumps(report["plan"], indent=1))
        console.print(f"plan written to {args.out}")
    return 0
