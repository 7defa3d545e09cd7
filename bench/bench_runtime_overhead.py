"""Host-side cost of the frequency runtime, and simulated-vs-predicted totals for a small plan.

Run: ``python bench/bench_runtime_overhead.py [--calls 20000]``. CPU only; prints a table of
microseconds per partition boundary for each way of running, the controller thread's reaction
time (request queued -> backend called, with immediate events and the null backend), and the
simulated run of a 4-partition plan on an A100-SXM4-80GB next to the DVFS model's prediction.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import threading
import time

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
    model = get_dvfs_model(GPU)
    sim = SimulatedBackend(GPU, model=model)
    with FrequencyRuntime(sim, PARTS) as rt:
        for p in PARTS:
            enter_partition(p.index)
    s = rt.summary()
    clocks = [1410] + [p.clock_mhz for p in PARTS]
    switches = sum(a != b for a, b in itertools.pairwise(clocks))
    t = sum(model.time_s(p.cost, p.clock_mhz) for p in PARTS) + switches * model.switch_latency_s
    e = sum(model.energy_j(p.cost, p.clock_mhz) for p in PARTS) + switches * model.switch_energy_j()
    return s.time_s, t, s.energy_j, e


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
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
    print(f"| DVFS-model prediction | {pt * 1e3:.4f} | {pe:.4f} |")
    print(f"| relative difference | {abs(st - pt) / pt:.1e} | {abs(se - pe) / pe:.1e} |")


if __name__ == "__main__":
    main()
