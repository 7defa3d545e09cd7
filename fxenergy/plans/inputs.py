"""How an :class:`~fxenergy.api.OptimizedModule` is called: the model's own convention.

A plan is made for one captured graph, so for the input shapes, dtypes and non-tensor flags it was
captured with. :class:`InputBinding` lets the optimized module be called like the model:

* keyword inputs given at optimize time are defaults (``use_cache=False`` need not be repeated);
* arguments may come positionally or by name, as the model's ``forward`` allows;
* a call with other tensor shapes or dtypes, or another value of a flag the graph was specialized
  on, raises :class:`~fxenergy.errors.InputShapeError` naming what was planned (plans are per
  shape: optimize again for the new one). No silent re-plan: a re-plan costs a capture and a
  solve (seconds to minutes) and would hide that cost inside a forward call.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.utils import _pytree as pytree

from fxenergy.errors import InputShapeError


def _describe(values: Any) -> str:
    leaves = [x for x in pytree.tree_leaves(values) if isinstance(x, torch.Tensor)]
    return ", ".join(f"{str(t.dtype).replace('torch.', '')}[{'x'.join(map(str, t.shape))}]"
                     for t in leaves)  # fmt: skip


def _signature(values: Any) -> tuple:
    return tuple(
        (tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else ("value", repr(x))
        for x in pytree.tree_leaves(values)
    )


def _param_of(placeholder: str, params: list[str]) -> str | None:
    """The forward parameter a graph placeholder stands for (``use_cache_1`` -> ``use_cache``:
    symbolic tracing renames a specialized flag)."""
    if placeholder in params:
        return placeholder
    base = re.sub(r"_\d+$", "", placeholder)
    return base if base in params else None


@dataclass(frozen=True)
class InputBinding:
    """The model's calling convention, the graph's inputs and the inputs the plan was made for.

    ``mapping`` names, for each placeholder of the graph in order, the ``forward`` parameter
    that feeds it; a call is bound to the model's signature (defaults applied, optimize-time
    keyword inputs as defaults), then handed to the graph positionally.
    """

    signature: inspect.Signature | None
    mapping: tuple[str, ...] | None  #: forward parameter per graph placeholder (None: as given)
    defaults: dict[str, Any]  #: keyword inputs given at optimize time
    planned: tuple  #: shapes/dtypes/values of the inputs the plan was made for
    planned_text: str

    @classmethod
    def from_example(
        cls,
        model: nn.Module,
        gm: torch.fx.GraphModule,
        example_args: tuple,
        example_kwargs: dict[str, Any],
    ) -> InputBinding:
        """Record the calling convention and the example inputs a plan is made for."""
        kwargs = dict(example_kwargs)
        try:
            sig: inspect.Signature | None = inspect.signature(model.forward)
        except (TypeError, ValueError):
            sig = None
        mapping = _mapping(sig, gm)
        binding = cls(sig, mapping, kwargs, (), "")
        args, kw = binding._arrange(tuple(example_args), kwargs)
        return cls(sig, mapping, kwargs, _signature((args, kw)), _describe((args, kw)))

    def bind(self, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        """``(args, kwargs)`` for the graph, or :class:`InputShapeError` naming the planned
        inputs when the call differs from them in shape, dtype or a specialized flag."""
        merged = {**self._defaults_for(len(args)), **kwargs}
        args, kwargs = self._arrange(tuple(args), merged)
        if _signature((args, kwargs)) != self.planned:
            raise InputShapeError(
                f"this module was planned for inputs {self.planned_text or '(none)'}"
                f"{self._flags()}; got {_describe((args, kwargs)) or '(none)'}"
                f"{self._flags(merged)}. A plan holds for one input shape: call "
                "fxenergy.optimize(model, new_example_inputs) for this one"
            )
        return args, kwargs

    def _defaults_for(self, num_args: int) -> dict[str, Any]:
        """Optimize-time kwargs, less those this call passes positionally."""
        if self.signature is None:
            return dict(self.defaults)
        taken = set(list(self.signature.parameters)[:num_args])
        return {k: v for k, v in self.defaults.items() if k not in taken}

    def _arrange(self, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        if self.signature is None or self.mapping is None:
            return args, kwargs
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InputShapeError(f"the optimized module was called wrongly: {exc}") from None
        bound.apply_defaults()
        return tuple(bound.arguments[p] for p in self.mapping), {}

    def _flags(self, kwargs: dict[str, Any] | None = None) -> str:
        src = self.defaults if kwargs is None else kwargs
        flags = {k: v for k, v in src.items() if not isinstance(v, torch.Tensor)}
        return f" with {', '.join(f'{k}={v!r}' for k, v in flags.items())}" if flags else ""


def _mapping(sig: inspect.Signature | None, gm: torch.fx.GraphModule) -> tuple[str, ...] | None:
    if sig is None:
        return None
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    if any(p.kind in kinds for p in sig.parameters.values()):
        return None
    params = list(sig.parameters)
    found = [_param_of(str(n.target), params) for n in gm.graph.nodes if n.op == "placeholder"]
    return None if any(f is None for f in found) else tuple(found)  # type: ignore[arg-type]
