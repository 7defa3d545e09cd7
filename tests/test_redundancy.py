"""eliminate-redundancy and find-redundancy on hand-built graphs and a tiny GPT-2 export."""

from __future__ import annotations

import operator
from collections import Counter

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

from fxenergy.errors import PassError
from fxenergy.graph import meta
from fxenergy.graph.pass_infra import Pipeline, get_pass
from fxenergy.redundancy.rules import eliminate


def traced(module: nn.Module, *args: torch.Tensor) -> torch.fx.GraphModule:
    gm = torch.fx.symbolic_trace(module)
    FakeTensorProp(gm, FakeTensorMode(allow_non_fake_inputs=True)).propagate(*args)
    return gm


def rules_of(removed) -> Counter:
    return Counter(rule for rule, _ in removed)


class NoOps(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.float().contiguous() * 1  # same-dtype cast, contiguous no-op, x*1
        b = a.transpose(0, 1).transpose(0, 1).view(4, 8) - 0  # double transpose, view, x-0
        c = F.dropout(b, 0.5, training=False) / 1  # dropout in eval, x/1
        return c + 0.0  # x+0 on floats is kept: -0.0 + 0 = +0.0


def test_noop_rules_fire_and_keep_bits() -> None:
    x = torch.randn(4, 8)
    x[0, 0] = -0.0
    gm = traced(NoOps(), x)
    ref = gm(x)
    log = eliminate(gm)
    rules = rules_of(log.removed)
    assert rules["noop-cast"] == 1 and rules["noop-contiguous"] == 1
    assert rules["double-transpose"] == 1 and rules["identity-view"] == 1
    assert rules["arith-identity"] == 3 and rules["dropout-eval"] == 1
    out = gm(x)
    assert torch.equal(out, ref) and torch.equal(out.view(-1)[:1].sign(), ref.view(-1)[:1].sign())
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"] == [operator.add]


def test_cast_that_changes_dtype_and_broadcasting_mul_stay() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.double() + (x.int() * 1.0) + torch.ones(3, 4, 8) * 1

    x = torch.randn(4, 8)
    gm = traced(M(), x)
    ref = gm(x)
    log = eliminate(gm)
    assert rules_of(log.removed)["noop-cast"] == 0
    assert rules_of(log.removed)["arith-identity"] == 0  # int*1.0 promotes to float
    assert torch.equal(gm(x), ref)


def test_cse_merges_pure_ops_but_never_rng() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = torch.relu(x) + torch.relu(x)
            return a + torch.rand_like(x) + torch.rand_like(x)

    x = torch.randn(3, 5)
    gm = traced(M(), x)
    torch.manual_seed(1)
    ref = gm(x)
    log = eliminate(gm)
    assert rules_of(log.removed) == Counter({"cse": 1})
    names = [n.name for n in gm.graph.nodes]
    assert "rand_like" in names and "rand_like_1" in names
    torch.manual_seed(1)
    assert torch.equal(gm(x), ref)


def test_cse_does_not_merge_across_or_into_mutated_values() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            a = x + 1
            b = x + 1  # same expression as a, but a is written below
            a.mul_(2)
            c = torch.sin(x)
            x.add_(3)  # a write between two sin(x): they differ
            d = torch.sin(x)
            return a, b, c + d

    x = torch.randn(6)
    gm = traced(M(), x.clone())
    ref = gm(x.clone())
    log = eliminate(gm)
    assert rules_of(log.removed)["cse"] == 0
    assert all(torch.equal(o, r) for o, r in zip(gm(x.clone()), ref, strict=True))


def test_dce_keeps_side_effects_and_training_batchnorm() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.bn(x)  # result unused, but running stats change
            torch.cos(x)  # dead and pure
            return x * 2

    m = M().train()
    x = torch.randn(8, 4)
    gm = traced(m, x)
    log = eliminate(gm)
    assert rules_of(log.removed) == Counter({"dce": 1})
    assert any(n.op == "call_module" for n in gm.graph.nodes)


def test_constant_subgraphs_fold_on_real_tensors_only() -> None:
    gm = torch.fx.symbolic_trace(nn.Identity())  # rebuilt by hand: symbolic_trace folds early
    g = torch.fx.Graph()
    x = g.placeholder("x")
    pos = g.call_function(torch.arange, (8,))
    mask = g.call_function(torch.lt, (g.call_method("unsqueeze", (pos, 0)), 4))
    g.output(g.call_function(torch.mul, (x, g.call_method("float", (mask,)))))
    gm = torch.fx.GraphModule(gm, g)
    x_val = torch.randn(3, 8)
    ref = gm(x_val)
    log = eliminate(gm)
    assert rules_of(log.removed) == Counter({"fold-constant": 4})
    assert torch.equal(gm(x_val), ref)
    assert [n.op for n in gm.graph.nodes] == ["placeholder", "get_attr", "call_function", "output"]


def test_meta_constants_are_reported_not_folded() -> None:
    root = nn.Module()
    root.register_buffer("table", torch.empty(8, device="meta"))
    g = torch.fx.Graph()
    x = g.placeholder("x")
    table = g.get_attr("table")
    g.output(g.call_function(torch.add, (x, g.call_function(torch.cos, (table,)))))
    gm = torch.fx.GraphModule(root, g)
    log = eliminate(gm)
    assert rules_of(log.removed) == Counter({"foldable-meta": 1})
    assert any(n.target is torch.cos for n in gm.graph.nodes)


def test_passes_need_costs_and_report_savings() -> None:
    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.mm(x, x) + torch.mm(x, x)

    x = torch.randn(16, 16)
    gm = traced(M(), x)
    with pytest.raises(PassError, match="annotate-cost"):
        get_pass("eliminate-redundancy")(gm)
    gm = Pipeline.parse("find-redundancy")(gm).graph_module
    found = gm.meta[meta.REDUNDANCY]
    assert found.removed == (("cse", "mm_1"),)
    cost = next(n for n in gm.graph.nodes if n.name == "mm_1").meta[meta.COST]
    assert found.flops_saved == 2 * 16**3 == cost.flops
    assert found.bytes_saved == cost.bytes_total > 0
    assert any(n.name == "mm_1" for n in gm.graph.nodes)  # the analysis changed nothing
    gm = Pipeline.parse("eliminate-redundancy")(gm).graph_module
    assert gm.meta[meta.REDUNDANCY] == found
    assert not any(n.name == "mm_1" for n in gm.graph.nodes)
    assert torch.equal(gm(x), torch.mm(x, x) + torch.mm(x, x))


@pytest.mark.slow
def test_tiny_gpt2_export_keeps_outputs() -> None:
    transformers = pytest.importorskip("transformers")
    from fxenergy.graph.capture import capture

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32)
    cfg.bos_token_id = cfg.eos_token_id = 0
    model = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(0, 64, (2, 8))
    gm = capture(model, (), {"input_ids": ids, "use_cache": False}, method="export")
    ref = gm(input_ids=ids, use_cache=False)
    gm = Pipeline.parse("annotate-cost,eliminate-redundancy")(gm).graph_module
    report = gm.meta[meta.REDUNDANCY]
    rules = rules_of(report.removed)
    assert rules["fold-constant"] > 0 and rules["dropout-eval"] > 0 and rules["cse"] > 0
    out = gm(input_ids=ids, use_cache=False)
    assert torch.equal(out.logits, ref.logits)
