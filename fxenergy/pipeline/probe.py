"""What one pipeline rank measures about its own computations, and when to act on it.

:class:`ComputeRecorder` is a :class:`~fxenergy.pipeline.runner.ClockPlanHook` observer: it times
each forward/backward this rank runs and reads the energy counter, per iteration.

- Simulated backend: the computation is *run on the simulated GPU* (``backend.execute(cost)``) right
  after the real CPU computation, so time and energy are the DVFS model's, per computation, at
  the clock in force; a clock switch's extra cost (its transition window) is recorded apart.
- CUDA: a CUDA event before and after each computation (read once per iteration, after a
  synchronize); energy is the board counter over the iteration (it refreshes every ~100 ms, too
  coarse for one computation), split over computations in :func:`profile_rows`.
- CPU without a simulator: host wall clock, no energy.

:func:`profile_rows` turns profiling iterations into one-clock profile rows; :class:`DriftDetector`
and :class:`StragglerDetector` decide when measured times call for a new profile or plan.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fxenergy.errors import FxEnergyError
from fxenergy.hardware.profiles import ProfileRow
from fxenergy.pipeline.orders import Action
from fxenergy.pipeline.runner import action_label
from fxenergy.runtime.backend import FrequencyBackend

#: A cost per computation for the simulated GPU: a mapping (stage, kind) -> CostRecord, or a
#: callable (stage, kind, microbatch) -> CostRecord.
SimCosts = Mapping[tuple[int, str], Any] | Callable[[int, str, int], Any]


class OnlineProfileError(FxEnergyError, ValueError):
    """The online profiler cannot measure this rank (e.g. a simulated GPU without costs)."""


@dataclass
class ComputationRecord:
    """One computation as this rank measured it."""

    label: str
    clock_mhz: int
    time_s: float  #: the computation alone
    energy_j: float  #: NaN where the counter cannot resolve one computation
    switch_s: float = 0.0  #: extra time of the clock switch just before it (simulator)
    switch_j: float = 0.0


@dataclass
class IterationRecord:
    """One training iteration on this rank."""

    index: int
    phase: str  #: "profile", "planned", "straggler" or "reprofile"
    computations: list[ComputationRecord] = field(default_factory=list)
    wall_s: float = 0.0  #: the step as this rank measured it (host or CUDA events)
    energy_j: float = math.nan  #: counter delta over the step (compute + switches, sim)

    @property
    def busy_s(self) -> float:
        return sum(c.time_s + c.switch_s for c in self.computations)

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "phase": self.phase,
            "wall_s": self.wall_s,
            "energy_j": self.energy_j,
            "computations": [
                [c.label, c.clock_mhz, c.time_s, c.energy_j, c.switch_s, c.switch_j]
                for c in self.computations
            ],
        }


class ComputeRecorder:
    """Times this rank's computations (see the module docstring for how, per backend)."""

    def __init__(
        self, backend: FrequencyBackend, sim_costs: SimCosts | None = None, cuda: bool = False
    ) -> None:
        if backend.simulated and sim_costs is None:
            raise OnlineProfileError(
                "the simulated GPU needs a cost per stage computation: pass sim_costs="
                "{(stage, 'forward'): CostRecord, (stage, 'backward'): CostRecord, ...}"
            )
        self.backend, self.sim_costs, self.cuda = backend, sim_costs, cuda and not backend.simulated
        self.current: IterationRecord | None = None
        self.sample_clocks = False  #: while profiling: sample the SM clock the GPU really runs
        self.clock_samples: list[float] = []
        self._open: tuple[Any, ...] = ()
        self._events: list[tuple[ComputationRecord, Any, Any]] = []
        self._trace_seen = len(backend.trace)
        self._t0 = self._e0 = self._t_end = self._e_end = 0.0
        self._t0_event: Any = None

    def _cost(self, action: Action) -> Any:
        stage, kind, mb = action
        if callable(self.sim_costs):
            return self.sim_costs(stage, kind, mb)
        try:
            return self.sim_costs[(stage, kind)]  # type: ignore[index]
        except KeyError:
            raise OnlineProfileError(f"sim_costs has no cost for stage {stage} {kind}") from None

    def _now(self) -> float:
        return self.backend.now_s() if self.backend.simulated else time.perf_counter()

    def begin(self, index: int, phase: str) -> None:
        """Start recording iteration ``index``."""
        self.current = IterationRecord(index, phase)
        self._events.clear()
        self._trace_seen = len(self.backend.trace)
        if self.cuda:
            import torch

            self._t0_event = torch.cuda.Event(enable_timing=True)
            self._t0_event.record()
        self._t0, self._e0 = self._now(), self.backend.energy_j()
        self._t_end, self._e_end = self._t0, self._e0  # where the last computation ended

    def _switches_since(self) -> tuple[float, float]:
        """Virtual time and energy the simulated GPU spent switching since the last computation
        ended: its transition windows' extra cost (it advances only while working or switching)."""
        trace = self.backend.trace
        switched = len(trace) > self._trace_seen
        self._trace_seen = len(trace)
        if not switched:
            return 0.0, 0.0
        return self._now() - self._t_end, self.backend.energy_j() - self._e_end

    def before(self, action: Action) -> None:
        sw_s, sw_j = self._switches_since() if self.backend.simulated else (0.0, 0.0)
        if self.cuda:
            import torch

            start = torch.cuda.Event(enable_timing=True)
            start.record()
            self._open = (action, start, sw_s, sw_j)
        else:
            self._open = (action, self._now(), self.backend.energy_j(), sw_s, sw_j)

    def after(self, action: Action) -> None:
        clock = self.backend.current_clock_mhz
        if self.cuda:
            import torch

            _, start, sw_s, sw_j = self._open
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            rec = ComputationRecord(action_label(action), clock, math.nan, math.nan, sw_s, sw_j)
            self._events.append((rec, start, end))
        else:
            if self.backend.simulated:
                self.backend.execute(self._cost(action), label=action_label(action))  # type: ignore[attr-defined]
            _, t0, e0, sw_s, sw_j = self._open
            energy = self.backend.energy_j() - e0 if self.backend.simulated else math.nan
            rec = ComputationRecord(
                action_label(action), clock, self._now() - t0, energy, sw_s, sw_j
            )
            self._t_end, self._e_end = self._now(), self.backend.energy_j()
        assert self.current is not None
        self.current.computations.append(rec)
        if self.sample_clocks and (mhz := self._observed_clock(action)) is not None:
            self.clock_samples.append(mhz)

    def _observed_clock(self, action: Action) -> float | None:
        """The SM clock in force under load: NVML's reading (the host runs ahead, so the GPU is
        busy when it is read), or the simulated GPU's power-capped clock for this computation."""
        if self.backend.simulated:
            model = self.backend.model  # type: ignore[attr-defined]
            return model.effective_clock_mhz(self._cost(action), self.backend.current_clock_mhz)
        handle = getattr(self.backend, "_handle", None)
        try:
            import pynvml

            return float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM))
        except Exception:  # no NVML here, or it cannot say: no sample
            return None

    def end(self) -> IterationRecord:
        """Close the iteration: read CUDA events (after a synchronize) and the counter."""
        assert self.current is not None
        rec, self.current = self.current, None
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            for comp, start, end in self._events:
                comp.time_s = start.elapsed_time(end) / 1e3
            last = self._events[-1][2] if self._events else self._t0_event
            rec.wall_s = self._t0_event.elapsed_time(last) / 1e3
        else:
            rec.wall_s = self._now() - self._t0
        if self.backend.simulated:
            rec.wall_s = rec.busy_s  # virtual time advances only while the simulated GPU works
        rec.energy_j = self.backend.energy_j() - self._e0
        return rec


def profile_rows(
    records: Sequence[IterationRecord], reference_mhz: int, blocked_power_w: float
) -> list[ProfileRow]:
    """One-clock profile rows of this rank's (stage, kind) computations.

    Time: the median over every profiled computation of that kind. Energy: where each
    computation has its own energy (simulator), the kind's mean power times that time; where the
    counter only covers whole iterations (NVML), the rank's compute power — iteration energy
    minus ``blocked_power_w`` over the time not computing, divided by the busy time — is taken
    for every computation of the rank (one power per GPU: a stage's forward and backward run the
    same layers).
    """
    times: dict[tuple[int, str], list[float]] = defaultdict(list)
    energies: dict[tuple[int, str], list[float]] = defaultdict(list)
    for it in records:
        for c in it.computations:
            stage, kind, _ = parse_label(c.label)
            times[(stage, kind)].append(c.time_s)
            energies[(stage, kind)].append(c.energy_j)
    rank_power = _rank_power(records, blocked_power_w)
    rows = []
    for (stage, kind), ts in sorted(times.items()):
        t = statistics.median(ts)
        es = energies[(stage, kind)]
        power = sum(es) / sum(ts) if all(math.isfinite(e) for e in es) else rank_power
        rows.append(ProfileRow(stage, kind, int(reference_mhz), t, t * power))
    return rows


def _rank_power(records: Sequence[IterationRecord], blocked_power_w: float) -> float:
    busy = sum(it.busy_s for it in records)
    idle = sum(max(0.0, it.wall_s - it.busy_s) for it in records)
    energy = sum(it.energy_j for it in records)
    if not (busy > 0 and math.isfinite(energy)):
        return math.nan
    return max(energy - blocked_power_w * idle, 0.0) / busy


def parse_label(label: str) -> Action:
    """``"2B5"`` -> ``(2, "backward", 5)``."""
    kind = "F" if "F" in label else "B"
    stage, mb = label.split(kind)
    return (int(stage), "forward" if kind == "F" else "backward", int(mb))  # type: ignore[return-value]


def noise_threshold(
    records: Sequence[IterationRecord], floor: float = 0.05, z: float = 3.0
) -> float:
    """Relative drift of a per-iteration median time that is more than noise.

    ``z`` standard errors of the per-iteration median of the noisiest (stage, kind) in the
    profiling iterations (coefficient of variation over √(computations per iteration)), but at
    least ``floor``: the one-point extrapolation's time error (≤ 3.4 % max, docs/dvfs.md) plus a
    margin, since planned clocks are predicted, not measured.
    """
    times: dict[tuple[int, str], list[float]] = defaultdict(list)
    for it in records:
        for c in it.computations:
            stage, kind, _ = parse_label(c.label)
            times[(stage, kind)].append(c.time_s)
    worst = floor
    per_iter = max(1, len(records))
    for ts in times.values():
        if len(ts) < 2:
            continue
        cv = statistics.stdev(ts) / statistics.mean(ts)
        worst = max(worst, z * cv / math.sqrt(len(ts) / per_iter))
    return worst


class DriftDetector:
    """Says when measured computation times left the plan's for ``patience`` steps.

    Each ``(stage, kind, clock)`` is judged against its *first* measurement under the plan (the
    plan's prediction until then): a one-point extrapolation can be off by several per cent at
    clocks far from the profiled one (docs/dvfs.md), and re-profiling at the same clock would
    only reproduce that offset, so a steady offset is not a drift — a change is.
    """

    def __init__(self, threshold_rel: float, patience: int = 2) -> None:
        self.threshold_rel, self.patience, self._streak = threshold_rel, patience, 0
        self.last_drift = 0.0
        self.anchors: dict[tuple[int, str, int], float] = {}  #: first median per key

    def update(
        self, record: IterationRecord, predicted_s: Mapping[tuple[int, str, int], float]
    ) -> bool:
        """Feed one iteration; ``predicted_s`` maps (stage, kind, clock) to the plan's time."""
        times: dict[tuple[int, str, int], list[float]] = defaultdict(list)
        for c in record.computations:
            stage, kind, _ = parse_label(c.label)
            times[(stage, kind, c.clock_mhz)].append(c.time_s)
        drift = 0.0
        for key, ts in times.items():
            if key not in predicted_s or predicted_s[key] <= 0:
                continue
            median = statistics.median(ts)
            reference = self.anchors.setdefault(key, median)
            drift = max(drift, abs(median / reference - 1.0))
        self.last_drift = drift
        self._streak = self._streak + 1 if drift > self.threshold_rel else 0
        if self._streak >= self.patience:
            self._streak = 0
            return True
        return False


class StragglerDetector:
    """Perseus's straggler mode from a data-parallel peer group's all-reduce wait.

    After each step this rank joins a tiny all-reduce with its data-parallel peers; the time it
    waits there beyond the fastest such all-reduce seen (the latency) is how much longer a peer's
    iteration was. A peer iteration longer than the plan's by more than ``threshold_rel`` for
    ``patience`` steps is a straggler; it is cleared (hysteresis) once the peers' iteration is
    back within half the threshold.
    """

    def __init__(self, threshold_rel: float, patience: int = 2) -> None:
        self.threshold_rel, self.patience = threshold_rel, patience
        self.latency_s = math.inf
        self.delay_s = 0.0
        self._streak = 0

    def update(self, wait_s: float, own_iteration_s: float, planned_s: float) -> float:
        """Feed one all-reduce wait; return the straggler delay to plan for (0: none)."""
        self.latency_s = min(self.latency_s, wait_s)
        peer = own_iteration_s + (wait_s - self.latency_s)
        excess = peer - planned_s
        if excess > self.threshold_rel * planned_s:
            self._streak += 1
            if self._streak >= self.patience:
                self.delay_s = excess
        elif excess < 0.5 * self.threshold_rel * planned_s:
            self._streak, self.delay_s = 0, 0.0
        return self.delay_s
