"""Peak activation memory of training graphs: original order vs inductor's reorderings vs ours.

Builds forward+backward (joint, aot_autograd) graphs at batch 32 of AlexNet-, VGG-, ResNet-,
MobileNetV2- and transformer-style models written here (no torchvision), on fake tensors, and
measures peak live activation bytes (fxenergy.memory.problem's model) of:

- the original order (aot_autograd's),
- torch._inductor.memory's ``topological_sort_lpmf``, ``_bfs`` and ``_dfs``, called on the same
  graph through small adapter objects that give them the attributes they read
  (``mpi_node``/``mpi_buffer``), the same buffers and the same successor sets as ours,
- ours: :func:`fxenergy.schedule.cpsat.memory.minimize_peak` (best of original/greedy, then
  CP-SAT windows).

Run: ``python bench/bench_memory_reorder.py [--models alexnet,vgg] [--time-limit 20]``;
prints a markdown table (the one in docs/memory-reorder.md).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from fxenergy.graph.capture import capture_training
from fxenergy.memory.problem import MemoryProblem, is_topological, peak
from fxenergy.memory.timeline import memory_problem
from fxenergy.schedule.cpsat.memory import minimize_peak

BATCH = 32

# --- models (shapes follow the torchvision definitions, written out here) --------------------


def alexnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d(6), nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(256 * 36, 4096), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(),
        nn.Linear(4096, 1000),
    )  # fmt: skip


def vgg11() -> nn.Module:
    layers: list[nn.Module] = []
    c = 3
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU()]
            c = int(v)
    head = [nn.Flatten(), nn.Linear(512 * 49, 4096), nn.ReLU(), nn.Dropout(0.5)]
    head += [nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 1000)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(7), *head)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        return F.relu(y + (x if self.down is None else self.down(x)))


def resnet18() -> nn.Module:
    blocks: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    blocks.append(nn.MaxPool2d(3, 2, 1))
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)]
        layers += [nn.BatchNorm2d(hidden), nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False)]
        layers += [nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def mobilenet_v2() -> nn.Module:
    cfg = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
    cfg += ((6, 160, 3, 2), (6, 320, 1, 1))
    layers: list[nn.Module] = [
        nn.Conv2d(3, 32, 3, 2, 1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU6(),
    ]
    cin = 32
    for t, c, n, s in cfg:
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()]
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(1280, 1000)]
    return nn.Sequential(*layers, *head)


class TransformerLM(nn.Module):
    """A GPT-style pre-norm decoder: 4 layers, d=256, 4 heads, sequence 128, vocab 8192."""

    def __init__(self, layers: int = 4, d: int = 256, heads: int = 4, vocab: int = 8192) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(128, d)
        layer = nn.TransformerEncoderLayer(
            d, heads, 4 * d, dropout=0.1, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        mask = nn.Transformer.generate_square_subsequent_mask(ids.shape[1], device=ids.device)
        x = self.emb(ids) + self.pos(pos)
        return self.head(self.blocks(x, mask=mask, is_causal=True))


def _image() -> tuple[torch.Tensor]:
    return (torch.randn(BATCH, 3, 224, 224, device="meta"),)


def _tokens() -> tuple[torch.Tensor]:
    return (torch.randint(0, 8192, (BATCH, 128), device="meta"),)


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], tuple[torch.Tensor]]]] = {
    "alexnet": (alexnet, _image),
    "vgg11": (vgg11, _image),
    "resnet18": (resnet18, _image),
    "mobilenet_v2": (mobilenet_v2, _image),
    "transformer": (TransformerLM, _tokens),
    "transformer_12l": (lambda: TransformerLM(layers=12), _tokens),  # scale: ~2,400 nodes
}


def _loss(out: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(out.float(), dim=-1).mean()


def training_problem(name: str) -> tuple[MemoryProblem, int]:
    """The memory problem of ``name``'s training step at batch 32, and its node count."""
    build, inputs = MODELS[name]
    with torch.device("meta"):
        model = build()
    gm = capture_training(model, inputs(), loss_fn=_loss)
    return memory_problem(gm), len(gm.graph.nodes)


# --- torch._inductor.memory on the same graph -------------------------------------------------


@dataclass(eq=False)
class _Dep:
    name: str


@dataclass(eq=False)
class _Buf:
    """Stands in for inductor's SchedulerBuffer: a name and its memory-planning info."""

    name: str
    mpi_buffer: object = None

    def get_name(self) -> str:
        return self.name


@dataclass(eq=False)
class _SNode:
    """Stands in for inductor's BaseSchedulerNode: one fx node and the buffers it allocates."""

    name: str
    bufs: list[_Buf]
    mpi_node: object = None
    unmet_dependencies: set = field(default_factory=set)

    def get_outputs(self) -> list[_Buf]:
        return self.bufs

    def get_name(self) -> str:
        return self.name

    def get_buffer_names(self) -> list[str]:
        return [b.name for b in self.bufs]


def inductor_orders(problem: MemoryProblem) -> dict[str, list[int]]:
    """Run inductor's lpmf, bfs and dfs on ``problem``; raises ImportError if they moved.

    Every node gets one (possibly empty) marker buffer so ordering-only edges have a buffer
    name to hang on, as inductor's WeakDeps do.
    """
    from torch._inductor import memory as im
    from torch.utils._ordered_set import OrderedSet

    n = len(problem.names)
    succs = [set(s) for s in problem.succs()]
    bufs = [_Buf(f"b{b}") for b in range(len(problem.buf_sizes))]
    marks = [_Buf(f"m{v}") for v in range(n)]
    snodes = [_SNode(f"n{v}", [marks[v]]) for v in range(n)]
    for b, v in enumerate(problem.buf_producer):
        snodes[v].bufs.append(bufs[b])
    for b, buf in enumerate(bufs):
        readers = OrderedSet(snodes[r] for r in problem.buf_readers[b])
        size = problem.buf_sizes[b]
        buf.mpi_buffer = im.MemoryPlanningInfoForBuffer(size, size, readers, OrderedSet(readers))
    for v, mark in enumerate(marks):
        mark.mpi_buffer = im.MemoryPlanningInfoForBuffer(
            0, 0, OrderedSet(), OrderedSet(snodes[s] for s in sorted(succs[v]))
        )
    preds = [sorted(set(ps)) for ps in problem.preds]
    reads = problem.node_reads()
    for v, sn in enumerate(snodes):
        sn.unmet_dependencies = {_Dep(f"m{u}") for u in preds[v]}
        sn.mpi_node = im.MemoryPlanningInfoForNode(
            index=v,
            size=sum(problem.buf_sizes[b] for b, p in enumerate(problem.buf_producer) if p == v),
            pred_buffers=OrderedSet(bufs[b] for b in sorted(set(reads[v]))),
            pred_nodes=OrderedSet(snodes[u] for u in preds[v]),
            succ_nodes=OrderedSet(snodes[s] for s in sorted(succs[v])),
        )
    name_to_buf = {b.name: b for sn in snodes for b in sn.bufs}
    outputs = OrderedSet(f"b{b}" for b, e in enumerate(problem.buf_escapes) if e)
    index = {sn: v for v, sn in enumerate(snodes)}
    return {
        "lpmf": [index[s] for s in im.topological_sort_lpmf(snodes, {}, name_to_buf, outputs)],
        "bfs": [index[s] for s in im.topological_sort_bfs(snodes)],
        "dfs": [index[s] for s in im.topological_sort_dfs(snodes)],
    }


# --- the table ----------------------------------------------------------------------------------


def _mib(b: int) -> str:
    return f"{b / 2**20:,.1f}"


def bench_one(name: str, time_limit_s: float, workers: int) -> dict[str, object]:
    """Peaks (bytes) and times (s) of every method on one model's training graph."""
    t0 = time.perf_counter()
    problem, n_nodes = training_problem(name)
    capture_s = time.perf_counter() - t0
    original = list(range(len(problem.names)))
    row: dict[str, object] = {"model": name, "nodes": n_nodes, "capture_s": capture_s}
    row["original"] = peak(problem, original)
    try:
        t0 = time.perf_counter()
        orders = inductor_orders(problem)
        row["inductor_s"] = time.perf_counter() - t0
        for method, order in orders.items():
            if not is_topological(problem, order):
                raise RuntimeError(f"inductor {method} returned an order that breaks an edge")
            row[method] = peak(problem, order)
    except (ImportError, AttributeError) as err:
        print(f"# inductor's reorder_for_peak_memory helpers unavailable: {err}")
    result = minimize_peak(problem, time_limit_s=time_limit_s, workers=workers)
    row.update(ours=result.peak_bytes, ours_s=result.solve_time_s, method=result.method)
    row.update(windows=result.windows_improved, lower_bound=result.lower_bound_bytes)
    return row


def markdown(rows: list[dict[str, object]]) -> str:
    """The table for docs/memory-reorder.md (MiB; reduction vs. the original order)."""
    head = "| model | nodes | original | inductor lpmf | bfs | dfs | ours | ours vs original "
    head += "| ours vs best inductor | working-set bound | ours: method, windows, solve s |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        orig, ours = int(r["original"]), int(r["ours"])
        ind = [int(r[m]) for m in ("lpmf", "bfs", "dfs") if m in r]
        best = min(ind) if ind else None
        cells = [
            str(r["model"]), str(r["nodes"]), _mib(orig),
            *[_mib(int(r[m])) if m in r else "n/a" for m in ("lpmf", "bfs", "dfs")],
            _mib(ours), f"{100 * (ours - orig) / orig:+.1f}%",
            f"{100 * (ours - best) / best:+.2f}%" if best else "n/a",
            _mib(int(r["lower_bound"])),
            f"{r['method']}, {r['windows']}, {float(r['ours_s']):.1f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--time-limit", type=float, default=20.0, help="seconds per model")
    parser.add_argument("--workers", type=int, default=1, help="CP-SAT workers")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        rows.append(bench_one(name, args.time_limit, args.workers))
        r = rows[-1]
        print(f"# {name}: {r['nodes']} nodes, captured in {float(r['capture_s']):.1f}s", flush=True)
    print(markdown(rows))


if __name__ == "__main__":
    main()
