"""A training step planned as ONE cycle: simulated steady-state runs equal the cycle's plan."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxenergy
from fxenergy.runtime import restore

GPU = "A100-SXM4-80GB"


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    )


def _block() -> nn.Module:
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    return nn.Sequential(layer, nn.Flatten(), nn.Linear(8 * 32, 10))


def _inputs(name: str, gen: torch.Generator) -> torch.Tensor:
    shape = (4, 3, 8, 8) if name == "cnn" else (4, 8, 32)
    return torch.randn(*shape, generator=gen)


def _train(name: str, latency: float, compile_opt: bool, steps: int = 4, slowdown: float = 0.01):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _cnn() if name == "cnn" else _block()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    be = fxenergy.backend(
        gpu=GPU, max_slowdown=slowdown, runtime="sim", switch_latency_s=latency, time_limit_s=2
    )
    fwd = torch.compile(model, backend=be)
    step = torch.compile(opt.step, backend=be) if compile_opt else opt.step
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = _inputs(name, gen), torch.randint(0, 10, (4,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(fwd(x), y).backward()
        step()
    return be


def _assert_steady_state_equals_plan(be, compile_opt: bool, slowdown: float = 0.01) -> None:
    assert len(be.cycles) == 1, be.events
    cyc = be.cycles[0]
    kinds = [be.graphs[g].kind for g in cyc.sequence]
    assert kinds[:2] == ["forward", "backward"]
    assert ("inference" in kinds) == compile_opt  # the compiled optimizer step is in the cycle
    assert len(cyc.runs) >= 2
    for run in cyc.runs[1:]:  # the first planned run starts from the recording's max clock
        assert run.simulated
        assert run.time_s == pytest.approx(cyc.predicted.time_s, rel=1e-6, abs=0)
        assert run.energy_j == pytest.approx(cyc.predicted.energy_j, rel=1e-6, abs=0)
        assert run.switches == cyc.predicted.switches
        assert run.time_s <= (1 + slowdown) * cyc.baseline.time_s * (1 + 1e-9)
        assert run.energy_j <= cyc.baseline.energy_j * (1 + 1e-9)


@pytest.mark.parametrize("latency", [0.0, 0.010, 0.050])
@pytest.mark.parametrize("compile_opt", [True, False])
def test_cnn_step_runs_equal_the_cycle_plan(latency: float, compile_opt: bool) -> None:
    be = _train("cnn", latency, compile_opt)
    _assert_steady_state_equals_plan(be, compile_opt)
    be.restore_clocks()
    assert be.frequency_backend.current_clock_mhz == max(
        be.frequency_backend.supported_clocks_mhz()
    )
    assert be not in restore.protected()


@pytest.mark.slow
@pytest.mark.parametrize("latency", [0.0, 0.010, 0.050])
@pytest.mark.parametrize("compile_opt", [True, False])
def test_block_step_runs_equal_the_cycle_plan(latency: float, compile_opt: bool) -> None:
    be = _train("block", latency, compile_opt, steps=3)
    _assert_steady_state_equals_plan(be, compile_opt)
    be.restore_clocks()


def test_transformer_block_default_latency() -> None:
    """The fast suite keeps one transformer case at the default switch latency."""
    be = _train("block", fxenergy.hardware.dvfs.DEFAULT_SWITCH_LATENCY_S, True, steps=3)
    _assert_steady_state_equals_plan(be, True)
    be.restore_clocks()


def test_partitions_continue_across_graphs() -> None:
    """With free switches the block's plan switches inside graphs; a graph that starts at the
    clock the previous one ended with pays no switch, so the cycle has fewer switches than
    partitions, and the simulated runs still equal the plan."""
    be = _train("block", 0.0, True, steps=3)
    _assert_steady_state_equals_plan(be, True)
    cyc = be.cycles[0]
    parts = sum(len(p.partitions) for p in cyc.plans)
    assert cyc.predicted.switches > 0
    carried = [
        k
        for k in range(len(cyc.plans))
        if cyc.plans[k].partitions[0].clock_mhz == cyc.plans[k - 1].partitions[-1].clock_mhz
    ]
    assert carried and cyc.predicted.switches == parts - len(carried)
    be.restore_clocks()


def test_clock_carries_between_calls_and_is_restored_on_error() -> None:
    be = _train("cnn", 0.010, True, steps=3, slowdown=0.05)
    sim = be.frequency_backend
    cyc = be.active_cycle
    assert cyc is not None
    last_clock = cyc.plans[-1].partitions[-1].clock_mhz
    assert last_clock != sim.supported_clocks_mhz()[0]  # the plan left the maximum clock
    assert sim.current_clock_mhz == last_clock  # kept between steps, not reset
    assert be in restore.protected()  # ... and restored at exit or on a signal

    def pick(x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return (x * 2)[i]

    bad = torch.compile(pick, backend=be)
    with pytest.raises(IndexError):
        bad(torch.ones(3), torch.tensor([7]))  # fails inside the compiled graph
    assert sim.current_clock_mhz == sim.supported_clocks_mhz()[0]  # restored on the error
    assert be not in restore.protected()
    assert any("raised" in e for e in be.events) and be.active_cycle is None


def test_new_graph_means_record_again_and_a_second_cycle() -> None:
    """Another input shape recompiles: the backend records again and plans a second variant;
    going back to the first shape reuses the first cycle's plan."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    be = fxenergy.backend(gpu=GPU, max_slowdown=0.05, runtime="sim", time_limit_s=2)
    fwd = torch.compile(model, backend=be, dynamic=False)
    for batch in (8, 8, 8, 5, 5, 5, 8, 8):
        fwd(torch.randn(batch, 16)).sum().backward()
    assert len(be.cycles) == 2, be.events
    assert any("recording again" in e for e in be.events)
    assert any("seen again" in e for e in be.events)
    assert be.active_cycle is be.cycles[0]
    be.restore_clocks()


class _Broken(nn.Module):
    """A graph break in forward: two forward graphs and two backward graphs per step."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x).relu()
        torch._dynamo.graph_break()
        return self.b(h)


def test_training_step_with_a_graph_break_is_one_cycle() -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _Broken()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    be = fxenergy.backend(gpu=GPU, max_slowdown=0.01, runtime="sim", time_limit_s=2)
    fwd, step = torch.compile(model, backend=be), torch.compile(opt.step, backend=be)
    for _ in range(4):
        opt.zero_grad()
        fwd(torch.randn(8, 16)).pow(2).mean().backward()
        step()
    cyc = be.cycles[0]
    kinds = [be.graphs[g].kind for g in cyc.sequence]
    assert kinds == ["forward", "forward", "backward", "backward", "inference"]
    assert len(be.cycles) == 1 and len(cyc.runs) >= 2
    for run in cyc.runs[1:]:
        assert run.time_s == pytest.approx(cyc.predicted.time_s, rel=1e-6, abs=0)
        assert run.energy_j == pytest.approx(cyc.predicted.energy_j, rel=1e-6, abs=0)
        assert run.energy_j <= cyc.baseline.energy_j * (1 + 1e-9)
    be.restore_clocks()
