"""A second, independent implementation of what a planned run costs (for tests only).

It prices a run from partitions of node costs with its own loop: the power cap acts on the
whole cycle's average power (one effective clock per requested clock), and each switch adds a
transition window written out directly — ``latency`` seconds at the slower clock's speed and
the hungrier clock's power, in the tail of the partition before it (issued ahead), or in the
first partition's head when a non-repeating run starts at another clock. Nothing here calls
``fxenergy.schedule`` or ``fxenergy.runtime``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fxenergy.graph.meta import CostRecord
from fxenergy.hardware.dvfs import DVFSModel


def run_totals(
    model: DVFSModel,
    parts: Sequence[tuple[int, Sequence[CostRecord]]],
    cyclic: bool,
    start_mhz: int | None = None,
) -> tuple[float, float]:
    """(seconds, joules) of one run of ``parts`` (clock, node costs) on ``model``.

    ``cyclic``: the run repeats, its last partition requests the first one's clock ahead and
    the run starts at that clock (steady state). Otherwise it starts at ``start_mhz`` (default:
    the maximum clock) and nothing follows it.
    """
    mix = [model.work_of(c) for _, cs in parts for c in cs]
    every = [c for _, cs in parts for c in cs]
    lat = model.switch_latency_s

    def at(f: int, costs: Sequence[CostRecord]) -> tuple[float, float]:
        f_eff = model.effective_clock_mhz(mix, f) if mix else f
        pairs = [model.at_effective_clock([model.work_of(c)], f_eff) for c in costs]
        return sum(t for t, _ in pairs), sum(e for _, e in pairs)

    def window(work_f: int, other_f: int) -> tuple[float, float]:
        tw, ew = at(work_f, every)
        to, eo = at(other_f, every)
        if lat <= 0 or tw <= 0:
            return 0.0, 0.0
        done = lat * min(1.0, tw / to) if to > 0 else lat  # planned time the window runs
        return lat - done, lat * max(ew / tw, eo / to if to > 0 else 0.0) - done * ew / tw

    clocks = [f for f, _ in parts]
    time_s = energy_j = 0.0
    for i, (f, cs) in enumerate(parts):
        t, e = at(f, cs)
        time_s, energy_j = time_s + t, energy_j + e
        nxt = clocks[i + 1] if i + 1 < len(parts) else (clocks[0] if cyclic else None)
        if nxt is not None and nxt != f:
            dt, de = window(f, nxt)
            time_s, energy_j = time_s + dt, energy_j + de
    start = start_mhz if start_mhz is not None else max(model.clocks_mhz())
    if parts and not cyclic and clocks[0] != start:
        dt, de = window(clocks[0], start)
        time_s, energy_j = time_s + dt, energy_j + de
    return time_s, energy_j
