"""Planning from an online one-clock profile, and the record a run leaves behind.

Shared by :class:`~fxenergy.pipeline.online.EnergySchedule` (rank 0 plans during the run) and
``fxenergy pipeline --from-run DIR`` (the same plan again, offline, and measured vs predicted).

A run directory holds ``run.json`` (shape, GPU, planning parameters, events, the plan),
``profile.csv`` (the measured one-clock profile, Perseus format) and ``rank{r}.json`` (every
iteration each rank recorded, see :class:`~fxenergy.pipeline.probe.IterationRecord`).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from fxenergy.errors import ProfileError
from fxenergy.hardware.profiles import Profile, read_profile, write_profile
from fxenergy.pipeline.dag import (
    Computation,
    PipelineDAG,
    PipelinePlan,
    StageCosts,
    build_dag,
    evaluate_pipeline,
)
from fxenergy.pipeline.probe import parse_label
from fxenergy.pipeline.switch_aware import rank_windows, switched_evaluation
from fxenergy.pipeline.switch_fit import reduce_switches

RUN_SCHEMA = "fxenergy.online-run/1"


def extrapolate_measured(profile: Profile, gpu: str, reference_mhz: int) -> Profile:
    """Every clock from a profile measured at ``reference_mhz`` (the DVFS model's one-point fit).

    Calls the public :func:`fxenergy.hardware.extrapolate.extrapolate_profile` with the clock
    read from the GPU; a version of it that only extrapolates from the max clock is told so.
    A profile refined by the plan's own measurements (rows at several clocks,
    :mod:`fxenergy.pipeline.refine`) is fitted instead: every computation from all its rows.
    """
    from fxenergy.hardware import extrapolate
    from fxenergy.hardware.specs import get_gpu

    if len({r.freq_mhz for r in profile.rows}) > 1:
        return extrapolate.extrapolate_profile(profile, gpu)
    if "reference_mhz" in inspect.signature(extrapolate.extrapolate_profile).parameters:
        return extrapolate.extrapolate_profile(profile, gpu, reference_mhz=reference_mhz)
    top = get_gpu(gpu).max_clock_mhz
    if reference_mhz != top:
        raise ProfileError(
            f"this fxenergy extrapolates one-clock profiles from the max clock ({top} MHz) only, "
            f"but the GPU ran at {reference_mhz} MHz while profiling; unlock its clocks (or lock "
            f"them at {top} MHz) before the first iterations"
        )
    return extrapolate.extrapolate_profile(profile, gpu)


@dataclass(frozen=True)
class FrontierPoint:
    """One frontier plan: its iteration time, effective energy Σ(E − P_b·t) and clocks."""

    iteration_time_s: float
    effective_energy_j: float
    freqs_mhz: Mapping[Computation, int]


@dataclass(frozen=True)
class OnlinePlan:
    """What rank 0 broadcasts: the steady plan, the frontier for stragglers, predicted times."""

    steady: FrontierPoint
    frontier: tuple[FrontierPoint, ...]
    predicted_s: Mapping[tuple[int, str, int], float]  #: (stage, kind, clock) -> time
    summary: dict  #: ``PipelinePlan.to_json()`` of the steady plan
    predicted_j: Mapping[tuple[int, str, int], float] = field(default_factory=dict)  #: energy

    def select(self, straggler_s: float | None) -> tuple[str, FrontierPoint]:
        """The plan for an iteration a straggler stretches to ``straggler_s`` (None: steady).

        With the iteration's end fixed by the straggler, blocked energy is P_b·(T_s − busy) per
        GPU, so the least energy is the least Σ(E − P_b·t) among plans no longer than T_s.
        """
        if not straggler_s or straggler_s <= self.steady.iteration_time_s:
            return "planned", self.steady
        fits = [p for p in (self.steady, *self.frontier) if p.iteration_time_s <= straggler_s]
        best = min(fits, key=lambda p: (p.effective_energy_j, p.iteration_time_s))
        return "straggler", best


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


def _point(
    dag: PipelineDAG,
    costs: StageCosts,
    freqs: Mapping[Computation, int],
    deadline_s: float,
    latency_s: float,
) -> FrontierPoint:
    """A plan with switches merged where their windows make that pay, scored with them."""
    freqs = reduce_switches(dag, costs, freqs, deadline_s, latency_s)
    span, energy = switched_evaluation(dag, costs, freqs, latency_s)
    eff = energy - costs.blocked_power_w * dag.num_ranks * span
    return FrontierPoint(span, eff, freqs)


#: Where switches cost, the steady plan is also searched from this many of the shortest frontier
#: plans (fewer slowed computations to undo), not only from the deadline's own plan.
_STARTS = 3


def _summary(plan: PipelinePlan, point: FrontierPoint, latency_s: float, energy_j: float) -> dict:
    doc = plan.to_json()
    for r, order in enumerate(plan.dag.rank_orders):
        for entry, c in zip(doc["ranks"][r], order, strict=True):
            entry["freq_mhz"] = point.freqs_mhz[c]
    doc["switch_latency_s"] = latency_s
    doc["iteration_time_with_switches_s"] = point.iteration_time_s
    doc["energy_with_switches_j"] = energy_j
    return doc


def plan_online(
    measured: Profile,
    dag: PipelineDAG,
    gpu: str,
    reference_mhz: int,
    blocked_power_w: float,
    max_slowdown: float = 0.0,
    frontier_points: int = 20,
    polish_s: float = 0.0,
    switch_latency_s: float = 0.0,
) -> OnlinePlan:
    """Extrapolate a one-clock profile, plan the steady deadline and the whole frontier.

    Where a clock switch takes time (``switch_latency_s`` > 0: a transition window of the one
    switch model at every change, :mod:`fxenergy.pipeline.switch_aware`), every plan then goes
    through :func:`~fxenergy.pipeline.switch_fit.reduce_switches`.
    """
    from fxenergy.pipeline.planner import PipelinePlanner

    full = extrapolate_measured(measured, gpu, reference_mhz)
    costs = StageCosts.from_profile(full, dag.num_stages, blocked_power_w)
    planner = PipelinePlanner(dag, costs, polish_s=polish_s)
    steady = planner.plan(planner.all_max_s * (1 + max_slowdown))  # budgets: from all-max
    frontier = planner.frontier(frontier_points) if frontier_points > 0 else []
    predicted = {(r.stage, r.instruction, r.freq_mhz): r.time_s for r in full.rows}
    starts = [steady] + (frontier[:_STARTS] if switch_latency_s > 0 else [])
    points = [_point(dag, costs, p.freqs_mhz, steady.deadline_s, switch_latency_s) for p in starts]
    point = min(
        points,
        key=lambda q: (max(0.0, q.iteration_time_s - steady.deadline_s), q.effective_energy_j),
    )
    energy = point.effective_energy_j + blocked_power_w * dag.num_ranks * point.iteration_time_s
    return OnlinePlan(
        point,
        tuple(
            _point(dag, costs, p.freqs_mhz, p.evaluation.iteration_time_s, switch_latency_s)
            for p in frontier
        ),
        predicted,
        _summary(steady, point, switch_latency_s, energy),
        {(r.stage, r.instruction, r.freq_mhz): r.energy_j for r in full.rows},
    )


# --- the run record ---------------------------------------------------------------------------
def write_json(path: Path, doc: dict) -> None:
    """Write ``doc`` atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


def save_run(save_dir: Path, meta: dict, profile: Profile) -> None:
    """Rank 0 at planning: ``profile.csv`` (one-clock rows) and ``run.json`` (with the plan)."""
    save_dir.mkdir(parents=True, exist_ok=True)
    write_profile(profile.rows, save_dir / "profile.csv")
    write_json(save_dir / "run.json", meta)


def save_rank(
    save_dir: Path, rank: int, events: list, drift_threshold: float, records: Sequence
) -> None:
    """Every rank at close: ``rank{r}.json`` with its events and iteration records."""
    save_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "rank": rank,
        "events": events,
        "drift_threshold": drift_threshold,
        "iterations": [r.to_json() for r in records],
    }
    write_json(save_dir / f"rank{rank}.json", doc)


@dataclass(frozen=True)
class RunRecord:
    """A saved online run, read back."""

    meta: dict
    profile: Profile
    ranks: tuple[list[dict], ...]  #: per rank: its iteration records (JSON form)

    @property
    def dag(self) -> PipelineDAG:
        m = self.meta
        return build_dag(m["schedule"], m["num_stages"], m["num_microbatches"], m["num_ranks"])

    @classmethod
    def load(cls, run_dir: str | Path) -> RunRecord:
        """Read ``run.json``, ``profile.csv`` and every ``rank{r}.json`` of a run directory.

        Raises:
            ProfileError: a file is missing or of another format.
        """
        run_dir = Path(run_dir)
        meta_path = run_dir / "run.json"
        if not meta_path.exists():
            raise ProfileError(
                f"{run_dir} has no run.json; pass the save_dir of an energy_schedule run"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("schema") != RUN_SCHEMA:
            raise ProfileError(f"{meta_path} is not an online run record ({RUN_SCHEMA})")
        ranks = []
        for r in range(meta["num_ranks"]):
            path = run_dir / f"rank{r}.json"
            ranks.append(json.loads(path.read_text())["iterations"] if path.exists() else [])
        return cls(meta, read_profile(run_dir / "profile.csv"), tuple(ranks))

    def replan(self) -> OnlinePlan:
        """The plan the run settled on, made again offline from its saved (refined) profile.

        A run whose refinement found no plan within the deadline ran all-max clocks
        (``fallback: "all-max"`` in ``run.json``): that plan, with the measured baseline.
        """
        m = self.meta
        if m.get("fallback") == "all-max":
            plan = self._replan()
            ref, base = m["reference_mhz"], tuple(m["baseline"])
            return all_max_plan(plan, self.dag, ref, base, m["blocked_power_w"])  # type: ignore[arg-type]
        return self._replan()

    def _replan(self) -> OnlinePlan:
        m = self.meta
        return plan_online(
            self.profile,
            self.dag,
            m["gpu"],
            m["reference_mhz"],
            m["blocked_power_w"],
            m["max_slowdown"],
            m["frontier_points"],
            m["polish_s"],
            m.get("switch_latency_s", 0.0),
        )

    def iteration(self, index: int) -> list[dict]:
        """Every rank's record of iteration ``index`` (ranks that lack it are left out)."""
        return [it for recs in self.ranks for it in recs if it["index"] == index]


def replay(
    dag: PipelineDAG, records: Sequence[dict], blocked_power_w: float, simulated: bool
) -> tuple[float, float]:
    """(iteration time, energy) of one iteration from every rank's record of it.

    Simulated: each computation's simulated duration (its switch window's extra time included)
    goes through the DAG as soon as possible (communication free), and blocked time is charged at
    ``blocked_power_w``, as the planner's evaluator does. Real GPU: the longest rank's measured
    step and the sum of the ranks' energy counters (blocked energy included, measured).
    """
    if not simulated:
        return max(r["wall_s"] for r in records), sum(r["energy_j"] for r in records)
    dur: dict[Computation, float] = {}
    energy = 0.0
    for rec in records:
        for lab, _clock, t, e, sw_s, sw_j in rec["computations"]:
            dur[parse_label(lab)] = t + sw_s
            energy += e + sw_j
    missing = [c for c in dag.topological if c not in dur]
    if missing:
        raise ProfileError(f"the run has no record of {len(missing)} computations (ranks lost?)")
    finish: dict[Computation, float] = {}
    for c in dag.topological:
        start = max((finish[p] for p in dag.predecessors[c]), default=0.0)
        finish[c] = start + dur[c]
    makespan = max(finish.values())
    busy = [sum(dur[c] for c in order) for order in dag.rank_orders]
    return makespan, energy + blocked_power_w * sum(makespan - b for b in busy)


def phase_means(run: RunRecord, phase: str) -> tuple[float, float, int]:
    """Mean (iteration time, energy) over the iterations every rank ran in ``phase``."""
    dag, m = run.dag, run.meta
    indices = (
        sorted({it["index"] for it in run.ranks[0] if it["phase"] == phase}) if run.ranks else []
    )
    done = [run.iteration(i) for i in indices]
    done = [recs for recs in done if len(recs) == dag.num_ranks]
    if not done:
        return math.nan, math.nan, 0
    pairs = [replay(dag, recs, m["blocked_power_w"], m["simulated"]) for recs in done]
    return (
        sum(t for t, _ in pairs) / len(pairs),
        sum(e for _, e in pairs) / len(pairs),
        len(pairs),
    )


def _rank_means(run: RunRecord, rank: int, phase: str) -> tuple[float, float]:
    """Mean busy time and compute energy of one rank over its iterations in ``phase``."""
    its = [it for it in run.ranks[rank] if it["phase"] == phase]
    if not its:
        return math.nan, math.nan
    busy = [sum(c[2] + c[4] for c in it["computations"]) for it in its]
    if run.meta["simulated"]:
        energy = [sum(c[3] + c[5] for c in it["computations"]) for it in its]
    else:  # the counter covers the whole step, blocked time included
        energy = [it["energy_j"] for it in its]
    return sum(busy) / len(its), sum(energy) / len(its)


def compare_run(run: RunRecord) -> dict:
    """What the run measured vs what its plan predicted, per rank and per iteration.

    Predictions come from the saved profile extrapolated to every clock (the plan's own costs);
    measurements from the rank records: steady ("planned") iterations against the plan, the
    profiling iterations against the all-max-clock baseline.
    """
    m = run.meta
    dag = run.dag
    full = extrapolate_measured(run.profile, m["gpu"], m["reference_mhz"])
    costs = StageCosts.from_profile(full, dag.num_stages, m["blocked_power_w"])
    plan = run.replan()
    latency, freqs = m.get("switch_latency_s", 0.0), plan.steady.freqs_mhz
    steady = evaluate_pipeline(dag, costs, freqs)
    switched = switched_evaluation(dag, costs, freqs, latency)
    top = evaluate_pipeline(dag, costs, {c: m["reference_mhz"] for c in dag.topological})
    ranks = []
    for r, order in enumerate(dag.rank_orders):
        busy, energy = _rank_means(run, r, "planned")
        window_s, window_j = rank_windows(order, costs, freqs, latency)
        ranks.append(
            {
                "rank": r,
                "predicted_busy_s": steady.rank_busy_s[r] + window_s,
                "measured_busy_s": busy,
                "predicted_compute_j": sum(costs.option(c, freqs[c]).energy_j for c in order)
                + window_j,
                "measured_j": energy,
            }
        )
    saved = run.meta.get("plan", {}).get("ranks")
    same = saved is None or all(
        [e["freq_mhz"] for e in saved[r]] == [freqs[c] for c in order]
        for r, order in enumerate(dag.rank_orders)
    )
    return {
        "ranks": ranks,
        "same_plan_as_run": same,
        "plan": plan.summary,
        "baseline": {
            "predicted": (top.iteration_time_s, top.energy_j),
            "measured": phase_means(run, "profile"),
        },
        "planned": {
            "predicted": switched,
            "measured": phase_means(run, "planned"),
        },
    }
