"""Host-side cost of the frequency runtime, and simulated-vs-predicted totals for a small plan.

Run: ``python bench/bench_runtime_overhead.py [--calls 20000] [--reps 30]``. CPU only; prints

* the rewritten module's overhead next to the original GraphModule, side by side in one
  process (interleaved blocks of calls, ratio of the fastest blocks), with the null backend:
  the rewritten graph alone (its ``enter_partition`` calls, no runtime), under a
  ``FrequencyRuntime``, and the ``OptimizedModule`` that ``fxenergy.optimize`` returns;
* microseconds per partition boundary for each way of running, the controller thread's reaction
  time (request queued -> backend called, with immediate events and the null backend);
* the simulated run of a 4-partition plan on an A100-SXM4-80GB next to an independent
  computation of what the switch model predicts for it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import torch.fx

from fxenergy.graph.meta import CostRecord
from fxenergy.hardware.dvfs import get_dvfs_model
from fxenergy.runtime import (
    FrequencyRuntime,
    NullBackend,
    RuntimePartition,
    SimulatedBackend,
    enter_partition,
)
from fxenergy.runtime.controller import ImmediateEvent, SwitchController

GPU = "A100-SXM4-80GB"


def _cost(gflop: float, mbyte: float) -> CostRecord:
    flops = int(gflop * 1e9)
    return CostRecord(
        flops, flops // 2, int(mbyte * 1e6), int(mbyte * 1e5), "bfloat16", (), (), 8, flops
    )


PARTS = [
    RuntimePartition(0, 1410, _cost(400, 200)),
    RuntimePartition(1, 1005, _cost(5, 900)),  # memory-bound: runs as fast at a lower clock
    RuntimePartition(2, 1410, _cost(800, 300)),
    RuntimePartition(3, 810, _cost(2, 1200)),
]


def _per_call_us(fn: object, calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        fn(i % 4)  # type: ignore[operator]
    return (time.perf_counter() - start) / calls * 1e6


def _boundary_costs(calls: int) -> list[tuple[str, float]]:
    rows = [("no runtime (plain module)", _per_call_us(enter_partition, calls))]
    with FrequencyRuntime(SimulatedBackend(GPU), PARTS):
        rows.append(
            ("simulator (accounts work, virtual time)", _per_call_us(enter_partition, calls))
        )
    null_parts = [RuntimePartition(p.index, p.clock_mhz) for p in PARTS]
    with FrequencyRuntime(
        NullBackend(GPU), null_parts, threaded=True, event_factory=ImmediateEvent
    ):
        rows.append(("controller thread, null backend", _per_call_us(enter_partition, calls)))
    return rows


class _Stamped(NullBackend):
    def __init__(self) -> None:
        super().__init__(GPU)
        self.applied = threading.Event()
        self.at = 0.0

    def set_clock(self, mhz: int, label: str = "") -> int:
        self.at = time.perf_counter()
        self.applied.set()
        return super().set_clock(mhz, label)


def _reaction_us(samples: int) -> list[float]:
    backend = _Stamped()
    ctl = SwitchController(backend, event_factory=ImmediateEvent, threaded=True)
    ctl.start()
    out = []
    for i in range(samples):
        backend.applied.clear()
        t0 = time.perf_counter()
        ctl.request(900 if i % 2 == 0 else 1410)
        backend.applied.wait(5)
        out.append((backend.at - t0) * 1e6)
    ctl.close()
    return out


def _plan_check() -> tuple[float, float, float, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.independent import run_totals

    model = get_dvfs_model(GPU)
    sim = SimulatedBackend(GPU, model=model)
    with FrequencyRuntime(sim, PARTS) as rt:
        for p in PARTS:
            enter_partition(p.index)
    s = rt.summary()
    t, e = run_totals(model, [(p.clock_mhz, p.costs()) for p in PARTS], cyclic=False)
    return s.time_s, t, s.energy_j, e


def _models() -> list[tuple[str, torch.nn.Module, torch.Tensor]]:
    from fxenergy.models.cnn import SmallResNet
    from fxenergy.models.gpt import Block, GPTConfig

    torch.manual_seed(0)
    return [
        ("SmallResNet, 2x3x32x32", SmallResNet().eval(), torch.randn(2, 3, 32, 32)),
        ("GPT block d=256, 2x64", Block(GPTConfig()).eval(), torch.randn(2, 64, 256)),
    ]


def _ratio(base: object, other: object, x: torch.Tensor, reps: int, n: int) -> float:
    """(fastest block of ``other``) / (fastest block of ``base``), blocks of ``n`` calls
    interleaved ``reps`` times: on a shared machine the fastest block is the uncontended one."""
    best = [float("inf"), float("inf")]
    with torch.no_grad():
        for _ in range(3):
            base(x), other(x)  # type: ignore[operator]
        for _ in range(reps):
            for k, fn in enumerate((base, other)):
                t0 = time.perf_counter()
                for _ in range(n):
                    fn(x)  # type: ignore[operator]
                best[k] = min(best[k], time.perf_counter() - t0)
    return best[1] / best[0]


def _module_overhead(reps: int) -> list[tuple[str, int, float, float, float, float, float]]:
    """(model, partitions, µs per call, ratios: rewritten, under runtime, OptimizedModule)."""
    from fxenergy.api import optimize
    from fxenergy.graph.capture import capture
    from fxenergy.plans.planner import apply_plan, plan_graph

    rows = []
    for name, net, x in _models():
        base = capture(net, (x,))
        # latency 0 gives the most partitions (the worst case for boundary overhead)
        plan = plan_graph(base, GPU, 0.05, switch_latency_s=0.0, time_limit_s=5)
        rewritten = apply_plan(base, plan)
        rt = FrequencyRuntime.from_plan(plan, NullBackend(GPU), rewritten)
        opt = optimize(net, (x,), backend="null", plan=plan)

        def under_runtime(
            x: torch.Tensor, rt: FrequencyRuntime = rt, gm: torch.fx.GraphModule = rewritten
        ) -> None:
            with rt:
                gm(x)

        with torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(20):
                base(x)
            per_call = (time.perf_counter() - t0) / 20
        n = max(1, int(0.01 / per_call))
        rows.append(
            (
                name,
                len(plan.partitions),
                _fastest(base, x, reps, n) * 1e6,
                _runtime_cost(rt, [p.index for p in plan.partitions], reps) * 1e6,
                _ratio(base, rewritten, x, reps, n),
                _ratio(base, under_runtime, x, reps, n),
                _ratio(base, opt, x, reps, n),
            )
        )
    return rows


def _fastest(fn: object, x: torch.Tensor, reps: int, n: int) -> float:
    """Seconds per call of the fastest block of ``n`` calls."""
    best = float("inf")
    with torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(n):
                fn(x)  # type: ignore[operator]
            best = min(best, (time.perf_counter() - t0) / n)
    return best


def _runtime_cost(rt: FrequencyRuntime, indices: list[int], reps: int, n: int = 2000) -> float:
    """Host seconds the runtime adds to one call: enter, every boundary, exit (fastest block)."""
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            with rt:
                for i in indices:
                    enter_partition(i)
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core: steadier timings on a shared machine
    print(
        "| model | partitions | original µs/call | runtime µs/call (share) | rewritten graph | "
        "under FrequencyRuntime (null) | OptimizedModule (null) |\n|---|---|---|---|---|---|---|"
    )
    for name, parts, us, rt_us, r_graph, r_rt, r_opt in _module_overhead(args.reps):
        print(
            f"| {name} | {parts} | {us:.0f} | {rt_us:.1f} ({rt_us / us:.2%}) | "
            f"{r_graph - 1:+.2%} | {r_rt - 1:+.2%} | {r_opt - 1:+.2%} |"
        )
    print()
    print("| way of running | µs per boundary (host) |\n|---|---|")
    for name, us in _boundary_costs(args.calls):
        print(f"| {name} | {us:.2f} |")
    reaction = _reaction_us(200)
    p50, p90 = statistics.median(reaction), statistics.quantiles(reaction, n=10)[-1]
    print(
        "\ncontroller reaction (queued -> backend called), 200 samples: "
        f"median {p50:.0f} µs, p90 {p90:.0f} µs"
    )
    st, pt, se, pe = _plan_check()
    print(
        "\n| 4-partition plan, SIMULATED A100-SXM4-80GB | time (ms) | energy (J) |\n|---|---|---|"
    )
    print(f"| simulated runtime | {st * 1e3:.4f} | {se:.4f} |")
    print(f"| independent computation (tests/independent.py) | {pt * 1e3:.4f} | {pe:.4f} |")
    print(f"| relative difference | {abs(st - pt) / pt:.1e} | {abs(se - pe) / pe:.1e} |")


if __name__ == "__main__":
    main()
