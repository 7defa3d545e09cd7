"""``fxenergy frontier MODEL``: the energy–time frontier (slowdown 0 to 20%) as JSON and PNG."""

from __future__ import annotations

import argparse

from rich.table import Table

from fxenergy.cli._common import (
    UsageError,
    add_command,
    canonical_gpu,
    check_output_path,
    parse_slowdown,
)
from fxenergy.cli.optimize import add_planning_arguments
from fxenergy.cli.report import MODEL_HELP, add_model_arguments, capture_model
from fxenergy.errors import CaptureError
from fxenergy.hardware.power_params import calibration_note


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "frontier",
        "energy-time frontier of a model (one plan per slowdown budget)",
        "Plan MODEL at slowdown budgets from 0 to 20% and write the frontier as JSON and a PNG. "
        "Numbers come from the DVFS model (a simulated GPU). " + MODEL_HELP,
        [
            "fxenergy frontier gpt-tiny --out frontier.json --plot frontier.png",
            "fxenergy frontier gpt-tiny --train --slowdowns 0,1%,5% --plot ''",
        ],
    )
    add_model_arguments(p)
    add_planning_arguments(p)
    p.add_argument(
        "--slowdowns",
        default="0,0.005,0.01,0.02,0.03,0.05,0.075,0.1,0.15,0.2",
        help="comma-separated budgets, fractions or percentages",
    )
    p.add_argument("--out", default="frontier.json", help="JSON output")
    p.add_argument("--plot", default="frontier.png", help="PNG output ('' to skip)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fxenergy.cli import console
    from fxenergy.plans.frontier import frontier, plot, write_json

    args.gpu = canonical_gpu(args.gpu)
    check_output_path(args.out, "--out")
    check_output_path(args.plot, "--plot")
    try:
        slowdowns = [parse_slowdown(s) for s in args.slowdowns.split(",") if s.strip()]
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"--slowdowns: {exc}") from None
    try:
        gm, title = capture_model(args)
    except CaptureError as err:  # graph breaks: the cycle of graphs one call runs, re-planned
        if args.train or args.method != "auto":
            raise
        points, title, breaks = _frontier_with_breaks(args, slowdowns, str(err))
    else:
        points, breaks = (
            frontier(
                gm,
                args.gpu,
                slowdowns,
                switch_latency_s=args.switch_latency_ms / 1e3,
                time_limit_s=args.time_limit,
            ),
            [],
        )
    table = Table(title=f"energy–time frontier: {title} on {args.gpu} (simulated, DVFS model)")
    for col in ("budget", "time ms", "energy J", "slowdown", "energy saved", "switches"):
        table.add_column(col, justify="right")
    for p in points:
        table.add_row(
            f"{100 * p.max_slowdown:g}%",
            f"{p.time_s * 1e3:.4f}",
            f"{p.energy_j:.5g}",
            f"{100 * p.slowdown:.2f}%",
            f"{100 * p.energy_saving:.2f}%",
            str(p.switches),
        )
    console.print(table)
    for line in breaks:
        console.print(line, highlight=False, markup=False)
    console.print(f"note: {calibration_note(args.gpu)}", highlight=False)
    write_json(points, args.out, model=title, gpu=args.gpu)
    console.print(f"frontier written to {args.out}")
    if args.plot:
        plot(points, args.plot, title=f"{title} on {args.gpu} (simulated)")
        console.print(f"plot written to {args.plot}")
    return 0


def _frontier_with_breaks(
    args: argparse.Namespace, slowdowns: list[float], capture_error: str
) -> tuple[list, str, list[str]]:
    """A model torch.compile splits into graphs: optimize it once through fxenergy's backend
    (simulated), then re-plan the cycle of graphs one call runs at every budget."""
    from fxenergy.api import optimize
    from fxenergy.cli.report import example_inputs
    from fxenergy.models.loader import load_model
    from fxenergy.plans.frontier import frontier_points
    from fxenergy.training.cycle import CyclePlan
    from fxenergy.training.graphs import OptimizedGraphs

    loaded = load_model(args.model, args.device)
    inputs, kwargs = example_inputs(args, loaded)
    opt = optimize(
        loaded.module,
        tuple(inputs),
        kwargs,
        gpu=args.gpu,
        max_slowdown=min(slowdowns, default=0.0),
        backend="sim",
        switch_latency_s=args.switch_latency_ms / 1e3,
        time_limit_s=args.time_limit,
    )
    if not isinstance(opt, OptimizedGraphs):  # captured after all (e.g. on a second try)
        raise CaptureError(capture_error)

    def plan_at(s: float) -> tuple[CyclePlan, int, str]:
        cyc = opt.energy.replan(s)
        return cyc, sum(len(p.partitions) for p in cyc.plans), cyc.status

    try:
        return frontier_points(slowdowns, plan_at), loaded.name, opt.break_lines()
    finally:
        opt.restore_clocks()
