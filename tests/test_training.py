"""fxenergy.backend(): torch.compile training steps planned for energy, numerics unchanged."""

from __future__ import annotations

import copy

import torch
from torch import nn

import fxenergy


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.LayerNorm(64), nn.Linear(64, 4))


def _steps(model: nn.Module, compile_backend=None, n: int = 3):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    fwd = torch.compile(model, backend=compile_backend) if compile_backend else model
    step = torch.compile(opt.step, backend=compile_backend) if compile_backend else opt.step
    gen = torch.Generator().manual_seed(1)
    losses, grads = [], []
    for _ in range(n):
        x = torch.randn(16, 32, generator=gen)
        y = torch.randint(0, 4, (16,), generator=gen)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(fwd(x), y)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        step()
        losses.append(loss.detach())
    return losses, grads, [p.detach().clone() for p in model.parameters()]


def test_losses_and_gradients_equal_eager() -> None:
    """Bit-identical to the same graphs compiled without planning (torch's aot_eager), and equal
    to eager mode up to the rounding aot_autograd's own graphs introduce."""
    torch._dynamo.reset()
    eager = _model()
    aot, planned = copy.deepcopy(eager), copy.deepcopy(eager)
    be = fxenergy.backend(
        gpu="A100-SXM4-80GB",
        max_slowdown=0.05,
        runtime="sim",
        time_limit_s=2,
    )
    l_e, g_e, p_e = _steps(eager)
    torch._dynamo.reset()
    l_a, g_a, p_a = _steps(aot, "aot_eager")
    torch._dynamo.reset()
    l_p, g_p, p_p = _steps(planned, be)
    for ref, tol in (((l_a, g_a, p_a), 0.0), ((l_e, g_e, p_e), 1e-5)):
        for a, b in zip(ref[0], l_p, strict=True):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)
        for ga, gb in zip(ref[1], g_p, strict=True):
            for a, b in zip(ga, gb, strict=True):
                torch.testing.assert_close(a, b, rtol=tol, atol=tol)
        for a, b in zip(ref[2], p_p, strict=True):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    kinds = {g.kind for g in be.graphs}
    assert {"forward", "backward"} <= kinds and len(be.graphs) >= 3  # + the optimizer step
    assert all(g.runs and g.runs[-1].simulated for g in be.graphs)
    assert be.cycles and be.graphs[be.cycles[0].sequence[0]].kind == "forward"
    totals = be.totals()
    assert totals["predicted_energy_j"] <= totals["baseline_energy_j"] * (1 + 1e-9)
