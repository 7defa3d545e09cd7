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

Training capture (``capture_training``, aot_autograd's joint graph) lives in
:mod:`fxenergy.graph.capture_training` and is re-exported here; what both share is in
:mod:`fxenergy.graph.capture_common`.

Nothing real is computed: inputs, parameters and buffers are swapped for fake tensors while
the graph runs (``torch.func.functional_call``), so models on the ``meta`` device capture
without allocating weights, and the original model is left exactly as it was.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from torch.utils import _pytree as pytree

from fxenergy.errors import CaptureError
from fxenergy.graph.capture_common import (
    _HINT,
    _as_args,
    _attr,
    _finish,
    _no_stack_traces,
    _raise_if_bad_inputs,
    _to_meta_if_model_is,
)
from fxenergy.graph.capture_training import capture_training
from fxenergy.graph.fake import (
    count_params,
    fake_mode,
    fakeify,
    quiet_fake_errors,
    run_with_fake_state,
)

METHODS = ("auto", "symbolic", "export")

# --- argument handling -------------------------------------------------------------------------


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
    raise CaptureError(_failure_message(model, failures))


def _failure_message(model: nn.Module, failures: dict[str, BaseException]) -> str:
    lines = [f"could not capture {type(model).__name__}:"]
    for m, err in failures.items():
        first = (str(err).strip().splitlines() or [""])[0][:300]
        lines.append(f"  {m}: {type(err).__name__}: {first}")
    lines.append(_HINT)
    return "\n".join(lines)


__all__ = ["METHODS", "capture", "capture_training"]
