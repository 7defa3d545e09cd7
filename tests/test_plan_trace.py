"""Predicted timelines: Chrome trace-event JSON from a graph plan and a pipeline plan, and PNGs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from fxenergy.api import optimize
from fxenergy.plans.plan import Plan, PlanPartition
from fxenergy.plans.trace import check_trace, graph_timeline, to_trace_events

DATA = Path(__file__).parent / "data" / "perseus_a100_4stage.csv"


def _args(m: nn.Module) -> tuple:
    return (m.in_features, m.out_features) if isinstance(m, nn.Linear) else ()


def _mlp(blocks: int = 3) -> nn.Module:
    torch.manual_seed(0)
    block = [nn.Linear(256, 1024), nn.GELU(), nn.Linear(1024, 256)]
    layers = [nn.Sequential(*[type(m)(*_args(m)) for m in block]) for _ in range(blocks)]
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def plan() -> Plan:
    opt = optimize(
        _mlp(), (torch.randn(32, 256),), backend="sim", max_slowdown=0.05, time_limit_s=5
    )
    return opt.plan


def _two_clock_plan(plan: Plan) -> Plan:
    """The same nodes split in two partitions at two clocks, with one switch's stall."""
    names = [n.name for n in plan.nodes]
    half = len(names) // 2
    clocks = plan.extra["clocks_mhz"]
    parts = (
        PlanPartition(0, clocks[0], tuple(names[:half]), 2e-5, 4e-3),
        PlanPartition(1, clocks[3], tuple(names[half:]), 3e-5, 5e-3),
    )
    predicted = dataclasses.replace(plan.predicted, time_s=5e-5 + 1e-5, switches=1)
    extra = {**plan.extra, "cyclic": False}
    return dataclasses.replace(plan, partitions=parts, predicted=predicted, extra=extra)


def test_plan_stores_per_node_predictions(plan: Plan) -> None:
    assert plan.nodes and [n.name for n in plan.nodes] == [
        n for n in plan.order if n in plan.clock_of()
    ]
    assert sum(n.flops for n in plan.nodes) > 0 and all(n.time_s > 0 for n in plan.nodes)
    assert any(n.critical for n in plan.nodes)
    assert Plan.from_json(plan.to_json()) == plan  # survives a save and load


def test_trace_follows_the_trace_event_format(plan: Plan, tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    _two_clock_plan(plan).to_trace(path)
    doc = json.loads(path.read_text())
    assert check_trace(doc) == []
    events = doc["traceEvents"]
    ops = [e for e in events if e["ph"] == "X" and e["cat"].startswith("op")]
    assert len(ops) == len(plan.nodes)
    assert {"flops", "bytes", "predicted_time_us", "bound", "critical"} <= set(ops[0]["args"])
    # µs: the op slices and the switch stall fill the predicted time (60 µs)
    end = max(e["ts"] + e["dur"] for e in events if e["ph"] == "X")
    assert end == pytest.approx(60.0, rel=1e-6)
    assert sum(e["dur"] for e in ops) == pytest.approx(50.0, rel=1e-6)
    (switch,) = [e for e in events if e["ph"] == "i"]
    assert switch["ts"] == pytest.approx(20.0) and "→" in switch["name"]
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert counters == {"SM clock (MHz)", "power (W)"}
    power = [e["args"]["W"] for e in events if e["name"] == "power (W)"]
    assert power[:2] == pytest.approx([4e-3 / 2e-5, 5e-3 / 3e-5])  # partition energy / time
    assert any("critical" in e["cat"] for e in ops)


def test_check_trace_catches_broken_traces() -> None:
    good = {"ph": "X", "name": "a", "pid": 0, "tid": 0, "ts": 0.0, "dur": 10.0}
    child_overlaps = {**good, "name": "b", "ts": 5.0, "dur": 10.0}
    assert check_trace({"traceEvents": [good, child_overlaps]})
    assert check_trace({"traceEvents": [{**good, "ts": 5.0}, {**good, "ts": 1.0, "dur": 1}]})
    assert check_trace({"traceEvents": [{"ph": "X", "name": "a", "ts": 0}]})
    assert check_trace({"traceEvents": [good, {**good, "ts": 2.0, "dur": 3.0}]}) == []


def test_pipeline_trace_one_track_per_rank(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from fxenergy.cli import main

    trace, png, plot = tmp_path / "p.json", tmp_path / "p.png", tmp_path / "f.png"
    legends: list[list[str]] = []
    real_savefig = plt.Figure.savefig

    def legend_savefig(fig, *a, **k):
        legends.extend([t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes
                       if ax.get_legend())  # fmt: skip
        return real_savefig(fig, *a, **k)

    args = ["pipeline", str(DATA), "--blocked-power-w", "75", "--microbatches", "4",
            "--polish-s", "0.2", "--trace", str(trace), "--timeline", str(png),
            "--plot", str(plot), "--frontier-points", "4"]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt.Figure, "savefig", legend_savefig)
        rc = main(args)
    assert rc == 0 and png.stat().st_size > 10_000 and plot.stat().st_size > 10_000
    frontier_legend = " | ".join(legends[-1])  # the frontier plot is drawn last
    assert "all clocks at max" in frontier_legend and "this plan (budget 0%)" in frontier_legend
    doc = json.loads(trace.read_text())
    assert check_trace(doc) == []
    slices = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert {e["pid"] for e in slices} == {0, 1, 2, 3}
    assert len(slices) == 4 * 4 * 2  # stages x microbatches x (forward, backward)
    assert any("critical" in e["cat"] for e in slices)


def test_timeline_png_aggregates_a_10k_node_graph(plan: Plan, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from fxenergy.plans import timeline_plot

    node = plan.nodes[0]
    bounds = ("compute", "memory")
    many = tuple(
        dataclasses.replace(node, name=f"op{i}", bound=bounds[i % 2]) for i in range(10_000)
    )
    part = PlanPartition(0, plan.partitions[0].clock_mhz, tuple(n.name for n in many), 1e-2, 3.0)
    big = dataclasses.replace(
        plan, nodes=many, partitions=(part,), order=tuple(n.name for n in many)
    )
    artists = []
    real_savefig = plt.Figure.savefig

    def counting_savefig(fig, *a, **k):
        artists.append(
            sum(len(ax.patches) + len(ax.collections) + len(ax.lines) for ax in fig.axes)
        )
        return real_savefig(fig, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt.Figure, "savefig", counting_savefig)
        timeline_plot.plot_timeline(graph_timeline(big), tmp_path / "big.png")
    assert (tmp_path / "big.png").stat().st_size > 10_000
    assert 0 < artists[0] < 100  # aggregated: a few bands and lines, not one artist per op
    assert len(to_trace_events(graph_timeline(big))["traceEvents"]) > 10_000
