"""Built-in models for reports, examples and tests, and the CLI's MODEL loader.

``gpt-tiny`` and ``cnn-small`` need nothing beyond torch; ``llama-7b``, ``gpt2``, ``resnet50``,
``vit-b16`` and ``bert-base`` are built from transformers configs with random weights (no hub
downloads) and are listed only when transformers is installed. Big models default to the
``meta`` device, so they capture without allocating weights.

Example::

    >>> from fxenergy.models import get_model
    >>> spec = get_model("gpt-tiny")
    >>> model = spec.build()
    >>> args, kwargs = spec.example_inputs()
    >>> tuple(model(*args, **kwargs).shape)
    (1, 128, 1024)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fxenergy.errors import ModelLoadError


@dataclass(frozen=True)
class ModelSpec:
    """A built-in model: how to build it and what to feed it.

    Attributes:
        name: registry name (kebab-case).
        description: one line for ``fxenergy models``.
        factory: builds the module (called under ``torch.device(device)``, so parameters are
            created directly on that device; ``meta`` allocates nothing).
        input_shapes: shape of each positional example input.
        input_dtype: dtype of the example inputs (``torch.int64`` for token ids).
        example_kwargs: keyword inputs (flags such as ``use_cache=False``).
        default_device: where :meth:`build` puts the model when no device is given.
        requires: Python packages the factory imports.
        vocab_size: upper bound of random token ids for integer inputs.
        capture_method: the capture method known to work (transformers models skip the
            symbolic_trace attempt that always fails on them).
    """

    name: str
    description: str
    factory: Callable[[], nn.Module]
    input_shapes: tuple[tuple[int, ...], ...]
    input_dtype: torch.dtype = torch.float32
    example_kwargs: dict[str, Any] = field(default_factory=dict)
    default_device: str = "cpu"
    requires: tuple[str, ...] = ()
    vocab_size: int = 0  #: for int inputs: ids are drawn below this (0: inputs are zeros)
    capture_method: str = "auto"  #: what ``method="auto"`` should use for this model

    def build(self, device: str | torch.device | None = None) -> nn.Module:
        """A fresh instance in eval mode on ``device`` (default: ``default_device``)."""
        with torch.device(device or self.default_device):
            return self.factory().eval()

    def example_inputs(
        self, device: str | torch.device | None = None
    ) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
        """Example ``(args, kwargs)`` on ``device`` (default: ``default_device``)."""
        device = torch.device(device or self.default_device)
        args = tuple(
            make_input(s, self.input_dtype, device, self.vocab_size) for s in self.input_shapes
        )
        return args, dict(self.example_kwargs)


def make_input(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str, high: int = 0
) -> torch.Tensor:
    """An example tensor: random values (ids below ``high`` for integer dtypes), empty on meta."""
    device = torch.device(device)
    if device.type == "meta":
        return torch.empty(shape, dtype=dtype, device=device)
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, dtype=dtype, device=device)
    if dtype == torch.bool:
        return torch.ones(shape, dtype=dtype, device=device)
    return torch.randint(0, max(high, 1), shape, dtype=dtype, device=device)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a built-in model (duplicate names are rejected)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"a model named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _available(spec: ModelSpec) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(pkg) is not None for pkg in spec.requires)


def list_models(include_unavailable: bool = False) -> list[ModelSpec]:
    """Built-in models, sorted by name; those needing a missing package are left out."""
    _load_builtins()
    specs = sorted(_REGISTRY.values(), key=lambda s: s.name)
    return [s for s in specs if include_unavailable or _available(s)]


def get_model(name: str) -> ModelSpec:
    """The built-in model called ``name``.

    Raises:
        ModelLoadError: no such model, or it needs a package that is not installed.
    """
    _load_builtins()
    spec = _REGISTRY.get(name)
    if spec is None:
        names = ", ".join(s.name for s in list_models())
        raise ModelLoadError(f"no built-in model {name!r}; built-in models: {names}")
    if not _available(spec):
        pkgs = " ".join(spec.requires)
        raise ModelLoadError(f"model {name!r} needs {pkgs}: pip install {pkgs}")
    return spec


def _load_builtins() -> None:
    from fxenergy.models import builtin  # noqa: F401  (registers on import)
