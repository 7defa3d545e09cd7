"""The reorder pass on captured graphs: memory objective, given orders, validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from fxenergy.errors import InvalidScheduleError, PassError
from fxenergy.graph import meta
from fxenergy.graph.capture import capture_training
from fxenergy.graph.pass_infra import Pipeline, get_pass
from fxenergy.memory.order import l2_reuse_by_node
from fxenergy.memory.problem import peak
from fxenergy.memory.timeline import memory_problem


class TwoBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(64, 256), nn.Linear(64, 256)
        self.head = nn.Linear(512, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], -1))


@pytest.fixture(scope="module")
def joint() -> torch.fx.GraphModule:
    torch.manual_seed(0)
    return capture_training(TwoBranch(), (torch.randn(32, 64),))


def _real_inputs(gm: torch.fx.GraphModule) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    vals = [meta.node_value(n) for n in gm.graph.nodes if n.op == "placeholder"]
    return [torch.randn(v.shape, generator=g, dtype=v.dtype) for v in vals]


def _copy(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    graph = torch.fx.Graph()
    graph.output(graph.graph_copy(gm.graph, {}))
    return torch.fx.GraphModule(gm, graph)


def _current_peak(gm: torch.fx.GraphModule) -> int:
    p = memory_problem(gm)
    return peak(p, range(len(p.names)))


def test_memory_objective_lowers_peak_and_keeps_outputs(joint: torch.fx.GraphModule) -> None:
    gm = _copy(joint)
    inputs = _real_inputs(gm)
    ref = gm(*inputs)
    before = _current_peak(gm)
    result = get_pass("reorder", objective="memory", time_limit_s=5)(gm)
    assert result.modified
    after = _current_peak(gm)
    assert after < before  # the two branches' big activations need not be live together
    out = gm(*inputs)
    assert all(torch.equal(a, b) for a, b in zip(out, ref, strict=True))


def test_given_order_is_applied_and_round_trips(joint: torch.fx.GraphModule) -> None:
    gm = _copy(joint)
    names = [n.name for n in gm.graph.nodes if n.op not in ("placeholder", "get_attr", "output")]
    plan_gm = _copy(gm)
    get_pass("reorder", objective="memory", time_limit_s=2)(plan_gm)
    order = [n.name for n in plan_gm.graph.nodes if n.name in set(names)]
    pipe = Pipeline.parse(f"reorder{{order={order!r}}}")
    assert Pipeline.parse(str(pipe)).passes[0].options() == {"order": order}
    out = pipe(gm).graph_module
    assert [n.name for n in out.graph.nodes if n.name in set(names)] == order


def test_bad_orders_are_refused(joint: torch.fx.GraphModule) -> None:
    gm = _copy(joint)
    names = [n.name for n in gm.graph.nodes if n.op not in ("placeholder", "get_attr", "output")]
    with pytest.raises(InvalidScheduleError, match="missing"):
        get_pass("reorder", order=names[:-1])(gm)
    with pytest.raises(InvalidScheduleError, match="data edge"):
        get_pass("reorder", order=list(reversed(names)))(gm)
    with pytest.raises(PassError, match="objective"):
        get_pass("reorder", objective="speed")


def test_order_edges_between_rng_nodes_are_kept() -> None:
    class Noisy(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.rand_like(x) + x, torch.rand_like(x) * x

    from fxenergy.graph.capture import capture

    gm = capture(Noisy(), (torch.randn(4, 4),), method="symbolic")
    calls = [n.name for n in gm.graph.nodes if n.op not in ("placeholder", "get_attr", "output")]
    rands = [c for c in calls if c.startswith("rand_like")]
    swapped = [rands[1], rands[0]] + [c for c in calls if c not in rands]
    with pytest.raises(InvalidScheduleError, match="order edge"):
        get_pass("reorder", order=swapped)(gm)


def test_l2_reuse_by_node_credits_fitting_adjacent_reads(joint: torch.fx.GraphModule) -> None:
    big = l2_reuse_by_node(joint, l2_bytes=50 * 2**20)
    small = l2_reuse_by_node(joint, l2_bytes=1)
    assert big and not small
    assert all(v <= 50 * 2**20 for v in big.values())
