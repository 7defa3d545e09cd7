"""Per-op FLOP and byte formulas and the roofline: the only place cost math lives.

Public helpers: :func:`count_costs` (per-node :class:`~fxenergy.graph.meta.CostRecord`) and
:func:`graph_totals` (whole-graph :class:`CostTotals`), both imported lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "count_costs": "fxenergy.cost.counter",
    "graph_totals": "fxenergy.cost.totals",
    "CostTotals": "fxenergy.cost.totals",
    "roofline": "fxenergy.cost.roofline",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fxenergy.cost' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
