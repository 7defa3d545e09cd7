"""annotate-cost and the aten-level counter: formulas, bytes, published MAC counts."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from fxenergy.passes.annotate_cost import AnnotateCost
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from fxenergy.cost import graph_totals
from fxenergy.cost.ops import op_cost
from fxenergy.errors import UnknownGPUError
from fxenergy.graph import meta
from fxenergy.graph.capture import capture
from fxenergy.graph.pass_infra import Pipeline, registered_passes

transformers = pytest.importorskip("transformers")


def _annotated(model: nn.Module, *args: torch.Tensor, method: str = "auto", **kw):
    gm = capture(model, args, kw or None, method=method)
    return AnnotateCost()(gm).graph_module


def _node_costs(gm: torch.fx.GraphModule) -> dict[str, meta.CostRecord]:
    return {n.name: n.meta[meta.COST] for n in gm.graph.nodes}


# --- the pass ------------------------------------------------------------------------------------


def test_pass_annotates_every_node_and_graph() -> None:
    gm = _annotated(nn.Sequential(nn.Linear(8, 8), nn.ReLU()), torch.randn(2, 8))
    assert "annotate-cost" in registered_passes()
    for node in gm.graph.nodes:
        assert isinstance(node.meta[meta.COST], meta.CostRecord)
        assert node.meta[meta.ROOFLINE].gpu == "A100-SXM4-80GB"
    assert gm.meta[meta.GPU] == "A100-SXM4-80GB"
    assert {meta.COST, meta.ROOFLINE, meta.GPU} <= meta.analyses(gm)
    ph = next(iter(gm.graph.find_nodes(op="placeholder")))
    assert ph.meta[meta.COST].flops == ph.meta[meta.COST].bytes_total == 0
    assert ph.meta[meta.ROOFLINE].bound == "none"


def test_pipeline_option_and_unknown_gpu() -> None:
    gm = capture(nn.Linear(8, 8), torch.randn(2, 8))
    pipe = Pipeline.parse("annotate-cost{gpu=H100-SXM5}")
    assert str(pipe) == "annotate-cost{gpu=H100-SXM5}"
    assert pipe(gm).graph_module.meta[meta.GPU] == "H100-SXM5"
    with pytest.raises(UnknownGPUError, match="A100-SXM4-80GB"):
        AnnotateCost(gpu="B9000")


def test_linear_exact_flops_and_bytes() -> None:
    gm = _annotated(nn.Linear(64, 32), torch.randn(8, 64), method="export")
    totals = graph_totals(gm)
    assert totals.macs == 8 * 64 * 32 and totals.flops == 2 * 8 * 64 * 32
    assert totals.matmul_flops == totals.flops
    f32 = 4
    # addmm reads bias, x and the transposed weight (a view: read through, never copied)
    assert totals.bytes_read == (32 + 8 * 64 + 64 * 32) * f32
    assert totals.bytes_written == 8 * 32 * f32
    assert totals.params == 64 * 32 + 32 and totals.uncounted_ops == {}


def test_views_move_no_bytes_and_launch_no_kernel() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        return x.view(4, 16).transpose(0, 1).unsqueeze(0)[..., :2]

    gm = _annotated(_Fn(f), torch.randn(64), method="export")
    for node in gm.graph.nodes:
        cost = node.meta[meta.COST]
        assert cost.bytes_total == 0 and cost.kernels == 0 and cost.flops == 0


class _Fn(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(
        self, a: torch.Tensor, b: torch.Tensor | None = None, c: torch.Tensor | None = None
    ):
        return self.fn(*(t for t in (a, b, c) if t is not None))


@pytest.mark.parametrize(
    ("fn", "per_elem"),
    [
        (torch.relu, 1),
        (lambda x: x * 2 + 1, 2),
        (lambda x: torch.softmax(x, -1), 5),
        (lambda x: F.layer_norm(x, (16,)), 4),
        (lambda x: x.sum(-1), 1),
        (lambda x: x.var(-1), 3),
    ],
)
def test_vector_formulas(fn, per_elem: int) -> None:
    gm = _annotated(_Fn(fn), torch.randn(4, 16), method="symbolic")
    totals = graph_totals(gm)
    assert totals.flops == per_elem * 64 and totals.macs == 0 and totals.uncounted_ops == {}


def test_data_movement_is_counted_but_not_uncounted() -> None:
    def f(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x.gather(1, idx)], 0).contiguous()

    gm = _annotated(_Fn(f), torch.randn(4, 8), torch.zeros(4, 8, dtype=torch.long))
    totals = graph_totals(gm)
    assert totals.flops == 0 and totals.bytes_written > 0 and totals.uncounted_ops == {}


def test_op_without_formula_is_memory_only_and_listed() -> None:
    gm = _annotated(_Fn(lambda x: torch.fft.rfft(x)), torch.randn(4, 64))
    totals = graph_totals(gm)
    assert totals.uncounted_ops and totals.flops == 0 and totals.bytes_total > 0
    node = next(n for n in gm.graph.nodes if n.meta[meta.COST].uncounted_ops)
    assert set(node.meta[meta.COST].uncounted_ops) <= set(node.meta[meta.COST].aten_ops)


# --- attention variants ---------------------------------------------------------------------------


def test_cpu_sdpa_counts_attention_matmuls() -> None:
    b, h, length, e = 2, 4, 10, 8
    q = torch.randn(b, h, length, e)
    gm = _annotated(_Fn(F.scaled_dot_product_attention), q, q, q, method="symbolic")
    assert graph_totals(gm).macs == 2 * b * h * length * length * e


def test_fused_multi_head_attention_matches_unfused_macs() -> None:
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    x = torch.randn(2, 6, 32)
    unfused = graph_totals(_annotated(mha, x, x, x, method="export")).macs
    with FakeTensorMode() as mode, torch.no_grad():
        fx, w = mode.from_tensor(x), mode.from_tensor(mha.in_proj_weight)
        b, pw = mode.from_tensor(mha.in_proj_bias), mode.from_tensor(mha.out_proj.weight)
        pb = mode.from_tensor(mha.out_proj.bias)
        args = (fx, fx, fx, 32, 4, w, b, pw, pb, None, False)
        out = torch.ops.aten._native_multi_head_attention(*args)
        cost = op_cost(torch.ops.aten._native_multi_head_attention.default, args, {}, out)
    assert cost is not None and cost.matmul_flops // 2 == unfused


# --- symbolic vs export --------------------------------------------------------------------------


class TinyTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 32)
        self.enc = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
        self.ln = nn.LayerNorm(32)
        self.head = nn.Linear(32, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.head(self.ln(self.enc(self.emb(ids))).mean(1)), -1)


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, stride=2), nn.GroupNorm(4, 16), nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1)).softmax(-1)


@pytest.mark.parametrize(
    ("model", "x"),
    [
        (TinyTransformer().eval(), torch.randint(0, 100, (2, 12))),
        (TinyCNN().eval(), torch.randn(2, 3, 32, 32)),
        (TinyCNN().train(), torch.randn(2, 3, 32, 32)),
    ],
)
def test_symbolic_and_export_give_same_totals(model: nn.Module, x: torch.Tensor) -> None:
    sym = graph_totals(_annotated(model, x, method="symbolic"))
    exp = graph_totals(_annotated(model, x, method="export"))
    keys = ("flops", "macs", "matmul_flops", "bytes_read", "bytes_written", "params", "kernels")
    assert {k: getattr(sym, k) for k in keys} == {k: getattr(exp, k) for k in keys}
    assert sym.uncounted_ops == exp.uncounted_ops == {}
    assert sym.roofline_time_s == pytest.approx(exp.roofline_time_s)


# --- published counts on transformers models ------------------------------------------------------


def _meta(cls, config):
    with torch.device("meta"):
        return cls(config).eval()


def test_resnet50_macs_and_params() -> None:
    model = _meta(transformers.ResNetForImageClassification, transformers.ResNetConfig())
    totals = graph_totals(capture(model, torch.zeros(1, 3, 224, 224)))
    # published: 4.089 GMACs (torchvision ResNet-50, 1000 classes; this head has 2)
    assert totals.macs == pytest.approx(4.089e9, rel=0.01)
    assert totals.params == 25_557_032 - 2048 * 998 - 998 and totals.uncounted_ops == {}


def test_vit_b16_macs_include_attention() -> None:
    config = transformers.ViTConfig(num_labels=1000)
    model = _meta(transformers.ViTForImageClassification, config)
    totals = graph_totals(capture(model, torch.zeros(1, 3, 224, 224)))
    assert totals.macs == pytest.approx(17.564e9, rel=0.01)  # FlopCounterMode on CPU: 11.3
    assert totals.params == 86_567_656 and totals.uncounted_ops == {}


def test_gpt2_small_config_closed_form() -> None:
    layers, d, vocab, positions, length = 2, 64, 500, 128, 32
    config = transformers.GPT2Config(
        n_layer=layers, n_embd=d, n_head=4, vocab_size=vocab, n_positions=positions
    )
    model = _meta(transformers.GPT2LMHeadModel, config)
    totals = graph_totals(
        capture(model, torch.zeros(1, length, dtype=torch.long), {"use_cache": False})
    )
    assert totals.params == vocab * d + positions * d + layers * (12 * d * d + 13 * d) + 2 * d
    per_token = layers * 12 * d * d + d * vocab
    assert totals.macs == length * per_token + layers * 2 * length * length * d
    assert totals.uncounted_ops == {}


def test_llama_small_config_closed_form() -> None:
    n, h, inter, vocab, length = 2, 128, 344, 1000, 16
    config = transformers.LlamaConfig(
        num_hidden_layers=n, hidden_size=h, intermediate_size=inter, vocab_size=vocab,
        num_attention_heads=4, num_key_value_heads=4,
    )  # fmt: skip
    model = _meta(transformers.LlamaForCausalLM, config)
    gm = capture(model, torch.zeros(1, length, dtype=torch.long), {"use_cache": False})
    totals = graph_totals(gm)
    assert totals.params == 2 * vocab * h + n * (4 * h * h + 3 * h * inter + 2 * h) + h
    per_token = n * (4 * h * h + 3 * h * inter) + h * vocab
    assert totals.macs == length * per_token + n * 2 * length * length * h
    assert totals.uncounted_ops == {}


@pytest.mark.slow
def test_llama_7b_on_meta_is_fast() -> None:
    t0 = time.perf_counter()
    model = _meta(transformers.LlamaForCausalLM, transformers.LlamaConfig())
    gm = capture(model, torch.zeros(1, 128, dtype=torch.long), {"use_cache": False})
    totals = graph_totals(gm)
    elapsed = time.perf_counter() - t0
    assert totals.params == 6_738_415_616 and totals.uncounted_ops == {}
    per_token = 32 * (4 * 4096**2 + 3 * 4096 * 11008) + 4096 * 32000
    assert totals.macs == 128 * per_token + 32 * 2 * 128 * 128 * 4096
    assert elapsed < 60  # 20 s target on an idle 2-core machine; CI is shared


def test_tf32_flags_follow_torch_backends_at_capture() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
        gm = _annotated(model, torch.randn(1, 3, 8, 8), method="symbolic")
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    by_module = {n.meta[meta.MODULE]: n.meta[meta.COST].allow_tf32 for n in gm.graph.nodes}
    assert by_module["0"] is True and by_module["2"] is False  # conv: cuDNN flag; linear: cuBLAS


@settings(max_examples=15)
@given(b=st.integers(1, 4), m=st.integers(1, 16), k=st.integers(1, 16), n=st.integers(1, 16))
def test_bmm_and_broadcast_add_exact(b: int, m: int, k: int, n: int) -> None:
    def f(x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return torch.bmm(x, y) + bias  # bias (n,) broadcasts over (b, m, n)

    x, y, bias = torch.randn(b, m, k), torch.randn(b, k, n), torch.randn(n)
    gm = _annotated(_Fn(f), x, y, bias, method="symbolic")
    t = graph_totals(gm)
    assert t.macs == b * m * k * n and t.flops == 2 * b * m * k * n + b * m * n
    out = b * m * n * 4
    assert t.bytes_read == (b * m * k + b * k * n) * 4 + (out + n * 4)
    assert t.bytes_written == 2 * out


def test_graphs_from_shape_prop_or_without_values() -> None:
    from torch.fx.passes.shape_prop import ShapeProp

    from fxenergy.errors import FxEnergyError

    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    gm = torch.fx.symbolic_trace(model)
    ShapeProp(gm).propagate(torch.randn(3, 8))  # tensor_meta only, read through node_value
    assert graph_totals(gm).macs == 3 * 8 * 4
    with pytest.raises(FxEnergyError, match="capture the model"):
        graph_totals(torch.fx.symbolic_trace(model))


def test_fused_encoder_layer_matches_unfused_macs() -> None:
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    x = torch.randn(2, 6, 32)
    unfused = graph_totals(_annotated(layer, x, method="export")).macs
    a, f1, f2 = layer.self_attn, layer.linear1, layer.linear2
    n1, n2 = layer.norm1, layer.norm2
    with FakeTensorMode() as mode, torch.no_grad():
        fake = [mode.from_tensor(t) for t in (x, a.in_proj_weight, a.in_proj_bias)]
        fake += [mode.from_tensor(t) for t in (a.out_proj.weight, a.out_proj.bias)]
        norms = [mode.from_tensor(t) for t in (n1.weight, n1.bias, n2.weight, n2.bias)]
        ffn = [mode.from_tensor(t) for t in (f1.weight, f1.bias, f2.weight, f2.bias)]
        args = (fake[0], 32, 4, *fake[1:], False, False, 1e-5, *norms, *ffn, None, None)
        op = torch.ops.aten._transformer_encoder_layer_fwd.default
        cost = op_cost(op, args, {}, op(*args))
    assert cost is not None and cost.matmul_flops // 2 == unfused
    assert cost.vector_flops > 0


@pytest.mark.parametrize(
    ("pool", "window"),
    [(nn.MaxPool2d(2), 4), (nn.AvgPool2d(3, stride=1), 9), (nn.MaxPool2d((2, 3)), 6)],
)
def test_pooling_counts_window_per_output(pool: nn.Module, window: int) -> None:
    x = torch.randn(1, 2, 8, 9)
    totals = graph_totals(capture(pool, x))
    assert totals.flops == pool(x).numel() * window
