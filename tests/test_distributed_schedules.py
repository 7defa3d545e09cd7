"""Every torch.distributed.pipelining schedule on 2 gloo ranks (CPU) with a clock plan.

For each of the seven schedules (and a zero-bubble schedule whose Ws the planner re-placed),
each rank trains a tiny model for two steps twice: without fxenergy and with the plan (simulated
frequency backend; the re-placed order loaded into torch's runtime). Two more cases run plans
with clock splits (``split_clocks=True``: some computations switch to a second clock partway),
compared with their schedule's plain run. The parent checks that every rank asked for exactly
its planned (computation, clock) sequence, both clocks of every split included, that the
backend's switch trace is the plan's clock changes, and that the losses equal the plain run's.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from fxenergy.hardware.profiles import read_profile
from fxenergy.pipeline.dag import StageCosts, build_dag
from fxenergy.pipeline.orders import stage_rank
from fxenergy.pipeline.placement import place_weight_gradients
from fxenergy.pipeline.planner import PipelinePlanner
from fxenergy.pipeline.runner import (
    action_label,
    expected_switches,
    rank_plan_from_json,
    rank_splits_from_json,
)
from tests.pipeline_steps import run_steps

DATA = Path(__file__).parent / "data" / "perseus_a100_4stage.csv"
RANKS, MICROBATCHES, STEPS = 2, 4, 2
#: case -> (schedule, stages)
CASES = {
    "GPipe": ("GPipe", 2),
    "1F1B": ("1F1B", 2),
    "Interleaved1F1B": ("Interleaved1F1B", 4),
    "LoopedBFS": ("LoopedBFS", 4),
    "InterleavedZeroBubble": ("InterleavedZeroBubble", 4),
    "ZBVZeroBubble": ("ZBVZeroBubble", 4),
    "DualPipeV": ("DualPipeV", 4),
    "ZBV-placed": ("ZBVZeroBubble", 4),
    "1F1B-split": ("1F1B", 2),
    "IZB-split": ("InterleavedZeroBubble", 4),
}
#: split-clock cases -> the case whose plain run they are compared with (same model and seed)
PLAIN_OF = {"1F1B-split": "1F1B", "IZB-split": "InterleavedZeroBubble"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _plans() -> dict[str, dict]:
    """Per case: the saved plan (``PipelinePlan.to_json()``), as a launcher would ship it."""
    profile = read_profile(DATA)
    out = {}
    for case, (schedule, stages) in CASES.items():
        dag = build_dag(schedule, stages, MICROBATCHES, RANKS)
        costs = StageCosts.from_profile(profile, stages, 83.64, list(range(stages)))
        if case.endswith("-placed"):  # Ws re-placed for durations that leave long gaps
            dur = {c: 1.0 if c[1] != "backward_weight" else 0.1 for c in dag.topological}
            dag = place_weight_gradients(dag, dur)
            assert dag.placed_from is not None
        planner = PipelinePlanner(dag, costs, polish_s=0.0, split_clocks=case in PLAIN_OF)
        plan = planner.plan(planner.all_max_s * 1.05)
        if case in PLAIN_OF:  # at this deadline every rank has split computations
            assert all(plan.rank_splits(r) for r in range(RANKS)), case
        out[case] = plan.to_json()
    return out


def _asked(plan: list, splits: dict) -> list[list]:
    """The ``[label, clock]`` requests of one step: a split's second clock right after its first."""
    out = []
    for c, f in plan:
        out.append([action_label(c), f])
        if c in splits:
            out.append([action_label(c) + "~", splits[c].then_mhz])
    return out


def _changes(asked: list[list], initial: int) -> list[list]:
    """The requests that change the clock: the switch trace a no-op-skipping backend makes."""
    out, current = [], initial
    for label, f in asked:
        if f != current:
            out.append([label, f])
            current = f
    return out


def _schedule(schedule: str, stages: list, loss_fn):
    from fxenergy.pipeline.orders import SINGLE_STAGE, torch_schedule_class

    cls = torch_schedule_class(schedule)
    if schedule in SINGLE_STAGE:
        return cls(stages[0], MICROBATCHES, loss_fn=loss_fn)
    return cls(stages, MICROBATCHES, loss_fn=loss_fn)


def _train(rank: int, case: str, plan: dict | None) -> dict:
    import torch
    from torch.distributed.pipelining import PipelineStage

    from fxenergy.pipeline.placement import load_rank_orders, placed_dag_from_json
    from fxenergy.runtime.factory import get_backend

    schedule, stages = CASES[case]
    torch.manual_seed(0)
    blocks = [torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh()) for _ in range(stages)]
    mine = [i for i in range(stages) if stage_rank(schedule, i, RANKS) == rank]
    pipe = [PipelineStage(blocks[i], i, stages, torch.device("cpu")) for i in mine]
    sched = _schedule(schedule, pipe, torch.nn.MSELoss())
    opt = torch.optim.SGD([p for i in mine for p in blocks[i].parameters()], lr=0.1)
    x, y = torch.randn(8, 8), torch.randn(8, 8)
    backend = get_backend("sim", gpu="A100-SXM4-80GB")
    rank_plan, splits = [], {}
    if plan:
        dag = build_dag(schedule, stages, MICROBATCHES, RANKS)
        rank_plan = rank_plan_from_json(plan, rank, dag.fingerprint)
        splits = rank_splits_from_json(plan, rank, dag.fingerprint)
        placed = placed_dag_from_json(plan, dag)
        if placed is not dag:
            load_rank_orders(sched, placed)
    return run_steps(pipe, sched, rank_plan, opt, backend, (x, y), STEPS, bool(plan), splits)


def _worker(rank: int, port: int, plans: dict, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", rank=rank, world_size=RANKS, init_method=f"tcp://127.0.0.1:{port}"
    )
    try:
        result = {}
        for case in CASES:
            plain = (
                result[PLAIN_OF[case]]["plain"] if case in PLAIN_OF else _train(rank, case, None)
            )
            result[case] = {"plain": plain, "planned": _train(rank, case, plans[case])}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.slow
def test_every_schedule_follows_its_clock_plan(tmp_path):
    import torch.multiprocessing as mp

    plans = _plans()
    mp.spawn(_worker, args=(_free_port(), plans, str(tmp_path)), nprocs=RANKS, join=True)
    changed: list[bool] = []
    for rank in range(RANKS):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for case, (schedule, stages) in CASES.items():
            got, doc = result[case], plans[case]
            plan = rank_plan_from_json(doc, rank, doc["dag_fingerprint"])
            splits = rank_splits_from_json(doc, rank, doc["dag_fingerprint"])
            asked = _asked(plan, splits) * STEPS
            assert got["planned"]["requests"] == asked, (case, rank)
            switches = expected_switches(plan, got["planned"]["initial"], STEPS, splits)
            assert [f for _, f in got["planned"]["trace"]] == switches, (case, rank)
            assert got["planned"]["trace"] == _changes(asked, got["planned"]["initial"])
            assert got["planned"]["losses"] == got["plain"]["losses"], (case, rank)
            if stage_rank(schedule, stages - 1, RANKS) == rank:  # holds the loss
                assert len(got["plain"]["losses"]) == STEPS * MICROBATCHES, case
            if "ZeroBubble" in schedule or schedule == "DualPipeV":  # split backwards ran
                assert {"I", "W"} <= {a[0][1] for a in asked}, case
            if case in PLAIN_OF:  # both clocks of each split were switched to, in order
                assert sum(label.endswith("~") for label, _ in got["planned"]["trace"]) >= STEPS
            changed.append(len(switches) > 0)
    assert sum(changed) >= len(changed) // 2  # the plans do change clocks
    own = build_dag("ZBVZeroBubble", 4, MICROBATCHES, RANKS)
    placed = [[a["action"] for a in r] for r in plans["ZBV-placed"]["ranks"]]
    assert placed != [[action_label(c) for c in o] for o in own.rank_orders]
