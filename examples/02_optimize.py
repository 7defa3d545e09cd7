"""Optimize a model for energy in one call, on a simulated A100 (no GPU needed).

    python examples/02_optimize.py

``fxenergy.optimize`` captures the model, annotates every op's cost, asks the CP-SAT scheduler
for an SM clock per partition within a 2% slowdown budget, and returns a module that runs like
the original. Without a GPU the runtime is the simulator: the numbers are the DVFS model's.
"""

import torch

import fxenergy
from fxenergy.models import get_model

spec = get_model("gpt-tiny")
model = spec.factory().eval()
(tokens,), kwargs = spec.example_inputs(torch.device("cpu"))
tokens = tokens.repeat(16, 1)  # batch 16: enough work for the clocks to matter

opt = fxenergy.optimize(
    model,
    (tokens,),
    gpu="A100-SXM4-80GB",
    max_slowdown=0.02,
    backend="sim",
    switch_latency_s=0.0005,
)
with torch.no_grad():
    assert torch.equal(opt(tokens), model(tokens)), "outputs must be bit-identical"
    opt(tokens)  # steady state: the clock is kept between calls
opt.report()
print(
    f"predicted energy saved: {100 * opt.plan.energy_saving:.2f}% "
    f"at {100 * opt.plan.slowdown:+.2f}% time (simulated)"
)
opt.restore_clocks()
