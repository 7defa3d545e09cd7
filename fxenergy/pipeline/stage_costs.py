"""A pipeline profile predicted from the stage modules themselves (no GPU needed).

For each stage module: its forward graph (``fxenergy.graph.capture.capture``) and its joint
forward+backward training graph (``capture_training``) are costed by
:func:`fxenergy.cost.annotate.annotate_costs` (what the ``annotate-cost`` pass runs), and the
DVFS model turns the node costs into time and energy at every clock. The backward's share is
the joint graph minus the forward graph (times and energies of kernel sequences add in the DVFS
model; under the board power cap this subtraction is approximate). The result is a
:class:`~fxenergy.hardware.profiles.Profile` in the Perseus format, so the planner treats
predicted and measured profiles alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fxenergy.cost.annotate import annotate_costs
from fxenergy.graph import meta
from fxenergy.hardware.profiles import Profile, ProfileRow

_MIN_TIME_S = 1e-9  # a backward the model predicts as free still needs a positive duration


def _works(model: Any, gm: torch.fx.GraphModule, gpu: str) -> list:
    annotate_costs(gm, gpu)
    return [
        model.work_of(n.meta[meta.COST])
        for n in gm.graph.nodes
        if n.op.startswith("call_") and meta.COST in n.meta
    ]


def _capture_forward(capture: Any, module: torch.nn.Module, x: torch.Tensor) -> Any:
    from fxenergy.errors import CaptureError

    try:  # symbolic tracing is fast and enough for most stage modules
        return capture(module, x, method="symbolic")
    except CaptureError:
        return capture(module, x)


def profile_from_stage_modules(
    stages: Sequence[torch.nn.Module],
    example_input: torch.Tensor,
    gpu: str,
    clocks_mhz: Sequence[int] | None = None,
) -> Profile:
    """Predicted forward/backward time and energy of each stage at each clock.

    Args:
        stages: the pipeline's stage modules, first to last (real or ``meta`` weights).
        example_input: one microbatch's input to the first stage; each stage's output feeds
            the next.
        gpu: spec-table GPU name.
        clocks_mhz: clocks to predict (default: every clock the GPU supports).

    Raises:
        CaptureError: a stage cannot be traced.
        UnknownGPUError: the GPU is not in the spec table.
    """
    from fxenergy.graph.capture import capture, capture_training
    from fxenergy.hardware.dvfs import get_dvfs_model

    model = get_dvfs_model(gpu)
    rows: list[ProfileRow] = []
    x = example_input
    for s, module in enumerate(stages):
        fwd = _works(model, _capture_forward(capture, module, x), gpu)
        joint = _works(model, capture_training(module, x), gpu)
        for f in clocks_mhz or model.clocks_mhz():
            tf, ef = model.mix_time_s(fwd, f), model.mix_energy_j(fwd, f)
            tj, ej = model.mix_time_s(joint, f), model.mix_energy_j(joint, f)
            rows.append(ProfileRow(s, "forward", int(f), tf, ef))
            rows.append(
                ProfileRow(s, "backward", int(f), max(tj - tf, _MIN_TIME_S), max(ej - ef, 0))
            )
        with torch.no_grad():
            x = module(x)
    return Profile(tuple(rows))
