"""Energy-planned pipeline training in one line: profile online, plan, apply, re-plan.

    sched = fxenergy.pipeline.energy_schedule(schedule, gpu="A100-SXM4-80GB", max_slowdown=0.01)
    for x, y in data:
        sched.step(x, target=y, losses=losses)   # as schedule.step
        optimizer.step()

:class:`EnergySchedule` wraps a ``torch.distributed.pipelining`` schedule (GPipe, 1F1B,
Interleaved1F1B). On every rank: ``profile_iters`` steps are measured with clocks untouched
(:mod:`fxenergy.pipeline.probe`); rank 0 gathers the one-clock rows, extrapolates them with the
DVFS model from the reference clock read from the GPU, plans the deadline and the frontier, and
broadcasts them (:mod:`fxenergy.pipeline.online_plan`); every rank then switches clocks at the
GPU boundary of each computation (:class:`~fxenergy.pipeline.runner.ClockPlanHook`). Each plan's
first steps are measured at its clocks and judged on rank 0; until the measured iteration keeps
the deadline the pipeline re-plans from the profile those measurements refine
(:mod:`fxenergy.pipeline.refine`). Each step
begins with one tiny all-reduce carrying the straggler time and per-rank drift flags, so every
rank changes plan at the same step: a drifting rank is re-profiled and the pipeline re-planned; a
straggler selects the frontier plan for the longer iteration at once. Clocks are restored on
close, when a step raises, at exit and on SIGINT/SIGTERM. docs/pipeline.md has the details.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import Any

from fxenergy.hardware.profiles import Profile, ProfileRow
from fxenergy.pipeline.dag import build_dag
from fxenergy.pipeline.online_plan import (
    OnlinePlan,
)
from fxenergy.pipeline.online_steps import PlanningSteps
from fxenergy.pipeline.orders import Action, ScheduleError, canonical_schedule
from fxenergy.pipeline.probe import (
    ComputeRecorder,
    DriftDetector,
    IterationRecord,
    OnlineProfileError,
    SimCosts,
    StragglerDetector,
    noise_threshold,
    profile_rows,
)
from fxenergy.pipeline.refine import Refiner, RefineSteps
from fxenergy.pipeline.runner import ClockPlanHook, default_controller
from fxenergy.runtime import restore
from fxenergy.runtime.backend import FrequencyBackend
from fxenergy.runtime.sim import DEFAULT_SWITCH_LATENCY_S

#: Iteration records kept besides the profiling ones (the run record holds these).
_KEEP = 1000
_PROFILING = ("profile", "reprofile")


def energy_schedule(schedule: Any, gpu: str | None = None, max_slowdown: float = 0.0, **kw: Any):
    """Make a torch pipeline schedule's iterations energy-planned (see :class:`EnergySchedule`)."""
    return EnergySchedule(schedule, gpu, max_slowdown, **kw)


def _stages_of(schedule: Any) -> list[Any]:
    if hasattr(schedule, "_stages"):
        return list(schedule._stages)
    if hasattr(schedule, "_stage"):
        return [schedule._stage]
    raise ScheduleError(f"{type(schedule).__name__} is not a torch.distributed.pipelining schedule")


class EnergySchedule(RefineSteps, PlanningSteps):
    """A torch pipeline schedule whose iterations run an energy plan made online.

    Args:
        schedule: a ``ScheduleGPipe``, ``Schedule1F1B`` or ``ScheduleInterleaved1F1B``.
        gpu: spec-table GPU name (default: the backend's GPU).
        max_slowdown: the steady plan's deadline, relative to the all-max-clock iteration.
        backend: this rank's frequency backend (default: NVML where usable, else simulated).
        sim_costs: on the simulated GPU, the cost of each computation (``probe.SimCosts``).
        blocked_power_w: power while blocked on communication (default: the DVFS model's).
        profile_iters: steps measured before planning (and when re-profiling a rank).
        frontier_points: frontier plans kept for straggler mode (0: none).
        polish_s: CP-SAT seconds per plan (0: LP + greedy).
        save_dir: where to save the run record (``fxenergy pipeline --from-run``).
        dp_group: this rank's data-parallel peer group, for automatic straggler detection.
        drift_floor: the least relative drift treated as more than noise.
        patience: steps a drift or straggler must last before acting on it.
        max_refines: re-plans at most from the plan's own measurements (its clocks' second
            profile point, :mod:`fxenergy.pipeline.refine`) until the measured iteration is
            within ``max_slowdown`` of the measured all-max one (0: trust the extrapolation).
        refine_iters: steps each plan runs before it is judged (the last one is measured).
        switch_latency_s: time from a clock request to the clock in force, for the
            switch-aware pass (:mod:`fxenergy.pipeline.switch_aware`: one transition window per
            switch, as the simulator charges it); default: the backend's, else the simulator's
            default (10 ms).
    """

    def __init__(
        self,
        schedule: Any,
        gpu: str | None = None,
        max_slowdown: float = 0.0,
        *,
        backend: FrequencyBackend | None = None,
        sim_costs: SimCosts | None = None,
        blocked_power_w: float | None = None,
        profile_iters: int = 2,
        frontier_points: int = 20,
        polish_s: float = 0.0,
        save_dir: str | Path | None = None,
        dp_group: Any = None,
        drift_floor: float = 0.05,
        patience: int = 2,
        switch_latency_s: float | None = None,
        max_refines: int = 3,
        refine_iters: int = 2,
    ) -> None:
        import torch.distributed as dist

        from fxenergy.runtime.factory import get_backend

        if max_slowdown < 0 or profile_iters < 1 or refine_iters < 1 or max_refines < 0:
            raise OnlineProfileError(
                "max_slowdown and max_refines must be >= 0, profile_iters and refine_iters >= 1"
            )
        self.schedule = schedule
        self.stages = _stages_of(schedule)
        first = self.stages[0]
        self.group, self.rank, self.num_ranks = first.group, first.group_rank, first.group_size
        name = canonical_schedule(type(schedule).__name__.removeprefix("Schedule"))
        self.dag = build_dag(name, first.num_stages, schedule._n_microbatches, self.num_ranks)
        self.backend = backend or get_backend("auto", gpu)
        self.gpu = gpu or getattr(getattr(self.backend, "gpu", None), "name", None)
        if self.gpu is None or not (self.backend.has_energy_counter or self.backend.simulated):
            raise OnlineProfileError(
                f"{self.backend.describe()}: energy_schedule needs a named GPU (gpu=...) and an "
                "energy counter: use the NVML backend or get_backend('sim', gpu=...)"
            )
        self.max_slowdown, self.profile_iters = max_slowdown, profile_iters
        self.frontier_points, self.polish_s = frontier_points, polish_s
        self.blocked_power_w = (
            blocked_power_w if blocked_power_w is not None else _dvfs(self.gpu).blocked_power_w
        )
        self.save_dir = Path(save_dir) if save_dir is not None else None
        if switch_latency_s is None:
            switch_latency_s = getattr(self.backend, "switch_latency_s", DEFAULT_SWITCH_LATENCY_S)
        self.switch_latency_s = float(switch_latency_s)
        self.dp_group, self.patience, self.drift_floor = dp_group, patience, drift_floor
        cuda = first.device.type == "cuda"
        self.recorder = ComputeRecorder(self.backend, sim_costs, cuda=cuda)
        self.controller = default_controller(self.backend)
        self.hook = ClockPlanHook(
            self.stages, None, self.backend, False, controller=self.controller,
            observer=self.recorder,
        )  # fmt: skip
        self._comm_device = "cuda" if dist.get_backend(self.group) == "nccl" else "cpu"
        self._src = dist.get_global_rank(self.group, 0) if self.group is not None else 0
        self.records: list[IterationRecord] = []
        self._steps = 0
        self.events: list[tuple[int, str]] = []  #: (iteration, what happened before it)
        self.plan: OnlinePlan | None = None
        self.reference_mhz = self.backend.current_clock_mhz
        self._rows: list[ProfileRow] = []  # this rank's latest one-clock rows
        self._profiling_left = profile_iters  # this rank measures at its reference clock
        self._replan_at: int | None = None
        self.max_refines, self.refine_iters = max_refines, refine_iters
        self._refine_at: int | None = None  # the step whose end judges the running plan
        self.refiner = Refiner(
            self.dag, self.blocked_power_w, self.backend.simulated, max_slowdown, max_refines
        )  # rank 0's; what it says is broadcast
        self._plan_profile: Profile | None = None  # rank 0: what the running plan is made from
        self._observed: list = []  # rank 0: each rank's SM clock under load while profiling
        self._straggler_s = 0.0  # set_straggler's delay (this rank's wish)
        self._wants_reprofile = False  # this rank's drift detector fired
        self._phase, self._active = "profile", (None, None)
        self.drift: DriftDetector | None = None
        self.straggler_detector: StragglerDetector | None = None
        self._closed = False
        restore.protect(self)

    # --- public ----------------------------------------------------------------------------
    @property
    def iteration(self) -> int:
        """Steps run so far."""
        return self._steps

    @property
    def phase(self) -> str:
        """What the next step runs: profile, reprofile, refine, planned or straggler."""
        return self._phase

    def set_straggler(self, delay_s: float | None) -> None:
        """A data-parallel peer's iteration lasts ``delay_s`` longer than this pipeline's plan.

        From the next step on (on every rank: the value travels in the step's all-reduce) the
        frontier plan for an iteration of the plan's time plus ``delay_s`` runs; 0 or None goes
        back to the steady plan.
        """
        self._straggler_s = max(0.0, float(delay_s or 0.0))

    def my_actions(self) -> list[Action]:
        """This rank's computations, in the order it runs them."""
        return list(self.dag.rank_orders[self.rank])

    def step(self, *args: Any, **kwargs: Any) -> Any:
        """Run one iteration exactly as ``schedule.step(*args, **kwargs)`` would."""
        if self._closed:
            raise RuntimeError("this EnergySchedule is closed; make a new one")
        try:
            self._sync()
            self.recorder.begin(self.iteration, self._phase)
            with self.hook:
                out = self.schedule.step(*args, **kwargs)
        except BaseException:
            self.recorder.current = None
            self.close()
            raise
        record = self.recorder.end()
        self.records.append(record)
        self._steps += 1
        self._trim()
        try:
            self._after_step(record)
        except BaseException:
            self.close()
            raise
        return out

    def _trim(self) -> None:
        """Bound what a long training run keeps: profiling steps and the last ``_KEEP`` others."""
        if len(self.records) > 2 * _KEEP:
            old = self.records[:-_KEEP]
            self.records[:] = [r for r in old if r.phase in _PROFILING] + self.records[-_KEEP:]
        for log in (self.hook.requests, self.controller.decisions):
            if len(log) > 64 * _KEEP:
                del log[: -32 * _KEEP]

    def close(self) -> None:
        """Restore the clocks, stop switching and save the run record (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.controller.close(drain=False)
        self.backend.reset()
        restore.release(self)
        if self.save_dir is not None:
            self._save_rank()

    def restore(self) -> None:
        """Put the clocks back (run at exit and on SIGINT/SIGTERM while the schedule is open)."""
        self.controller.restore()
        self.backend.reset()

    def __enter__(self) -> EnergySchedule:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- each step ---------------------------------------------------------------------------
    def _sync(self) -> None:
        """One all-reduce (max) per step: straggler time and drift flags of every rank."""
        import torch
        import torch.distributed as dist

        flags = [0.0] * self.num_ranks
        if self._wants_reprofile:
            flags[self.rank] = 1.0
        straggler = max(self._straggler_s, self._auto_straggler())
        msg = torch.tensor([straggler, *flags], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(msg, op=dist.ReduceOp.MAX, group=self.group)
        values = msg.tolist()
        self._wants_reprofile = False
        if self.plan is None:
            self._apply_phase()
            return
        flagged = [r for r, f in enumerate(values[1:]) if f > 0]
        if flagged and self._replan_at is None:
            self.events.append((self.iteration, f"re-profiling ranks {flagged}"))
            self._replan_at = self.iteration + self.profile_iters
            if self.rank in flagged:
                self._profiling_left = self.profile_iters
        self._choose_plan(values[0])
        self._apply_phase()

    def _auto_straggler(self) -> float:
        return self.straggler_detector.delay_s if self.straggler_detector is not None else 0.0

    def _choose_plan(self, straggler_delay_s: float) -> None:
        assert self.plan is not None
        target = (
            self.plan.steady.iteration_time_s + straggler_delay_s if straggler_delay_s else None
        )
        phase, point = self.plan.select(target)
        if point is not self._active[1]:
            what = f"{phase} plan, {point.iteration_time_s:.4g} s"
            self.events.append(
                (self.iteration, what + (f" (straggler {target:.4g} s)" if target else ""))
            )
        self._active = (phase, point)

    def _apply_phase(self) -> None:
        if self._profiling_left > 0 and self._phase not in _PROFILING:
            self.recorder.clock_samples.clear()  # a new profiling window starts
        self.recorder.sample_clocks = self._profiling_left > 0
        if self._profiling_left > 0:
            self._phase = "profile" if self.plan is None else "reprofile"
            if self.plan is None:
                self.hook.set_plan(None)  # first profile: clocks untouched
            else:
                self.hook.set_plan({a: self.reference_mhz for a in self.my_actions()})
            return
        phase, point = self._active
        self._phase = "refine" if phase == "planned" and self._refine_at is not None else phase
        self.hook.set_plan({a: point.freqs_mhz[a] for a in self.my_actions()})

    def _after_step(self, record: IterationRecord) -> None:
        if self._profiling_left > 0:
            self._profiling_left -= 1
            if self._profiling_left == 0:
                self._rows = profile_rows(
                    self._profile_records(), self.reference_mhz, self.blocked_power_w
                )
                threshold = noise_threshold(self._profile_records(), self.drift_floor)
                self.drift = DriftDetector(threshold, self.patience)
                if self.dp_group is not None:
                    self.straggler_detector = StragglerDetector(threshold, self.patience)
        if self.plan is None and self.iteration == self.profile_iters:
            self._plan_collective()
        elif self._replan_at is not None and self.iteration == self._replan_at:
            self._replan_at = None
            self._plan_collective()
        elif self._refine_at is not None and self.iteration == self._refine_at:
            self._refine_collective()
        elif self.plan is not None and self._phase in ("planned", "straggler"):
            assert self.drift is not None
            self._wants_reprofile = self.drift.update(record, self.plan.predicted_s)
        if self.dp_group is not None and self.plan is not None:
            self._probe_peers(record)

    def _profile_records(self) -> list[IterationRecord]:
        return [r for r in self.records if r.phase in _PROFILING][-self.profile_iters :]

    def _probe_peers(self, record: IterationRecord) -> None:
        import torch
        import torch.distributed as dist

        assert self.plan is not None and self.straggler_detector is not None
        t0 = time.perf_counter()
        dist.all_reduce(torch.zeros(1, device=self._comm_device), group=self.dp_group)
        wait = time.perf_counter() - t0
        own = self._active[1].iteration_time_s if self.backend.simulated else record.wall_s
        self.straggler_detector.update(wait, own, self.plan.steady.iteration_time_s)


def _dvfs(gpu: str) -> Any:
    from fxenergy.hardware.dvfs import get_dvfs_model

    return get_dvfs_model(gpu)
