"""``fxenergy plan show PLAN.json``: print any saved plan (a graph plan or a pipeline plan)."""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from rich.table import Table

from fxenergy.cli._common import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "plan",
        "inspect saved plans",
        "Work with plan files written by `fxenergy optimize --out` (a graph plan) or "
        "`fxenergy pipeline --out` (a pipeline plan). Files are checked on load: JSON, schema, "
        "fields, GPU name and supported clocks.",
        ["fxenergy plan show plan.json", "fxenergy plan show pipeline-plan.json --trace t.json"],
    )
    psub = p.add_subparsers(dest="plan_command", metavar="ACTION", required=True)
    show = add_command(
        psub,
        "show",
        "print a saved plan (graph or pipeline)",
        "Prints the plan's summary (predicted against all clocks at max) and its partitions, "
        "or a pipeline plan's per-rank clocks.",
        ["fxenergy plan show plan.json", "fxenergy plan show plan.json --trace plan-trace.json"],
    )
    show.add_argument("plan", metavar="PLAN.json", help="a plan file")
    show.add_argument(
        "--trace", default=None, metavar="OUT.json", help="graph plans: write the trace JSON"
    )
    show.set_defaults(func=run_show)


def run_show(args: argparse.Namespace) -> int:
    from fxenergy.cli import console
    from fxenergy.cli._common import check_output_path
    from fxenergy.plans.files import load_plan_file
    from fxenergy.plans.plan import Plan
    from fxenergy.plans.report import print_plan

    check_output_path(args.trace, "--trace")
    plan = load_plan_file(args.plan)
    if isinstance(plan, Plan):
        console.print(f"[bold]graph plan[/] {args.plan} (graph {plan.fingerprint})")
        print_plan(plan, console=console)
        if args.trace:
            plan.to_trace(args.trace)
            console.print(f"trace written to {args.trace}")
        return 0
    if args.trace:
        from fxenergy.cli._common import UsageError

        raise UsageError("--trace needs the profile: use `fxenergy pipeline ... --trace`")
    console.print(_pipeline_table(plan, args.plan))
    return 0


def _pipeline_table(doc: dict[str, Any], path: str) -> Table:
    table = Table(
        title=f"pipeline plan {path}: {doc['schedule']}, {doc['num_stages']} stages x "
        f"{doc['num_microbatches']} microbatches (method {doc.get('method', '?')})"
    )
    for col in ("rank", "computations", "clocks MHz", "switches"):
        table.add_column(col, justify="right")
    for rank, entries in enumerate(doc["ranks"]):
        clocks = [e["freq_mhz"] for e in entries]
        switches = sum(a != b for a, b in itertools.pairwise(clocks))
        table.add_row(str(rank), str(len(entries)), f"{min(clocks)}-{max(clocks)}", str(switches))
    t, e = doc.get("iteration_time_s"), doc.get("energy_j")
    bt, be = doc.get("baseline_time_s"), doc.get("baseline_energy_j")
    if None not in (t, e, bt, be):
        table.caption = (
            f"iteration {t:.4f} s, {e:.1f} J; all clocks at max {bt:.4f} s, {be:.1f} J "
            f"(saved {100 * (1 - e / be):.2f}%)"
        )
    return table
