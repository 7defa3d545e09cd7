"""Count each fx node's cost at the aten level: interpret the graph over fake tensors under a
dispatch mode that charges every aten op to the node being interpreted.

Because the charge happens below the fx level, a ``call_module`` node from ``symbolic_trace``
(one node, many aten ops) and the aten nodes ``torch.export`` produces for the same layer add
up to the same totals. No real compute runs: inputs are fresh fake tensors built from the
placeholders' ``node.meta["val"]``, parameters and buffers are swapped for fakes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from fxenergy.cost.ops import OpCost, op_cost
from fxenergy.errors import FxEnergyError
from fxenergy.graph import meta
from fxenergy.graph.fake import fresh_like, quiet_fake_errors, run_with_fake_state, tf32_flags


@dataclass
class _ChargedOps:
    """Running sum of the aten ops charged to one node."""

    ops: list[OpCost] = field(default_factory=list)

    def record(self, dtype: str, tf32: tuple[bool, bool]) -> meta.CostRecord:
        mm = sum(o.matmul_flops for o in self.ops)
        conv = sum(o.matmul_flops for o in self.ops if "conv" in o.name)
        allow_tf32 = tf32[1] if 2 * conv > mm else tf32[0]  # cuDNN's flag governs convolutions
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
        self.charged: dict[torch.fx.Node, _ChargedOps] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.node is not None:
            cost = op_cost(func, args, kwargs, out)
            if cost is not None:
                self.charged.setdefault(self.node, _ChargedOps()).ops.append(cost)
        return out


class _Interp(torch.fx.Interpreter):
    """Runs the graph with ``charger.node`` set; aten nodes repeated with the same argument
    shapes (the layers of a deep model) reuse the first one's charge and get a fresh fake
    output built from their recorded value instead of dispatching again."""

    def __init__(self, gm: torch.fx.GraphModule, charger: _Charger, mode: FakeTensorMode) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.charger = charger
        self.mode = mode
        self.seen: dict[tuple, torch.fx.Node] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        key = self._key(n)
        first = self.seen.get(key) if key is not None else None
        if first is not None:
            if first in self.charger.charged:
                self.charger.charged[n] = self.charger.charged[first]
            return fresh_like(self.mode, meta.node_value(n))
        self.charger.node = n
        try:
            return super().run_node(n)
        finally:
            self.charger.node = None
            if key is not None:
                self.seen[key] = n

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        # Grad mode on (the fake parameters require grad) keeps nn.MultiheadAttention and
        # TransformerEncoderLayer off their fused inference fast paths, as torch.export does,
        # so symbolic and export captures of one model count the same aten ops.
        with torch.enable_grad():
            return super().call_module(target, args, kwargs)

    def _key(self, n: torch.fx.Node) -> tuple | None:
        """Hashable description of an aten call's inputs, or None if it cannot be reused."""
        if n.op != "call_function" or not isinstance(n.target, torch._ops.OpOverload):
            return None
        if n.target._schema.is_mutable or not _plain_value(meta.node_value(n)):
            # in-place ops must really run: later nodes see what they did to their inputs
            return None
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        leaves, spec = pytree.tree_flatten((args, kwargs))
        ids: dict[int, int] = {}
        parts: list[Any] = []
        for x in leaves:
            if isinstance(x, torch.Tensor):
                alias = ids.setdefault(id(x), len(ids))  # x*x reads one tensor: keep that
                parts.append((tuple(x.shape), x.stride(), x.dtype, x.device, alias))
            elif isinstance(x, (int, float, bool, str, type(None), torch.dtype, torch.device)):
                parts.append(x)
            else:
                return None
        return (n.target, str(spec), tuple(parts))


def _plain_value(val: Any) -> bool:
    """A tensor or a flat tuple/list of tensors (outputs we can rebuild from metadata)."""
    if isinstance(val, torch.Tensor):
        return True
    return isinstance(val, (tuple, list)) and all(isinstance(v, torch.Tensor) for v in val)


def _node_dtype(node: torch.fx.Node, charged: _ChargedOps | None) -> str:
    for t in meta.tensor_values(meta.node_value(node)):
        if isinstance(t, torch.Tensor):
            return str(t.dtype).replace("torch.", "")
    for o in charged.ops if charged else ():
        if o.dtype is not None:
            return str(o.dtype).replace("torch.", "")
    return "float32"


def count_costs(gm: torch.fx.GraphModule) -> dict[torch.fx.Node, meta.CostRecord]:
    """A :class:`~fxenergy.graph.meta.CostRecord` for every node of ``gm`` (zero for nodes that run
    no aten op: placeholders, outputs, getitem, Python arithmetic).

    Raises:
        FxEnergyError: a used placeholder has no value (capture the graph with
            :func:`fxenergy.graph.capture.capture` first) or the graph fails on fake tensors.
    """
    placeholders = gm.graph.find_nodes(op="placeholder")
    missing = [p.name for p in placeholders if meta.node_value(p) is None and "val" not in p.meta]
    if missing:
        raise FxEnergyError(
            f"placeholders {missing} have no fake value (node.meta['val']); capture the model "
            "with fxenergy.capture(...) or run FakeTensorProp before annotate-cost"
        )
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    inputs = [fresh_like(mode, meta.node_value(p)) for p in placeholders]
    charger = _Charger()

    def run(*args: Any) -> Any:
        with charger:
            return _Interp(gm, charger, mode).run(*args, enable_io_processing=False)

    try:
        with quiet_fake_errors():
            run_with_fake_state(gm, mode, run, *inputs)
    except Exception as err:
        raise FxEnergyError(
            f"cost counting failed while running the graph on fake tensors: "
            f"{type(err).__name__}: {err}"
        ) from err
    allow = tuple(gm.meta.get(meta.ALLOW_TF32, tf32_flags()))
    records = {}
    for n in gm.graph.nodes:
        charged = charger.charged.get(n)
        records[n] = (charged or _ChargedOps()).record(_node_dtype(n, charged), allow)
    return records
