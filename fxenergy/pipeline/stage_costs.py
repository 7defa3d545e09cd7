"""A pipeline profile predicted from the stage modules themselves (no GPU needed).

For each stage module: its forward graph (``fxenergy.graph.capture.capture``) and its joint
forward+backward training graph (``capture_training``) are costed by
:func:`fxenergy.cost.annotate.annotate_costs` (what the ``annotate-cost`` pass runs), and the
DVFS model turns the node costs into time and energy at every clock. The backward's share is
the joint graph minus the forward graph (times and energies of kernel sequences add in the DVFS
model; under the board power cap this subtraction is approximate). The backward is also split
the way zero-bubble schedules split it: the stage's input is made a parameter, so the joint
graph computes its gradient too; backward nodes that this input gradient depends on are the
input-gradient part (I), the other backward nodes the weight-gradient part (W). The result is a
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


def _works(model: Any, gm: torch.fx.GraphModule, gpu: str, only: set | None = None) -> list:
    annotate_costs(gm, gpu)
    return [
        model.work_of(n.meta[meta.COST])
        for n in gm.graph.nodes
        if n.op.startswith("call_") and meta.COST in n.meta and (only is None or n.name in only)
    ]


class _InputAsParameter(torch.nn.Module):
    """A stage whose input is a parameter, so a training capture computes its gradient."""

    def __init__(self, module: torch.nn.Module, x: torch.Tensor) -> None:
        super().__init__()
        self.x = torch.nn.Parameter(x.detach().clone())  # registered first: gradient output 1
        self.module = module

    def forward(self, scale: torch.Tensor) -> Any:
        return self.module(self.x * scale)


def _ancestors(node: torch.fx.Node) -> set[str]:
    seen, todo = {node.name}, [node]
    while todo:
        for arg in todo.pop().all_input_nodes:
            if arg.name not in seen:
                seen.add(arg.name)
                todo.append(arg)
    return seen


def _split_backward(capture_training: Any, module: torch.nn.Module, x: torch.Tensor):
    """The joint graph of ``module`` with a differentiable input, and its I and W node names.

    Returns None when the input is not floating point (token ids have no gradient).
    """
    if not torch.is_floating_point(x):
        return None
    gm = capture_training(_InputAsParameter(module, x), torch.ones((), dtype=x.dtype))
    outputs = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    forward = _ancestors(outputs[0])
    inputs = _ancestors(outputs[1]) - forward
    calls = {n.name for n in gm.graph.nodes if n.op.startswith("call_")}
    return gm, inputs & calls, calls - forward - inputs


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
        split = _split_backward(capture_training, module, x)
        parts: dict[str, list] = {}
        if split is not None:  # backward = I + W of the graph with a differentiable input
            gm, inp, wgt = split
            parts = {"backward_input": _works(model, gm, gpu, inp)}
            parts["backward_weight"] = _works(model, gm, gpu, wgt)
            parts["backward"] = _works(model, gm, gpu, inp | wgt)
        else:  # token ids: backward = joint graph - forward graph
            joint = _works(model, capture_training(module, x), gpu)
        for f in clocks_mhz or model.clocks_mhz():
            tf, ef = model.mix_time_s(fwd, f), model.mix_energy_j(fwd, f)
            rows.append(ProfileRow(s, "forward", int(f), tf, ef))
            if split is None:
                tj, ej = model.mix_time_s(joint, f), model.mix_energy_j(joint, f)
                tb, eb = tj - tf, ej - ef
                rows.append(ProfileRow(s, "backward", int(f), max(tb, _MIN_TIME_S), max(eb, 0)))
            for kind, works in parts.items():
                t, e = model.mix_time_s(works, f), model.mix_energy_j(works, f)
                rows.append(ProfileRow(s, kind, int(f), max(t, _MIN_TIME_S), max(e, 0.0)))
        with torch.no_grad():
            x = module(x)
    return Profile(_complete_split(rows), f"predicted (cost model + DVFS model of {gpu})")


def _complete_split(rows: list[ProfileRow]) -> tuple[ProfileRow, ...]:
    """Split rows for every stage or for none (a first stage fed token ids has none)."""
    split = {r.stage for r in rows if r.instruction == "backward_input"}
    if split == {r.stage for r in rows}:
        return tuple(rows)
    return tuple(r for r in rows if r.instruction not in ("backward_input", "backward_weight"))


def backward_input_shares(
    stages: Sequence[torch.nn.Module], example_input: torch.Tensor, gpu: str
) -> dict[int, float]:
    """Per stage, the cost model's share of the backward's time that is input gradient (I).

    Feed it to ``StageCosts.from_profile(..., input_share=...)`` to split a measured profile
    that has only ``backward`` rows the way the stage's own graph splits. Stages whose
    input has no gradient (token ids) are left out (the default share applies).
    """
    profile = profile_from_stage_modules(stages, example_input, gpu)
    top = max(profile.clocks_mhz())
    out = {}
    for s in profile.stages():
        if (s, "backward_input") in profile.keys():
            t_in = profile.table(s, "backward_input")[top].time_s
            t_w = profile.table(s, "backward_weight")[top].time_s
            out[s] = t_in / (t_in + t_w)
    return out
