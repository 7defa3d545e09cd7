"""Count each fx node's cost at the aten level: interpret the graph over fake tensors under a
dispatch mode that charges every aten op to the node being interpreted.

Because the charge happens below the fx level, a ``call_module`` node from ``symbolic_trace``
(one node, many aten ops) and the aten nodes ``torch.export`` produces for the same layer add
up to the same totals. No real compute runs: inputs are fresh fake tensors built from the
placeholders' ``node.meta["val"]``, parameters and buffers are swapped for fakes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from fxenergy import meta
from fxenergy.capture import run_with_fake_state, tf32_flags
from fxenergy.cost.ops import OpCost, op_cost
from fxenergy.errors import FxEnergyError


@dataclass
class _Acc:
    """Running sum of the aten ops charged to one node."""

    ops: list[OpCost] = field(default_factory=list)

    def record(self, dtype: str, allow_tf32: bool) -> meta.CostRecord:
        mm = sum(o.matmul_flops for o in self.ops)
        vec = sum(o.vector_flops for o in self.ops)
        return meta.CostRecord(
            flops=mm + vec,
            macs=mm // 2,
            bytes_read=sum(o.bytes_read for o in self.ops),
            bytes_written=sum(o.bytes_written for o in self.ops),
            dtype=dtype,
            aten_ops=tuple(o.name for o in self.ops),
            uncounted_ops=tuple(o.name for o in self.ops if not o.counted),
            kernels=sum(o.kernel for o in self.ops),
            matmul_flops=mm,
            allow_tf32=allow_tf32,
        )


class _Charger(TorchDispatchMode):
    """Charges every aten op that reaches it to ``self.node``."""

    def __init__(self) -> None:
        super().__init__()
        self.node: torch.fx.Node | None = None
        self.acc: dict[torch.fx.Node, _Acc] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.node is not None:
            cost = op_cost(func, args, kwargs, out)
            if cost is not None:
                self.acc.setdefault(self.node, _Acc()).ops.append(cost)
        return out


class _Interp(torch.fx.Interpreter):
    def __init__(self, gm: torch.fx.GraphModule, charger: _Charger) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.charger = charger

    def run_node(self, n: torch.fx.Node) -> Any:
        self.charger.node = n
        try:
            return super().run_node(n)
        finally:
            self.charger.node = None


def _fresh_input(mode: FakeTensorMode, val: Any) -> Any:
    """A new fake tensor in ``mode`` with ``val``'s shape, stride, dtype and device."""

    def one(v: Any) -> Any:
        if not isinstance(v, torch.Tensor):
            return v
        with mode:
            t = torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device=v.device)
        return t.requires_grad_(v.requires_grad) if v.is_floating_point() else t

    return pytree.tree_map(one, val)


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


def _node_dtype(node: torch.fx.Node, acc: _Acc | None) -> str:
    for t in meta.tensor_values(meta.node_value(node)):
        if isinstance(t, torch.Tensor):
            return str(t.dtype).replace("torch.", "")
    for o in acc.ops if acc else ():
        if o.dtype is not None:
            return str(o.dtype).replace("torch.", "")
    return "float32"


def count_costs(gm: torch.fx.GraphModule) -> dict[torch.fx.Node, meta.CostRecord]:
    """A :class:`~fxenergy.meta.CostRecord` for every node of ``gm`` (zero for nodes that run
    no aten op: placeholders, outputs, getitem, Python arithmetic).

    Raises:
        FxEnergyError: a placeholder lacks ``meta["val"]`` (capture the graph with
            :func:`fxenergy.capture.capture` first) or the graph fails on fake tensors.
    """
    placeholders = gm.graph.find_nodes(op="placeholder")
    missing = [p.name for p in placeholders if "val" not in p.meta]
    if missing:
        raise FxEnergyError(
            f"placeholders {missing} have no fake value (node.meta['val']); capture the model "
            "with fxenergy.capture(...) or run FakeTensorProp before annotate-cost"
        )
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    inputs = [_fresh_input(mode, p.meta["val"]) for p in placeholders]
    charger = _Charger()

    def run(*args: Any) -> Any:
        with charger:
            return _Interp(gm, charger).run(*args, enable_io_processing=False)

    try:
        with quiet_fake_errors():
            run_with_fake_state(gm, mode, run, *inputs)
    except Exception as err:
        raise FxEnergyError(
            f"cost counting failed while running the graph on fake tensors: "
            f"{type(err).__name__}: {err}"
        ) from err
    allow = bool(gm.meta.get(meta.ALLOW_TF32, tf32_flags()))
    return {
        n: (charger.acc.get(n) or _Acc()).record(_node_dtype(n, charger.acc.get(n)), allow)
        for n in gm.graph.nodes
    }
