"""Closing the loop: a plan's own measurements refine the profile it was made from.

The first online plan extrapolates a one-clock profile with the DVFS model; at clocks far from
the profiled one that can be off by several per cent (docs/dvfs.md: profiled at the A100's
power-capped 1410 MHz, times +3.4 % at 885 MHz, +6.8 % at 525 MHz), so the plan runs over the
deadline it predicted to meet. Once it runs, every computation has been measured at its *planned*
clock too: a second point, and the hardware layer *fits* a computation measured at two or more
clocks (:func:`fxenergy.hardware.extrapolate.fit_rows`) instead of extrapolating it. Rank 0 then
judges the measured iteration against the measured all-max one and re-plans from the refined
profile until it is within ``(1 + max_slowdown)`` (a bounded number of times), keeping the best
plan measured so far and falling back to all-max clocks when none met the deadline.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from fxenergy.hardware.profiles import Profile, ProfileRow
from fxenergy.pipeline.dag import PipelineDAG
from fxenergy.pipeline.online_plan import FrontierPoint, OnlinePlan, replay
from fxenergy.pipeline.probe import IterationRecord, parse_label

Key = tuple[int, str, int]  #: (stage, kind, clock)
#: Relative slack of the deadline check (float noise of the simulated DAG replay).
TOLERANCE = 1e-9


def measured_rows(
    records: Sequence[IterationRecord],
    blocked_power_w: float,
    predicted_j: Mapping[Key, float],
    predicted_s: Mapping[Key, float],
) -> list[ProfileRow]:
    """Profile rows at the clocks the computations of ``records`` ran at.

    Time: the median per (stage, kind, clock). Energy: the key's mean power times that time where
    each computation has its own energy (simulator); where the counter covers whole steps (NVML),
    the rank's measured compute energy (step energy minus ``blocked_power_w`` over the time not
    computing) split over its computations in proportion to the plan's predicted power at each
    one's clock times its measured time (a switch window counts as the computation after it).
    """
    times: dict[Key, list[float]] = defaultdict(list)
    energies: dict[Key, list[float]] = defaultdict(list)
    for it in records:
        for c in it.computations:
            stage, kind, _ = parse_label(c.label)
            times[(stage, kind, c.clock_mhz)].append(c.time_s)
            energies[(stage, kind, c.clock_mhz)].append(c.energy_j)
    scale = _counter_scale(records, blocked_power_w, predicted_j, predicted_s)
    rows = []
    for key, ts in sorted(times.items()):
        t, es = statistics.median(ts), energies[key]
        if all(math.isfinite(e) for e in es):
            power = sum(es) / sum(ts)
        else:
            power = scale * predicted_j[key] / predicted_s[key]
        rows.append(ProfileRow(key[0], key[1], key[2], t, t * power))
    return rows


def _counter_scale(
    records: Sequence[IterationRecord],
    blocked_power_w: float,
    predicted_j: Mapping[Key, float],
    predicted_s: Mapping[Key, float],
) -> float:
    """Measured compute energy / the predicted powers' energy over the same computations."""
    measured = modelled = 0.0
    for it in records:
        busy = it.busy_s
        measured += it.energy_j - blocked_power_w * max(0.0, it.wall_s - busy)
        for c in it.computations:
            stage, kind, _ = parse_label(c.label)
            key = (stage, kind, c.clock_mhz)
            if key in predicted_s and predicted_s[key] > 0:
                modelled += predicted_j[key] / predicted_s[key] * (c.time_s + c.switch_s)
    return measured / modelled if modelled > 0 and math.isfinite(measured) else math.nan


def merge_rows(old: Sequence[ProfileRow], new: Sequence[ProfileRow]) -> list[ProfileRow]:
    """``old`` with every (stage, kind, clock) that ``new`` measured replaced by its row."""
    out = {(r.stage, r.instruction, r.freq_mhz): r for r in old}
    out.update({(r.stage, r.instruction, r.freq_mhz): r for r in new})
    return [out[k] for k in sorted(out)]


def all_max_plan(
    plan: OnlinePlan,
    dag: PipelineDAG,
    reference_mhz: int,
    baseline: tuple[float, float],
    blocked_power_w: float,
) -> OnlinePlan:
    """``plan`` with its steady part replaced by every computation at ``reference_mhz``: the
    clocks the profiling steps ran at, whose iteration measured ``baseline`` (time, energy)."""
    span_s, energy_j = baseline
    freqs = dict.fromkeys(dag.topological, reference_mhz)
    steady = FrontierPoint(span_s, energy_j - blocked_power_w * dag.num_ranks * span_s, freqs)
    frontier = tuple(p for p in plan.frontier if p.iteration_time_s > span_s)
    return replace(plan, steady=steady, frontier=frontier)


@dataclass
class Candidate:
    """A plan that ran, what it was planned from, and what its iteration measured."""

    plan: OnlinePlan
    profile: Profile
    time_s: float
    energy_j: float


@dataclass
class Refiner:
    """Rank 0's judge of measured plans (see the module docstring).

    Args:
        dag: the pipeline. blocked_power_w: for the simulated replay.
        simulated: measured iterations are DAG replays of simulated durations (else wall time).
        max_slowdown: the deadline, relative to the measured all-max iteration.
        refines: how many re-plans at most.
    """

    dag: PipelineDAG
    blocked_power_w: float
    simulated: bool
    max_slowdown: float
    refines: int
    baseline: tuple[float, float] = (math.nan, math.nan)  #: measured all-max (time, energy)
    candidates: list[Candidate] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)

    def measure(self, records: Sequence[dict]) -> tuple[float, float]:
        """(time, energy) of one iteration from every rank's record of it (JSON form)."""
        return replay(self.dag, records, self.blocked_power_w, self.simulated)

    def set_baseline(self, records: Sequence[dict]) -> None:
        """The all-max iteration, from every rank's last profiling step."""
        self.baseline = self.measure(records)
        self.candidates.clear()

    @property
    def budget_s(self) -> float:
        return self.baseline[0] * (1 + self.max_slowdown) * (1 + TOLERANCE)

    def judge(
        self, plan: OnlinePlan, profile: Profile, records: Sequence[dict], iteration: int
    ) -> str:
        """Record what ``plan`` measured; say what to do: "keep", "replan" or "fallback"."""
        t, e = self.measure(records)
        self.candidates.append(Candidate(plan, profile, t, e))
        ok = t <= self.budget_s
        verdict = "keep" if ok else ("replan" if self.refines > 0 else "fallback")
        self.log.append(
            {
                "iteration": iteration,
                "measured_s": t,
                "measured_j": e,
                "predicted_s": plan.steady.iteration_time_s,
                "budget_s": self.budget_s,
                "verdict": verdict,
            }
        )
        if verdict == "replan":
            self.refines -= 1
        return verdict

    def seen(self, plan: OnlinePlan) -> bool:
        """A plan with these steady clocks already ran (running it again teaches nothing)."""
        return any(c.plan.steady.freqs_mhz == plan.steady.freqs_mhz for c in self.candidates)

    def best(self) -> Candidate | None:
        """The measured plan of least energy within the deadline (None: none met it)."""
        fits = [c for c in self.candidates if c.time_s <= self.budget_s]
        return min(fits, key=lambda c: c.energy_j) if fits else None
