"""aot_autograd glue for the compile backend: torch's helper, boxed calls, fake values."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

from fxenergy.errors import CaptureError
from fxenergy.graph import meta


def aot_autograd() -> Callable[..., Any]:
    """torch's ``aot_autograd`` backend factory (a private module; a clear error if missing)."""
    try:  # torch's own helper; not re-exported under a public name
        from torch._dynamo.backends.common import aot_autograd
    except ImportError as exc:  # pragma: no cover - depends on the torch build
        raise CaptureError(
            f"this torch ({torch.__version__}) has no torch._dynamo.backends.common.aot_autograd"
            "; fxenergy.backend needs torch >= 2.1"
        ) from exc
    return aot_autograd


def boxed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` in aot_autograd's boxed calling convention (one list of arguments)."""
    from functorch.compile import make_boxed_func

    return make_boxed_func(fn)


def ensure_values(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> None:
    """aot graphs carry fake values already; propagate them where a node lacks one."""
    if all(meta.node_value(n) is not None for n in gm.graph.nodes if n.op != "output"):
        return
    from torch._guards import detect_fake_mode

    mode = detect_fake_mode(example_inputs)
    FakeTensorProp(gm, mode).propagate(*example_inputs)
