"""Training capture: one training step's joint forward+backward graph through aot_autograd.

The loss is wrapped into the module (``_WithLoss``), exported to an aten graph where torch.export
can (it handles models that check for tracing), and handed to ``aot_export_module`` with
``trace_joint=True``. Parameters and buffers become placeholders; their readers are attributed
to the owning module, as :func:`fxenergy.graph.capture.capture` does for forward graphs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from torch.utils import _pytree as pytree

from fxenergy.errors import CaptureError
from fxenergy.graph import capture_common as common
from fxenergy.graph import meta
from fxenergy.graph.fake import count_params, fake_mode, fresh_like


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
    args, kwargs = common._as_args(example_args), dict(example_kwargs or {})
    args = common._to_meta_if_model_is(model, args)
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
        gm, sig = aot_export_module(
            _exported(wrapper, args), list(args), trace_joint=True, output_loss_index=0
        )
    except Exception as err:
        common._raise_if_bad_inputs(model, args, kwargs, err)
        raise CaptureError(
            f"training capture of {type(model).__name__} failed: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}. The loss must be a scalar tensor "
            "and every parameter that requires grad must reach it; " + common._HINT
        ) from err
    _fill_missing_vals(gm)
    common._finish(gm, "aot-joint", training=True, params=count_params(model))
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
        with common._no_stack_traces():
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
        value = common._attr(node)
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
