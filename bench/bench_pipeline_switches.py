"""Switch-aware online pipeline plans vs plans that take switches as free (SIMULATED).

The 4-rank examples of ``tests/test_online_pipeline.py`` (simulated A100, one stage 1.5x
heavier, 8 microbatches, ``max_slowdown=0.01``): the one-clock profile at 1410 MHz the online
path measures, ``plan_online`` with ``switch_latency_s`` 0 (switches free) and 10 ms (switch
windows of the one switch model priced, ``reduce_switches``), and each plan run on per-rank
simulated GPUs (late switches at every boundary, steady iterations after one at the max clock,
computations as soon as the DAG allows, blocked time at the blocked power). "closed loop": the
switch-aware plan refined as ``energy_schedule`` does (``fxenergy.pipeline.refine``): each
computation's measurement at its planned clock joins the profile (a second point: fitted, not
extrapolated) and the pipeline is re-planned until the simulated iteration is within 1 %.

    python bench/bench_pipeline_switches.py
"""

from __future__ import annotations

import itertools
import time

from bench_pipeline_online import RANKS, sim_costs

from fxenergy.hardware.dvfs import get_dvfs_model
from fxenergy.hardware.profiles import Profile, ProfileRow
from fxenergy.pipeline.dag import build_dag
from fxenergy.pipeline.online_plan import plan_online
from fxenergy.pipeline.refine import merge_rows
from fxenergy.runtime.sim import SimulatedBackend

GPU, TOP, BLOCKED, SLOWDOWN, MICROBATCHES = "A100-SXM4-80GB", 1410, 83.64, 0.01, 8
CASES = {"1F1B": (4, 1), "Interleaved1F1B": (8, 3)}  # schedule -> (stages, heavy stage)


def simulate(dag, freqs: dict, costs: dict, steady: int = 2) -> tuple[float, float]:
    """Mean (iteration time, energy) of ``steady`` iterations after one at the max clock."""
    gpus = [SimulatedBackend(GPU) for _ in dag.rank_orders]
    out = []
    for it in range(1 + steady):
        dur, energy = {}, 0.0
        for order, gpu in zip(dag.rank_orders, gpus, strict=True):
            for c in order:
                t0, e0 = gpu.now_s(), gpu.energy_j()
                gpu.set_clock(freqs[c] if it else TOP)
                gpu.execute(costs[(c[0], c[1])])
                dur[c], energy = gpu.now_s() - t0, energy + gpu.energy_j() - e0
        finish: dict = {}
        for c in dag.topological:
            finish[c] = max((finish[p] for p in dag.predecessors[c]), default=0.0) + dur[c]
        span = max(finish.values())
        idle = sum(span - sum(dur[c] for c in order) for order in dag.rank_orders)
        out.append((span, energy + BLOCKED * idle))
    return tuple(sum(x) / steady for x in zip(*out[1:], strict=True))  # type: ignore[return-value]


def closed_loop(dag, rows: list, costs: dict, top_t: float, refines: int = 3):
    """(plan, re-plans) of the switch-aware plan refined by its own simulated measurements."""
    model = get_dvfs_model(GPU)
    for replans in range(refines + 1):
        plan = plan_online(Profile(tuple(rows)), dag, GPU, TOP, BLOCKED, SLOWDOWN, 12, 0.0, 0.01)
        t, _ = simulate(dag, plan.steady.freqs_mhz, costs)
        if t <= top_t * (1 + SLOWDOWN) * (1 + 1e-9) or replans == refines:
            return plan, replans
        seen = {(c[0], c[1], f) for c, f in plan.steady.freqs_mhz.items()}
        new = [ProfileRow(s, k, f, model.time_s(costs[(s, k)], f), model.energy_j(costs[(s, k)], f))
               for s, k, f in sorted(seen)]  # fmt: skip
        rows = merge_rows(rows, new)
    raise AssertionError("unreachable")


def main() -> None:
    model = get_dvfs_model(GPU)
    print("SIMULATED A100-SXM4-80GB, 4 ranks x 8 microbatches, max_slowdown 0.01; vs all-max")
    for schedule, (stages, heavy) in CASES.items():
        costs = sim_costs(stages, heavy)
        rows = [ProfileRow(s, k, TOP, model.time_s(c, TOP), model.energy_j(c, TOP))
                for (s, k), c in costs.items()]  # fmt: skip
        dag = build_dag(schedule, stages, MICROBATCHES, RANKS)
        top_t, top_e = simulate(dag, dict.fromkeys(dag.topological, TOP), costs)
        for latency in (0.0, 0.01, None):
            t0 = time.perf_counter()
            if latency is None:
                plan, replans = closed_loop(dag, rows, costs, top_t)
            else:
                plan = plan_online(Profile(tuple(rows)), dag, GPU, TOP, BLOCKED, SLOWDOWN, 12,
                                   0.0, latency)  # fmt: skip
            took = time.perf_counter() - t0  # closed loop: every plan_online and simulation
            freqs = plan.steady.freqs_mhz
            t, e = simulate(dag, freqs, costs)
            switches = sum(
                sum(freqs[a] != freqs[b] for a, b in itertools.pairwise(o)) for o in dag.rank_orders
            )
            if latency is None:
                what = f"closed loop ({replans} re-plan{'s' * (replans != 1)})"
            else:
                what = "switch-aware" if latency else "switches free"
            predicted = plan.steady.iteration_time_s / top_t - 1
            print(
                f"{schedule:16s} {what:24s} predicted {predicted:+.2%}"
                f"  simulated {t / top_t - 1:+.2%}  saved {1 - e / top_e:.2%} (simulated)"
                f"  switches/iteration {switches}  plan_online {took:.2f} s"
            )


if __name__ == "__main__":
    main()
