"""``fxenergy pipeline``: plan per-computation SM clocks for a pipeline-parallel iteration."""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from rich.table import Table

from fxenergy.cli._common import add_command, check_input_file, check_output_path, parse_slowdown
from fxenergy.cli._pipeline_from_run import add_from_run_args, run_from_run
from fxenergy.cli.optimize import add_timeline_arguments
from fxenergy.errors import FxEnergyError, ProfileError
from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S
from fxenergy.hardware.profiles import Profile, read_profile


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "pipeline",
        "plan clocks for pipeline-parallel training (Perseus mode) from a profile CSV",
        "Read a time/energy profile of every stage's forward and backward at each SM clock "
        "(Perseus CSV: stage,instruction,frequency,time,energy), build the iteration's DAG for "
        "the schedule and plan a clock per computation that minimizes energy within the "
        "slowdown budget. A profile measured at one clock is extrapolated with --gpu.",
        [
            "fxenergy pipeline profile.csv --blocked-power-w 75 --max-slowdown 2%",
            "fxenergy pipeline profile.csv --blocked-power-w 75 --trace iter.json "
            "--timeline iter.png --plot frontier.png",
        ],
    )
    p.add_argument(
        "profile",
        type=Path,
        nargs="?",
        help="CSV: stage,instruction,frequency,time,energy (not with --from-run)",
    )
    p.add_argument("--microbatches", type=int, default=12, help="microbatches per iteration")
    p.add_argument(
        "--schedule",
        default="1F1B",
        help="GPipe | 1F1B | Interleaved1F1B | LoopedBFS | InterleavedZeroBubble | "
        "ZBVZeroBubble | DualPipeV",
    )
    p.add_argument(
        "--ranks", type=int, default=None, help="GPUs (default: stages; multi-stage: stages/2)"
    )
    p.add_argument(
        "--backward-input-share",
        type=float,
        default=None,
        help="zero-bubble schedules without measured backward_input/backward_weight rows: "
        "share of backward that is input gradient (default 0.5)",
    )
    p.add_argument(
        "--blocked-power-w",
        type=float,
        default=None,
        help="W a GPU draws while blocked (required unless --from-run)",
    )
    p.add_argument(
        "--max-slowdown",
        type=parse_slowdown,
        default=0.0,
        metavar="BUDGET",
        help="allowed slowdown of the all-max-clock iteration: a fraction (0.02) or a "
        "percentage (2%%)",
    )
    p.add_argument("--straggler-time", type=float, default=None, help="s; plan around it")
    p.add_argument("--profile-stages", default=None, help="e.g. 0,2,5,7: stages to use")
    p.add_argument("--gpu", default=None, help="extrapolate a one-clock profile to this GPU")
    p.add_argument("--polish-s", type=float, default=1.0, help="CP-SAT seconds per plan")
    p.add_argument(
        "--switch-latency-ms",
        type=float,
        default=DEFAULT_SWITCH_LATENCY_S * 1e3,
        help="clock switch latency, ms: the plan meets the deadline with every switch's "
        "transition window priced (0: switches free, as Perseus plans)",
    )
    p.add_argument(
        "--split-clocks",
        action="store_true",
        help="let a computation switch to a second clock partway (the LP optimum made real: "
        "a plan at the LP bound, one more clock switch per split computation)",
    )
    p.add_argument(
        "--frontier-points",
        type=int,
        default=40,
        help="plans on the frontier (--plot, --frontier-out)",
    )
    p.add_argument("--frontier-out", type=Path, default=None, help="CSV time,energy")
    p.add_argument("--plot", type=Path, default=None, help="frontier PNG (matplotlib)")
    p.add_argument("--out", type=Path, default=None, help="plan JSON")
    add_timeline_arguments(p)
    add_from_run_args(p)
    p.set_defaults(func=run)


def _load(args: argparse.Namespace) -> Profile:
    profile = read_profile(args.profile)
    if len(profile.clocks_mhz()) == 1:
        if not args.gpu:
            raise ProfileError(
                f"{args.profile} has one clock only; pass --gpu to extrapolate it to all clocks"
            )
        try:
            from fxenergy.hardware.extrapolate import extrapolate_profile
        except ImportError as exc:
            raise FxEnergyError(f"the DVFS model is not available: {exc}") from exc
        profile = extrapolate_profile(profile, args.gpu)
        from fxenergy.cli import console
        from fxenergy.hardware.power_params import calibration_note

        console.print(f"note: one-clock profile extrapolated; {calibration_note(args.gpu)}")
    return profile


def run(args: argparse.Namespace) -> int:
    from fxenergy.cli import console
    from fxenergy.pipeline.dag import StageCosts, build_dag
    from fxenergy.pipeline.placement import plan_with_placement
    from fxenergy.pipeline.planner import PipelinePlanner
    from fxenergy.pipeline.windowed import plan_with_windows

    if args.from_run is not None:
        return run_from_run(args)
    if args.profile is None or args.blocked_power_w is None:
        raise FxEnergyError("pass a PROFILE.csv and --blocked-power-w (or --from-run DIR)")
    _check_paths(args)
    profile = _load(args)
    dag = build_dag(args.schedule, _num_stages(args, profile), args.microbatches, args.ranks)
    stages = [int(s) for s in args.profile_stages.split(",")] if args.profile_stages else None
    share = {} if args.backward_input_share is None else {"input_share": args.backward_input_share}
    costs = StageCosts.from_profile(profile, dag.num_stages, args.blocked_power_w, stages, **share)
    planner = PipelinePlanner(
        dag,
        costs,
        straggler_s=args.straggler_time,
        polish_s=args.polish_s,
        split_clocks=args.split_clocks,
    )
    # Budgets count from the all-max-clock iteration (what Perseus and users mean); on a noisy
    # measured profile the fastest plan can be a little shorter, and is printed beside it.
    deadline = args.straggler_time or planner.all_max_s * (1 + args.max_slowdown)
    latency = max(0.0, args.switch_latency_ms) / 1e3
    if latency > 0:  # meets the deadline with its switch windows priced
        windowed = plan_with_windows(planner, deadline, latency)
        plan = windowed.plan
    else:
        windowed, plan = None, plan_with_placement(planner, deadline)  # W placement planned too
    _print_plan(console, plan, costs, windowed)
    console.print(
        f"fastest iteration {planner.shortest_s:.4f} s (each computation at its fastest "
        f"measured clock); all-max-clock iteration {planner.all_max_s:.4f} s (every "
        "computation at its highest clock; --max-slowdown counts from it)"
    )
    if dag.kinds() & {"backward_input", "backward_weight"}:
        console.print(f"backward split into input/weight gradients: {costs.backward_split}")
        where = "re-placed for the plan's clocks" if plan.dag.placed_from else "torch's own"
        console.print(f"W placement: {where}")
    if args.out:
        doc = windowed.to_json() if windowed else plan.to_json()
        args.out.write_text(json.dumps(doc, indent=1))
        console.print(f"plan written to {args.out}")
    _write_timeline(console, plan, costs, args)
    if args.frontier_out or args.plot:
        _frontier(console, planner, args, plan)
    return 0


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse a missing profile or an output into a missing folder before any planning."""
    check_input_file(args.profile, "profile")
    for option in ("out", "trace", "timeline", "plot", "frontier_out"):
        check_output_path(getattr(args, option), f"--{option.replace('_', '-')}")


def _write_timeline(console, plan, costs, args: argparse.Namespace) -> None:
    if not (args.trace or args.timeline):
        return
    from fxenergy.plans.trace import pipeline_timeline, write_trace

    timeline = pipeline_timeline(plan, costs)
    if args.trace:
        write_trace(timeline, args.trace)
        console.print(f"trace written to {args.trace} (open in https://ui.perfetto.dev)")
    if args.timeline:
        from fxenergy.plans.timeline_plot import plot_timeline

        plot_timeline(timeline, args.timeline)
        console.print(f"timeline written to {args.timeline}")


def _num_stages(args: argparse.Namespace, profile: Profile) -> int:
    if args.profile_stages:
        return len(args.profile_stages.split(","))
    return len(profile.stages())


def _print_plan(console, plan, costs, windowed=None) -> None:
    ev, base = plan.evaluation, plan.baseline
    table = Table(
        title=f"{plan.dag.schedule} plan: {plan.dag.num_stages} stages x "
        f"{plan.dag.num_microbatches} microbatches ({plan.method})"
    )
    for col in ("stage", "rank", "clocks MHz", "busy s", "energy J", "critical", "max slack s"):
        table.add_column(col, justify="right")
    for r in plan.stage_rows(costs):
        table.add_row(
            str(r["stage"]),
            str(r["rank"]),
            f"{r['min_clock_mhz']}-{r['max_clock_mhz']}",
            f"{r['busy_s']:.4f}",
            f"{r['energy_j']:.1f}",
            f"{r['critical']}/{2 * plan.dag.num_microbatches}",
            f"{r['max_slack_s']:.4f}",
        )
    console.print(table)
    if windowed is not None:
        console.print(
            f"with clock-switch windows ({1e3 * windowed.latency_s:g} ms latency, the one "
            f"switch model; SIMULATED): iteration {windowed.iteration_time_s:.4f} s (deadline "
            f"{plan.deadline_s:.4f} s), energy {windowed.energy_j:.1f} J, saved "
            f"{100 * windowed.savings:.2f}% vs all-max-clock; {windowed.switches} switches per "
            f"iteration; re-planned {windowed.replans}x at a tighter deadline. Without windows:"
        )
    console.print(
        f"iteration {ev.iteration_time_s:.4f} s (all-max-clock {base.iteration_time_s:.4f} s, "
        f"deadline {plan.deadline_s:.4f} s); energy {ev.energy_j:.1f} J = compute "
        f"{ev.compute_energy_j:.1f} + blocked {ev.blocked_energy_j:.1f}; all-max-clock "
        f"{base.energy_j:.1f} J; saved {100 * plan.savings:.2f}%"
    )
    if ev.horizon_s > ev.iteration_time_s:
        console.print(
            f"straggler: the iteration lasts {ev.horizon_s:.4f} s anyway; blocked energy is "
            "counted to then for both this plan and all-max-clock"
        )
    if plan.lower_bound_j is not None:
        gap = max(0.0, 100 * (ev.energy_j / plan.lower_bound_j - 1))  # (GLOP's -1e-13)
        console.print(f"LP lower bound {plan.lower_bound_j:.1f} J (gap {gap:.3f}%)")
    crit = " ".join(_label(c) for c in ev.critical_path)
    console.print(f"critical path ({len(ev.critical_path)} computations): {crit}")
    if plan.splits:
        console.print(
            f"clock splits: {len(plan.splits)} computations switch to a second clock partway "
            "(ClockPlanHook times that switch from the computation's start)"
        )
    if windowed is None:
        _print_switches(console, plan, costs)


def _print_switches(console, plan, costs) -> None:
    """A switch-free plan's switch count, and what the one switch model's windows cost it."""
    from fxenergy.pipeline.switch_aware import switched_evaluation
    from fxenergy.pipeline.windowed import count_switches

    latency = DEFAULT_SWITCH_LATENCY_S
    span, energy = switched_evaluation(plan.dag, costs, plan.freqs_mhz, latency, splits=plan.splits)
    console.print(
        f"clock switches per iteration: {count_switches(plan)}, planned as free "
        f"(--switch-latency-ms 0); with the one switch model's {1e3 * latency:g} ms windows "
        f"(SIMULATED) it would run {span:.4f} s ({100 * (span / plan.deadline_s - 1):+.2f}% vs "
        f"the deadline), {energy:.1f} J"
    )


def _label(c) -> str:
    from fxenergy.pipeline.dag import label

    return label(c)


def _frontier(console, planner, args: argparse.Namespace, chosen) -> None:
    t0 = time.perf_counter()
    plans = planner.frontier(args.frontier_points)
    points = [(p.evaluation.iteration_time_s, p.evaluation.energy_j) for p in plans]
    console.print(
        f"frontier: {len(points)} points in {time.perf_counter() - t0:.2f} s (switches free, "
        "as Perseus plans: each point's plan would run longer with switch windows; the plan "
        "above is the one priced with them)"
        if args.switch_latency_ms > 0
        else f"frontier: {len(points)} points in {time.perf_counter() - t0:.2f} s"
    )
    if args.frontier_out:
        with args.frontier_out.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["time", "energy"])
            w.writerows(points)
        console.print(f"frontier written to {args.frontier_out}")
    if args.plot:
        marks = {
            "all clocks at max": _point(chosen.baseline),
            f"this plan (budget {100 * args.max_slowdown:g}%)": _point(chosen.evaluation),
        }
        _plot(points, args.plot, marks)
        console.print(f"frontier plot written to {args.plot}")


def _point(ev) -> tuple[float, float]:
    return ev.iteration_time_s, ev.energy_j


def _plot(
    points: list[tuple[float, float]], path: Path, marks: dict[str, tuple[float, float]]
) -> None:
    """The frontier, with the all-max-clock iteration and the chosen plan marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise FxEnergyError("--plot needs matplotlib: pip install 'fxenergy[plot]'") from exc
    fig, ax = plt.subplots(figsize=(6, 4), tight_layout=True)
    ax.plot([t for t, _ in points], [e for _, e in points], "o-", ms=3, label="frontier")
    for (label, (t, e)), style in zip(marks.items(), ("x", "*"), strict=False):
        ax.plot([t], [e], style, ms=11, mew=2, label=f"{label}: {t:.4g} s, {e:.4g} J")
    ax.legend(fontsize=8)
    ax.set_xlabel("iteration time (s)")
    ax.set_ylabel("energy per iteration (J)")
    ax.set_title("time-energy frontier")
    fig.savefig(path)
    plt.close(fig)
