"""Two gloo ranks with an all_reduce in the compiled graph get identical plans and do not hang."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(32, 64)
        self.down = torch.nn.Linear(64, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x).relu()
        dist.all_reduce(h)  # each rank sums the others' activations: order matters for a hang
        g = self.down(h).sigmoid()
        dist.all_reduce(g)
        return g * 2


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=_timeout())
    import fxenergy

    torch.manual_seed(0)
    model = _Model()
    # a different time limit per rank: left alone, the ranks' solvers could disagree
    be = fxenergy.backend(
        gpu="A100-SXM4-80GB", max_slowdown=0.05, runtime="sim", switch_latency_s=0.0,
        time_limit_s=0.5 + rank,
    )  # fmt: skip
    fwd = torch.compile(model, backend=be)
    with torch.no_grad():
        outs = [fwd(torch.ones(8, 32) * (rank + 1)) for _ in range(3)]
    cyc = be.cycles[0]
    gm = be.graphs[cyc.sequence[0]].graph_module
    collectives = [
        n.name for n in gm.graph.nodes if "c10d_functional" in str(getattr(n, "target", ""))
    ]
    record = {
        "order": [p.order for p in cyc.plans],
        "clocks": [[x.clock_mhz for x in p.partitions] for p in cyc.plans],
        "collectives": collectives,
        "out": outs[-1].sum().item(),
    }
    be.restore_clocks()
    torch.save(record, f"{out}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


def _timeout():
    import datetime

    return datetime.timedelta(seconds=60)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
@pytest.mark.skipif(sys.platform == "win32", reason="gloo on 127.0.0.1 is tested on POSIX")
def test_two_gloo_ranks_get_the_same_plan(tmp_path) -> None:
    out = str(tmp_path / "rank")
    ctx = mp.start_processes(
        _worker, args=(_free_port(), out), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 300
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:  # a hang: the very thing this test is about
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("the two ranks did not finish in 300 s (a collective hang?)")
    r0, r1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert len(r0["collectives"]) >= 4  # two all_reduce + two wait_tensor in the graph
    assert r0["order"] == r1["order"] and r0["clocks"] == r1["clocks"]
    order = r0["order"][0]
    ranks = [order.index(n) for n in r0["collectives"]]
    assert ranks == sorted(ranks)  # collectives keep their program order
    assert r0["out"] == r1["out"]
