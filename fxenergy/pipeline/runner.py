"""Run a torch.distributed.pipelining schedule with a per-rank clock plan.

Every schedule in ``torch.distributed.pipelining`` (single-stage ones like ``Schedule1F1B`` and
the runtime-driven multi-stage ones like ``ScheduleInterleaved1F1B``) computes through two
public methods of its stages: ``forward_one_chunk(mb, ...)`` and ``backward_one_chunk(mb, ...)``.
:class:`ClockPlanHook` wraps those two methods on this rank's stage objects so that each
computation's clock is requested at its boundary: on a GPU a CUDA event is recorded there and the
switch controller's thread applies the clock when the GPU reaches it (not when the host launches
the work); under the simulator it is requested at once in virtual time. Either way it is a *late*
switch of the one switch model (:mod:`fxenergy.schedule.switch`): its transition window is the
head of the computation that follows, as :mod:`fxenergy.pipeline.switch_aware` prices it. The
schedule, its communication and its numerics are untouched.

A *split* computation (:class:`~fxenergy.pipeline.costs.ClockSplit`) switches a second time,
inside itself: that request is timed ``after_s - latency`` after the GPU reaches the boundary
(issued ahead, so the second clock is in force at the split point; at once when the first part
is shorter than the latency: a late switch), labelled ``1F3~``. A newer boundary the GPU reaches
first supersedes it.

    plan = PipelinePlanner(dag, costs).plan()
    with ClockPlanHook(stage, plan.rank_plan(rank), backend, splits=plan.rank_splits(rank)):
        schedule.step(x, target=y)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

from fxenergy.errors import FxEnergyError, PlanMismatchError
from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S
from fxenergy.pipeline.costs import ClockSplit
from fxenergy.pipeline.orders import KIND_OF, LETTER, Action
from fxenergy.runtime.backend import FrequencyBackend
from fxenergy.runtime.controller import SwitchController, cuda_event_factory


class PlanMissingActionError(FxEnergyError, KeyError):
    """A stage ran a computation the plan has no clock for (plan made for another shape)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def action_label(action: Action) -> str:
    """torch's spelling of an action: ``1F3`` = stage 1, forward, microbatch 3 (B, I, W too)."""
    stage, kind, mb = action
    return f"{stage}{LETTER[kind]}{mb}"


class ComputeObserver(Protocol):
    """Told about each computation a hooked stage runs (timers, profilers)."""

    def before(self, action: Action) -> None: ...

    def after(self, action: Action) -> None: ...


def default_controller(backend: FrequencyBackend) -> SwitchController:
    """A switch controller for ``backend``: at the GPU boundary on CUDA, synchronous elsewhere.

    On a real GPU the host records a CUDA event at each computation's boundary and the controller
    thread applies the clock when the GPU reaches it; under the simulator (or on CPU) the switch
    happens at once, in the backend's (virtual) time.
    """
    import torch

    if backend.simulated or not torch.cuda.is_available():
        return SwitchController(backend, threaded=False)
    return SwitchController(backend, threaded=True, event_factory=cuda_event_factory)


class ClockPlanHook:
    """Context manager: switch clocks at the boundary of each forward/backward of this rank.

    Args:
        stages: this rank's ``PipelineStage`` objects (one, or several for interleaved).
        plan: ``(action, clock_mhz)`` pairs for this rank (``PipelinePlan.rank_plan(rank)``),
            a mapping from action to clock, or None to touch no clock (observe only).
        backend: the frequency backend of this rank's GPU (simulated, NVML or null).
        reset_on_exit: put the clock back when the block ends normally (it is always put back
            when the block raises).
        controller: applies the switches (default: :func:`default_controller`); a controller
            passed in is started here but not closed (its owner closes it).
        observer: told before and after each computation (after the clock request).
        splits: computations of ``plan`` that switch to a second clock partway
            (``PipelinePlan.rank_splits(rank)``).
        switch_latency_s: time from a clock request to the clock in force, to time a split's
            second switch by (default: the backend's, else the DVFS model's default).

    ``requests`` lists every ``(label, clock)`` asked of the backend, in order (a split's
    second clock as ``"1F3~"``); ``late_splits`` counts second switches issued at the boundary
    because the first part was shorter than the latency.
    """

    def __init__(
        self,
        stages: Any,
        plan: Iterable[tuple[Action, int]] | dict[Action, int] | None,
        backend: FrequencyBackend,
        reset_on_exit: bool = True,
        *,
        controller: SwitchController | None = None,
        observer: ComputeObserver | None = None,
        splits: Mapping[Action, ClockSplit] | None = None,
        switch_latency_s: float | None = None,
    ) -> None:
        self.stages: Sequence[Any] = stages if isinstance(stages, (list, tuple)) else [stages]
        self.backend = backend
        self.reset_on_exit = reset_on_exit
        self.observer = observer
        self.requests: list[tuple[str, int]] = []
        self.late_splits = 0
        latency = getattr(backend, "switch_latency_s", DEFAULT_SWITCH_LATENCY_S)
        self.switch_latency_s = latency if switch_latency_s is None else switch_latency_s
        self._own_controller = controller is None
        self.controller = controller or default_controller(backend)
        self._saved: list[tuple[Any, str, Any]] = []
        self.set_plan(plan, splits)

    def set_plan(
        self,
        plan: Iterable[tuple[Action, int]] | dict[Action, int] | None,
        splits: Mapping[Action, ClockSplit] | None = None,
    ) -> None:
        """Use another plan (and its splits) from the next computation on (None: leave the
        clock alone).

        Raises:
            PlanMismatchError: a split names a computation the plan has no clock for.
        """
        if plan is None:
            self.clocks: dict[Action, int] | None = None
        else:
            self.clocks = dict(plan.items() if isinstance(plan, dict) else plan)
        self.splits: dict[Action, ClockSplit] = dict(splits or {})
        stray = [a for a in self.splits if self.clocks is None or a not in self.clocks]
        if stray:
            raise PlanMismatchError(
                f"the clock splits name {', '.join(action_label(a) for a in stray)}, which the "
                "plan has no clock for; pass the splits of the same plan and rank"
            )

    def _switch(self, stage_index: int, kind: str, mb: int) -> Action:
        action: Action = (stage_index, kind, mb)  # type: ignore[assignment]
        if self.clocks is None:
            return action
        try:
            mhz = self.clocks[action]
        except KeyError:
            raise PlanMissingActionError(
                f"the plan has no clock for {action_label(action)}; it was made for another "
                "schedule, stage count or microbatch count — plan again for this pipeline"
            ) from None
        self.requests.append((action_label(action), mhz))
        self.controller.request(mhz, label=action_label(action))  # at the GPU boundary
        if (split := self.splits.get(action)) is not None:
            self._request_split(action, split)
        return action

    def _request_split(self, action: Action, split: ClockSplit) -> None:
        """The second clock, timed ``latency`` ahead of the split point (late if it can't be)."""
        label = action_label(action) + "~"
        ahead = split.after_s >= self.switch_latency_s
        self.late_splits += not ahead
        delay = max(split.after_s - self.switch_latency_s, 0.0)
        self.requests.append((label, split.then_mhz))
        self.controller.request(split.then_mhz, label=label, ahead=ahead, delay_s=delay)

    def _wrap(self, stage: Any, method: str, kind: str) -> None:
        original = getattr(stage, method)

        @functools.wraps(original)
        def wrapped(chunk_id: int, *args: Any, **kwargs: Any) -> Any:
            # backward_one_chunk(mb, loss, full_backward, ...): full_backward=False is the
            # zero-bubble input-gradient part (I); its weight part runs in
            # backward_weight_one_chunk (W).
            full = kwargs.get("full_backward", args[1] if len(args) > 1 else True)
            this = "backward_input" if kind == "backward" and not full else kind
            action = self._switch(stage.stage_index, this, chunk_id)
            if self.observer is None:
                return original(chunk_id, *args, **kwargs)
            self.observer.before(action)
            out = original(chunk_id, *args, **kwargs)
            self.observer.after(action)
            return out

        self._saved.append((stage, method, stage.__dict__.get(method)))
        setattr(stage, method, wrapped)  # instance attribute: the class stays untouched

    def __enter__(self) -> ClockPlanHook:
        self.controller.start()
        for stage in self.stages:
            self._wrap(stage, "forward_one_chunk", "forward")
            self._wrap(stage, "backward_one_chunk", "backward")
            if hasattr(stage, "backward_weight_one_chunk"):  # zero-bubble W (torch >= 2.5)
                self._wrap(stage, "backward_weight_one_chunk", "backward_weight")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for stage, method, before in reversed(self._saved):
            if before is None:
                delattr(stage, method)
            else:
                setattr(stage, method, before)
        self._saved.clear()
        failed = exc_type is not None
        if self._own_controller:
            self.controller.close(drain=not failed)
        elif failed:
            self.controller.close(drain=False)
        if self.reset_on_exit or failed:
            self.backend.reset()


def _check_fingerprint(doc: dict, fingerprint: str) -> None:
    if fingerprint not in (doc.get("dag_fingerprint"), doc.get("placed_from")):
        raise PlanMismatchError(
            f"the plan was made for a {doc.get('schedule')} pipeline of "
            f"{doc.get('num_stages')} stages x {doc.get('num_microbatches')} microbatches "
            f"(fingerprint {doc.get('dag_fingerprint')}), not this one ({fingerprint}); "
            "plan again with `fxenergy pipeline` for this schedule and shape"
        )


def _action_of(entry: dict) -> Action:
    stage, kind, mb = re.fullmatch(r"(\d+)([FBIW])(\d+)", entry["action"]).groups()  # type: ignore[union-attr]
    return (int(stage), KIND_OF[kind], int(mb))  # type: ignore[return-value]


def rank_plan_from_json(doc: dict, rank: int, fingerprint: str) -> list[tuple[Action, int]]:
    """One rank's ``(action, clock)`` list from ``PipelinePlan.to_json()`` output.

    Args:
        doc: the saved plan.
        rank: this process's pipeline rank.
        fingerprint: ``build_dag(...).fingerprint`` of the pipeline about to run.

    Raises:
        PlanMismatchError: the plan was made for another schedule or shape.
    """
    _check_fingerprint(doc, fingerprint)
    return [(_action_of(e), int(e["freq_mhz"])) for e in doc["ranks"][rank]]


def rank_splits_from_json(doc: dict, rank: int, fingerprint: str) -> dict[Action, ClockSplit]:
    """One rank's clock splits from ``PipelinePlan.to_json()`` output (empty: none).

    Args:
        doc: the saved plan (a split entry has ``then_mhz``, ``then_share``, ``then_after_s``).
        rank: this process's pipeline rank.
        fingerprint: ``build_dag(...).fingerprint`` of the pipeline about to run.

    Raises:
        PlanMismatchError: the plan was made for another schedule or shape.
    """
    _check_fingerprint(doc, fingerprint)
    return {
        _action_of(e): ClockSplit(
            int(e["then_mhz"]), float(e["then_share"]), float(e.get("then_after_s", 0.0))
        )
        for e in doc["ranks"][rank]
        if "then_mhz" in e
    }


def expected_switches(
    plan: Iterable[tuple[Action, int]],
    initial_mhz: int,
    steps: int = 1,
    splits: Mapping[Action, ClockSplit] | None = None,
) -> list[int]:
    """Clock changes a backend that skips no-op switches carries out for ``steps`` iterations
    (a split computation's second clock included, right after its first)."""
    out: list[int] = []
    current = initial_mhz
    splits = splits or {}
    for _ in range(steps):
        for action, mhz in plan:
            clocks = (mhz, splits[action].then_mhz) if action in splits else (mhz,)
            for f in clocks:
                if f != current:
                    out.append(f)
                    current = f
    return out
