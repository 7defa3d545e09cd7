"""Write your own pass and compose it with fxenergy's and torch's in one pipeline.

    python examples/03_custom_pass.py

A pass subclasses ``fxenergy.FxPass``: it names itself (kebab-case), declares the analyses it
needs (``required``) and provides, and returns a ``PassResult``. Pipelines are strings that
round-trip, and missing analyses are run first.
"""

import torch
from torch.fx.passes.infra.pass_base import PassResult

from fxenergy import FxPass, Pipeline, capture, meta, register_pass
from fxenergy.models import get_model


@register_pass
class CountMemoryBound(FxPass):
    """Analysis: how many nodes are memory-bound on the graph's GPU (reads ROOFLINE)."""

    name = "count-memory-bound"
    required = (meta.ROOFLINE,)
    is_analysis = True

    def run(self, gm: torch.fx.GraphModule) -> PassResult:
        bounds = [n.meta[meta.ROOFLINE].bound for n in gm.graph.nodes if meta.ROOFLINE in n.meta]
        gm.meta["example.memory_bound"] = (bounds.count("memory"), len(bounds))
        return PassResult(gm, False)


spec = get_model("cnn-small")
inputs, kwargs = spec.example_inputs(torch.device("cpu"))
gm = capture(spec.factory().eval(), inputs, kwargs)

pipeline = Pipeline.parse("eliminate-redundancy,count-memory-bound")  # annotate-cost runs first
print("pipeline:", pipeline)
gm = pipeline(gm).graph_module
memory_bound, total = gm.meta["example.memory_bound"]
print(f"{memory_bound} of {total} nodes are memory-bound on {gm.meta[meta.GPU]}")
for t in pipeline.timings:
    print(f"  {t.name:<22} {t.seconds * 1e3:8.1f} ms  modified={t.modified}")
