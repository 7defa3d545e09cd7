"""All seven torch schedules as DAGs: torch's IR, I/W splits, overlapped pairs, W placement."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxenergy.errors import ProfileError
from fxenergy.hardware.profiles import Profile, ProfileRow, read_profile
from fxenergy.pipeline.dag import StageCosts, build_dag, evaluate_pipeline, label, max_clock_plan
from fxenergy.pipeline.orders import SCHEDULES, ScheduleError, validate_orders
from fxenergy.pipeline.placement import pending_cap, place_weight_gradients, plan_with_placement
from fxenergy.pipeline.planner import PipelinePlanner

DATA = Path(__file__).parent / "data" / "perseus_a100_4stage.csv"
MULTI = [s for s in SCHEDULES if s not in ("GPipe", "1F1B")]


@settings(max_examples=25, deadline=None)
@given(schedule=st.sampled_from(SCHEDULES), ranks=st.integers(1, 4), mbs=st.integers(1, 10))
def test_every_schedule_gives_a_complete_acyclic_dag(schedule, ranks, mbs):
    stages = ranks if schedule in ("GPipe", "1F1B") else 2 * ranks
    try:
        dag = build_dag(schedule, stages, mbs, ranks)
    except ScheduleError:
        return  # a shape torch refuses
    assert validate_orders([list(o) for o in dag.rank_orders], stages, mbs) is None
    per_mb = {k: sum(c[1] == k for c in dag.topological) for k in dag.kinds()}
    assert per_mb["forward"] == stages * mbs
    full, split = per_mb.get("backward", 0), per_mb.get("backward_input", 0)
    assert full + split == stages * mbs and per_mb.get("backward_weight", 0) == split
    assert dag.source == "torch" or schedule == "1F1B"


def test_zero_bubble_and_dualpipev_come_from_torch_with_split_backward():
    for schedule in ("InterleavedZeroBubble", "ZBVZeroBubble"):
        dag = build_dag(schedule, 4, 8)
        assert dag.source == "torch" and dag.kinds() == {
            "forward",
            "backward_input",
            "backward_weight",
        }
    dual = build_dag("DualPipeV", 4, 8)
    assert dual.overlaps and "backward" in dual.kinds() and "backward_weight" in dual.kinds()
    # ZBV's V placement: rank 0 holds the first and the last stage.
    assert {c[0] for c in build_dag("ZBVZeroBubble", 4, 8).rank_orders[0]} == {0, 3}


def test_overlapped_pair_sends_after_both_halves():
    dag = build_dag("DualPipeV", 4, 8)
    fwd, bwd = dag.overlaps[0]
    rank = dag.rank_orders[dag.rank_of[fwd]]
    assert rank.index(bwd) == rank.index(fwd) + 1  # back to back on one GPU
    consumer = (fwd[0] + 1, "forward", fwd[2]) if fwd[0] + 1 < 4 else dag.backward_of(3, fwd[2])
    assert (bwd, consumer) in dag.edges()  # the forward's output leaves after the backward
    costs = StageCosts.from_profile(read_profile(DATA), 4, 83.64)
    ev = evaluate_pipeline(dag, costs, max_clock_plan(dag, costs))
    end_of_pair = ev.start_s[bwd] + costs.option(bwd, max(costs.clocks_mhz(bwd))).time_s
    assert ev.start_s[consumer] >= end_of_pair - 1e-12


def _profile(split: bool) -> Profile:
    rows = []
    for s in range(2):
        for f, scale in ((1400, 1.0), (1000, 1.3)):
            rows.append(ProfileRow(s, "forward", f, 1.0 * scale, 200 / scale))
            if split:
                rows.append(ProfileRow(s, "backward_input", f, 0.8 * scale, 150 / scale))
                rows.append(ProfileRow(s, "backward_weight", f, 1.2 * scale, 250 / scale))
            else:
                rows.append(ProfileRow(s, "backward", f, 2.0 * scale, 400 / scale))
    return Profile(tuple(rows))


def test_split_backward_measured_or_derived():
    measured = StageCosts.from_profile(_profile(True), 2, 50.0)
    assert measured.backward_split == "measured"
    full = measured.option((0, "backward", 0), 1400)
    assert full.time_s == pytest.approx(2.0) and full.energy_j == pytest.approx(400)
    derived = StageCosts.from_profile(_profile(False), 2, 50.0, input_share=0.4)
    assert derived.backward_split.startswith("derived") and "0.4" in derived.backward_split
    inp = derived.option((1, "backward_input", 0), 1000)
    assert inp.time_s == pytest.approx(0.4 * 2.6) and inp.energy_j == pytest.approx(0.4 * 400 / 1.3)
    with pytest.raises(ProfileError, match="share"):
        StageCosts.from_profile(_profile(False), 2, 50.0, input_share=1.5)


def test_split_backward_of_an_extrapolated_profile_says_so():
    from fxenergy.hardware.extrapolate import extrapolate_profile

    one_clock = Profile(tuple(r for r in _profile(True).rows if r.freq_mhz == 1400))
    full = extrapolate_profile(one_clock, "A100-SXM4-80GB")
    costs = StageCosts.from_profile(full, 2, 50.0)
    assert costs.backward_split == "measured, extrapolated to other clocks by the DVFS model"


def test_torch_ir_order_of_zbv_is_what_its_runtime_lowers():
    from fxenergy.pipeline.orders import torch_pipeline_order

    order = torch_pipeline_order("ZBVZeroBubble", 4, 8, 2)
    dag = build_dag("ZBVZeroBubble", 4, 8)
    for rank, acts in order.items():
        assert [str(a) for a in acts if a is not None] == [label(c) for c in dag.rank_orders[rank]]


def test_w_placement_keeps_rules_and_never_plans_worse():
    dag = build_dag("InterleavedZeroBubble", 4, 8)
    dur = {c: (0.05 if c[1] == "backward_weight" else 1.0) for c in dag.topological}
    placed = place_weight_gradients(dag, dur)
    assert placed is not dag and placed.placed_from == dag.fingerprint
    assert validate_orders([list(o) for o in placed.rank_orders], 4, 8) is None
    for mine, theirs in zip(placed.rank_orders, dag.rank_orders, strict=True):
        assert [c for c in mine if c[1] != "backward_weight"] == [
            c for c in theirs if c[1] != "backward_weight"
        ]  # only Ws move
        assert pending_cap(mine) <= pending_cap(theirs)  # memory held no higher than torch's
    costs = StageCosts.from_profile(read_profile(DATA), 4, 83.64)
    planner = PipelinePlanner(dag, costs, polish_s=0)
    own = planner.plan(planner.all_max_s * 1.02)
    best = plan_with_placement(planner, planner.all_max_s * 1.02)
    assert best.evaluation.energy_j <= own.evaluation.energy_j + 1e-9
    assert best.baseline.energy_j == pytest.approx(own.baseline.energy_j)


@pytest.mark.parametrize("schedule", MULTI)
def test_every_schedule_plans_within_deadline_and_saves(schedule):
    dag = build_dag(schedule, 4, 8)
    costs = StageCosts.from_profile(read_profile(DATA), 4, 83.64)
    planner = PipelinePlanner(dag, costs, polish_s=0)
    plan = planner.plan(planner.all_max_s * 1.02)
    assert plan.evaluation.iteration_time_s <= planner.all_max_s * 1.02 * (1 + 1e-12)
    assert plan.savings > 0.05
    assert plan.evaluation.energy_j >= plan.lower_bound_j * (1 - 1e-9)
