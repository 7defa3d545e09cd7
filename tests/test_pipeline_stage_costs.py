"""Pipeline profiles predicted from stage modules (cost model + DVFS model)."""

from __future__ import annotations

import torch

from fxenergy.pipeline.dag import StageCosts, build_dag
from fxenergy.pipeline.planner import PipelinePlanner
from fxenergy.pipeline.stage_costs import profile_from_stage_modules

CLOCKS = (1410, 1200, 1005, 810)


def test_profile_from_stage_modules_feeds_the_planner():
    heavy = torch.nn.Sequential(
        torch.nn.Linear(256, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 256)
    )
    light = torch.nn.Linear(256, 256)
    profile = profile_from_stage_modules(
        [heavy, light], torch.randn(32, 256), "A100-SXM4-80GB", CLOCKS
    )
    profile.require_complete()
    assert profile.clocks_mhz() == list(CLOCKS)
    for stage in (0, 1):
        fwd, bwd = profile.table(stage, "forward"), profile.table(stage, "backward")
        assert bwd[1410].time_s > fwd[1410].time_s  # backward does about twice the work
        assert fwd[810].time_s > fwd[1410].time_s  # lower clock, longer time
    assert profile.table(0, "forward")[1410].time_s > profile.table(1, "forward")[1410].time_s
    costs = StageCosts.from_profile(profile, 2, blocked_power_w=60.0)
    plan = PipelinePlanner(build_dag("1F1B", 2, 4), costs, polish_s=0.0).plan()
    assert plan.evaluation.energy_j < plan.baseline.energy_j  # the light stage slows down
    assert {f for c, f in plan.freqs_mhz.items() if c[0] == 1} != {1410}


def test_cost_model_splits_backward_into_input_and_weight_parts():
    from fxenergy.pipeline.stage_costs import backward_input_shares

    # A linear layer's backward: dX = dY W^T and dW = X^T dY are GEMMs of equal size (plus
    # the bias gradient on the weight side); a weightless stage's backward is all input part.
    linear = torch.nn.Linear(256, 256)
    act = torch.nn.Sequential(torch.nn.GELU(), torch.nn.Tanh())
    x = torch.randn(64, 256)
    profile = profile_from_stage_modules([linear, act], x, "A100-SXM4-80GB", CLOCKS)
    costs = StageCosts.from_profile(profile, 2, blocked_power_w=60.0)
    # predicted rows are labelled as predicted, never "measured"
    split = costs.backward_split
    assert split.startswith("predicted (cost model") and "A100" in split
    i0, w0 = (profile.table(0, k)[1410].time_s for k in ("backward_input", "backward_weight"))
    assert 0.3 < i0 / (i0 + w0) < 0.6
    b0 = profile.table(0, "backward")[1410].time_s
    assert abs((i0 + w0) - b0) < 0.25 * b0  # the parts add up to about the whole
    shares = backward_input_shares([linear, act], x, "A100-SXM4-80GB")
    assert shares[1] > 0.9 and 0.3 < shares[0] < 0.6
    plan = PipelinePlanner(build_dag("ZBVZeroBubble", 2, 4), costs, polish_s=0.0).plan()
    assert plan.evaluation.energy_j <= plan.baseline.energy_j
