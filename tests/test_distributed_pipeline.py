"""A real torch.distributed.pipelining run on 2 gloo ranks (CPU) with a per-rank clock plan.

Each rank trains a tiny model for a few steps twice — without and with the plan (simulated
frequency backend) — and reports its losses, the clocks it asked for, and the backend's switch
trace. The parent checks that every rank ran exactly its planned actions in the planned order,
that the trace is the plan's clock changes, and that the losses are bit-identical.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from fxenergy.hardware.profiles import read_profile
from fxenergy.pipeline.dag import StageCosts, build_dag
from fxenergy.pipeline.planner import PipelinePlanner
from fxenergy.pipeline.runner import action_label, expected_switches, rank_plan_from_json
from tests.pipeline_steps import run_steps

DATA = Path(__file__).parent / "data" / "perseus_a100_4stage.csv"
RANKS, MICROBATCHES, STEPS = 2, 4, 2
CASES = {"1F1B": 2, "Interleaved1F1B": 4}  # schedule -> stages


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _plans() -> dict[str, dict]:
    """Per schedule: the saved plan (``PipelinePlan.to_json()``), as a launcher would ship it."""
    profile = read_profile(DATA)
    out = {}
    for schedule, stages in CASES.items():
        dag = build_dag(schedule, stages, MICROBATCHES, RANKS)
        costs = StageCosts.from_profile(profile, stages, 83.64, list(range(stages)))
        planner = PipelinePlanner(dag, costs, polish_s=0.0)
        plan = planner.plan(planner.shortest_s * 1.05)
        out[schedule] = plan.to_json()
    return out


def _train(rank: int, schedule: str, stages: int, plan: dict | None) -> dict:
    import torch
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleInterleaved1F1B

    from fxenergy.pipeline.runner import rank_plan_from_json
    from fxenergy.runtime.factory import get_backend

    torch.manual_seed(0)
    blocks = [torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh()) for _ in range(stages)]
    mine = list(range(rank, stages, RANKS))
    pipe_stages = [PipelineStage(blocks[i], i, stages, torch.device("cpu")) for i in mine]
    mse = torch.nn.MSELoss()
    if schedule == "1F1B":
        sched = Schedule1F1B(pipe_stages[0], MICROBATCHES, loss_fn=mse)
    else:
        sched = ScheduleInterleaved1F1B(pipe_stages, MICROBATCHES, loss_fn=mse)
    params = [p for i in mine for p in blocks[i].parameters()]
    opt = torch.optim.SGD(params, lr=0.1)
    x, y = torch.randn(8, 8), torch.randn(8, 8)
    backend = get_backend("sim", gpu="A100-SXM4-80GB")
    fingerprint = build_dag(schedule, stages, MICROBATCHES, RANKS).fingerprint
    rank_plan = rank_plan_from_json(plan, rank, fingerprint) if plan else []
    return run_steps(pipe_stages, sched, rank_plan, opt, backend, (x, y), STEPS, bool(plan))


def _worker(rank: int, port: int, plans: dict, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", rank=rank, world_size=RANKS, init_method=f"tcp://127.0.0.1:{port}"
    )
    try:
        result = {}
        for schedule, stages in CASES.items():
            plain = _train(rank, schedule, stages, None)
            planned = _train(rank, schedule, stages, plans[schedule])
            result[schedule] = {"plain": plain, "planned": planned}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.slow
def test_pipeline_ranks_follow_their_clock_plans(tmp_path):
    import torch.multiprocessing as mp

    plans = _plans()
    mp.spawn(_worker, args=(_free_port(), plans, str(tmp_path)), nprocs=RANKS, join=True)
    for rank in range(RANKS):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for schedule in CASES:
            got = result[schedule]
            doc = plans[schedule]
            plan = rank_plan_from_json(doc, rank, doc["dag_fingerprint"])
            asked = [[action_label(c), f] for c, f in plan] * STEPS
            assert got["planned"]["requests"] == asked, (schedule, rank)
            switches = expected_switches(plan, got["planned"]["initial"], STEPS)
            assert [f for _, f in got["planned"]["trace"]] == switches
            assert len(switches) > 0  # the plan does change clocks
            assert got["planned"]["losses"] == got["plain"]["losses"]
            if rank == (CASES[schedule] - 1) % RANKS:  # the rank holding the last stage
                assert len(got["plain"]["losses"]) == STEPS * MICROBATCHES
