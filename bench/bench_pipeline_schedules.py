"""Every torch.distributed.pipelining schedule planned on the GPT-3 profiles: energy, gaps, speed.

For each profile (Perseus's GPT-3 175B artifact, A100 and A40: 8 stages) and each of the seven
schedules (GPipe and 1F1B on 8 GPUs; the multi-stage ones on 4 GPUs with 2 stages each), the
planner plans the iteration at 0/1/2/5% above the schedule's all-max-clock iteration time, the
zero-bubble ones also with their Ws re-placed (``plan_with_placement``). Every plan is scored
by the one evaluator and compared with its LP lower bound. Then every schedule of a GPU group
is planned at one common deadline (the slowest all-max-clock iteration of the group), which
says which schedule wastes least before and after planning. Backwards of the zero-bubble
schedules are split by ``--input-share`` (the profiles measure only ``backward``).

    python bench/bench_pipeline_schedules.py --microbatches 16 --polish-s 1

Prints markdown tables (docs/pipeline.md has one run).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S
from fxenergy.hardware.profiles import read_profile
from fxenergy.pipeline.dag import StageCosts, build_dag
from fxenergy.pipeline.orders import SCHEDULES, SINGLE_STAGE
from fxenergy.pipeline.placement import plan_with_placement
from fxenergy.pipeline.planner import PipelinePlanner
from fxenergy.pipeline.switch_aware import switched_evaluation
from fxenergy.pipeline.windowed import plan_with_windows

PROFILES = {"A100": "gpt3-175b+a100_sxm_bf16.csv", "A40": "gpt3-175b+a40_bf16.csv"}
#: the measured Perseus profiles shipped with the tests
DATA_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "perseus"
SLOWDOWNS = (0.0, 0.01, 0.02, 0.05)
P_BLOCKED = 83.64  # W, A100 blocked on P2P (Perseus artifact); used for both GPUs


def _gap(plan) -> float:
    return max(0.0, 100 * (plan.evaluation.energy_j / plan.lower_bound_j - 1))  # GLOP's -1e-13


def run_schedule(costs: StageCosts, schedule: str, args: argparse.Namespace) -> dict:
    dag = build_dag(schedule, 8, args.microbatches)
    planner = PipelinePlanner(dag, costs, polish_s=args.polish_s)
    row = {"schedule": schedule, "gpus": dag.num_ranks, "planner": planner}
    row["all_max_s"], row["all_max_j"] = planner.all_max_s, planner.baseline.energy_j
    row["blocked_share"] = planner.baseline.blocked_energy_j / planner.baseline.energy_j
    t0 = time.perf_counter()
    row["plans"] = {s: plan_with_placement(planner, planner.all_max_s * (1 + s)) for s in SLOWDOWNS}
    row["plan_s"] = (time.perf_counter() - t0) / len(SLOWDOWNS)
    splitter = PipelinePlanner(dag, costs, polish_s=0, split_clocks=True)
    t0 = time.perf_counter()
    row["split"] = {
        s: plan_with_placement(splitter, planner.all_max_s * (1 + s)) for s in SLOWDOWNS
    }
    row["split_s"] = (time.perf_counter() - t0) / len(SLOWDOWNS)
    if args.windows:  # deadlines met with switch windows priced (the CLI's default)
        latency = DEFAULT_SWITCH_LATENCY_S
        for key, split in (("windowed", False), ("windowed_split", True)):
            p = PipelinePlanner(dag, costs, polish_s=args.polish_s, split_clocks=split)
            row[key] = {
                s: plan_with_windows(p, planner.all_max_s * (1 + s), latency) for s in SLOWDOWNS
            }
    t0, c0 = time.perf_counter(), time.process_time()
    front = PipelinePlanner(dag, costs, polish_s=0).frontier(args.points)
    row["frontier"] = (time.perf_counter() - t0, time.process_time() - c0, len(front))
    return row


def print_tables(name: str, rows: list[dict], args: argparse.Namespace) -> None:
    print(f"\n### {name}: 8 stages x {args.microbatches} microbatches\n")
    heads = " | ".join(f"+{int(100 * s)}% saved (gap)" for s in SLOWDOWNS)
    print(
        f"| schedule | GPUs | all-max s | all-max J | blocked share | {heads} | W placed | "
        "plan s | frontier s wall/CPU (points) |"
    )
    print("|---" * (8 + len(SLOWDOWNS)) + "|")
    for r in rows:
        cells = [f"{100 * p.savings:.2f}% ({_gap(p):.3f}%)" for p in r["plans"].values()]
        placed = sum("placed" in p.method for p in r["plans"].values())
        wall, cpu, pts = r["frontier"]
        print(
            f"| {r['schedule']} | {r['gpus']} | {r['all_max_s']:.4f} | {r['all_max_j']:.1f} | "
            f"{100 * r['blocked_share']:.1f}% | " + " | ".join(cells) + f" | {placed}/4 | "
            f"{r['plan_s']:.2f} | {wall:.2f}/{cpu:.2f} ({pts}) |"
        )
    print_splits(name, rows)
    if args.windows:
        print_windowed(name, rows)
    print(f"\n{name}, every schedule of a GPU group at one deadline (the group's slowest "
          "all-max-clock iteration):\n")  # fmt: skip
    print("| schedule | GPUs | deadline s | all-max-clock J | planned J | saved |")
    print("|---|---|---|---|---|---|")
    for group in (True, False):
        mine = [r for r in rows if (r["schedule"] in SINGLE_STAGE) == group]
        deadline = max(r["all_max_s"] for r in mine)
        for r in mine:
            planner = r["planner"]
            base = planner._baseline_at(deadline).energy_j  # idle to the same deadline
            same = PipelinePlanner(
                planner.dag, planner.costs, straggler_s=deadline, polish_s=args.polish_s
            )
            energy = plan_with_placement(same).evaluation.energy_j
            print(
                f"| {r['schedule']} | {r['gpus']} | {deadline:.4f} | {base:.1f} | "
                f"{energy:.1f} | {100 * (1 - energy / base):.2f}% |"
            )


def _windowed(plan, costs: StageCosts) -> str:
    """Iteration over the deadline and energy over the LP bound with switch windows priced."""
    span, energy = switched_evaluation(
        plan.dag, costs, plan.freqs_mhz, DEFAULT_SWITCH_LATENCY_S, splits=plan.splits
    )
    over, above = span / plan.deadline_s - 1, energy / plan.lower_bound_j - 1
    return f"{100 * over:+.2f}% / {100 * above:.2f}%"


def print_splits(name: str, rows: list[dict]) -> None:
    """Plans with clock splits (``split_clocks=True``, no polish) against the discrete ones."""
    print(f"\n{name}, clock splits: gap to the LP bound (split computations); then both plans "
          f"priced with {1e3 * DEFAULT_SWITCH_LATENCY_S:g} ms switch windows (SIMULATED): "
          "iteration vs deadline / energy vs LP bound, discrete → split:\n")  # fmt: skip
    heads = " | ".join(f"+{int(100 * s)}%" for s in SLOWDOWNS)
    print(f"| schedule | {heads} | split plan s | windows {heads} |")
    print("|---" * (2 + 2 * len(SLOWDOWNS)) + "|")
    for r in rows:
        cells = [f"{_gap(p):.3f}% ({len(p.splits)})" for p in r["split"].values()]
        costs = r["planner"].costs
        win = [
            f"{_windowed(r['plans'][s], costs)} → {_windowed(r['split'][s], costs)}"
            for s in SLOWDOWNS
        ]
        print(f"| {r['schedule']} | " + " | ".join(cells) + f" | {r['split_s']:.2f} | "
              + " | ".join(win) + " |")  # fmt: skip


def print_windowed(name: str, rows: list[dict]) -> None:
    """Plans that meet the deadline with switch windows priced (``plan_with_windows``)."""
    print(f"\n{name}, deadlines met with {1e3 * DEFAULT_SWITCH_LATENCY_S:g} ms switch windows "
          "priced (SIMULATED, the one switch model): energy saved vs all-max-clock, discrete / "
          "with --split-clocks (switches per iteration):\n")  # fmt: skip
    heads = " | ".join(f"+{int(100 * s)}%" for s in SLOWDOWNS)
    print(f"| schedule | {heads} |")
    print("|---" * (1 + len(SLOWDOWNS)) + "|")
    for r in rows:
        cells = []
        for s in SLOWDOWNS:
            a, b = r["windowed"][s], r["windowed_split"][s]
            for w in (a, b):
                assert w.iteration_time_s <= w.plan.deadline_s * (1 + 1e-12), "deadline missed"
            cells.append(
                f"{100 * a.savings:.2f}% ({a.switches}) / {100 * b.savings:.2f}% ({b.switches})"
            )
        print(f"| {r['schedule']} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--microbatches", type=int, default=16)
    ap.add_argument("--polish-s", type=float, default=1.0)
    ap.add_argument("--points", type=int, default=40)
    ap.add_argument("--input-share", type=float, default=0.5)
    ap.add_argument(
        "--windows", action="store_true", help="also plan with switch windows priced (slower)"
    )
    ap.add_argument("--profiles", default="A100,A40")
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR, help="folder of the GPT-3 CSVs")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name in args.profiles.split(","):
        profile = read_profile(args.data_dir / PROFILES[name])
        costs = StageCosts.from_profile(profile, 8, P_BLOCKED, input_share=args.input_share)
        rows = [run_schedule(costs, s, args) for s in SCHEDULES]
        print_tables(name, rows, args)
        print(f"\nbackward split: {costs.backward_split}")


if __name__ == "__main__":
    main()
