"""Built-in models and the CLI's MODEL loader."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from fxenergy.cost import graph_totals
from fxenergy.errors import ModelLoadError
from fxenergy.graph import meta
from fxenergy.graph.capture import capture
from fxenergy.models import get_model, list_models, make_input
from fxenergy.models.cnn import SmallResNet
from fxenergy.models.gpt import GPTConfig, TinyGPT
from fxenergy.models.loader import load_model

HAS_HF = importlib.util.find_spec("transformers") is not None


def test_registry_lists_plain_torch_models() -> None:
    names = [s.name for s in list_models()]
    assert {"gpt-tiny", "cnn-small"} <= set(names)
    assert names == sorted(names)
    if HAS_HF:
        assert {"llama-7b", "gpt2", "resnet50", "vit-b16", "bert-base"} <= set(names)
    with pytest.raises(ModelLoadError, match="gpt-tiny"):
        get_model("gpt-huge")


def _gpt_params(c: GPTConfig) -> int:
    d, h = c.d_model, c.mlp_ratio * c.d_model
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d)
    return c.vocab_size * d + c.block_size * d + c.n_layer * block + 2 * d  # head tied


def _gpt_macs(c: GPTConfig, t: int) -> int:
    d, h = c.d_model, c.mlp_ratio * c.d_model
    linear = t * d * 3 * d + t * d * d + t * d * h + t * h * d
    attention = 2 * t * t * d  # QK^T and AV over all heads (full, not causal-halved)
    return c.n_layer * (linear + attention) + t * d * c.vocab_size


def test_gpt_tiny_runs_and_counts_exactly() -> None:
    spec = get_model("gpt-tiny")
    model = spec.build()
    args, kwargs = spec.example_inputs()
    assert args[0].dtype == torch.int64 and int(args[0].max()) < GPTConfig().vocab_size
    assert model(*args, **kwargs).shape == (1, 128, GPTConfig().vocab_size)
    assert sum(p.numel() for p in model.parameters()) == _gpt_params(GPTConfig())
    gm = capture(model, args, kwargs, method="symbolic")
    totals = graph_totals(gm)
    assert totals.params == _gpt_params(GPTConfig())
    assert totals.macs == _gpt_macs(GPTConfig(), 128)
    assert not totals.uncounted_ops


def test_gpt_tiny_small_config_on_meta() -> None:
    cfg = GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, d_model=32)
    with torch.device("meta"):
        model = TinyGPT(cfg)
    gm = capture(model, (make_input((2, 16), torch.int64, "meta"),))
    assert graph_totals(gm).macs == 2 * _gpt_macs(cfg, 16)


def _conv_linear_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Reference count from forward hooks: every Conv2d and Linear output element is one dot
    product of length in_channels/groups * kernel area (or in_features)."""
    total = 0

    def hook(mod: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        else:
            k = mod.in_features
        total += out.numel() * k

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]  # fmt: skip
    model(x)
    for h in handles:
        h.remove()
    return total


def test_cnn_small_macs_match_hook_reference() -> None:
    spec = get_model("cnn-small")
    model = spec.build()
    (x,), _ = spec.example_inputs()
    assert model(x).shape == (1, 10)
    assert isinstance(model, SmallResNet)
    totals = graph_totals(capture(model, (x,)))
    assert totals.macs == _conv_linear_macs(model, x)
    assert totals.params == sum(p.numel() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.skipif(not HAS_HF, reason="transformers not installed")
def test_transformers_models_build_on_meta_with_exact_params() -> None:
    expected = {  # published parameter counts of these architectures
        "llama-7b": 6_738_415_616,
        "gpt2": 124_439_808,
        "resnet50": 25_557_032,
        "vit-b16": 86_567_656,
        "bert-base": 109_482_240,
    }
    for name, params in expected.items():
        spec = get_model(name)
        model = spec.build()
        assert spec.default_device == "meta"
        assert all(p.device.type == "meta" for p in model.parameters())
        assert sum(p.numel() for p in model.parameters()) == params, name
        args, _ = spec.example_inputs()
        assert args[0].device.type == "meta"


# --- loader ------------------------------------------------------------------------------------


def test_loader_builtin_and_import_paths(tmp_path: Path) -> None:
    loaded = load_model("gpt-tiny")
    assert loaded.spec is not None and not loaded.module.training
    assert isinstance(load_model("torch.nn:Identity").module, nn.Identity)  # a class
    file = tmp_path / "mymodel.py"
    file.write_text(
        textwrap.dedent("""
        import torch
        INSTANCE = torch.nn.Linear(3, 4)
        def make():
            return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())
        class Net(torch.nn.Module):
            def forward(self, x):
                return x * 2
        NOT_A_MODEL = 3
    """)
    )
    assert isinstance(load_model(f"{file}:INSTANCE").module, nn.Linear)
    made = load_model(f"{file}:make", device="meta").module
    assert next(made.parameters()).device.type == "meta"  # factories run under the device
    assert load_model(f"{file}:Net").spec is None
    with pytest.raises(ModelLoadError, match="not a module"):
        load_model(f"{file}:NOT_A_MODEL")
    with pytest.raises(ModelLoadError, match="did you mean"):
        load_model(f"{file}:Nett")


@pytest.mark.parametrize(
    "text, message",
    [
        ("no-such-model", "not a built-in model"),
        ("no_such_pkg_xyz:Model", "cannot import module"),
        ("missing/file.py:Model", "no such file"),
        ("torch.nn:Linear", "with no arguments"),
    ],
)
def test_loader_errors(text: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_model(text)


class _ShapeBranch(nn.Module):
    """Python control flow on a shape: symbolic tracing cannot branch on a Proxy, export can."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.relu() if x.shape[0] > 1 else x


@pytest.mark.parametrize(
    ("name", "method", "notes"),
    [
        ("cnn-small", "symbolic", ()),
        ("gpt-tiny", "symbolic", ()),
        ("shape-branch", "export", ("symbolic failed: TraceError",)),
    ],
)
def test_capture_method_per_model(name: str, method: str, notes: tuple[str, ...]) -> None:
    if name == "shape-branch":
        model, args = _ShapeBranch(), (torch.randn(4, 3),)
    else:
        spec = get_model(name)
        model, args = spec.build("meta"), spec.example_inputs("meta")[0]
    info = capture(model, args).meta[meta.CAPTURE]
    assert (info.method, info.training, info.notes) == (method, False, notes)
