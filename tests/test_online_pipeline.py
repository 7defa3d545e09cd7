"""EnergySchedule on 4 gloo ranks (CPU, simulated GPU): profile online, plan, straggler, failure.

Every rank trains a tiny model with a torch pipeline schedule twice — plain and wrapped by
``energy_schedule`` — with one stage made heavier on the simulated GPU. The parent checks, from
the run record each wrapped run saved and from what each rank asked its backend:

- the plan is refined by its own measurements (each computation's second profile point, at its
  planned clock) until the simulated iteration keeps the deadline: the steady iterations are
  within ``max_slowdown`` of the all-max (profiling) ones as *measured*, not only as predicted;
- after that every rank runs the plan the offline path (``plan_online``, what
  ``fxenergy pipeline --from-run`` runs) makes for the saved (refined) profile;
- the simulated energy saved vs the all-max-clock (profiling) steps is within 0.5 pp of what
  the offline plan saves on the same simulated GPU (clock-switch windows included);
- the losses are bit-identical to the plain schedule's;
- a straggler set after step N is followed by the frontier plan for the longer iteration at N+1;
- when one rank raises mid-run, every rank ends with its clock restored.
"""

from __future__ import annotations

import json
import socket
from datetime import timedelta
from pathlib import Path

import pytest

from fxenergy.graph.meta import CostRecord
from fxenergy.hardware.profiles import read_profile
from fxenergy.pipeline.dag import build_dag
from fxenergy.pipeline.online_plan import RunRecord, phase_means, plan_online
from fxenergy.pipeline.runner import action_label
from fxenergy.runtime.sim import SimulatedBackend

GPU, RANKS, MICROBATCHES, SLOWDOWN, POINTS = "A100-SXM4-80GB", 4, 8, 0.01, 12
PROFILE_STEPS, STEADY_STEPS, STRAGGLER_S, REFINES, REFINE_STEPS = 2, 2, 0.25, 3, 2
#: Most steps a run takes: profiling, every plan judged (at most 1 + REFINES), steady, straggler.
MAX_STEPS = PROFILE_STEPS + (1 + REFINES) * REFINE_STEPS + STEADY_STEPS + 1
CASES = {"1F1B": (4, 1), "Interleaved1F1B": (8, 3)}  # schedule -> (stages, heavy stage)
FAIL_RANK, FAIL_STEP = 2, 3


def _cost(gflop: float) -> CostRecord:
    flops = int(gflop * 1e9)
    return CostRecord(flops, flops // 2, int(1e9), int(5e8), "bfloat16", (), (), 100, flops)


def sim_costs(stages: int, heavy: int) -> dict:
    """Per (stage, kind): forward 8 TFLOP, backward twice that; the heavy stage 1.5x."""
    out = {}
    for s in range(stages):
        scale = (1.5 if s == heavy else 1.0) * 8000 / (stages // RANKS)
        out[(s, "forward")] = _cost(scale)
        out[(s, "backward")] = _cost(2 * scale)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build(rank: int, schedule: str, stages: int, fail_after: int | None = None):
    import torch
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleInterleaved1F1B

    torch.manual_seed(0)
    blocks = [torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh()) for _ in range(stages)]
    if fail_after is not None:
        blocks[rank] = _Faulty(blocks[rank], fail_after)
    mine = list(range(rank, stages, RANKS))
    pipe = [PipelineStage(blocks[i], i, stages, torch.device("cpu")) for i in mine]
    mse = torch.nn.MSELoss()
    if schedule == "1F1B":
        sched = Schedule1F1B(pipe[0], MICROBATCHES, loss_fn=mse)
    else:
        sched = ScheduleInterleaved1F1B(pipe, MICROBATCHES, loss_fn=mse)
    opt = torch.optim.SGD([p for i in mine for p in blocks[i].parameters()], lr=0.1)
    return sched, opt


class _Faulty:
    """A stage module that raises on its ``fail_after``-th forward call."""

    def __new__(cls, inner, fail_after: int):
        import torch

        class Faulty(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner, self.calls = inner, 0

            def forward(self, x):
                self.calls += 1
                if self.calls > fail_after:
                    raise RuntimeError("injected failure")
                return self.inner(x)

        return Faulty()


def _train(rank: int, schedule: str, stages: int, heavy: int, run_dir: str | None) -> dict:
    import torch

    from fxenergy.pipeline import energy_schedule
    from fxenergy.runtime.factory import get_backend

    sched, opt = _build(rank, schedule, stages)
    x, y = torch.randn(16, 8, generator=torch.Generator().manual_seed(1)), torch.randn(16, 8)
    backend = get_backend("sim", gpu=GPU)
    if run_dir is not None:
        sched = energy_schedule(
            sched, gpu=GPU, max_slowdown=SLOWDOWN, backend=backend,
            sim_costs=sim_costs(stages, heavy), profile_iters=PROFILE_STEPS,
            frontier_points=POINTS, save_dir=run_dir, max_refines=REFINES,
            refine_iters=REFINE_STEPS,
        )  # fmt: skip
    losses, asked, phases, steady = [], [], [], 0
    for _ in range(MAX_STEPS):
        if run_dir is not None:
            if steady == STEADY_STEPS:
                sched.set_straggler(STRAGGLER_S)  # after step N, the last steady one
        before = len(sched.hook.requests) if run_dir is not None else 0
        opt.zero_grad()
        step_losses: list = []
        sched.step(x, target=y, losses=step_losses)
        opt.step()
        losses += [float(v.detach()) for v in step_losses]
        if run_dir is not None:
            asked.append(sched.hook.requests[before:])
            phases.append(sched.records[-1].phase)
            steady += phases[-1] == "planned"
            if phases[-1] == "straggler":
                break
    if run_dir is not None:
        sched.close()
    return {"losses": losses, "asked": asked, "phases": phases}


def _fail(rank: int) -> dict:
    """1F1B where rank FAIL_RANK's stage raises in step FAIL_STEP; what each rank's clock is."""
    import torch

    from fxenergy.pipeline import energy_schedule
    from fxenergy.runtime import restore
    from fxenergy.runtime.factory import get_backend

    fail_after = MICROBATCHES * FAIL_STEP if rank == FAIL_RANK else None
    sched, _ = _build(rank, "1F1B", 4, fail_after)
    backend = get_backend("sim", gpu=GPU)
    sched = energy_schedule(
        sched, gpu=GPU, max_slowdown=0.05, backend=backend, sim_costs=sim_costs(4, 1),
        profile_iters=1, frontier_points=0, max_refines=0,
    )  # fmt: skip
    x, y = torch.randn(16, 8), torch.randn(16, 8)
    error = ""
    try:
        for _ in range(FAIL_STEP + 2):
            sched.step(x, target=y)
    except Exception as exc:
        error = type(exc).__name__
    return {
        "error": error,
        "switched": len(backend.trace),
        "clock": backend.current_clock_mhz,
        "max": backend.supported_clocks_mhz()[0],
        "still_protected": any(r is sched for r in restore.protected()),
    }


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # forked ranks: no intra-op thread pool

    dist.init_process_group(
        "gloo", rank=rank, world_size=RANKS, init_method=f"tcp://127.0.0.1:{port}",
        timeout=timedelta(seconds=60),
    )  # fmt: skip
    result: dict = {}
    for schedule, (stages, heavy) in CASES.items():
        run_dir = str(Path(out_dir, schedule))
        result[schedule] = {
            "plain": _train(rank, schedule, stages, heavy, None),
            "energy": _train(rank, schedule, stages, heavy, run_dir),
        }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    Path(out_dir, f"fail{rank}.json").write_text(json.dumps(_fail(rank)))
    # no destroy_process_group: a peer that failed has left, and the exit closes the sockets


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import torch.distributed.pipelining  # noqa: F401  (imported once, before the fork)
    import torch.multiprocessing as mp

    import fxenergy.schedule.cpsat.pipeline  # noqa: F401  (rank 0 plans with it)

    out = tmp_path_factory.mktemp("online")
    # fork: the ranks inherit the imported modules (spawn re-imports torch in each, ~10 s here)
    mp.start_processes(
        _worker, args=(_free_port(), str(out)), nprocs=RANKS, join=True, start_method="fork"
    )
    return out


def _offline(run_dir: Path, schedule: str, stages: int):
    """The offline planning path (``plan_online``, as ``--from-run`` uses) on the saved profile."""
    meta = json.loads((run_dir / "run.json").read_text())
    dag = build_dag(schedule, stages, MICROBATCHES, RANKS)
    plan = plan_online(
        read_profile(run_dir / "profile.csv"), dag, GPU, 1410, meta["blocked_power_w"],
        SLOWDOWN, POINTS, 0.0, meta["switch_latency_s"],
    )  # fmt: skip
    return dag, plan


def _simulate(dag, freqs, stages: int, heavy: int, blocked_w: float) -> tuple[float, float]:
    """Mean (time, energy) of ``STEADY_STEPS`` iterations of ``freqs`` on the simulated GPU,
    after one more of them (the last refinement steps ran the plan kept), switch windows included.

    Each rank's simulated GPU runs its computations in order (so an iteration starts at the last
    clock of the one before); computations
    then start as soon as the DAG allows and blocked time is charged at ``blocked_w``
    (communication free) — independent of online code.
    """
    costs = sim_costs(stages, heavy)
    gpus = [SimulatedBackend(GPU) for _ in dag.rank_orders]
    times, energies = [], []
    for it in range(1 + STEADY_STEPS):
        dur, energy = {}, 0.0
        for order, gpu in zip(dag.rank_orders, gpus, strict=True):
            for c in order:
                t0, e0 = gpu.now_s(), gpu.energy_j()
                gpu.set_clock(freqs[c])
                gpu.execute(costs[(c[0], c[1])])
                dur[c] = gpu.now_s() - t0
                energy += gpu.energy_j() - e0
        finish: dict = {}
        for c in dag.topological:
            finish[c] = max((finish[p] for p in dag.predecessors[c]), default=0.0) + dur[c]
        span = max(finish.values())
        busy = sum(span - sum(dur[c] for c in order) for order in dag.rank_orders)
        if it:
            times.append(span)
            energies.append(energy + blocked_w * busy)
    return sum(times) / len(times), sum(energies) / len(energies)


@pytest.mark.distributed
@pytest.mark.parametrize("schedule", list(CASES))
def test_online_plan_matches_offline(runs, schedule):
    stages, heavy = CASES[schedule]
    run_dir = runs / schedule
    dag, offline = _offline(run_dir, schedule, stages)
    steady = offline.steady.freqs_mhz
    phase, point = offline.select(offline.steady.iteration_time_s + STRAGGLER_S)
    straggler = point.freqs_mhz
    assert phase == "straggler" and straggler != steady  # the straggler plan is another plan
    ranks = [json.loads((runs / f"rank{r}.json").read_text())[schedule] for r in range(RANKS)]
    phases = ranks[0]["energy"]["phases"]
    refining = phases.count("refine")
    assert phases == ["profile"] * PROFILE_STEPS + ["refine"] * refining + [
        "planned"
    ] * STEADY_STEPS + ["straggler"]
    assert refining % REFINE_STEPS == 0 and 0 < refining <= (1 + REFINES) * REFINE_STEPS
    first_steady = PROFILE_STEPS + refining
    for rank, got in enumerate(ranks):
        assert got["energy"]["phases"] == phases  # every rank changes plan at the same step
        plain = got["plain"]["losses"]
        assert got["energy"]["losses"] == plain[: len(got["energy"]["losses"])]
        asked = got["energy"]["asked"]
        assert all(a == [] for a in asked[:PROFILE_STEPS])  # profiling: clocks untouched
        mine = [[action_label(c), steady[c]] for c in dag.rank_orders[rank]]
        for step in range(first_steady, len(phases) - 1):
            assert asked[step] == mine, (rank, step)
        last = [[action_label(c), straggler[c]] for c in dag.rank_orders[rank]]
        assert asked[-1] == last
    run = RunRecord.load(run_dir)
    log = run.meta["refinement"]
    assert [e["verdict"] for e in log] == ["replan"] * (len(log) - 1) + ["keep"]
    assert len(log) == refining // REFINE_STEPS
    t_max, e_max, n_max = phase_means(run, "profile")
    t_plan, e_plan, n_plan = phase_means(run, "planned")
    assert (n_max, n_plan) == (PROFILE_STEPS, STEADY_STEPS)
    blocked = run.meta["blocked_power_w"]
    t_off, e_off = _simulate(dag, steady, stages, heavy, blocked)
    t_top, e_top = _simulate(dag, dict.fromkeys(dag.topological, 1410), stages, heavy, blocked)
    assert t_max == pytest.approx(t_top, rel=1e-9) and e_max == pytest.approx(e_top, rel=1e-9)
    assert t_plan == pytest.approx(t_off, rel=1e-6)
    saved, offline_saved = 1 - e_plan / e_max, 1 - e_off / e_top
    assert abs(saved - offline_saved) <= 0.005, (saved, offline_saved)
    assert saved > 0.05  # the plan does save (simulated), switch windows included
    # the deadline, as measured: the steady iterations on the simulated GPU, not the prediction
    assert t_plan <= t_max * (1 + SLOWDOWN) * (1 + 1e-9), (t_plan / t_max - 1, log)
    assert log[-1]["measured_s"] == pytest.approx(t_plan, rel=1e-9)


@pytest.mark.distributed
def test_failure_on_one_rank_restores_every_rank(runs):
    got = [json.loads((runs / f"fail{rank}.json").read_text()) for rank in range(RANKS)]
    assert all(g["error"] for g in got)  # every rank's step raised (the failing one, its peers)
    assert sum(g["switched"] > 0 for g in got) >= 2  # the plan had changed clocks
    assert all(g["clock"] == g["max"] for g in got)  # and every one is back
    assert not any(g["still_protected"] for g in got)


@pytest.mark.distributed
def test_from_run_replans_and_reports(runs, tmp_path, capsys):
    from fxenergy.cli import main

    out = tmp_path / "plan.json"
    assert main(["pipeline", "--from-run", str(runs / "1F1B"), "--out", str(out)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "the same plan the run made" in text and "SIMULATED" in text
    saved = json.loads((runs / "1F1B" / "run.json").read_text())["plan"]
    assert json.loads(out.read_text())["ranks"] == saved["ranks"]
    assert main(["pipeline", "--from-run", str(tmp_path)]) == 1  # no run there: one-line error


def _dp_worker(rank: int, port: int, out_dir: str) -> None:
    """2 pipelines x 2 stages; pipeline B (ranks 2, 3) is slower in wall time by DELAY_S."""
    import time

    import torch
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B

    from fxenergy.pipeline import energy_schedule
    from fxenergy.runtime.factory import get_backend

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=4, init_method=f"tcp://127.0.0.1:{port}",
        timeout=timedelta(seconds=60),
    )  # fmt: skip
    pipes = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    dps = [dist.new_group([0, 2]), dist.new_group([1, 3])]
    stage_index, slow = rank % 2, rank >= 2
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh())
    stage = PipelineStage(block, stage_index, 2, torch.device("cpu"), group=pipes[rank // 2])
    sched = energy_schedule(
        Schedule1F1B(stage, 4, loss_fn=torch.nn.MSELoss()), gpu=GPU, max_slowdown=0.0,
        backend=get_backend("sim", gpu=GPU), sim_costs=sim_costs(4, 1), profile_iters=1,
        frontier_points=6, dp_group=dps[stage_index],
    )  # fmt: skip
    x, y = torch.randn(8, 8), torch.randn(8, 8)
    for _ in range(7):
        sched.step(x, target=y)
        if slow:
            time.sleep(DELAY_S)  # the straggler pipeline's longer iteration
    phases = [r.phase for r in sched.records]
    sched.close()
    Path(out_dir, f"dp{rank}.json").write_text(json.dumps({"phases": phases}))


DELAY_S = 0.5


@pytest.mark.distributed
def test_data_parallel_peer_wait_selects_the_straggler_plan(tmp_path):
    import torch.multiprocessing as mp

    args = (_free_port(), str(tmp_path))
    mp.start_processes(_dp_worker, args=args, nprocs=4, join=True, start_method="fork")
    for rank in (0, 1):  # the fast pipeline: its ranks wait on their slow peers
        phases = json.loads((tmp_path / f"dp{rank}.json").read_text())["phases"]
        assert phases[0] == "profile" and phases[1] in ("refine", "planned")
        assert phases[-1] == "straggler", phases
