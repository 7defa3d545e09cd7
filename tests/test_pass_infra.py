"""Pass infrastructure: registry, declared requirements, invalidation and pipeline strings."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch.fx.passes.infra.pass_base import PassResult
from torch.fx.passes.infra.pass_manager import PassManager

from fxenergy.errors import PassError
from fxenergy.graph import meta
from fxenergy.graph.pass_infra import FxPass, Pipeline, get_pass, register_pass

COUNT_KEY = "fxenergy.test.count"


@register_pass
class _CountNodes(FxPass):
    name = "test-count-nodes"
    provides = (COUNT_KEY,)
    is_analysis = True

    def run(self, gm: torch.fx.GraphModule) -> PassResult:
        gm.meta[COUNT_KEY] = len(gm.graph.nodes)
        return PassResult(gm, False)


@register_pass
class _NeedsCount(FxPass):
    name = "test-needs-count"
    required = (COUNT_KEY,)
    is_analysis = True

    def __init__(self, scale: float = 1.0, label: str = "x") -> None:
        super().__init__(scale=scale, label=label)

    def run(self, gm: torch.fx.GraphModule) -> PassResult:
        gm.meta["fxenergy.test.seen"] = gm.meta[COUNT_KEY]
        return PassResult(gm, False)


@register_pass
class _AddZero(FxPass):
    """A transform that preserves nothing: appends a no-op node."""

    name = "test-add-zero"

    def run(self, gm: torch.fx.GraphModule) -> PassResult:
        out = next(n for n in gm.graph.nodes if n.op == "output")
        with gm.graph.inserting_before(out):
            gm.graph.call_function(torch.zeros, ((1,),))
        gm.recompile()
        return PassResult(gm, True)


def _gm() -> torch.fx.GraphModule:
    return torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))


def test_missing_requirement_names_the_pass_and_provider() -> None:
    with pytest.raises(PassError, match=r"test-needs-count.*test-count-nodes"):
        get_pass("test-needs-count")(_gm())


def test_pipeline_inserts_missing_analysis() -> None:
    gm = Pipeline.parse("test-needs-count")(_gm()).graph_module
    assert gm.meta["fxenergy.test.seen"] == len(gm.graph.nodes)
    assert COUNT_KEY in meta.analyses(gm)


def test_transform_invalidates_what_it_does_not_preserve() -> None:
    pipe = Pipeline.parse("test-count-nodes,test-add-zero")
    gm = pipe(_gm()).graph_module
    assert COUNT_KEY not in gm.meta and COUNT_KEY not in meta.analyses(gm)
    # a later pass that needs the analysis gets it recomputed on the changed graph
    gm = Pipeline.parse("test-needs-count")(gm).graph_module
    assert gm.meta["fxenergy.test.seen"] == len(gm.graph.nodes)
    assert [t.name for t in pipe.timings] == ["test-count-nodes", "test-add-zero"]


@pytest.mark.parametrize(
    "text",
    [
        "test-count-nodes",
        "test-count-nodes,test-needs-count{scale=0.5,label=abc}",
        "test-needs-count{scale=2,label='has space'}",
    ],
)
def test_pipeline_strings_round_trip(text: str) -> None:
    assert str(Pipeline.parse(text)) == text
    assert str(Pipeline.parse(str(Pipeline.parse(text)))) == text


@pytest.mark.parametrize("bad", ["no-such-pass", "test-needs-count{scale}", "Bad_Name"])
def test_bad_pipeline_strings_are_clear_errors(bad: str) -> None:
    with pytest.raises(PassError):
        Pipeline.parse(bad)


def test_passes_run_inside_torch_pass_manager() -> None:
    pm = PassManager(passes=[get_pass("test-count-nodes"), get_pass("test-needs-count")])
    gm = pm(_gm()).graph_module
    assert gm.meta["fxenergy.test.seen"] == gm.meta[COUNT_KEY]


def test_duplicate_registration_rejected() -> None:
    class Dup(FxPass):
        name = "test-count-nodes"

    with pytest.raises(PassError, match="already registered"):
        register_pass(Dup)
