"""Per-rank execution orders of torch.distributed.pipelining schedules.

An order lists, for each rank (GPU), the forward and backward computations it runs, in the order
it runs them. :func:`torch_rank_orders` asks torch's own schedule classes for their
``pipeline_order`` (so a schedule torch adds or changes is picked up without code here);
:func:`reference_rank_orders` generates the same orders from the published rules, and is the
fallback where torch's IR is missing, private API moved, or the IR fails validation (torch
2.13's ``Schedule1F1B`` IR drops microbatch 0 on the last rank, although its runtime runs it).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from types import SimpleNamespace
from typing import Literal

from fxenergy.errors import FxEnergyError

logger = logging.getLogger(__name__)

Kind = Literal["forward", "backward"]
#: (stage, kind, microbatch): one computation of one pipeline stage.
Action = tuple[int, Kind, int]
SCHEDULES = ("GPipe", "1F1B", "Interleaved1F1B")


class ScheduleError(FxEnergyError, ValueError):
    """A pipeline schedule cannot be built for the requested shape."""


def canonical_schedule(name: str) -> str:
    """Map a user spelling (``1f1b``, ``gpipe``, ``interleaved``) to a name in SCHEDULES."""
    key = name.lower().replace("_", "").replace("-", "").removeprefix("schedule")
    aliases = {"gpipe": "GPipe", "1f1b": "1F1B", "interleaved1f1b": "Interleaved1F1B"}
    aliases["interleaved"] = "Interleaved1F1B"
    if key not in aliases:
        raise ScheduleError(f"unknown pipeline schedule {name!r}; choose one of {SCHEDULES}")
    return aliases[key]


def check_shape(schedule: str, num_stages: int, num_microbatches: int, num_ranks: int) -> None:
    """Raise :class:`ScheduleError` when torch could not run this schedule shape."""
    if num_stages < 1 or num_microbatches < 1 or num_ranks < 1:
        raise ScheduleError("stages, microbatches and ranks must all be at least 1")
    if schedule == "Interleaved1F1B":
        if num_stages % num_ranks or num_stages // num_ranks < 2:
            raise ScheduleError(
                f"Interleaved1F1B needs stages ({num_stages}) to be a multiple >= 2 of ranks "
                f"({num_ranks}); pass --ranks so that each rank holds 2 or more stages"
            )
        rounds = max(1, num_microbatches // num_ranks)
        if num_microbatches % rounds:
            raise ScheduleError(
                f"Interleaved1F1B needs microbatches ({num_microbatches}) divisible by "
                f"{rounds} rounds; use a multiple of {num_ranks} microbatches"
            )
    elif num_ranks != num_stages:
        raise ScheduleError(
            f"{schedule} runs one stage per rank: ranks ({num_ranks}) must equal stages "
            f"({num_stages})"
        )
    if schedule == "1F1B" and num_microbatches < num_stages:
        raise ScheduleError(
            f"1F1B needs at least as many microbatches ({num_microbatches}) as stages "
            f"({num_stages}), as torch's Schedule1F1B does"
        )


def reference_rank_orders(
    schedule: str, num_stages: int, num_microbatches: int, num_ranks: int
) -> list[list[Action]]:
    """Per-rank orders generated from the schedules' rules (torch's runtime behaviour)."""
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
    return [_interleaved(r, num_stages // num_ranks, num_ranks, m) for r in range(num_ranks)]


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


def torch_rank_orders(
    schedule: str, num_stages: int, num_microbatches: int, num_ranks: int
) -> list[list[Action]] | None:
    """Per-rank orders from torch's schedule class, or None where torch cannot give them.

    The schedule classes are built with stand-in stage objects that carry only the sizes
    (``num_stages``, ``group_size``, ``group_rank``); torch computes ``pipeline_order`` in the
    constructor from these alone. Any failure (a torch version that needs more) returns None.
    """
    schedule = canonical_schedule(schedule)
    check_shape(schedule, num_stages, num_microbatches, num_ranks)
    try:
        order = _torch_pipeline_order(schedule, num_stages, num_microbatches, num_ranks)
    except Exception as exc:  # any torch-internal change: fall back, say why
        logger.info("torch pipeline_order unavailable for %s: %s", schedule, exc)
        return None
    if order is None:
        return None
    out: list[list[Action]] = []
    for rank in range(num_ranks):
        acts = [a for a in order.get(rank, []) if a is not None]
        kinds = {"F": "forward", "B": "backward"}
        out.append(
            [
                (int(a.stage_index), kinds[a.computation_type.value], int(a.microbatch_index))
                for a in acts
                if getattr(a.computation_type, "value", None) in kinds
            ]
        )
    return out


def _torch_pipeline_order(schedule: str, s: int, m: int, ranks: int) -> dict | None:
    from torch.distributed import pipelining

    cls = getattr(pipelining, f"Schedule{schedule}")
    if schedule != "Interleaved1F1B":
        return cls(SimpleNamespace(num_stages=s), n_microbatches=m).pipeline_order
    local = s // ranks
    stages = [
        SimpleNamespace(num_stages=s, group_size=ranks, group_rank=0, stage_index=i * ranks)
        for i in range(local)
    ]
    return cls(stages, n_microbatches=m).pipeline_order


def validate_orders(
    orders: list[list[Action]], num_stages: int, num_microbatches: int
) -> str | None:
    """Why the orders are not a complete, well-formed schedule; None when they are."""
    seen: dict[Action, int] = {}
    for rank, acts in enumerate(orders):
        for pos, act in enumerate(acts):
            if act in seen:
                return f"{act} appears twice"
            stage, kind, mb = act
            if not (0 <= stage < num_stages and 0 <= mb < num_microbatches):
                return f"rank {rank} runs {act}, outside {num_stages} stages x {num_microbatches}"
            seen[act] = pos
            if kind == "backward" and (stage, "forward", mb) not in seen:
                return f"rank {rank} runs {act} before its forward"
    missing = 2 * num_stages * num_microbatches - len(seen)
    return f"{missing} computations are never run" if missing else None


def rank_orders(
    schedule: str, num_stages: int, num_microbatches: int, num_ranks: int | None = None
) -> tuple[list[list[Action]], str]:
    """Per-rank orders and where they came from (``"torch"`` or ``"reference"``).

    torch's IR is used when it is available and validates; otherwise the reference generator.
    """
    schedule = canonical_schedule(schedule)
    if num_ranks is None:
        num_ranks = num_stages // 2 if schedule == "Interleaved1F1B" else num_stages
    from_torch = torch_rank_orders(schedule, num_stages, num_microbatches, num_ranks)
    if from_torch is not None:
        problem = validate_orders(from_torch, num_stages, num_microbatches)
        if problem is None:
            return from_torch, "torch"
        logger.info("torch's %s pipeline_order rejected (%s); using reference", schedule, problem)
    return reference_rank_orders(schedule, num_stages, num_microbatches, num_ranks), "reference"
