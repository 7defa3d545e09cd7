"""Capture front ends: fake values, module paths, meta models, errors, training graphs."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fxenergy.cost import graph_totals
from fxenergy.errors import CaptureError, InputShapeError
from fxenergy.graph import meta
from fxenergy.graph.capture import capture, capture_training


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + torch.relu(self.fc(x)))


class Net(nn.Module):
    def __init__(self, d: int = 16, n: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(d) for _ in range(n))
        self.bn = nn.BatchNorm1d(d)
        self.head = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(self.bn(x))


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # Python branch on a tensor's value: neither tracer can follow it
            return self.fc(x)
        return x


def _value_nodes(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    skip = {"output"}
    return [
        n
        for n in gm.graph.nodes
        if n.op not in skip and n.target != "_guards_fn" and n.type is not type(None)
    ]


@pytest.mark.parametrize("method", ["symbolic", "export"])
def test_nodes_carry_fake_values_and_modules(method: str) -> None:
    model = Net().eval()
    gm = capture(model, torch.randn(4, 16), method=method)
    info = gm.meta[meta.CAPTURE]
    assert info.method == method and not info.training
    assert gm.meta[meta.PARAMS] == sum(p.numel() for p in model.parameters())
    from torch._subclasses.fake_tensor import FakeTensor

    for node in _value_nodes(gm):
        val = node.meta.get("val")
        if node.op in ("call_module", "placeholder") or isinstance(
            node.target, torch._ops.OpOverload
        ):
            assert isinstance(val, FakeTensor) or all(
                isinstance(v, FakeTensor) for v in meta.tensor_values(val)
            ), node.name
    modules = {n.meta[meta.MODULE] for n in gm.graph.nodes}
    assert {"blocks.0.fc", "blocks.1.norm", "bn", "head"} <= modules
    out = [n for n in gm.graph.nodes if n.op == "call_module" or "linear" in str(n.target)]
    assert out, "expected linear layers in the graph"


def test_auto_prefers_symbolic_and_falls_back_to_export() -> None:
    gm = capture(Net().eval(), torch.randn(2, 16))
    assert gm.meta[meta.CAPTURE].method == "symbolic"


def test_original_model_untouched_and_callable() -> None:
    model = Net().train()  # training-mode BatchNorm updates its buffers in place
    before = {k: v.clone() for k, v in model.state_dict().items()}
    capture(model, torch.randn(4, 16), method="symbolic")
    capture(model, torch.randn(4, 16), method="export")
    with pytest.raises(InputShapeError):
        capture(model, torch.randn(4, 7))
    after = model.state_dict()
    assert all(type(v) is torch.Tensor and torch.equal(before[k], v) for k, v in after.items())
    assert model(torch.randn(4, 16)).shape == (4, 3)


def test_meta_model_captures_without_weights() -> None:
    with torch.device("meta"):
        model = Net(d=4096, n=4).eval()
    gm = capture(model, torch.zeros(2, 4096))  # CPU input is moved to meta
    assert all(p.is_meta for p in model.parameters())
    assert graph_totals(gm).macs == 2 * (4 * 4096 * 4096 + 4096 * 3)


def test_wrong_shapes_report_model_error_and_shapes() -> None:
    with pytest.raises(InputShapeError) as err:
        capture(Net(), torch.randn(4, 9))
    msg = str(err.value)
    assert "rejected inputs ((4, 9):float32" in msg  # the shapes tried
    assert "[4, 9] X [16, 16]" in msg  # the model's own error (its first Linear)


def test_untraceable_model_names_both_failures() -> None:
    with pytest.raises(CaptureError) as err:
        capture(DataDependent(), torch.randn(2, 4))
    msg = str(err.value)
    assert not isinstance(err.value, InputShapeError)
    assert "symbolic:" in msg and "export:" in msg and "Try:" in msg


def test_unknown_method() -> None:
    with pytest.raises(CaptureError, match="auto, symbolic, export"):
        capture(Net(), torch.randn(2, 16), method="jit")


def test_kwargs_are_specialized_in_symbolic_capture() -> None:
    class WithFlag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor, double: bool = False) -> torch.Tensor:
            y = self.fc(x)
            return y * 2 if double else y

    for double in (False, True):
        gm = capture(WithFlag(), torch.randn(2, 8), {"double": double}, method="symbolic")
        assert ("mul" in str(gm.graph)) == double


def test_training_capture_is_joint_forward_backward() -> None:
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    before = [p.clone() for p in model.parameters()]
    gm = capture_training(model, torch.randn(5, 32), lambda out: out.pow(2).mean())
    info = gm.meta[meta.CAPTURE]
    assert info.training and info.method == "aot-joint"
    out_node = next(iter(gm.graph.find_nodes(op="output")))
    assert len(out_node.args[0]) == 1 + 4  # loss + one gradient per parameter
    fwd = 5 * (32 * 64 + 64 * 8)
    # forward + grad of both weights + grad of the hidden activation (the input needs none)
    assert graph_totals(gm).macs == fwd + fwd + 5 * 64 * 8
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert {"0", "2"} <= {n.meta[meta.MODULE] for n in gm.graph.nodes}


@settings(max_examples=6)  # each example runs torch.export (~1 s)
@given(
    widths=st.lists(st.integers(1, 24), min_size=2, max_size=4),
    batch=st.integers(1, 6),
)
def test_symbolic_and_export_agree_on_random_mlps(widths: list[int], batch: int) -> None:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.GELU()]
    model = nn.Sequential(*layers).eval()
    x = torch.randn(batch, widths[0])
    sym = graph_totals(capture(model, x, method="symbolic"))
    exp = graph_totals(capture(model, x, method="export"))
    assert sym.macs == exp.macs == batch * sum(a * b for a, b in itertools.pairwise(widths))
    assert (sym.flops, sym.bytes_read, sym.bytes_written) == (
        exp.flops,
        exp.bytes_read,
        exp.bytes_written,
    )


def test_training_capture_with_tied_weights() -> None:
    class TiedLM(nn.Module):
        def __init__(self, vocab: int = 50, d: int = 16) -> None:
            super().__init__()
            self.emb = nn.Embedding(vocab, d)
            self.head = nn.Linear(d, vocab, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.emb(ids)))

    gm = capture_training(TiedLM(), torch.zeros(2, 7, dtype=torch.long))
    totals = graph_totals(gm)
    assert totals.params == 50 * 16
    assert totals.macs == 3 * 2 * 7 * 16 * 50  # forward, grad of activations, grad of weight
