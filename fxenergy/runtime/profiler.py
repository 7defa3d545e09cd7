"""``profile_clocks``: time and energy of a computation at each SM clock, as a Perseus CSV.

On a real GPU the callable runs ``warmup`` times, then in one measured window at least
``repeats`` times and for at least ``min_window_s`` (NVML's energy counter refreshes about every
100 ms, so short windows are unreliable); each row is the per-call average. Clocks are reset after
the sweep, however it ends. Without a GPU the profiler says so and offers the simulator, which
needs the computation's cost (a ``CostRecord``, or a GraphModule annotated by ``annotate-cost``)
and produces SIMULATED rows: DVFS-model predictions, never measurements.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch.fx

from fxenergy.errors import NvmlError, ProfileError
from fxenergy.graph import meta
from fxenergy.graph.meta import CostRecord
from fxenergy.hardware.profiles import ProfileRow, write_profile
from fxenergy.runtime.backend import FrequencyBackend
from fxenergy.runtime.meter import read_energy_j, synchronize_gpu
from fxenergy.runtime.sim import SimulatedBackend

log = logging.getLogger("fxenergy.runtime")

DEFAULT_MIN_WINDOW_S = 1.0  #: 10 NVML counter updates: the counter's step is ~10% of it at most


class ProfileRows(list[ProfileRow]):
    """The rows of a clock sweep, labelled with where they come from."""

    def __init__(self, rows: Sequence[ProfileRow], backend: str, simulated: bool) -> None:
        super().__init__(rows)
        self.backend = backend
        self.simulated = simulated


def _nvml_or_offer_sim() -> FrequencyBackend:
    from fxenergy.runtime.factory import get_backend

    try:
        return get_backend("nvml")
    except NvmlError as exc:
        raise NvmlError(
            f"profile_clocks measures a real GPU, and there is none usable here ({exc}). For "
            "SIMULATED rows (DVFS-model predictions) pass backend=get_backend('sim', gpu=NAME) "
            "and the work's cost=CostRecord (or a GraphModule run through annotate-cost)."
        ) from exc


def _costs_of(fn: Any, cost: CostRecord | Sequence[CostRecord] | None) -> tuple[CostRecord, ...]:
    if isinstance(cost, CostRecord):
        return (cost,)
    if cost is not None:
        return tuple(cost)
    if isinstance(fn, torch.fx.GraphModule):
        costs = tuple(c for n in fn.graph.nodes if (c := n.meta.get(meta.COST)) is not None)
        if costs:
            return costs
    raise ProfileError(
        "the simulator cannot run a Python callable: pass cost=CostRecord(...) or a GraphModule "
        "whose nodes carry fxenergy.cost (run the annotate-cost pass first)"
    )


def _simulated_row(
    sim: SimulatedBackend, costs: tuple[CostRecord, ...], clock: int, stage: int, instr: str
) -> ProfileRow:
    freq = sim.set_clock(clock, label=f"profile {clock} MHz")
    t0, e0 = sim.now_s(), sim.energy_j()  # after the switch: its stall is not the work's
    for c in costs:
        sim.execute(c, label=f"profile {clock} MHz")
    return ProfileRow(stage, instr, freq, sim.now_s() - t0, sim.energy_j() - e0)


def _run_window(
    fn: Callable[[], Any], backend: FrequencyBackend, repeats: int, min_window_s: float
) -> tuple[float, float, int]:
    """Call ``fn`` at least ``repeats`` times and for at least ``min_window_s``, in one window.

    The calls go in batches sized from the rate seen so far; the GPU is synchronized only
    between batches, so kernels stay queued back to back as in a real run.
    """
    synchronize_gpu(backend)
    t0, e0 = time.perf_counter(), read_energy_j(backend)
    calls, batch = 0, max(1, repeats)
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        synchronize_gpu(backend)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_window_s:
            return elapsed, read_energy_j(backend) - e0, calls
        batch = max(1, math.ceil((min_window_s - elapsed) * calls / max(elapsed, 1e-9)))


def _measured_row(
    fn: Callable[[], Any],
    backend: FrequencyBackend,
    clock: int,
    where: tuple[int, str],
    repeats: int,
    warmup: int,
    min_window_s: float,
) -> ProfileRow:
    freq = backend.set_clock(clock, label=f"profile {clock} MHz")
    for _ in range(warmup):
        fn()
    time_s, energy_j, calls = _run_window(fn, backend, repeats, min_window_s)
    if not math.isfinite(energy_j):
        raise NvmlError(f"{backend.describe()} has no energy counter to profile with")
    return ProfileRow(where[0], where[1], freq, time_s / calls, energy_j / calls)


def profile_clocks(
    fn: Callable[[], Any],
    clocks_mhz: Sequence[int] | None = None,
    backend: FrequencyBackend | None = None,
    *,
    repeats: int = 5,
    warmup: int = 2,
    stage: int = 0,
    instruction: str = "forward",
    min_window_s: float = DEFAULT_MIN_WINDOW_S,
    cost: CostRecord | Sequence[CostRecord] | None = None,
    out: str | Path | None = None,
) -> ProfileRows:
    """Measure ``fn()`` at each clock; return Perseus rows (and write them to ``out`` if given).

    Args:
        fn: a zero-argument callable (e.g. ``lambda: model(x)``) or, for the simulator, a
            GraphModule with cost metadata.
        clocks_mhz: SM clocks to measure (nearest supported is used); default: all supported.
        backend: default: NVML; raises with an offer of the simulator when there is no GPU.
        repeats, warmup: calls per measured window (at least), and untimed calls before it.
        stage, instruction: the Perseus row keys.
        min_window_s: a measured window lasts at least this long (energy-counter resolution).
        cost: the work's cost, required by the simulator unless ``fn`` carries it.
        out: CSV path to write.

    Raises:
        NvmlError: no usable GPU (and no simulator chosen), or no energy counter.
        ProfileError: simulator without a cost.
    """
    backend = backend if backend is not None else _nvml_or_offer_sim()
    if not backend.has_energy_counter:
        raise NvmlError(f"{backend.describe()}: cannot profile; use 'nvml' or 'sim'")
    clocks = list(clocks_mhz) if clocks_mhz is not None else list(backend.supported_clocks_mhz())
    try:
        if isinstance(backend, SimulatedBackend):
            costs = _costs_of(fn, cost)
            rows = [_simulated_row(backend, costs, c, stage, instruction) for c in clocks]
            log.warning("fxenergy: profile rows are SIMULATED (%s)", backend.describe())
        else:
            where = (stage, instruction)
            rows = [
                _measured_row(fn, backend, c, where, repeats, warmup, min_window_s) for c in clocks
            ]
    finally:
        backend.reset()
    result = ProfileRows(rows, backend.describe(), backend.simulated)
    if out is not None:
        write_profile(result, out)
    return result
