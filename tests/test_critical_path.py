"""critical-path pass and fxenergy.graph.semantics's pure algorithms (dependency graph, CPM)."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest
import torch
import torch.fx
from hypothesis import given
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from torch.fx.passes.infra.pass_manager import PassManager

from fxenergy.errors import PassError
from fxenergy.graph import meta
from fxenergy.graph.pass_infra import Pipeline, get_pass
from fxenergy.graph.semantics import dependency_graph, is_side_effectful
from fxenergy.graph.timing import dag_timing


def _fake_prop(gm: torch.fx.GraphModule, *shapes: tuple[int, ...]) -> torch.fx.GraphModule:
    mode = FakeTensorMode()
    FakeTensorProp(gm, mode).propagate(*(mode.from_tensor(torch.randn(s)) for s in shapes))
    return gm


def _with_roofline(gm: torch.fx.GraphModule, times: dict[str, float]) -> torch.fx.GraphModule:
    """Hand-made cost/roofline records (what annotate-cost would write)."""
    for node in gm.graph.nodes:
        if node.name in times:
            t = times[node.name]
            node.meta[meta.COST] = meta.CostRecord(0, 0, int(t * 1e12), 0, "float32")
            node.meta[meta.ROOFLINE] = meta.RooflineRecord("A100-SXM4-80GB", t, 0.0, t, "memory")
    gm.meta[meta.GPU] = "A100-SXM4-80GB"
    gm.meta[meta.ANALYSES] = frozenset({meta.COST, meta.ROOFLINE})
    return gm


class Diamond(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.sin()
        b = a.cos()  # long branch
        c = a.exp()  # short branch
        return b + c


def test_diamond_timing_by_hand() -> None:
    gm = _with_roofline(
        torch.fx.symbolic_trace(Diamond()), {"sin": 1.0, "cos": 5.0, "exp": 2.0, "add": 1.0}
    )
    gm = get_pass("critical-path")(gm).graph_module
    summary = gm.meta[meta.CRITICAL_PATH]
    assert summary.length_s == pytest.approx(7.0)
    assert summary.serial_time_s == pytest.approx(9.0)
    assert summary.nodes == ("sin", "cos", "add")
    assert summary.gpu == "A100-SXM4-80GB"
    t = {n.name: n.meta[meta.TIMING] for n in gm.graph.nodes}
    assert t["exp"].earliest_start_s == pytest.approx(1.0)
    assert t["exp"].latest_start_s == pytest.approx(4.0)
    assert t["exp"].slack_s == pytest.approx(3.0) and not t["exp"].critical
    assert t["cos"].critical and t["cos"].slack_s == 0.0
    assert t["add"].earliest_start_s == pytest.approx(6.0)
    assert meta.TIMING in meta.analyses(gm) and meta.CRITICAL_PATH in meta.analyses(gm)


def test_requires_roofline() -> None:
    gm = torch.fx.symbolic_trace(Diamond())
    with pytest.raises(PassError, match="critical-path"):
        get_pass("critical-path")(gm)


def test_runs_inside_torch_pass_manager() -> None:
    gm = _with_roofline(torch.fx.symbolic_trace(Diamond()), {"sin": 1.0, "cos": 1.0})
    result = PassManager([get_pass("critical-path")])(gm)
    assert result.graph_module.meta[meta.CRITICAL_PATH].length_s == pytest.approx(2.0)


def test_pipeline_string_round_trips() -> None:
    assert str(Pipeline.parse("critical-path")) == "critical-path"
    assert str(Pipeline.parse("critical-path{rel_tol=0.01}")) == "critical-path{rel_tol=0.01}"


class InPlace(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = x.relu()
        before = y * 3  # reads y before the mutation
        y.add_(1)
        after = y.view(-1) + 2  # reads a view of y after the mutation
        return before, after


def test_inplace_mutation_orders_readers() -> None:
    gm = _fake_prop(torch.fx.symbolic_trace(InPlace()), (4, 4))
    dag = dependency_graph(gm)
    assert dag.edges["mul", "add_"]["kind"] == "order"  # write-after-read
    assert dag.edges["add_", "view"]["kind"] == "order"  # read-after-write through a view
    assert dag.edges["relu", "mul"]["kind"] == "data"
    assert is_side_effectful(next(n for n in gm.graph.nodes if n.name == "add_"))


class InplaceFlags(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = torch.nn.ReLU(inplace=True)
        self.bn = torch.nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = x * 1
        before = y + 1
        self.act(y)  # writes y in place
        z = torch.nn.functional.relu(y * 2, inplace=True)
        return before, self.bn(y), self.bn(z)


def test_inplace_flags_and_module_state() -> None:
    from fxenergy.graph.capture import capture

    gm = capture(InplaceFlags().train(), (torch.randn(3, 4),), method="symbolic")
    dag = dependency_graph(gm)
    assert dag.edges["add", "act"]["kind"] == "order"  # read before nn.ReLU(inplace=True)
    nodes = {n.name: n for n in gm.graph.nodes}
    assert is_side_effectful(nodes["relu"])  # F.relu(..., inplace=True)
    assert dag.has_edge("bn", "bn_1")  # BatchNorm in training updates running stats: keep order
    eval_gm = torch.fx.symbolic_trace(InplaceFlags().eval())
    assert not is_side_effectful({n.name: n for n in eval_gm.graph.nodes}["bn"])


class Rng(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a = self.drop(x)
        b = torch.nn.functional.dropout(x, 0.1, training=True)
        c = torch.nn.functional.dropout(x, 0.1, training=False)  # identity: no RNG
        return a, b, c


def test_rng_ops_keep_program_order() -> None:
    gm = torch.fx.symbolic_trace(Rng().train())
    dag = dependency_graph(gm)
    assert dag.edges["drop", "dropout"]["kind"] == "order"
    nodes = {n.name: n for n in gm.graph.nodes}
    assert not is_side_effectful(nodes["dropout_1"])  # training=False: identity
    eval_gm = torch.fx.symbolic_trace(Rng().eval())
    assert not dependency_graph(eval_gm).has_edge("drop", "dropout")


def test_aten_graph_inplace_and_rng() -> None:
    g = torch.fx.Graph()
    x = g.placeholder("x")
    r = g.call_function(torch.ops.aten.rand_like.default, (x,))
    m = g.call_function(torch.ops.aten.mul.Tensor, (x, r))
    w = g.call_function(torch.ops.aten.add_.Tensor, (x, 1))
    g.output((m, w))
    gm = _fake_prop(torch.fx.GraphModule(torch.nn.Module(), g), (3,))
    dag = dependency_graph(gm)
    assert dag.has_edge(r.name, w.name)  # RNG then mutation, in program order
    assert dag.has_edge(m.name, w.name)  # mul reads x before add_ writes it


# --- property tests on random DAGs -------------------------------------------------------------


@st.composite
def random_dags(draw: st.DrawFn) -> tuple[nx.DiGraph, dict[str, float]]:
    n = draw(st.integers(1, 12))
    dag = nx.DiGraph()
    dag.add_nodes_from(f"n{i}" for i in range(n))
    for j in range(1, n):
        for i in draw(st.sets(st.integers(0, j - 1), max_size=3)):
            dag.add_edge(f"n{i}", f"n{j}")
    durations = {v: draw(st.floats(0.0, 10.0, allow_nan=False)) for v in dag}
    return dag, durations


@given(random_dags())
def test_cpm_matches_networkx_longest_path(case: tuple[nx.DiGraph, dict[str, float]]) -> None:
    dag, durations = case
    timing = dag_timing(dag, durations)
    # Node weights as edge weights: split each node v into (v, in) -> (v, out).
    split = nx.DiGraph()
    for v, d in durations.items():
        split.add_edge((v, "in"), (v, "out"), weight=d)
    for u, v in dag.edges:
        split.add_edge((u, "out"), (v, "in"), weight=0.0)
    assert timing.length == pytest.approx(nx.dag_longest_path_length(split), abs=1e-9)
    assert sum(durations[v] for v in timing.path) == pytest.approx(timing.length, abs=1e-9)
    assert all(dag.has_edge(a, b) for a, b in itertools.pairwise(timing.path))
    assert set(timing.path) <= timing.critical
    for v in dag:
        assert timing.slack[v] >= 0.0
        assert timing.earliest_start[v] + durations[v] <= timing.length + 1e-9
    for u, v in dag.edges:
        assert timing.earliest_start[u] + durations[u] <= timing.earliest_start[v] + 1e-9
        assert timing.latest_start[u] + durations[u] <= timing.latest_start[v] + 1e-9


@given(st.lists(st.sampled_from(["relu", "add_", "mul", "rand", "view", "copy_"]), max_size=8))
def test_dependency_edges_go_forward(ops: list[str]) -> None:
    g = torch.fx.Graph()
    x = g.placeholder("x")
    cur, outs = x, []
    for op in ops:
        if op == "rand":
            node = g.call_function(torch.ops.aten.rand_like.default, (cur,))
        elif op == "copy_":
            node = g.call_function(torch.ops.aten.copy_.default, (x, cur))
        elif op == "view":
            node = g.call_function(torch.ops.aten.view.default, (cur, [-1]))
        else:
            target = {"relu": "relu", "add_": "add_", "mul": "mul"}[op]
            overload = getattr(torch.ops.aten, target)
            args = (cur,) if op == "relu" else (cur, 2)
            node = g.call_function(overload.Tensor if op != "relu" else overload.default, args)
        outs.append(node)
        cur = node
    g.output(tuple(outs) or x)
    gm = _fake_prop(torch.fx.GraphModule(torch.nn.Module(), g), (4,))
    dag = dependency_graph(gm)
    index = nx.get_node_attributes(dag, "index")
    assert nx.is_directed_acyclic_graph(dag)
    assert all(index[a] < index[b] for a, b in dag.edges)
    effectful = [n.name for n in gm.graph.nodes if is_side_effectful(n)]
    for a, b in itertools.pairwise(effectful):
        assert nx.has_path(dag, a, b)
