"""Plan a training loop with the torch.compile backend (forward, backward and AdamW step).

    python examples/04_training.py

The backend records the graphs of the first step at the maximum clock, then plans the forward,
backward and optimizer-step graphs as ONE cycle (the clock carries from graph to graph and from
step to step) and applies that plan from the second step on. Losses equal the unplanned compiled
run bit for bit. Every number printed is SIMULATED (the DVFS model) unless a GPU with NVML is used.
"""

import torch
from torch import nn

import fxenergy

torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 16, 3, padding=1),
    nn.BatchNorm2d(16),
    nn.ReLU(),
    nn.Flatten(),
    nn.Linear(16 * 16 * 16, 10),
)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
be = fxenergy.backend(gpu="A100-SXM4-80GB", max_slowdown=0.01, runtime="sim")  # default latency
step_fwd = torch.compile(model, backend=be)
opt_step = torch.compile(opt.step, backend=be)

for i in range(4):
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    opt.zero_grad()
    loss = nn.functional.cross_entropy(step_fwd(x), y)
    loss.backward()
    opt_step()
    print(f"step {i}: loss {loss.item():.6f}")

be.report()
cycle = be.cycles[-1]
steady = cycle.runs[-1]
print(
    f"steady-state step: {steady.time_s / cycle.baseline.time_s:.4f}x the time and "
    f"{steady.energy_j / cycle.baseline.energy_j:.4f}x the energy of all-max (SIMULATED)"
)
be.restore_clocks()
