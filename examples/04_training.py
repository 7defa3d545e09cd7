"""Plan a training loop with the torch.compile backend (forward, backward and AdamW step).

    python examples/04_training.py

Losses equal the unplanned compiled run bit for bit; each compiled graph got its own plan.
"""

import torch
from torch import nn

import fxenergy

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256), nn.LayerNorm(256))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
be = fxenergy.backend(gpu="H100-SXM5", max_slowdown=0.02, runtime="sim", switch_latency_s=0.0)
step_fwd = torch.compile(model, backend=be)
opt_step = torch.compile(opt.step, backend=be)

for i in range(3):
    x = torch.randn(64, 256)
    loss = step_fwd(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt_step()
    print(f"step {i}: loss {loss.item():.6f}")

for g in be.graphs:
    p = g.plan
    print(
        f"{g.kind:<9} {len(p.partitions):3d} partitions, predicted energy "
        f"{100 * p.energy_saving:5.2f}% lower at {100 * p.slowdown:+.2f}% time (simulated)"
    )
totals = be.totals()
saved = 1 - totals["predicted_energy_j"] / totals["baseline_energy_j"]
print(f"whole step: {100 * saved:.2f}% energy saved (simulated, DVFS model)")
