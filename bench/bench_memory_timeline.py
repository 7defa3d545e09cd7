"""Check the memory-timeline pass against real execution of the same graph on a CPU.

The captured graph is run on real tensors by ``torch.fx.Interpreter``, which frees each value
right after its last user runs. After every node the script sums the distinct storages of the
values still held (excluding inputs and parameters), read from the real tensors, and compares the
per-node curve and the peak with what ``memory-timeline`` predicted from fake tensors alone.

    python bench/bench_memory_timeline.py            # gpt-tiny and cnn-small
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.fx

from fxenergy.graph import meta
from fxenergy.graph.capture import capture
from fxenergy.graph.pass_infra import get_pass
from fxenergy.models import get_model


class LiveBytes(torch.fx.Interpreter):
    """Interpreter that records activation bytes held after each node (before frees)."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm)
        self.live: list[int] = []
        self._excluded: set[int] = {p.untyped_storage().data_ptr() for p in gm.parameters()}
        self._excluded |= {b.untyped_storage().data_ptr() for b in gm.buffers()}

    def run_node(self, n: torch.fx.Node) -> Any:
        out = super().run_node(n)
        if n.op in ("placeholder", "get_attr"):
            for t in meta.tensor_values(out):
                self._excluded.add(t.untyped_storage().data_ptr())
        values = [*self.env.values(), out]
        storages = {}
        for t in meta.tensor_values(values):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in self._excluded:
                storages[ptr] = t.untyped_storage().nbytes()
        self.live.append(sum(storages.values()))
        return out


def check(name: str) -> tuple[int, int, int]:
    """(predicted peak, measured peak, nodes whose prediction differs) for a built-in model."""
    spec = get_model(name)
    model = spec.build("cpu")
    args, kwargs = spec.example_inputs("cpu")
    gm = capture(model, args, kwargs, method="symbolic")
    gm = get_pass("memory-timeline")(gm).graph_module
    predicted = gm.meta[meta.MEMORY].live_bytes
    interp = LiveBytes(gm)
    with torch.no_grad():
        interp.run(*args, **kwargs)
    measured = interp.live
    diff = sum(1 for p, m in zip(predicted, measured, strict=True) if p != m)
    return max(predicted), max(measured), diff


def main(names: list[str]) -> None:
    cols = ("predicted peak", "measured peak", "ratio", "nodes differ")
    print(f"{'model':<10} {cols[0]:>15} {cols[1]:>14} {cols[2]:>6} {cols[3]:>13}")
    for name in names:
        pred, real, diff = check(name)
        print(f"{name:<10} {pred:>15,} {real:>14,} {pred / real:>6.3f} {diff:>13}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["gpt-tiny", "cnn-small"])
