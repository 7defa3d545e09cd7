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

    plan = PipelinePlanner(dag, costs).plan()
    with ClockPlanHook(stage, plan.rank_plan(rank), backend):
        schedule.step(x, target=y)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Protocol

from fxenergy.errors import FxEnergyError, PlanMismatchError
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

    ``requests`` lists every ``(label, clock)`` asked of the backend, in order.
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
    ) -> None:
        self.stages: Sequence[Any] = stages if isinstance(stages, (list, tuple)) else [stages]
        self.backend = backend
        self.reset_on_exit = reset_on_exit
        self.observer = observer
        self.requests: list[tuple[str, int]] = []
        self._own_controller = controller is None
        self.controller = controller or default_controller(backend)
        self._saved: list[tuple[Any, str, Any]] = []
        self.set_plan(plan)

    def set_plan(self, plan: Iterable[tuple[Action, int]] | dict[Action, int] | None) -> None:
        """Use another plan from the next computation on (None: leave the clock alone)."""
        if plan is None:
            self.clocks: dict[Action, int] | None = None
        else:
            self.clocks = dict(plan.items() if isinstance(plan, dict) else plan)

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
        return action

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


def rank_plan_from_json(doc: dict, rank: int, fingerprint: str) -> list[tuple[Action, int]]:
    """One rank's ``(action, clock)`` list from ``PipelinePlan.to_json()`` output.

    Args:
        doc: the saved plan.
        rank: this process's pipeline rank.
        fingerprint: ``build_dag(...).fingerprint`` of the pipeline about to run.

    Raises:
        PlanMismatchError: the plan was made for another schedule or shape.
    """
    if fingerprint not in (doc.get("dag_fingerprint"), doc.get("placed_from")):
        raise PlanMismatchError(
            f"the plan was made for a {doc.get('schedule')} pipeline of "
            f"{doc.get('num_stages')} stages x {doc.get('num_microbatches')} microbatches "
            f"(fingerprint {doc.get('dag_fingerprint')}), not this one ({fingerprint}); "
            "plan again with `fxenergy pipeline` for this schedule and shape"
        )
    out: list[tuple[Action, int]] = []
    for entry in doc["ranks"][rank]:
        stage, kind, mb = re.fullmatch(r"(\d+)([FBIW])(\d+)", entry["action"]).groups()
        out.append(((int(stage), KIND_OF[kind], int(mb)), int(entry["freq_mhz"])))  # type: ignore[arg-type]
    return out


def expected_switches(
    plan: Iterable[tuple[Action, int]], initial_mhz: int, steps: int = 1
) -> list[int]:
    """Clock changes a backend that skips no-op switches carries out for ``steps`` iterations."""
    out: list[int] = []
    current = initial_mhz
    for _ in range(steps):
        for _, mhz in plan:
            if mhz != current:
                out.append(mhz)
                current = mhz
    return out
