"""fxenergy.graph.semantics: the one judgement of effects, storages and aliases."""

from __future__ import annotations

import pytest
import torch
import torch.distributed._functional_collectives
import torch.fx
import torch.nn.functional as F
from torch import nn

from fxenergy.graph.semantics import (
    dependency_graph,
    draws_random,
    is_collective,
    is_dropout,
    is_side_effectful,
    possibly_mutated,
    storage_key,
    writes,
)
from fxenergy.redundancy.rules import dropout_eval

aten = torch.ops.aten


def _one_call(target, args, kwargs=None, op: str = "call_function") -> torch.fx.Node:
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    call = getattr(graph, op)(target, (x, *args), kwargs or {})
    graph.output(call)
    torch.fx.GraphModule(nn.Module(), graph)
    return call


# (target, extra args, kwargs, draws): every spelling of dropout judged the same way.
DROPOUTS = [
    (aten.dropout.default, (0.1, True), {}, True),
    (aten.dropout.default, (0.1, False), {}, False),
    (aten.dropout.default, (0.0, True), {}, False),
    (aten.native_dropout.default, (0.1, True), {}, True),
    (aten.native_dropout.default, (0.1, False), {}, False),
    (F.dropout, (0.1,), {"training": True}, True),
    (F.dropout, (0.1,), {"training": False}, False),
    (F.dropout, (0.0,), {"training": True}, False),
    (F.dropout1d, (0.2,), {"training": True}, True),
    (F.dropout3d, (0.2,), {"training": False}, False),
    (F.alpha_dropout, (0.2, True), {}, True),
]


@pytest.mark.parametrize(("target", "args", "kwargs", "draws"), DROPOUTS)
def test_dropout_is_judged_one_way(target, args, kwargs, draws: bool) -> None:
    node = _one_call(target, args, kwargs)
    assert draws_random(node) is draws
    assert is_side_effectful(node) is draws  # the dependency graph, CSE and DCE all ask this
    if is_dropout(node):  # an inactive dropout is the identity: the rewrite agrees
        assert (dropout_eval(node, set()) is not None) is (not draws)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("p", [0.0, 0.5])
def test_dropout_modules_agree_with_functions(training: bool, p: float) -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(p)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.drop(x) + F.dropout(x, p, training=self.training)

    gm = torch.fx.symbolic_trace(M().train(training))
    nodes = {n.name: n for n in gm.graph.nodes}
    assert draws_random(nodes["drop"]) == draws_random(nodes["dropout"]) == (training and p > 0)


@pytest.mark.parametrize(
    ("target", "args", "op"),
    [(aten.randn_like.default, (), "call_function"), (torch.rand_like, (), "call_function"),
     ("bernoulli_", (0.5,), "call_method"), ("uniform_", (), "call_method"),
     (aten.bernoulli.p, (0.5,), "call_function")],
)  # fmt: skip
def test_rng_comes_from_torch_tags(target, args, op: str) -> None:
    assert draws_random(_one_call(target, args, op=op))


def test_attention_draws_only_with_dropout() -> None:
    attn = aten._scaled_dot_product_flash_attention_for_cpu.default
    graph = torch.fx.Graph()
    q = graph.placeholder("q")
    off = graph.call_function(attn, (q, q, q, 0.0))
    on = graph.call_function(attn, (q, q, q, 0.1))
    graph.output((off, on))
    assert not draws_random(off) and draws_random(on)


def test_writes_follow_the_schema() -> None:
    graph = torch.fx.Graph()
    x, y = graph.placeholder("x"), graph.placeholder("y")
    add_ = graph.call_function(aten.add_.Tensor, (x, y))
    out = graph.call_function(aten.add.out, (x, y), {"out": y})
    pure = graph.call_function(aten.add.Tensor, (x, y))
    method = graph.call_method("mul_", (y, 2))
    graph.output((add_, out, pure, method))
    assert writes(add_) == [x] and writes(out) == [y] and writes(pure) == []
    assert writes(method) == [y]  # no schema: the in-place name decides


def test_collectives_keep_their_order() -> None:
    c10d = torch.ops._c10d_functional
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    a = graph.call_function(c10d.all_reduce.default, (x, "sum", "0"))
    b = graph.call_function(c10d.all_gather_into_tensor.default, (x, 2, "0"))
    wait_b = graph.call_function(c10d.wait_tensor.default, (b,))
    wait_a = graph.call_function(c10d.wait_tensor.default, (a,))
    graph.output((wait_a, wait_b))
    gm = torch.fx.GraphModule(nn.Module(), graph)
    assert all(is_collective(n) and is_side_effectful(n) for n in (a, b, wait_a, wait_b))
    dag = dependency_graph(gm)
    # issued in program order: b may not move before a, nor wait_a before wait_b
    assert dag.has_edge(a.name, b.name) and dag.has_edge(wait_b.name, wait_a.name)


def test_storage_identity_and_possibly_mutated() -> None:
    base = torch.zeros(4, 4)
    assert storage_key(base.view(-1)) == storage_key(base.t()) != storage_key(base.clone())

    def f(x: torch.Tensor) -> torch.Tensor:
        v = x.view(-1)
        v.add_(1)
        return x.relu()

    gm = torch.fx.symbolic_trace(f)
    marked = {n.name for n in possibly_mutated(gm.graph)}
    assert {"x", "view", "add_"} <= marked and "relu" not in marked
