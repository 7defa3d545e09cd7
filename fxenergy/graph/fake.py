"""Fake-tensor execution: run a module or graph with its state swapped for fake tensors.

Shared by capture (shape propagation, input checks) and cost counting. Nothing real is computed
and the real module is restored exactly, even when the run raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.fx.passes.shape_prop import TensorMetadata
from torch.utils import _pytree as pytree


def fake_mode() -> FakeTensorMode:
    # Real tensors that reach an op (constants built inside forward) are fakeified on the fly.
    return FakeTensorMode(allow_non_fake_inputs=True)


def fakeify(mode: FakeTensorMode, value: Any) -> Any:
    """Replace every tensor in ``value`` by a fake tensor of the same shape, dtype and device."""

    def conv(x: Any) -> Any:
        return mode.from_tensor(x, static_shapes=True) if isinstance(x, torch.Tensor) else x

    return pytree.tree_map(conv, value)


def fake_state(module: nn.Module, mode: FakeTensorMode) -> dict[str, torch.Tensor]:
    """Fake copies of every parameter and buffer of ``module`` (tied tensors stay tied)."""
    state: dict[str, torch.Tensor] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        state[name] = mode.from_tensor(p, static_shapes=True)
    for name, b in module.named_buffers(remove_duplicate=False):
        state[name] = mode.from_tensor(b, static_shapes=True)
    return state


class _Call(nn.Module):
    """Holds ``module`` as a child so ``functional_call`` can swap its state during ``fn``."""

    def __init__(self, module: nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.inner = module
        self._fn = fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)


def run_with_fake_state(
    module: nn.Module, mode: FakeTensorMode, fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """Call ``fn(*args, **kwargs)`` inside ``mode`` with ``module``'s state swapped for fakes.

    The swap is undone afterwards, so in-place buffer updates (BatchNorm's running stats) never
    reach the real module.
    """
    state = {f"inner.{k}": v for k, v in fake_state(module, mode).items()}

    def inside_mode(*a: Any, **kw: Any) -> Any:
        # The swap and its undo run outside the fake mode: undoing inside it after an error
        # would leave fake tensors on the real module.
        with mode, torch.no_grad():
            return fn(*a, **kw)

    return torch.func.functional_call(_Call(module, inside_mode), state, args, kwargs, strict=False)


def count_params(module: nn.Module) -> int:
    """Number of distinct parameter elements of ``module`` (tied weights counted once)."""
    return sum(p.numel() for p in module.parameters())


def tf32_flags() -> tuple[bool, bool]:
    """Whether fp32 (matmuls, convolutions) may use TF32 tensor cores under torch's flags."""
    return bool(torch.backends.cuda.matmul.allow_tf32), bool(torch.backends.cudnn.allow_tf32)


@contextmanager
def quiet_fake_errors() -> Iterator[None]:
    """fake_tensor logs a traceback before re-raising op errors; we report them ourselves."""
    log = logging.getLogger("torch._subclasses.fake_tensor")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def fresh_like(mode: FakeTensorMode, val: Any) -> Any:
    """A new fake tensor in ``mode`` with ``val``'s shape, stride, dtype and device."""

    def one(v: Any) -> Any:
        if isinstance(v, TensorMetadata):  # ShapeProp's record: no device, assume CPU
            return _new_fake(
                mode, torch.empty_strided(v.shape, v.stride, dtype=v.dtype, device="meta"), "cpu"
            )
        if not isinstance(v, torch.Tensor):
            return v
        t = _new_fake(mode, v)
        return t.requires_grad_(v.requires_grad) if v.is_floating_point() else t

    return pytree.tree_map(one, val, is_leaf=lambda x: isinstance(x, TensorMetadata))


def _new_fake(mode: FakeTensorMode, v: torch.Tensor, device: Any = None) -> torch.Tensor:
    # Wrapping a meta tensor directly is 7x cheaper than dispatching empty_strided in the mode
    # (it matters when a 32-layer graph rebuilds thousands of outputs); fall back if torch's
    # FakeTensor constructor changes.
    elem = torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device="meta")
    try:
        return FakeTensor(mode, elem, torch.device(device or v.device))
    except TypeError:
        with mode:
            return torch.empty_strided(
                v.shape, v.stride(), dtype=v.dtype, device=device or v.device
            )
