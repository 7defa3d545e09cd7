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
from dataclasses import dataclass, field
from typing import Any

from fxenergy.hardware.profiles import Profile, ProfileRow
from fxenergy.pipeline.dag import PipelineDAG
from fxenergy.pipeline.online_plan import OnlinePlan, all_max_plan, replay
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


class RefineSteps:
    """The refinement steps of :class:`~fxenergy.pipeline.online.EnergySchedule` (a mixin: it
    uses the schedule's plan, records, refiner and collectives)."""

    plan: OnlinePlan | None
    records: list[IterationRecord]
    refiner: Refiner
    _plan_profile: Profile | None
    _rows: list[ProfileRow]
    _refine_at: int | None
    _active: tuple[Any, Any]
    _straggler_s: float
    dag: PipelineDAG
    group: Any
    rank: int
    num_ranks: int
    _src: int
    refine_iters: int
    blocked_power_w: float
    reference_mhz: int
    events: list[tuple[int, str]]
    iteration: int

    def _refine_collective(self) -> None:
        """Judge the running plan by its last step; re-plan from the refined profile or settle.

        Every rank adds its rows at the clocks it ran (a second profile point per computation)
        and its last step's record; rank 0 replays the iteration, compares it with the measured
        all-max one, and broadcasts (verdict, plan). A step run under a straggler plan is not the
        steady plan's measurement: then every rank (same phases) waits ``refine_iters`` more.
        """
        import torch.distributed as dist

        assert self.plan is not None
        recs = self.records[-self.refine_iters :]
        if any(r.phase != "refine" for r in recs):
            self._refine_at = self.iteration + self.refine_iters
            return
        new = measured_rows(
            recs, self.blocked_power_w, self.plan.predicted_j, self.plan.predicted_s
        )
        self._rows = merge_rows(self._rows, new)
        gathered: list[Any] = [None] * self.num_ranks
        dist.all_gather_object(gathered, (self._rows, recs[-1].to_json()), group=self.group)
        result: list[Any] = [None]
        if self.rank == 0:
            result[0] = self._judge(gathered)
        dist.broadcast_object_list(result, src=self._src, group=self.group)
        if isinstance(result[0], BaseException):
            raise result[0]
        verdict, self.plan, what = result[0]
        self.events.append((self.iteration, what))
        self._refine_at = self.iteration + self.refine_iters if verdict == "replan" else None
        self._active = (None, None)
        self._choose_plan(max(self._straggler_s, self._auto_straggler()))
        self._apply_phase()

    def _judge(self, gathered: list[tuple]) -> tuple[str, OnlinePlan, str] | BaseException:
        """Rank 0: (verdict, the plan to run, what happened) for the running plan's step."""
        try:
            assert self.plan is not None and self._plan_profile is not None
            r = self.refiner
            verdict = r.judge(
                self.plan, self._plan_profile, [g[1] for g in gathered], self.iteration
            )
            what = f"plan measured {r.log[-1]['measured_s'] / r.baseline[0] - 1:+.2%} vs all-max"
            plan, fallback = self.plan, None
            if verdict == "replan":
                plan = self._make_plan(Profile(tuple(x for g in gathered for x in g[0])))
                verdict = "fallback" if r.seen(plan) else verdict
            if verdict == "fallback":
                best = r.best()
                if best is not None:
                    plan, self._plan_profile = best.plan, best.profile
                    what += f"; settled on the best measured plan ({best.time_s:.4g} s)"
                else:
                    plan, fallback = (
                        all_max_plan(
                            self.plan,
                            self.dag,
                            self.reference_mhz,
                            r.baseline,
                            self.blocked_power_w,
                        ),
                        "all-max",
                    )
                    what += "; no plan met the deadline: all-max clocks"
            else:
                what += "; re-planned" if verdict == "replan" else "; within the deadline"
        except Exception as exc:  # every rank raises it, not only rank 0
            return exc
        assert self._plan_profile is not None
        self._save_run(self._plan_profile, plan, fallback)
        return verdict, plan, what
