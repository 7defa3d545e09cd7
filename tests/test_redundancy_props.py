"""Property tests: on random graphs with pure, RNG and in-place ops, eliminate-redundancy keeps
every output bit for bit, keeps every barrier in place, and find-redundancy changes nothing."""

from __future__ import annotations

import operator

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from fxenergy.passes.find_redundancy import scratch_copy
from hypothesis import given, note
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

from fxenergy.graph.semantics import is_side_effectful
from fxenergy.redundancy.rules import eliminate

# (kind, arity, builder) — builders add one node to the graph from input nodes.
_OPS = {
    "relu": (1, lambda g, a: g.call_function(torch.relu, (a[0],))),
    "sin": (1, lambda g, a: g.call_function(torch.sin, (a[0],))),
    "float": (1, lambda g, a: g.call_method("float", (a[0],))),
    "contiguous": (1, lambda g, a: g.call_method("contiguous", (a[0],))),
    "transpose": (1, lambda g, a: g.call_method("transpose", (a[0], 0, 1))),
    "clone": (1, lambda g, a: g.call_method("clone", (a[0],))),
    "mul1": (1, lambda g, a: g.call_function(operator.mul, (a[0], 1))),
    "sub0": (1, lambda g, a: g.call_function(operator.sub, (a[0], 0))),
    "add0": (1, lambda g, a: g.call_function(operator.add, (a[0], 0.0))),
    "add1": (1, lambda g, a: g.call_function(operator.add, (a[0], 1.0))),
    "view": (1, lambda g, a: g.call_method("view", (a[0], 4, 4))),
    "dropout_eval": (1, lambda g, a: g.call_function(F.dropout, (a[0], 0.5), {"training": False})),
    "add": (2, lambda g, a: g.call_function(torch.add, (a[0], a[1]))),
    "mul": (2, lambda g, a: g.call_function(operator.mul, (a[0], a[1]))),
    "const": (1, lambda g, a: g.call_function(operator.mul, (a[0], _ones(g)))),
    "rand_like": (1, lambda g, a: g.call_function(torch.rand_like, (a[0],))),
    "dropout_train": (1, lambda g, a: g.call_function(F.dropout, (a[0], 0.3), {"training": True})),
    "add_": (1, lambda g, a: g.call_method("add_", (a[0], 2.0))),
    "mul_": (1, lambda g, a: g.call_method("mul_", (a[0], -1.5))),
}


def _ones(g: torch.fx.Graph) -> torch.fx.Node:
    ar = g.call_function(torch.arange, (16,))
    return g.call_method("view", (g.call_method("float", (ar,)), 4, 4))


@st.composite
def random_graphs(draw: st.DrawFn) -> torch.fx.GraphModule:
    g = torch.fx.Graph()
    nodes = [g.placeholder("x"), g.placeholder("y")]
    for _ in range(draw(st.integers(3, 14))):
        name = draw(st.sampled_from(sorted(_OPS)))
        arity, build = _OPS[name]
        args = [nodes[draw(st.integers(0, len(nodes) - 1))] for _ in range(arity)]
        nodes.append(build(g, args))
    outs = draw(st.lists(st.sampled_from(nodes[2:]), min_size=1, max_size=3))
    g.output(tuple([nodes[-1], *outs]))
    return torch.fx.GraphModule(nn.Module(), g)


def _run(gm: torch.fx.GraphModule, x: torch.Tensor, y: torch.Tensor) -> tuple:
    torch.manual_seed(1234)
    return gm(x.clone(), y.clone())


def _barriers(gm: torch.fx.GraphModule) -> list[str]:
    return [n.name for n in gm.graph.nodes if is_side_effectful(n)]


@given(random_graphs(), st.booleans())
def test_outputs_identical_and_barriers_kept(gm: torch.fx.GraphModule, fold: bool) -> None:
    x, y = torch.randn(4, 4), torch.randn(4, 4)
    x[0, 0] = -0.0
    FakeTensorProp(gm, FakeTensorMode(allow_non_fake_inputs=True)).propagate(x.clone(), y.clone())
    ref = _run(gm, x, y)
    barriers = _barriers(gm)
    note(gm.code)
    eliminate(gm, fold=fold)
    note(gm.code)
    gm.graph.lint()
    out = _run(gm, x, y)
    assert all(torch.equal(a, b) for a, b in zip(out, ref, strict=True))
    for a, b in zip(out, ref, strict=True):  # signs of zeros too
        assert torch.equal(torch.signbit(a), torch.signbit(b))
    assert _barriers(gm) == barriers


@given(random_graphs())
def test_find_redundancy_copy_leaves_graph_alone(gm: torch.fx.GraphModule) -> None:
    x, y = torch.randn(4, 4), torch.randn(4, 4)
    FakeTensorProp(gm, FakeTensorMode(allow_non_fake_inputs=True)).propagate(x.clone(), y.clone())
    before = [(n.name, n.op, n.target, n.args) for n in gm.graph.nodes]
    found = eliminate(scratch_copy(gm), materialize=False)
    assert [(n.name, n.op, n.target, n.args) for n in gm.graph.nodes] == before
    removed_names = {name for _, name in found.removed}
    assert removed_names <= {n for n, *_ in before}
    assert not removed_names & set(_barriers(gm))
