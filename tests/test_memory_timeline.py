"""memory-timeline pass and fxenergy.memory.timeline.memory_timeline."""

from __future__ import annotations

import weakref

import pytest
import torch
import torch.fx
from hypothesis import given
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from fxenergy.errors import InvalidScheduleError
from fxenergy.graph import meta
from fxenergy.graph.capture import capture
from fxenergy.graph.pass_infra import get_pass
from fxenergy.memory.timeline import memory_timeline


def _traced(module: torch.nn.Module, *shapes: tuple[int, ...]) -> torch.fx.GraphModule:
    gm = torch.fx.symbolic_trace(module)
    mode = FakeTensorMode()
    FakeTensorProp(gm, mode).propagate(*(mode.from_tensor(torch.randn(s)) for s in shapes))
    return gm


def test_pure_timeline_by_hand() -> None:
    # a -> b -> c; a also read by c. Sizes 10, 20, 30; c is the output.
    tl = memory_timeline(
        ["a", "b", "c"], {"a": 10, "b": 20, "c": 30}, {"a": ["b", "c"], "b": "c"}, keep={"c"}
    )
    assert tl.live_bytes == (10, 30, 60)
    assert (tl.peak_bytes, tl.peak_node, tl.live_at_peak) == (60, "c", ("a", "b", "c"))
    # Another order of the same work frees a earlier if a's last reader runs first.
    tl2 = memory_timeline(["a", "b", "c"], {"a": 10, "b": 20, "c": 30}, {"a": "b", "b": "c"})
    assert tl2.live_bytes == (10, 30, 50)


def test_read_before_produce_is_rejected() -> None:
    with pytest.raises(InvalidScheduleError, match="before it is produced"):
        memory_timeline(["b", "a"], {"a": 4}, {"a": ["b"]})
    with pytest.raises(InvalidScheduleError, match="not in order"):
        memory_timeline(["a"], {"a#1": 4}, {}, producers={"a#1": "z"})


def test_empty_order() -> None:
    tl = memory_timeline([], {}, {})
    assert tl.peak_bytes == 0 and tl.live_bytes == ()


class Views(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.relu()  # 4x8 fp32 = 128 B
        v = y.view(-1)  # alias of y: no new storage
        a, b = y.chunk(2)  # aliases of y
        z = v * 2  # 128 B, last reader of v
        return z + a.sum() + b.sum()


def test_views_count_storage_once_inputs_excluded() -> None:
    gm = _traced(Views(), (4, 8))
    gm = get_pass("memory-timeline")(gm).graph_module
    live = {n.name: n.meta[meta.LIVE_BYTES] for n in gm.graph.nodes}
    assert live["x"] == 0  # graph inputs are not activations
    assert live["relu"] == 128
    assert live["view"] == 128 and live["getitem"] == 128  # views add nothing
    assert live["mul"] == 256
    tl = gm.meta[meta.MEMORY]
    # At z + a.sum(): relu (b still to be read), mul, sum_1's 4 B and the new 128 B sum.
    assert (tl.peak_bytes, tl.peak_node) == (128 + 128 + 4 + 128, "add")
    assert tl.live_at_peak == ("relu", "mul", "sum_1", "add")
    assert tl.live_bytes[-1] == 128  # the output (add_2) stays live to the end
    assert meta.MEMORY in meta.analyses(gm)


class Params(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(16, 16, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).relu()


@pytest.mark.parametrize("method", ["symbolic", "export"])
def test_parameters_are_not_activations(method: str) -> None:
    gm = capture(Params(), (torch.randn(2, 16),), method=method)
    gm = get_pass("memory-timeline")(gm).graph_module
    # Two 2x16 fp32 activations (128 B each); the 1 KiB weight (a placeholder or get_attr in
    # the export graph, transposed through a view) is not counted.
    assert gm.meta[meta.MEMORY].peak_bytes == 256


def _simulate(order: list[str], sizes: dict[str, int], users: dict[str, list[str]]) -> list[int]:
    """Brute force: after step i, a buffer is live if produced at or before i and read at or
    after i."""
    pos = {n: i for i, n in enumerate(order)}
    out = []
    for i in range(len(order)):
        total = 0
        for buf, nbytes in sizes.items():
            last = max([pos[u] for u in users.get(buf, [])] + [pos[buf]])
            if pos[buf] <= i <= last:
                total += nbytes
        out.append(total)
    return out


@st.composite
def programs(draw: st.DrawFn) -> tuple[list[str], dict[str, int], dict[str, list[str]]]:
    n = draw(st.integers(1, 10))
    order = [f"n{i}" for i in range(n)]
    sizes = {v: draw(st.integers(0, 1000)) for v in order}
    users = {
        order[i]: [order[j] for j in draw(st.sets(st.integers(i + 1, n - 1), max_size=3))]
        for i in range(n - 1)
    }
    return order, sizes, users


@given(programs())
def test_timeline_matches_brute_force(case: tuple) -> None:
    order, sizes, users = case
    tl = memory_timeline(order, sizes, users)
    assert list(tl.live_bytes) == _simulate(order, sizes, users)
    assert tl.peak_bytes == max(_simulate(order, sizes, users), default=0)
    assert tl.live_bytes[order.index(tl.peak_node)] == tl.peak_bytes
    at_peak = sum(sizes[b] for b in tl.live_at_peak)
    assert at_peak == tl.peak_bytes


class _HeldBytes(torch.fx.Interpreter):
    """Runs real tensors; after each node, sums the distinct activation storages still held
    (torch.fx.Interpreter frees a value right after its last user)."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm)
        self.live: list[int] = []
        self.skip = {p.untyped_storage().data_ptr() for p in gm.parameters()}

    def run_node(self, n: torch.fx.Node) -> object:
        out = super().run_node(n)
        ts = meta.tensor_values([*self.env.values(), out])
        if n.op in ("placeholder", "get_attr"):
            self.skip |= {t.untyped_storage().data_ptr() for t in meta.tensor_values(out)}
        held = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in ts}
        self.live.append(sum(b for p, b in held.items() if p not in self.skip))
        return out


def test_matches_real_execution_on_small_gpt() -> None:
    from fxenergy.models.gpt import GPTConfig, TinyGPT

    cfg = GPTConfig(vocab_size=50, block_size=8, n_layer=2, n_head=2, d_model=16)
    model = TinyGPT(cfg).eval()
    ids = torch.randint(0, 50, (2, 8))
    gm = get_pass("memory-timeline")(capture(model, (ids,), method="symbolic")).graph_module
    interp = _HeldBytes(gm)
    with torch.no_grad():
        interp.run(ids)
    assert list(gm.meta[meta.MEMORY].live_bytes) == interp.live


class _AllocatorCount(TorchDispatchMode):
    """Counts real storages as the allocator sees them: every storage an aten op returns that
    was not live before is an allocation, freed when its last tensor dies (a finalizer on the
    storage). ``peak`` is the high-water mark of live bytes, storages in ``exclude`` left out."""

    def __init__(self, exclude: set[int]) -> None:
        super().__init__()
        self.exclude, self.live, self.now, self.peak = exclude, {}, 0, 0

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in pytree.tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self.live or key in self.exclude:
                continue
            self.live[key] = storage.nbytes()
            self.now += storage.nbytes()
            self.peak = max(self.peak, self.now)
            weakref.finalize(storage, self._free, key)
        return out


class Mixed(torch.nn.Module):
    """Branches, views, chunks, a concatenation and an output kept to the end; each node is one
    aten op that allocates only its output, so the model's peak is the allocator's exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(32, 64), torch.nn.Linear(32, 48)
        self.head = torch.nn.Linear(112, 8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.a(x).relu()
        left, right = a.chunk(2, dim=1)
        b = self.b(x).view(-1, 6, 8).sigmoid().flatten(1)
        h = torch.cat([left * right, b, right], dim=1)
        return self.head(h), a


@pytest.mark.parametrize("method", ["symbolic", "export"])
@pytest.mark.parametrize("batch", [1, 16])
def test_peak_matches_a_real_allocator_count(method: str, batch: int) -> None:
    x = torch.randn(batch, 32)
    gm = capture(Mixed(), (x,), method=method)
    predicted = get_pass("memory-timeline")(gm).graph_module.meta[meta.MEMORY].peak_bytes
    state = [*gm.parameters(), *gm.buffers(), x]
    counter = _AllocatorCount({t.untyped_storage()._cdata for t in state})
    with torch.no_grad(), counter:
        torch.fx.Interpreter(gm).run(x)  # frees each value right after its last reader
    assert counter.peak == predicted > 0
