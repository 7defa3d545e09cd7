"""Planning and the run record of :class:`~fxenergy.pipeline.online.EnergySchedule`.

A mixin, like :class:`~fxenergy.pipeline.refine.RefineSteps`: rank 0 gathers every rank's
profile rows, plans there and broadcasts the plan; the run record (``save_dir``) keeps the
profile the plan in force was made from, the plan, the refinement log and each rank's events.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from fxenergy.hardware.profiles import Profile
from fxenergy.pipeline.online_plan import RUN_SCHEMA, OnlinePlan, plan_online, save_rank, save_run

#: What the run record keeps of the schedule's settings (``fxenergy pipeline --from-run``).
_META = (
    "gpu", "reference_mhz", "blocked_power_w", "max_slowdown", "frontier_points", "polish_s",
    "profile_iters", "switch_latency_s",
)  # fmt: skip


class PlanningSteps:
    """Rank 0 plans from every rank's profile; the run record (uses the schedule's state)."""

    # --- planning ----------------------------------------------------------------------------
    def _plan_collective(self) -> None:
        """Gather every rank's rows on rank 0, plan there, broadcast the plan to all."""
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.num_ranks
        samples = self.recorder.clock_samples
        observed = statistics.median(samples) if samples else None
        last = self._profile_records()[-1].to_json()
        mine = (self.reference_mhz, self._rows, observed, last)
        dist.all_gather_object(gathered, mine, group=self.group)
        result: list[Any] = [None]
        if self.rank == 0:
            result[0] = self._plan(gathered)
        dist.broadcast_object_list(result, src=self._src, group=self.group)
        if isinstance(result[0], BaseException):
            raise result[0]
        self.plan = result[0]
        self.events.append((self.iteration, "planned from the profile"))
        self._refine_at = self.iteration + self.refine_iters if self.max_refines else None
        self.refiner.refines = self.max_refines
        self._active = (None, None)
        self._choose_plan(max(self._straggler_s, self._auto_straggler()))
        self._apply_phase()

    def _plan(self, gathered: list[tuple]) -> OnlinePlan | BaseException:
        try:
            refs = {g[0] for g in gathered}
            if len(refs) != 1:
                raise ValueError(f"ranks profiled at different clocks {sorted(refs)}")
            profile = Profile(tuple(r for g in gathered for r in g[1]))
            if self.plan is None:  # the first profile ran every rank at its reference clock
                self.refiner.set_baseline([g[3] for g in gathered])
            self.refiner.candidates.clear()  # plans measured on the costs before a re-profile
            plan = self._make_plan(profile)
        except Exception as exc:  # every rank raises it, not only rank 0
            return exc
        self._observed = [g[2] for g in gathered]
        self._save_run(profile, plan)
        return plan

    def _make_plan(self, profile: Profile) -> OnlinePlan:
        self._plan_profile = profile
        return plan_online(
            profile, self.dag, self.gpu, self.reference_mhz, self.blocked_power_w,
            self.max_slowdown, self.frontier_points, self.polish_s, self.switch_latency_s,
        )  # fmt: skip

    # --- the run record ----------------------------------------------------------------------
    def _meta(self) -> dict:
        d, b = self.dag, self.backend
        return {
            "schema": RUN_SCHEMA, "schedule": d.schedule, "num_stages": d.num_stages,
            "num_microbatches": d.num_microbatches, "num_ranks": d.num_ranks,
            "backend": b.describe(), "simulated": b.simulated,
            **{k: getattr(self, k) for k in _META},
        }  # fmt: skip

    def _save_run(self, profile: Profile, plan: OnlinePlan, fallback: str | None = None) -> None:
        """Rank 0: the profile the plan in force was made from, the plan, the refinement log."""
        if self.save_dir is None:
            return
        r = self.refiner
        meta = {
            **self._meta(), "observed_sm_mhz": self._observed, "plan": plan.summary,
            "baseline": list(r.baseline), "refinement": r.log, "fallback": fallback,
        }  # fmt: skip
        save_run(self.save_dir, meta, profile)

    def _save_rank(self) -> None:
        assert self.save_dir is not None
        threshold = self.drift.threshold_rel if self.drift else math.nan
        save_rank(self.save_dir, self.rank, self.events, threshold, self.records)
