"""Online pipeline pieces in one process: the GPU-boundary hook, detectors, plan selection, and
EnergySchedule on a 1-rank gloo group (profiling, planning, straggler, drift re-profiling)."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import ClassVar

import pytest

from fxenergy.errors import ProfileError
from fxenergy.graph.meta import CostRecord
from fxenergy.hardware.profiles import Profile, ProfileRow
from fxenergy.pipeline.online_plan import FrontierPoint, OnlinePlan, extrapolate_measured
from fxenergy.pipeline.probe import (
    ComputationRecord,
    DriftDetector,
    IterationRecord,
    StragglerDetector,
    noise_threshold,
    profile_rows,
)
from fxenergy.pipeline.runner import ClockPlanHook
from fxenergy.runtime import restore
from fxenergy.runtime.controller import SwitchController
from fxenergy.runtime.sim import SimulatedBackend

GPU = "A100-SXM4-80GB"


@pytest.fixture(autouse=True)
def _clean_restore_state() -> Iterator[None]:
    yield
    restore.uninstall()


class ManualEvent:
    """A CUDA-event stand-in the test completes by hand (the GPU reaching a boundary)."""

    instances: ClassVar[list[ManualEvent]] = []

    def __init__(self) -> None:
        self._done = threading.Event()
        ManualEvent.instances.append(self)

    def record(self) -> None:
        return None

    def query(self) -> bool:
        return self._done.is_set()

    def synchronize(self) -> None:
        assert self._done.wait(10), "test event never completed"

    def complete(self) -> None:
        self._done.set()


class FakeStage:
    stage_index = 0

    def forward_one_chunk(self, mb: int, *args, **kwargs) -> str:
        return f"F{mb}"

    def backward_one_chunk(self, mb: int, *args, **kwargs) -> str:
        return f"B{mb}"


def test_hook_switches_when_the_gpu_reaches_the_boundary():
    backend = SimulatedBackend(GPU)
    ManualEvent.instances.clear()
    controller = SwitchController(backend, threaded=True, event_factory=ManualEvent)
    stage = FakeStage()
    plan = {(0, "forward", 0): 1005, (0, "backward", 0): 1410}
    with ClockPlanHook(stage, plan, backend, controller=controller) as hook:
        assert stage.forward_one_chunk(0) == "F0"  # the host launched it ...
        assert backend.current_clock_mhz == 1410  # ... but the GPU has not reached it yet
        ManualEvent.instances[0].complete()
        for _ in range(200):
            if backend.current_clock_mhz == 1005:
                break
            threading.Event().wait(0.01)
        assert backend.current_clock_mhz == 1005
        assert stage.backward_one_chunk(0) == "B0"
        ManualEvent.instances[1].complete()
    controller.close()
    assert backend.current_clock_mhz == 1410
    assert hook.requests == [("0F0", 1005), ("0B0", 1410)]
    assert "forward_one_chunk" not in stage.__dict__  # unwrapped


def test_hook_restores_the_clock_when_a_computation_raises():
    class Raising(FakeStage):
        def backward_one_chunk(self, mb: int, *args, **kwargs) -> str:
            raise ZeroDivisionError

    backend = SimulatedBackend(GPU)
    stage = Raising()
    plan = {(0, "forward", 0): 1005, (0, "backward", 0): 1005}
    hook = ClockPlanHook(stage, plan, backend, reset_on_exit=False)
    assert not hook.controller.threaded  # CPU: switches at once, in virtual time
    with pytest.raises(ZeroDivisionError), hook:
        stage.forward_one_chunk(0)
        assert backend.current_clock_mhz == 1005
        stage.backward_one_chunk(0)
    assert backend.current_clock_mhz == 1410


def _iteration(
    times: list[float], clock: int = 1410, energy: float | None = 1.0
) -> IterationRecord:
    rec = IterationRecord(0, "profile")
    for mb, t in enumerate(times):
        e = math.nan if energy is None else energy * t
        rec.computations.append(ComputationRecord(f"0F{mb}", clock, t, e))
    rec.wall_s = sum(times)
    return rec


def test_noise_threshold_and_drift_detector():
    steady = [_iteration([0.05] * 8) for _ in range(2)]
    assert noise_threshold(steady) == pytest.approx(0.05)  # no noise: the floor
    noisy = [_iteration([0.045, 0.075, 0.06, 0.05, 0.07, 0.055, 0.065, 0.06]) for _ in range(2)]
    threshold = noise_threshold(noisy)
    assert 0.1 < threshold < 0.3  # issue 10's throttled 45-75 ms forward: ~3 standard errors
    drift = DriftDetector(threshold, patience=2)
    predicted = {(0, "forward", 1410): 0.06}
    assert not drift.update(_iteration([0.0657] * 8), predicted)  # 9.5 % off: anchored
    assert not drift.update(_iteration([0.0657] * 8), predicted)  # a steady offset: no drift
    assert drift.anchors == {(0, "forward", 1410): pytest.approx(0.0657)}
    assert not drift.update(_iteration([0.09] * 8), predicted)  # one step is not a drift
    assert drift.update(_iteration([0.09] * 8), predicted)
    assert drift.last_drift == pytest.approx(0.09 / 0.0657 - 1)


def test_profile_rows_split_a_whole_step_counter_by_time():
    rec = _iteration([0.1, 0.1], energy=None)
    rec.wall_s, rec.energy_j = 0.3, 2 * 0.1 * 300 + 0.1 * 80  # 300 W computing, 80 W blocked
    (row,) = profile_rows([rec], 1410, blocked_power_w=80)
    assert row == ProfileRow(0, "forward", 1410, 0.1, pytest.approx(30.0))


def test_straggler_detector_has_hysteresis():
    det = StragglerDetector(0.05, patience=2)
    assert det.update(0.001, 1.0, 1.0) == 0  # the latency
    assert det.update(0.301, 1.0, 1.0) == 0
    assert det.update(0.301, 1.0, 1.0) == pytest.approx(0.3)
    assert det.update(0.001, 1.3, 1.0) == pytest.approx(0.3)  # we stretched: peer still 1.3 s
    assert det.update(0.001, 1.0, 1.0) == 0


def test_online_plan_selects_least_effective_energy_within_the_straggler_time():
    a, b, c = ({(0, "forward", 0): f} for f in (1410, 1200, 1005))
    plan = OnlinePlan(
        FrontierPoint(1.0, 100.0, a),
        (FrontierPoint(1.1, 90.0, b), FrontierPoint(1.3, 80.0, c)),
        {},
        {},
    )
    assert plan.select(None) == ("planned", plan.steady)
    assert plan.select(1.2)[1].freqs_mhz == b
    assert plan.select(2.0)[1].freqs_mhz == c


def test_extrapolation_from_another_reference_clock_is_refused_or_passed_on():
    rows = (ProfileRow(0, "forward", 1410, 0.05, 20.0), ProfileRow(0, "backward", 1410, 0.1, 40.0))
    full = extrapolate_measured(Profile(rows), GPU, 1410)
    assert len(full.clocks_mhz()) > 50
    low = tuple(ProfileRow(r.stage, r.instruction, 1200, r.time_s, r.energy_j) for r in rows)
    import inspect

    from fxenergy.hardware.extrapolate import extrapolate_profile

    if "reference_mhz" in inspect.signature(extrapolate_profile).parameters:
        assert extrapolate_measured(Profile(low), GPU, 1200).clocks_mhz() == full.clocks_mhz()
    else:
        with pytest.raises(ProfileError, match="max clock"):
            extrapolate_measured(Profile(low), GPU, 1200)


# --- EnergySchedule on one rank --------------------------------------------------------------
def _cost(gflop: float) -> CostRecord:
    flops = int(gflop * 1e9)
    return CostRecord(flops, flops // 2, int(1e9), int(5e8), "bfloat16", (), (), 100, flops)


@pytest.fixture
def one_rank(tmp_path):
    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1, timeout=timedelta(60))
    yield
    dist.destroy_process_group()


def _one_rank_schedule():
    import torch
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    torch.manual_seed(0)
    stage = PipelineStage(torch.nn.Linear(4, 4), 0, 1, torch.device("cpu"))
    return ScheduleGPipe(stage, 4, loss_fn=torch.nn.MSELoss())


def test_energy_schedule_on_one_rank(one_rank, tmp_path):
    import torch

    from fxenergy.pipeline import energy_schedule

    cost = {"scale": 1.0}
    costs = lambda s, kind, mb: _cost(cost["scale"] * (8000 if kind == "forward" else 16000))  # noqa: E731
    backend = SimulatedBackend(GPU)
    sched = energy_schedule(
        _one_rank_schedule(), gpu=GPU, backend=backend, sim_costs=costs, profile_iters=2,
        frontier_points=8, save_dir=tmp_path / "run", max_refines=0,
    )  # fmt: skip
    assert any(r is sched for r in restore.protected())
    x, y = torch.randn(8, 4), torch.randn(8, 4)
    phases = []
    for step in range(10):
        if step == 3:
            sched.set_straggler(0.5)  # one rank: all the slack there is
        if step == 5:
            sched.set_straggler(None)
            cost["scale"] = 1.5  # the computations got slower than the plan predicts
        sched.step(x, target=y)
        phases.append(sched.records[-1].phase)
    assert phases[:5] == ["profile", "profile", "planned", "straggler", "straggler"]
    assert phases[5:] == ["planned", "planned", "reprofile", "reprofile", "planned"]
    straggler_clocks = {c for _, c in sched.hook.requests[8:16]}  # step 3's 8 computations
    assert max(straggler_clocks) < 1410  # the straggler plan slows this rank down
    assert {c for _, c in sched.hook.requests[-24:-8]} == {1410}  # re-profiled at the reference
    slower = backend.model.time_s(_cost(1.5 * 8000), 1410)
    assert sched.plan.predicted_s[(0, "forward", 1410)] == pytest.approx(slower)  # new profile
    sched.close()
    assert backend.current_clock_mhz == 1410
    assert not any(r is sched for r in restore.protected())
    assert (tmp_path / "run" / "rank0.json").exists() and (tmp_path / "run" / "run.json").exists()


def test_energy_schedule_needs_costs_on_the_simulator(one_rank):
    from fxenergy.pipeline import energy_schedule
    from fxenergy.pipeline.probe import OnlineProfileError

    with pytest.raises(OnlineProfileError, match="sim_costs"):
        energy_schedule(_one_rank_schedule(), gpu=GPU, backend=SimulatedBackend(GPU))
    with pytest.raises(Exception, match="pipelining schedule"):
        energy_schedule(SimpleNamespace(), gpu=GPU)
    from fxenergy.runtime.sim import NullBackend

    with pytest.raises(OnlineProfileError, match="energy counter"):
        energy_schedule(_one_rank_schedule(), gpu=GPU, backend=NullBackend(GPU))


def _profile_and_dag():
    from fxenergy.hardware.dvfs import get_dvfs_model
    from fxenergy.pipeline.dag import build_dag

    model = get_dvfs_model(GPU)
    rows = []
    for s in range(4):
        for kind, g in (("forward", 8000), ("backward", 16000)):
            c = _cost(g * (1.5 if s == 1 else 1.0))
            rows.append(ProfileRow(s, kind, 1410, model.time_s(c, 1410), model.energy_j(c, 1410)))
    return Profile(tuple(rows)), build_dag("1F1B", 4, 8)


def test_plan_online_without_switch_cost_is_the_planners_plan():
    from fxenergy.pipeline.dag import StageCosts
    from fxenergy.pipeline.online_plan import plan_online
    from fxenergy.pipeline.planner import PipelinePlanner

    profile, dag = _profile_and_dag()
    online = plan_online(profile, dag, GPU, 1410, 83.64, 0.01, 4)
    costs = StageCosts.from_profile(extrapolate_measured(profile, GPU, 1410), 4, 83.64)
    planner = PipelinePlanner(dag, costs, polish_s=0.0)
    plan = planner.plan(planner.all_max_s * 1.01)  # budgets: from all-max
    assert online.steady.freqs_mhz == plan.freqs_mhz
    assert online.summary["ranks"] == plan.to_json()["ranks"]


def test_reduce_switches_meets_the_deadline_with_windows():
    from fxenergy.pipeline.dag import StageCosts
    from fxenergy.pipeline.planner import PipelinePlanner
    from fxenergy.pipeline.switch_aware import switched_evaluation
    from fxenergy.pipeline.switch_fit import reduce_switches

    profile, dag = _profile_and_dag()
    costs = StageCosts.from_profile(extrapolate_measured(profile, GPU, 1410), 4, 83.64)
    planner = PipelinePlanner(dag, costs, polish_s=0.0)
    deadline = planner.all_max_s * 1.01
    plan = planner.plan(deadline).freqs_mhz
    assert reduce_switches(dag, costs, plan, deadline, 0.0) == plan  # free switches
    assert switched_evaluation(dag, costs, plan, 0.0)[0] <= deadline
    t0, _ = switched_evaluation(dag, costs, plan, 0.05)
    assert t0 > deadline  # 50 ms windows push the planned iteration past its deadline
    merged = reduce_switches(dag, costs, plan, deadline, 0.05)
    t1, e1 = switched_evaluation(dag, costs, merged, 0.05)
    top = switched_evaluation(dag, costs, planner.fastest, 0.05)
    assert t1 <= deadline and e1 < top[1]  # on time, and still saving


def test_switched_evaluation_is_what_the_simulator_charges():
    """Every rank's clock sequence run on the simulated GPU (late switches at each boundary, a
    second iteration so the clock starts where the first left it) costs what the model says."""
    from fxenergy.hardware.dvfs import get_dvfs_model
    from fxenergy.pipeline.dag import StageCosts, build_dag
    from fxenergy.pipeline.switch_aware import rank_windows, switched_evaluation

    latency, blocked = 0.01, 83.64
    model = get_dvfs_model(GPU)
    dag = build_dag("Interleaved1F1B", 8, 8, 4)
    cost = {(s, k): _cost(g * (1.5 if s == 3 else 1.0)) for s in range(8)
            for k, g in (("forward", 4000), ("backward", 8000))}  # fmt: skip
    rows = [ProfileRow(s, k, f, model.time_s(c, f), model.energy_j(c, f))
            for (s, k), c in cost.items() for f in model.clocks_mhz()]  # fmt: skip
    costs = StageCosts.from_profile(Profile(tuple(rows)), 8, blocked)
    clocks = (1410, 1200, 990, 855)
    freqs = {c: clocks[(c[0] + c[2]) % 4] for c in dag.topological}  # switches everywhere
    dur, energy = {}, 0.0
    for order in dag.rank_orders:
        gpu = SimulatedBackend(GPU, latency)
        for it in range(2):
            t_it, e_it = gpu.now_s(), gpu.energy_j()
            for c in order:
                t0, e0 = gpu.now_s(), gpu.energy_j()
                gpu.set_clock(freqs[c])
                gpu.execute(cost[(c[0], c[1])])
                dur[c], e = gpu.now_s() - t0, gpu.energy_j() - e0
                energy += e if it else 0.0
        windows = rank_windows(order, costs, freqs, latency)
        compute = [costs.option(c, freqs[c]) for c in order]
        assert gpu.now_s() - t_it == pytest.approx(sum(o.time_s for o in compute) + windows[0])
        assert gpu.energy_j() - e_it == pytest.approx(sum(o.energy_j for o in compute) + windows[1])
    finish: dict = {}
    for c in dag.topological:
        finish[c] = max((finish[p] for p in dag.predecessors[c]), default=0.0) + dur[c]
    span = max(finish.values())
    total = energy + blocked * sum(span - sum(dur[c] for c in o) for o in dag.rank_orders)
    assert switched_evaluation(dag, costs, freqs, latency) == pytest.approx((span, total))
