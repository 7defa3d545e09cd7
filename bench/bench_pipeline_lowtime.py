"""Side by side: fxenergy's pipeline planner vs Perseus's solver ``lowtime`` (PyPI), one run.

Both get the same DAG (fxenergy's 1F1B DAG: the per-rank order of torch's Schedule1F1B and the
stage dependencies, which is Perseus's Synchronous1F1B), the same profile and the same blocked
power. lowtime is fed the way Perseus's driver (lowtime/examples/perseus.py) feeds it: Pareto
options with 1 ms time quanta, cost shifted to effective energy ``E - P_blocked * t``, an
exponential cost model per (stage, instruction), then Phillips-Dessouky iterations from the
slowest to the fastest schedule, one frontier point per quantum. Every plan of both solvers is
scored by fxenergy's single evaluator (``fxenergy.pipeline.dag.evaluate_pipeline``).

    python bench/bench_pipeline_lowtime.py \
        --profile tests/data/perseus/gpt3-175b+a100_sxm_bf16.csv

Prints a markdown table (energy at deadlines 0/1/2/5% above the shortest iteration, frontier
wall time). 4-stage DAGs use stages 0, 3, 5, 7 of an 8-stage profile (first, two middle, last).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator

import networkx as nx

from fxenergy.hardware.profiles import read_profile
from fxenergy.pipeline.dag import Computation, PipelineDAG, StageCosts, build_dag, evaluate_pipeline
from fxenergy.pipeline.planner import PipelinePlanner

SLOWDOWNS = (0.0, 0.01, 0.02, 0.05)
FOUR_STAGES = (0, 3, 5, 7)


def lowtime_frontier(
    dag: PipelineDAG, costs: StageCosts, unit_time_s: float
) -> tuple[list[dict[Computation, int]], float]:
    """Every Phillips-Dessouky iteration's clocks, and lowtime's wall time (fit + solve)."""
    from lowtime.cost_model import ExponentialModel
    from lowtime.graph_utils import add_sink_node, add_source_node
    from lowtime.operation import CandidateExecutionOptions, ExecutionOption, OperationSpec
    from lowtime.perseus.instruction import Backward, Forward
    from lowtime.solver import PhillipsDessouky

    t0 = time.perf_counter()
    p = costs.blocked_power_w
    specs = {}
    for (stage, kind), table in costs.options.items():
        opts = [
            ExecutionOption[int](
                real_time=o.time_s, unit_time=unit_time_s, cost=o.energy_j, knob=o.freq_mhz
            )
            for o in table.values()
        ]
        cand = CandidateExecutionOptions[int](options=opts)
        for o in cand.options:  # Perseus: effective energy from here on
            o.cost -= p * o.quant_time * o.unit_time
        specs[(stage, kind)] = OperationSpec[int](options=cand, cost_model=ExponentialModel(cand))
    g = nx.DiGraph()
    ids = {c: i + 2 for i, c in enumerate(dag.topological)}  # 0/1: source/sink (as Perseus)
    insts = {}
    for c, i in ids.items():
        cls = Forward if c[1] == "forward" else Backward
        insts[c] = cls(spec=specs[(c[0], c[1])], stage_id=c[0], micro_batch_id=c[2])
        g.add_node(i, op=insts[c])
    g.add_edges_from((ids[u], ids[v]) for u, v in dag.edges())
    add_source_node(g, 0)
    add_sink_node(g, 1)
    g.graph["source_node"], g.graph["sink_node"] = 0, 1
    plans = [{c: inst.assigned_knob for c, inst in insts.items()}]
    for _ in PhillipsDessouky(g).run():
        plans.append({c: inst.assigned_knob for c, inst in insts.items()})
    return plans, time.perf_counter() - t0


def best_at(evals: list, deadline_s: float) -> float:
    """Least energy among evaluated plans that meet the deadline (inf if none does)."""
    ok = [ev.energy_j for ev in evals if ev.iteration_time_s <= deadline_s * (1 + 1e-12)]
    return min(ok, default=float("inf"))


def run_shape(profile_path: str, stages: int, mbs: int, args: argparse.Namespace) -> dict:
    profile = read_profile(profile_path)
    mapping = None if len(profile.stages()) == stages else FOUR_STAGES[:stages]
    costs = StageCosts.from_profile(profile, stages, args.blocked_power_w, mapping)
    dag = build_dag("1F1B", stages, mbs)

    t0 = time.perf_counter()
    planner = PipelinePlanner(dag, costs, polish_s=args.polish_s)
    frontier = planner.frontier(args.points)
    ours_frontier_s = time.perf_counter() - t0
    shortest = planner.shortest_s
    ours = {}
    t0 = time.perf_counter()
    for slow in SLOWDOWNS:
        plan = planner.plan(shortest * (1 + slow), hint=None)
        ours[slow] = min(
            plan.evaluation.energy_j,
            best_at([p.evaluation for p in frontier], shortest * (1 + slow)),
        )
    ours_points_s = time.perf_counter() - t0

    lt_plans, lt_s = lowtime_frontier(dag, costs, args.unit_time_s)
    lt_evals = [evaluate_pipeline(dag, costs, f) for f in lt_plans]
    lt = {slow: best_at(lt_evals, shortest * (1 + slow)) for slow in SLOWDOWNS}
    ours_evals = [p.evaluation for p in frontier]
    # How much of lowtime's frontier ours matches: at each lowtime point's time, is the best
    # of our frontier points that fit in that time at most lowtime's energy?
    matched = sum(best_at(ours_evals, ev.iteration_time_s) <= ev.energy_j for ev in lt_evals)
    lt_first = min(lt_evals, key=lambda ev: ev.iteration_time_s)
    return {
        "shape": f"{stages}x{mbs}",
        "baseline_j": planner.baseline.energy_j,
        "shortest_s": shortest,
        "ours": ours,
        "lowtime": lt,
        "ours_frontier_s": ours_frontier_s,
        "ours_frontier_points": len(frontier),
        "ours_points_s": ours_points_s,
        "lowtime_s": lt_s,
        "lowtime_points": len(lt_plans),
        "lowtime_shortest_s": lt_first.iteration_time_s,
        "lowtime_shortest_j": lt_first.energy_j,
        "matched": matched / len(lt_evals),
    }


def table(rows: list[dict]) -> Iterator[str]:
    head = ["shape", "deadline", "fxenergy J", "lowtime J", "fxenergy / lowtime", "saved vs max"]
    yield "| " + " | ".join(head) + " |"
    yield "|" + "---|" * len(head)
    for r in rows:
        for slow in SLOWDOWNS:
            a, b = r["ours"][slow], r["lowtime"][slow]
            ratio = f"{a / b:.4f}" if b != float("inf") else "lowtime: no plan"
            yield (
                f"| {r['shape']} | +{100 * slow:.0f}% | {a:.1f} | {b:.1f} | {ratio} | "
                f"{100 * (1 - a / r['baseline_j']):.2f}% |"
            )
    yield ""
    head = [
        "shape",
        "fxenergy frontier s (points)",
        "lowtime frontier s (points)",
        "time ratio",
        "lowtime points matched by ours",
    ]
    yield "| " + " | ".join(head) + " |"
    yield "|" + "---|" * len(head)
    for r in rows:
        yield (
            f"| {r['shape']} | {r['ours_frontier_s']:.2f} ({r['ours_frontier_points']}) | "
            f"{r['lowtime_s']:.2f} ({r['lowtime_points']}) | "
            f"{r['lowtime_s'] / r['ours_frontier_s']:.1f}x | {100 * r['matched']:.0f}% |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tests/data/perseus/gpt3-175b+a100_sxm_bf16.csv")
    ap.add_argument("--shapes", default="4x8,8x16,8x32")
    ap.add_argument("--blocked-power-w", type=float, default=83.64)
    ap.add_argument("--points", type=int, default=40, help="fxenergy frontier points")
    ap.add_argument("--polish-s", type=float, default=1.0, help="CP-SAT s per deadline plan")
    ap.add_argument("--unit-time-s", type=float, default=0.001, help="lowtime quantum")
    args = ap.parse_args()
    logging.getLogger("lowtime").setLevel(logging.WARNING)
    rows = []
    for shape in args.shapes.split(","):
        stages, mbs = (int(x) for x in shape.split("x"))
        rows.append(run_shape(args.profile, stages, mbs, args))
        r = rows[-1]
        print(
            f"# {r['shape']}: shortest {r['shortest_s']:.4f} s, all-max-clock "
            f"{r['baseline_j']:.1f} J; lowtime's shortest {r['lowtime_shortest_s']:.4f} s at "
            f"{r['lowtime_shortest_j']:.1f} J; fxenergy's 4 deadline plans took "
            f"{r['ours_points_s']:.2f} s",
            flush=True,
        )
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()
