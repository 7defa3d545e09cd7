"""Planning time and optimality gap vs graph size, on simulated transformer training graphs.

The problems are *simulated* (fxenergy.schedule.synthetic: Llama-like blocks, A100-like roofline
and power curve). For each size the script builds the problem, runs ``solve`` and prints one row:
tasks, switch latency, planning time, CP-SAT windows (solved / reused), energy saved vs the
baseline, slowdown, and the gap to the LP lower bound (valid for every legal plan).

Usage:
    python bench/bench_planning_scale.py                 # 1k 2k 5k 10k 20k, 10 ms and 0.5 ms
    python bench/bench_planning_scale.py --sizes 1000 --latencies-ms 10 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

from rich.console import Console
from rich.table import Table

from fxenergy.schedule.solve import solve
from fxenergy.schedule.synthetic import transformer_problem


def run(size: int, latency_ms: float, slowdown: float, limit_s: float, progress: bool) -> dict:
    """Plan one simulated problem; return its row."""
    t0 = time.perf_counter()
    problem = transformer_problem(size, switch_latency_s=latency_ms / 1e3)
    built = time.perf_counter() - t0
    result = solve(problem, max_slowdown=slowdown, time_limit_s=limit_s, progress=progress)
    return {
        "tasks": problem.num_tasks,
        "switch_ms": latency_ms,
        "max_slowdown": slowdown,
        "build_s": round(built, 2),
        "plan_s": round(result.solve_time_s, 2),
        "status": result.status,
        "saving": round(result.energy_saving, 4),
        "slowdown": round(result.slowdown, 4),
        "gap": None if result.gap is None else round(result.gap, 4),
        "switches": result.evaluation.switches,
        "peak_ratio": round(result.evaluation.peak_memory / result.baseline.peak_memory, 4),
        "notes": list(result.notes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000, 10000, 20000])
    parser.add_argument("--latencies-ms", type=float, nargs="+", default=[10.0, 0.5])
    parser.add_argument("--max-slowdown", type=float, default=0.05)
    parser.add_argument("--time-limit-s", type=float, default=40.0)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    rows = [
        run(size, lat, args.max_slowdown, args.time_limit_s, not args.no_progress)
        for lat in args.latencies_ms
        for size in args.sizes
    ]
    table = Table(title="Planning scale (simulated A100-like transformer training graphs)")
    columns = ("tasks", "switch_ms", "plan_s", "status", "saving", "slowdown", "gap", "switches")
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    Console().print(table)
    for row in rows:
        print(row["tasks"], row["switch_ms"], row["notes"][0] if row["notes"] else "")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
