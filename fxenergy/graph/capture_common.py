"""What both capture front ends share: input handling, module ownership, failure diagnosis.

:mod:`fxenergy.graph.capture` (forward graphs) and :mod:`fxenergy.graph.capture_training`
(joint training graphs) both build on these helpers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.utils import _pytree as pytree

from fxenergy.errors import InputShapeError
from fxenergy.graph import meta
from fxenergy.graph.fake import (
    fake_mode,
    fakeify,
    run_with_fake_state,
    tf32_flags,
)

_HINT = (
    "Try: method='export' or 'symbolic' alone to see one failure in full; pass non-tensor "
    "arguments (flags such as use_cache=False) through example_kwargs; remove data-dependent "
    "Python control flow from forward(); or call torch.export.draft_export(model, args) for "
    "a detailed tracing report."
)


def _as_args(example_args: Any) -> tuple[Any, ...]:
    if isinstance(example_args, (tuple, list)):
        return tuple(example_args)
    return (example_args,)


def _to_meta_if_model_is(model: nn.Module, value: Any) -> Any:
    """A model built on ``meta`` cannot mix with CPU inputs; move them (shapes are all we use)."""
    devices = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
    if devices != {"meta"}:
        return value

    def conv(x: Any) -> Any:
        return x.to("meta") if isinstance(x, torch.Tensor) else x

    return pytree.tree_map(conv, value)


def _describe(args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    def one(v: Any) -> str:
        if isinstance(v, torch.Tensor):
            return f"{tuple(v.shape)}:{str(v.dtype).replace('torch.', '')}@{v.device}"
        return repr(v)

    parts = [one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


# --- module ownership --------------------------------------------------------------------------


def _normalize_path(path: str) -> str:
    """``L['self'].layers[0]`` / ``L__self___layers_0`` styles -> ``layers.0``."""
    path = re.sub(r"^L\['self'\]\.?", "", path)
    path = re.sub(r"\._modules\['([^']+)'\]", r".\1", path)
    path = re.sub(r"\[(\d+)\]", r".\1", path)
    path = re.sub(r"\['([^']+)'\]", r".\1", path)
    return path.strip(".")


def _owner(node: torch.fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    if node.op == "get_attr":
        return str(node.target).rpartition(".")[0]
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        stack = node.meta.get("fwd_nn_module_stack") or {}
    if not stack:
        return ""
    last = list(stack.values())[-1]
    path = last[0] if isinstance(last, tuple) else str(last)
    return _normalize_path(path)


def _finish(gm: torch.fx.GraphModule, method: str, training: bool, params: int, notes=()) -> None:
    for node in gm.graph.nodes:
        node.meta[meta.MODULE] = _owner(node)
    gm.meta[meta.CAPTURE] = meta.CaptureInfo(method, training, tuple(notes))
    gm.meta[meta.PARAMS] = params
    gm.meta[meta.ALLOW_TF32] = tf32_flags()


@contextmanager
def _no_stack_traces() -> Iterator[None]:
    """Recording a Python stack trace per node is ~25% of torch.export's time; we never use it."""
    config = torch.fx.config
    old = getattr(config, "do_not_emit_stack_traces", False)
    config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        config.do_not_emit_stack_traces = old


def _attr(node: torch.fx.Node) -> Any:
    obj: Any = node.graph.owning_module
    for part in str(node.target).split("."):
        obj = getattr(obj, part)
    return obj


def _raise_if_bad_inputs(model: nn.Module, args: tuple, kwargs: dict, err: BaseException) -> None:
    """If eager execution on fake inputs fails too, the inputs (not the tracer) are at fault."""
    mode = fake_mode()
    try:
        run_with_fake_state(model, mode, model, *fakeify(mode, args), **fakeify(mode, kwargs))
    except Exception as own:
        if _is_tracing_limit(own):  # data-dependent Python: a tracing problem, not the inputs
            return
        raise InputShapeError(
            f"{type(model).__name__} rejected inputs {_describe(args, kwargs)}: "
            f"{type(own).__name__}: {str(own).rstrip('.')}. "
            "Check the input shapes and dtypes the model expects."
        ) from own


def _is_tracing_limit(err: BaseException) -> bool:
    """Errors fake tensors raise where real tensors would not (values are unknown)."""
    from torch._subclasses import fake_tensor as ft

    limits: tuple[type[BaseException], ...] = (
        ft.DataDependentOutputException,
        ft.DynamicOutputShapeException,
        ft.UnsupportedOperatorException,
        ft.UnsupportedFakeTensorException,
    )
    try:
        from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

        limits += (GuardOnDataDependentSymNode,)
    except ImportError:
        pass
    return isinstance(err, limits)
