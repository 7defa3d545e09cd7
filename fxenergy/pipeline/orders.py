"""Per-rank execution orders of every torch.distributed.pipelining schedule.

An order lists, for each rank (GPU), the computations it runs, in the order it runs them. A
computation is ``(stage, kind, microbatch)`` with ``kind`` one of ``forward`` (torch's ``F``),
``backward`` (``B``, input and weight gradients together), ``backward_input`` (``I``) and
``backward_weight`` (``W``): the zero-bubble schedules split a backward into I and W so that W
can fill bubbles. DualPipeV also runs *overlapped pairs* ``(F, B)``: torch's ``OVERLAP_F_B``
action, whose sub-actions run back to back and whose sends leave after both.

:func:`torch_rank_orders` reads torch's own schedule IR (``pipeline_order``), built with stand-in
stage objects that carry only sizes, so a schedule torch adds or changes is picked up.
:func:`reference_rank_orders` generates GPipe, 1F1B and Interleaved1F1B from their published
rules; it is the fallback where torch's IR is missing or fails validation (torch 2.13's
``Schedule1F1B`` IR drops microbatch 0 on the last rank, although its runtime runs it). The
zero-bubble schedules, LoopedBFS and DualPipeV come from torch's IR only.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from types import SimpleNamespace
from typing import Literal

from fxenergy.errors import FxEnergyError

logger = logging.getLogger(__name__)

Kind = Literal["forward", "backward", "backward_input", "backward_weight"]
#: (stage, kind, microbatch): one computation of one pipeline stage.
Action = tuple[int, Kind, int]
#: an overlapped (forward, backward) pair of DualPipeV: run back to back, sent after both.
Overlap = tuple[Action, Action]
SCHEDULES = (
    "GPipe",
    "1F1B",
    "Interleaved1F1B",
    "LoopedBFS",
    "InterleavedZeroBubble",
    "ZBVZeroBubble",
    "DualPipeV",
)
#: torch's one-letter spelling of each kind.
LETTER = {"forward": "F", "backward": "B", "backward_input": "I", "backward_weight": "W"}
KIND_OF = {v: k for k, v in LETTER.items()}
SINGLE_STAGE = ("GPipe", "1F1B")  #: one stage per rank
V_SHAPED = ("ZBVZeroBubble", "DualPipeV")  #: rank r holds stages r and 2R-1-r
_ALIASES = {s.lower(): s for s in SCHEDULES} | {
    "interleaved": "Interleaved1F1B",
    "zb": "InterleavedZeroBubble",
    "interleavedzb": "InterleavedZeroBubble",
    "zbv": "ZBVZeroBubble",
    "zerobubble": "InterleavedZeroBubble",
}


class ScheduleError(FxEnergyError, ValueError):
    """A pipeline schedule cannot be built for the requested shape."""


def canonical_schedule(name: str) -> str:
    """Map a user spelling (``1f1b``, ``gpipe``, ``zbv``, ``ScheduleDualPipeV``) to SCHEDULES."""
    key = name.lower().replace("_", "").replace("-", "").removeprefix("schedule")
    if key not in _ALIASES:
        raise ScheduleError(f"unknown pipeline schedule {name!r}; choose one of {SCHEDULES}")
    return _ALIASES[key]


def default_ranks(schedule: str, num_stages: int) -> int:
    """GPUs a schedule runs on by default: one per stage, or two stages per rank."""
    return num_stages if canonical_schedule(schedule) in SINGLE_STAGE else max(1, num_stages // 2)


def stage_rank(schedule: str, stage: int, num_ranks: int) -> int:
    """The rank holding ``stage`` (loop placement; V placement for ZBV and DualPipeV)."""
    if schedule in V_SHAPED:
        return stage if stage < num_ranks else 2 * num_ranks - 1 - stage
    return stage % num_ranks


def check_shape(schedule: str, num_stages: int, num_microbatches: int, num_ranks: int) -> None:
    """Raise :class:`ScheduleError` when torch could not run this schedule shape."""
    if num_stages < 1 or num_microbatches < 1 or num_ranks < 1:
        raise ScheduleError("stages, microbatches and ranks must all be at least 1")
    if schedule in SINGLE_STAGE:
        if num_ranks != num_stages:
            raise ScheduleError(
                f"{schedule} runs one stage per rank: ranks ({num_ranks}) must equal stages "
                f"({num_stages})"
            )
    elif schedule in V_SHAPED:
        if num_stages != 2 * num_ranks:
            raise ScheduleError(
                f"{schedule} needs exactly 2 stages per rank: stages ({num_stages}) must be "
                f"twice the ranks ({num_ranks})"
            )
    elif num_stages % num_ranks or num_stages // num_ranks < 2:
        raise ScheduleError(
            f"{schedule} needs stages ({num_stages}) to be a multiple >= 2 of ranks "
            f"({num_ranks}); pass --ranks so that each rank holds 2 or more stages"
        )
    if schedule in ("Interleaved1F1B", "InterleavedZeroBubble"):
        rounds = max(1, num_microbatches // num_ranks)
        if num_microbatches % rounds:
            raise ScheduleError(
                f"{schedule} needs microbatches ({num_microbatches}) divisible by "
                f"{rounds} rounds; use a multiple of {num_ranks} microbatches"
            )
    if schedule in ("1F1B", "DualPipeV") and num_microbatches < num_stages:
        raise ScheduleError(
            f"{schedule} needs at least as many microbatches ({num_microbatches}) as stages "
            f"({num_stages}), as torch's Schedule{schedule} does"
        )


def reference_rank_orders(
    schedule: str, num_stages: int, num_microbatches: int, num_ranks: int
) -> list[list[Action]]:
    """Per-rank orders of GPipe, 1F1B and Interleaved1F1B from their rules (torch's runtime).

    Raises:
        ScheduleError: the shape is invalid, or the schedule has no reference generator.
    """
    schedule = canonical_schedule(schedule)
    check_shape(schedule, num_stages, num_microbatches, num_ranks)
    m = num_microbatches
    if schedule == "GPipe":
        return [
            [(s, "forward", i) for i in range(m)] + [(s, "backward", i) for i in range(m)]
            for s in range(num_stages)
        ]
    if schedule == "1F1B":
        return [_one_f_one_b(s, num_stages, m) for s in range(num_stages)]
    if schedule == "Interleaved1F1B":
        return [_interleaved(r, num_stages // num_ranks, num_ranks, m) for r in range(num_ranks)]
    raise ScheduleError(f"{schedule} has no reference order; it needs torch's schedule IR")


def _one_f_one_b(stage: int, num_stages: int, m: int) -> list[Action]:
    # torch's Schedule1F1B: stage s warms up with S - s forwards, then alternates B, F.
    warmup = min(m, num_stages - stage)
    out: list[Action] = [(stage, "forward", i) for i in range(warmup)]
    for b in range(m):
        out.append((stage, "backward", b))
        if warmup + b < m:
            out.append((stage, "forward", warmup + b))
    return out


def _interleaved(rank: int, local: int, ranks: int, m: int) -> list[Action]:
    # Megatron-style depth-first interleaving with torch's flexible rounds (loop placement:
    # stage = local_index * ranks + rank).
    per_round = m // max(1, m // ranks)
    warmup = min((local - 1) * per_round + 2 * (ranks - 1 - rank), m * local)
    steady = m * local - warmup
    fwd_next: dict[int, int] = defaultdict(int)
    bwd_next: dict[int, int] = defaultdict(int)

    def fwd(step: int) -> Action:
        stage = ((step // per_round) % local) * ranks + rank
        fwd_next[stage] += 1
        return (stage, "forward", fwd_next[stage] - 1)

    def bwd(step: int) -> Action:
        stage = (local - 1 - ((step - warmup) // per_round) % local) * ranks + rank
        bwd_next[stage] += 1
        return (stage, "backward", bwd_next[stage] - 1)

    out = [fwd(op) for op in range(warmup)]
    for op in range(warmup, warmup + steady):
        out += [fwd(op), bwd(op)]
    out += [bwd(op) for op in range(warmup + steady, 2 * warmup + steady)]
    return out


_TYPES = {"F": "forward", "B": "backward", "I": "backward_input", "W": "backward_weight"}


def torch_schedule_class(schedule: str) -> type:
    """torch's class for a schedule name (``ScheduleZBVZeroBubble`` for ``ZBVZeroBubble``)."""
    from torch.distributed import pipelining

    return getattr(pipelining, f"Schedule{canonical_schedule(schedule)}")


def torch_pipeline_order(schedule: str, s: int, m: int, ranks: int) -> dict:
    """torch's ``pipeline_order`` for a shape (rank -> list of ``_Action`` or None).

    Raises:
        ScheduleError: torch refuses the shape (its message is kept).
    """
    cls = torch_schedule_class(schedule)
    if schedule in SINGLE_STAGE:
        return cls(SimpleNamespace(num_stages=s), n_microbatches=m).pipeline_order
    mine = [i for i in range(s) if stage_rank(schedule, i, ranks) == 0]
    stages = [
        SimpleNamespace(num_stages=s, group_size=ranks, group_rank=0, stage_index=i, submod=None)
        for i in mine
    ]
    try:
        return cls(stages, n_microbatches=m).pipeline_order
    except ValueError as exc:
        raise ScheduleError(f"torch refuses {schedule} with {s} stages x {m}: {exc}") from exc


def _convert(action) -> Action:
    kind = _TYPES[action.computation_type.value]
    return (int(action.stage_index), kind, int(action.microbatch_index))


def torch_rank_orders(
    schedule: str, num_stages: int, num_microbatches: int, num_ranks: int
) -> tuple[list[list[Action]], list[Overlap]] | None:
    """Per-rank orders and overlapped pairs from torch's IR; None where torch cannot give them.

    Raises:
        ScheduleError: the shape is one torch's schedule refuses.
    """
    schedule = canonical_schedule(schedule)
    check_shape(schedule, num_stages, num_microbatches, num_ranks)
    try:
        order = torch_pipeline_order(schedule, num_stages, num_microbatches, num_ranks)
    except ScheduleError:
        raise
    except Exception as exc:  # any torch-internal change: fall back, say why
        logger.info("torch pipeline_order unavailable for %s: %s", schedule, exc)
        return None
    if order is None:
        return None
    out: list[list[Action]] = []
    overlaps: list[Overlap] = []
    for rank in range(num_ranks):
        acts: list[Action] = []
        for a in order.get(rank, []):
            if a is None:
                continue
            kind = getattr(a.computation_type, "value", None)
            if kind == "OVERLAP_F_B":
                fwd, bwd = (_convert(x) for x in a.sub_actions)
                acts += [fwd, bwd]
                overlaps.append((fwd, bwd))
            elif kind in _TYPES:
                acts.append(_convert(a))
        out.append(acts)
    return out, overlaps


def validate_orders(
    orders: list[list[Action]], num_stages: int, num_microbatches: int
) -> str | None:
    """Why the orders are not a complete, well-formed schedule; None when they are.

    Every (stage, microbatch) runs one forward and either one ``backward`` or one
    ``backward_input`` and one ``backward_weight``, all on one rank, the forward first and the
    input-gradient part before the weight part.
    """
    seen: set[Action] = set()
    for rank, acts in enumerate(orders):
        for act in acts:
            if act in seen:
                return f"{act} appears twice"
            stage, kind, mb = act
            if not (0 <= stage < num_stages and 0 <= mb < num_microbatches):
                return f"rank {rank} runs {act}, outside {num_stages} stages x {num_microbatches}"
            need = {
                "forward": None,
                "backward": (stage, "forward", mb),
                "backward_input": (stage, "forward", mb),
                "backward_weight": (stage, "backward_input", mb),
            }[kind]
            if need is not None and need not in seen:
                return f"rank {rank} runs {act} before {need}"
            seen.add(act)
    for s in range(num_stages):
        for mb in range(num_microbatches):
            full = (s, "backward", mb) in seen
            split = (s, "backward_input", mb) in seen
            if (s, "forward", mb) not in seen or full == split:
                return f"stage {s} microbatch {mb} is not run exactly once"
    return None


def rank_orders(
    schedule: str, num_stages: int, num_microbatches: int, num_ranks: int | None = None
) -> tuple[list[list[Action]], list[Overlap], str]:
    """Per-rank orders, overlapped pairs and where they came from (``torch``/``reference``).

    torch's IR is used when it is available and validates; otherwise the reference generator.

    Raises:
        ScheduleError: the shape is invalid, or neither torch nor a reference can give it.
    """
    schedule = canonical_schedule(schedule)
    if num_ranks is None:
        num_ranks = default_ranks(schedule, num_stages)
    from_torch = torch_rank_orders(schedule, num_stages, num_microbatches, num_ranks)
    if from_torch is not None:
        problem = validate_orders(from_torch[0], num_stages, num_microbatches)
        if problem is None:
            return from_torch[0], from_torch[1], "torch"
        logger.info("torch's %s pipeline_order rejected (%s); using reference", schedule, problem)
    return reference_rank_orders(schedule, num_stages, num_microbatches, num_ranks), [], "reference"
