"""Capture front ends: turn an ``nn.Module`` into a ``torch.fx.GraphModule`` with fake values.

Every value-producing node of the result carries a fake tensor (or a tuple of them) in
``node.meta["val"]``, the dotted path of the ``nn.Module`` that owns it in
``node.meta[meta.MODULE]``, and the graph carries :class:`~fxenergy.graph.meta.CaptureInfo`,
the parameter count and the TF32 flags read at capture time.

Methods:
    ``"symbolic"``: ``torch.fx.symbolic_trace`` plus fake-tensor shape propagation
    (``FakeTensorProp``); ``call_module`` nodes for ``torch.nn`` layers.
    ``"export"``: ``torch.export.export(strict=False)``; an aten graph (``ep.module()``).
    ``"auto"``: symbolic, falling back to export.

Nothing real is computed: inputs, parameters and buffers are swapped for fake tensors while
the graph runs (``torch.func.functional_call``), so models on the ``meta`` device capture
without allocating weights, and the original model is left exactly as it was.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from torch.utils import _pytree as pytree

from fxenergy.cost.fake import (
    count_params,
    fake_mode,
    fakeify,
    fresh_like,
    quiet_fake_errors,
    run_with_fake_state,
    tf32_flags,
)
from fxenergy.errors import CaptureError, InputShapeError
from fxenergy.graph import meta
from fxenergy.graph.capture_log import VERBOSE_ENV, capture_log

METHODS = ("auto", "symbolic", "export")

_HINT = (
    "Try: method='export' or 'symbolic' alone to see one failure in full; pass non-tensor "
    "arguments (flags such as use_cache=False) through example_kwargs; remove data-dependent "
    "Python control flow from forward(); or call torch.export.draft_export(model, args) for "
    "a detailed tracing report."
)


# --- argument handling -------------------------------------------------------------------------


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


def _bind(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple]:
    """(name, value, is_tensor) for each named forward parameter, defaults filled in."""
    sig = inspect.signature(model.forward)
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    out = []
    for name, param in sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            if bound.arguments.get(name):
                raise CaptureError(
                    f"symbolic capture cannot bind *args/**kwargs of {type(model).__name__}."
                    "forward; use method='export'"
                )
            continue
        value = bound.arguments[name]
        tensorish = any(isinstance(x, torch.Tensor) for x in pytree.tree_leaves(value))
        out.append((name, value, tensorish))
    return out


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


# --- symbolic ----------------------------------------------------------------------------------


class _NotTraceable(Exception):
    """symbolic_trace itself failed (before any input was used)."""


def _symbolic(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]):
    bound = _bind(model, args, kwargs)
    concrete = {name: value for name, value, tensorish in bound if not tensorish}
    try:
        gm = torch.fx.symbolic_trace(model, concrete_args=concrete or None)
    except Exception as err:
        raise _NotTraceable(err) from err
    mode = fake_mode()
    values = [fakeify(mode, value) for _, value, _ in bound]

    def propagate(*vals: Any) -> Any:
        return FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*vals)

    run_with_fake_state(gm, mode, propagate, *values)
    for node, value in zip(gm.graph.find_nodes(op="placeholder"), values, strict=False):
        node.meta.setdefault("val", value)  # specialized non-tensor inputs (None, flags)
    return gm


# --- export ------------------------------------------------------------------------------------


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


def _export(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]):
    with _no_stack_traces():
        ep = torch.export.export(model, args, kwargs, strict=False)
    # ep.module() keeps parameters as attributes (countable, meta-friendly) and node vals.
    gm = ep.module()
    missing = [n.name for n in gm.graph.nodes if n.op != "output" and _needs_val(n)]
    if missing:
        raise CaptureError(f"torch.export left nodes without fake values: {missing[:5]}")
    return gm


def _needs_val(node: torch.fx.Node) -> bool:
    if "val" in node.meta:
        return False
    if node.op == "get_attr":  # subgraphs of higher-order ops (autocast, set_grad) have none
        return not isinstance(_attr(node), torch.nn.Module)
    return node.op == "placeholder" or (
        node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
    )


def _attr(node: torch.fx.Node) -> Any:
    obj: Any = node.graph.owning_module
    for part in str(node.target).split("."):
        obj = getattr(obj, part)
    return obj


# --- public API --------------------------------------------------------------------------------


def capture(
    model: nn.Module,
    example_args: Any,
    example_kwargs: dict[str, Any] | None = None,
    method: str = "auto",
) -> torch.fx.GraphModule:
    """Trace ``model`` into a GraphModule whose nodes carry fake values and owning modules.

    Args:
        model: the module to capture (real weights, or built on the ``meta`` device).
        example_args: a tensor or a tuple of positional inputs (real or meta tensors; only
            their shapes, dtypes and devices are used).
        example_kwargs: keyword inputs; non-tensor ones (``use_cache=False``) are specialized.
        method: ``"auto"``, ``"symbolic"`` or ``"export"``.

    Returns:
        The captured graph; ``gm.meta[meta.CAPTURE]`` says how it was made.

    Raises:
        InputShapeError: the model itself rejects inputs of these shapes (its error included).
        CaptureError: no method could trace the model (each failure is listed).
    """
    if method not in METHODS:
        raise CaptureError(f"unknown capture method {method!r}; use one of {', '.join(METHODS)}")
    args, kwargs = _as_args(example_args), dict(example_kwargs or {})
    args, kwargs = _to_meta_if_model_is(model, (args, kwargs))
    tried = ("symbolic", "export") if method == "auto" else (method,)
    failures: dict[str, BaseException] = {}
    with capture_log() as log_path:
        gm = _first_capture(model, args, kwargs, tried, failures)
    if gm is not None:
        return gm
    raise CaptureError(_failure_message(model, failures, log_path))


def _first_capture(
    model: nn.Module,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    tried: tuple[str, ...],
    failures: dict[str, BaseException],
) -> torch.fx.GraphModule | None:
    """The first method in ``tried`` that captures ``model``; failures recorded."""
    for m in tried:
        try:
            with quiet_fake_errors():
                gm = (
                    _symbolic(model, args, kwargs)
                    if m == "symbolic"
                    else _export(model, args, kwargs)
                )
        except _NotTraceable as err:  # the inputs played no part: no need to check them
            failures[m] = err.__cause__ or err
            continue
        except Exception as err:
            failures[m] = err
            with quiet_fake_errors():
                _raise_if_bad_inputs(model, args, kwargs, err)
            continue
        notes = [f"{k} failed: {type(e).__name__}" for k, e in failures.items()]
        _finish(gm, m, training=False, params=count_params(model), notes=notes)
        return gm
    return None


def _failure_message(
    model: nn.Module, failures: dict[str, BaseException], log_path: Path | None = None
) -> str:
    lines = [f"could not capture {type(model).__name__}:"]
    for m, err in failures.items():
        first = (str(err).strip().splitlines() or [""])[0][:300]
        lines.append(f"  {m}: {type(err).__name__}: {first}")
    lines.append(_HINT)
    if log_path is not None:
        lines.append(
            f"torch's own output while capturing is in {log_path} ({VERBOSE_ENV}=1 shows it)"
        )
    return "\n".join(lines)


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


# --- training ----------------------------------------------------------------------------------


class _WithLoss(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Any], torch.Tensor] | None,
        kwargs: dict[str, Any],
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.kwargs = kwargs

    def forward(self, *args: Any) -> tuple[torch.Tensor]:
        out = self.model(*args, **self.kwargs)
        if self.loss_fn is not None:
            return (self.loss_fn(out),)
        first = pytree.tree_leaves(out)[0]
        return (first.float().sum(),)


def capture_training(
    model: nn.Module,
    example_args: Any,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    example_kwargs: dict[str, Any] | None = None,
) -> torch.fx.GraphModule:
    """Capture one training step's joint forward+backward graph through aot_autograd.

    Args:
        model: the module to train (real weights or ``meta``); left untouched.
        example_args: a tensor or tuple of positional inputs.
        loss_fn: maps the model's output to a scalar loss; default: sum of the first output.
        example_kwargs: non-tensor keyword arguments of forward (``use_cache=False``); pass
            tensors positionally.

    Returns:
        A GraphModule of aten ops whose placeholders are parameters, buffers and inputs and
        whose outputs are the loss and the gradients; ``CaptureInfo(method="aot-joint",
        training=True)``.

    Raises:
        CaptureError: aot_autograd is unavailable or could not trace the step.
    """
    args, kwargs = _as_args(example_args), dict(example_kwargs or {})
    args = _to_meta_if_model_is(model, args)
    if any(isinstance(x, torch.Tensor) for x in pytree.tree_leaves(kwargs)):
        raise CaptureError("capture_training takes tensor inputs positionally (example_args)")
    try:
        from torch._functorch.aot_autograd import aot_export_module
    except ImportError as err:  # private API: say what broke instead of an ImportError
        raise CaptureError(
            f"this torch ({torch.__version__}) lacks aot_export_module; training capture needs "
            "torch>=2.1 with torch._functorch.aot_autograd"
        ) from err
    wrapper = _WithLoss(model, loss_fn, kwargs)
    try:
        with capture_log():
            gm, sig = aot_export_module(
                _exported(wrapper, args), list(args), trace_joint=True, output_loss_index=0
            )
    except Exception as err:
        _raise_if_bad_inputs(model, args, kwargs, err)
        raise CaptureError(
            f"training capture of {type(model).__name__} failed: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}. The loss must be a scalar tensor "
            "and every parameter that requires grad must reach it; " + _HINT
        ) from err
    _fill_missing_vals(gm)
    _finish(gm, "aot-joint", training=True, params=count_params(model))
    _attribute_state(gm, [*sig.parameters, *sig.buffers])
    return gm


def _attribute_state(gm: torch.fx.GraphModule, state_names: list[str]) -> None:
    """aot_autograd drops module stacks: attribute each parameter/buffer placeholder, and the
    ops that read it (through views), to the module owning it. Other nodes stay at ""."""
    placeholders = gm.graph.find_nodes(op="placeholder")
    for node, name in zip(placeholders, state_names, strict=False):
        owner = name.removeprefix("model.").rpartition(".")[0]
        frontier = [node]
        while frontier:
            cur = frontier.pop()
            cur.meta[meta.MODULE] = owner
            for user in cur.users:
                if user.meta.get(meta.MODULE) == "" and user.op == "call_function":
                    user.meta[meta.MODULE] = owner
                    if _is_view_node(user):
                        frontier.append(user)


def _is_view_node(node: torch.fx.Node) -> bool:
    target = node.target
    return isinstance(target, torch._ops.OpOverload) and target.is_view


def _exported(wrapper: nn.Module, args: tuple[Any, ...]) -> nn.Module:
    """torch.export's aten graph of the loss (it handles models that check for tracing, as
    transformers' mask code does); the module itself where export fails."""
    try:
        with _no_stack_traces():
            gm = torch.export.export(wrapper, args, strict=False).module()
    except Exception:  # aot_export_module below reports the failure that matters
        return wrapper
    _drop_unread_parameters(gm)
    return gm


def _drop_unread_parameters(gm: torch.fx.GraphModule) -> None:
    """Read each tied weight under one name and remove the other names: aot_autograd would
    otherwise fail on a name that receives no gradient. Only the exported module's own
    attribute tree changes, never the user's model."""
    canonical: dict[int, str] = {}
    for name, p in gm.named_parameters(remove_duplicate=False):
        canonical.setdefault(id(p), name)
    for node in gm.graph.find_nodes(op="get_attr"):
        value = _attr(node)
        if isinstance(value, nn.Parameter):
            node.target = canonical[id(value)]
    gm.recompile()
    read = {str(n.target) for n in gm.graph.find_nodes(op="get_attr")}
    for name, _ in list(gm.named_parameters(remove_duplicate=False)):
        if name not in read:
            owner, _, leaf = name.rpartition(".")
            delattr(gm.get_submodule(owner), leaf)


def _fill_missing_vals(gm: torch.fx.GraphModule) -> None:
    """aot_autograd stores fake values on nodes; propagate them if a node was left without."""
    if all("val" in n.meta for n in gm.graph.nodes if n.op != "output"):
        return
    mode = fake_mode()
    inputs = [fresh_like(mode, n.meta["val"]) for n in gm.graph.find_nodes(op="placeholder")]
    FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*inputs)
