"""optimize() on models torch.compile splits into several graphs (issue 15)."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console
from torch import nn

import fxenergy
from fxenergy.errors import CaptureError
from fxenergy.graph.capture import capture
from fxenergy.training.graphs import OptimizedGraphs


class _Branchy(nn.Module):
    """A data-dependent Python branch: no single graph can hold both sides."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(16, 32), nn.Linear(32, 16), nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x).relu()
        if x.sum() > 0:
            return self.b(h).tanh()
        return self.c(h) * 2


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x).sigmoid()
        if x.mean() > 0.5:  # the data decides, in every iteration of the loop below
            x = x - 0.1
        return x


class _LoopBreak(nn.Module):
    """A graph break inside a loop (in the loop body's module): one graph per piece."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Block() for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class _LoopBreakInFrame(nn.Module):
    """A break right in the loop of forward(): dynamo skips the whole frame (runs it eagerly)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(16, 16) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x).sigmoid()
            if x.mean() > 0.5:
                x = x - 0.1
        return x


def _check_steady(opt: OptimizedGraphs, slowdown: float = 0.01) -> None:
    cyc = opt.energy.active_cycle
    assert cyc is not None and opt.last_run is not None
    run = opt.last_run
    assert run.time_s == pytest.approx(cyc.predicted.time_s, rel=1e-6, abs=0)
    assert run.energy_j == pytest.approx(cyc.predicted.energy_j, rel=1e-6, abs=0)
    assert run.time_s <= (1 + slowdown) * cyc.baseline.time_s * (1 + 1e-9)
    assert run.energy_j <= cyc.baseline.energy_j * (1 + 1e-9)


def test_data_dependent_branch_optimizes_bit_identical(capfd) -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _Branchy().eval()
    opt = fxenergy.optimize(model, (torch.randn(4, 16),), backend="sim", time_limit_s=2)
    assert isinstance(opt, OptimizedGraphs)
    assert "could not capture" in opt.capture_error
    for sign in (1.0, -1.0):
        for batch in (4, 7):
            x = sign * torch.rand(batch, 16)
            with torch.no_grad():
                ref = model(x)
                outs = [opt(x) for _ in range(3)]  # record, plan's first run, steady
            for out in outs:
                assert torch.equal(out, ref)
            _check_steady(opt)
    # both branches at both batch sizes under no_grad (+ the grad-mode variant optimize ran)
    assert len(opt.energy.cycles) >= 4
    err = capfd.readouterr().err
    assert "def forward" not in err and "Warning" not in err  # capture noise stays in the log
    text = io.StringIO()
    opt.report(console=Console(file=text, width=200))
    report = text.getvalue()
    assert "ran as 2 graphs" in report and "test_graph_breaks.py" in report
    assert "Python branch on a tensor" in report and "not planned" in report
    opt.restore_clocks()


def test_break_inside_a_loop_and_a_recompile() -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _LoopBreak().eval()
    x = torch.randn(4, 16)
    with torch.no_grad():  # the variant optimize() records is the one called below
        opt = fxenergy.optimize(
            model, (x,), backend="sim", switch_latency_s=0.0, max_slowdown=0.05, time_limit_s=2
        )
    assert isinstance(opt, OptimizedGraphs)
    first = opt.energy.active_cycle
    assert first is not None and len(first.sequence) >= 3  # pieces of three iterations
    with torch.no_grad():
        for _ in range(2):
            assert torch.equal(opt(x), model(x))
        _check_steady(opt, 0.05)
        y = torch.randn(9, 16)  # another shape: recompiled, recorded and planned on first sight
        assert torch.equal(opt(y), model(y))
        assert opt.energy.active_cycle is not first and len(opt.energy.cycles) == 2
        for _ in range(2):
            assert torch.equal(opt(y), model(y))
        _check_steady(opt, 0.05)
        opt(x)  # back to the first shape: its plan is reused
    assert opt.energy.active_cycle is first
    assert any("seen again" in e for e in opt.energy.events)
    opt.restore_clocks()


def test_frame_dynamo_skips_runs_eagerly_and_says_so() -> None:
    torch._dynamo.reset()
    model = _LoopBreakInFrame().eval()
    x = torch.randn(4, 16)
    opt = fxenergy.optimize(model, (x,), backend="sim", time_limit_s=2)
    assert isinstance(opt, OptimizedGraphs)
    with torch.no_grad():
        assert torch.equal(opt(x), model(x))
    assert opt.energy.active_cycle is None
    assert any("no graph" in line for line in opt.break_lines())
    assert opt.plan.plans == ()


def test_capture_error_names_the_log_and_keeps_the_terminal_clean(capfd) -> None:
    with pytest.raises(CaptureError, match="fxenergy-capture-") as info:
        capture(_Branchy().eval(), (torch.randn(4, 16),), method="export")
    assert "GuardOnDataDependent" in str(info.value) or "data" in str(info.value).lower()
    assert capfd.readouterr().err == ""


@pytest.mark.slow
def test_longformer_optimizes_bit_identical() -> None:
    transformers = pytest.importorskip("transformers")
    torch._dynamo.reset()
    cfg = transformers.LongformerConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, attention_window=[8, 8], max_position_embeddings=130,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LongformerModel(cfg).eval()
    gen = torch.Generator().manual_seed(0)

    def inputs(length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.randint(0, 100, (1, length), generator=gen)
        mask = torch.ones(1, length, dtype=torch.long)
        mask[:, 0] = 2  # a global token: the .any().item() branch of Longformer's forward
        return ids, mask

    ids, mask = inputs(32)
    opt = fxenergy.optimize(model, (ids,), {"attention_mask": mask}, backend="sim", time_limit_s=2)
    assert isinstance(opt, OptimizedGraphs) and opt.graph_count > 1
    for length in (32, 48):
        ids, mask = inputs(length)
        with torch.no_grad():
            ref = model(ids, attention_mask=mask).last_hidden_state
            for _ in range(3):
                out = opt(ids, attention_mask=mask).last_hidden_state
                assert torch.equal(out, ref)
        _check_steady(opt)
    assert any("modeling_longformer.py" in line for line in opt.break_lines())
    opt.restore_clocks()
