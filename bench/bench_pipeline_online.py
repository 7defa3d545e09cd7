"""Per-iteration overhead of ``energy_schedule`` on CPU, and the timeline of one online run.

4 gloo ranks on 127.0.0.1 (forked), a torch pipeline schedule over an MLP (``--hidden`` wide,
one Linear+Tanh per stage), simulated A100 (one stage 1.5x heavier on the simulated GPU). Per
rank and step: host wall time of ``schedule.step`` alone vs the same schedule wrapped by
``energy_schedule`` in its steady state (planning excluded: it happens once, reported apart).
Plain and wrapped steps alternate in blocks so machine load hits both alike; medians reported.

    python bench/bench_pipeline_online.py --schedule 1F1B --hidden 8 --steps 30
    python bench/bench_pipeline_online.py --timeline docs/img/pipeline_online_timeline.png
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import time
from pathlib import Path

RANKS, GPU = 4, "A100-SXM4-80GB"


def sim_costs(stages: int, heavy: int) -> dict:
    """Simulated-GPU cost per (stage, kind): forward 8 TFLOP per rank's share, backward twice
    that, bf16 tensor-core work; stage ``heavy`` 1.5x (the injected imbalance)."""
    from fxenergy.graph.meta import CostRecord

    out = {}
    for s in range(stages):
        gflop = (1.5 if s == heavy else 1.0) * 8000 / (stages // RANKS)
        for kind, g in (("forward", gflop), ("backward", 2 * gflop)):
            f = int(g * 1e9)
            out[(s, kind)] = CostRecord(f, f // 2, int(1e9), int(5e8), "bfloat16", (), (), 100, f)
    return out


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _schedule(rank: int, name: str, stages: int, hidden: int, microbatches: int):
    import torch
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleInterleaved1F1B

    torch.manual_seed(0)
    mods = [
        torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.Tanh()) for _ in range(stages)
    ]
    mine = list(range(rank, stages, RANKS))
    pipe = [PipelineStage(mods[i], i, stages, torch.device("cpu")) for i in mine]
    cls = Schedule1F1B if name == "1F1B" else ScheduleInterleaved1F1B
    return cls(pipe[0] if name == "1F1B" else pipe, microbatches, loss_fn=torch.nn.MSELoss())


def _timed(step, x, y) -> float:
    t0 = time.perf_counter()
    step(x, target=y)
    return time.perf_counter() - t0


def _overhead(rank: int, port: int, args: argparse.Namespace, out: str) -> None:
    import torch
    import torch.distributed as dist

    from fxenergy.pipeline import energy_schedule
    from fxenergy.runtime.factory import get_backend

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=RANKS, init_method=f"tcp://127.0.0.1:{port}"
    )
    stages = 4 if args.schedule == "1F1B" else 8
    heavy = 1 if args.schedule == "1F1B" else 3
    plain = _schedule(rank, args.schedule, stages, args.hidden, args.microbatches)
    wrapped = energy_schedule(
        _schedule(rank, args.schedule, stages, args.hidden, args.microbatches), gpu=GPU,
        max_slowdown=0.01, backend=get_backend("sim", gpu=GPU),
        sim_costs=sim_costs(stages, heavy), profile_iters=2, frontier_points=20,
    )  # fmt: skip
    x, y = (
        torch.randn(4 * args.microbatches, args.hidden),
        torch.randn(4 * args.microbatches, args.hidden),
    )
    for _ in range(2):
        _timed(plain.step, x, y)
    t0 = time.perf_counter()
    for _ in range(3):  # 2 profiling steps, then the planning collective, then 1 planned step
        wrapped.step(x, target=y)
    setup_s = time.perf_counter() - t0
    sync_s: list[float] = []
    real_sync = wrapped._sync

    def timed_sync() -> None:  # the per-step all-reduce, timed apart
        t = time.perf_counter()
        real_sync()
        sync_s.append(time.perf_counter() - t)

    wrapped._sync = timed_sync  # type: ignore[method-assign]
    base, ours = [], []
    for _ in range(args.steps):  # alternate step by step: load hits both alike
        base.append(_timed(plain.step, x, y))
        ours.append(_timed(wrapped.step, x, y))
    wrapped.close()
    doc = {"plain": base, "energy": ours, "setup_s": setup_s, "sync": sync_s}
    Path(out, f"rank{rank}.json").write_text(json.dumps(doc))
    dist.destroy_process_group()


def _timeline_run(rank: int, port: int, args: argparse.Namespace, out: str) -> None:
    import torch
    import torch.distributed as dist

    from fxenergy.pipeline import energy_schedule
    from fxenergy.runtime.factory import get_backend

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=RANKS, init_method=f"tcp://127.0.0.1:{port}"
    )
    sched = energy_schedule(
        _schedule(rank, "1F1B", 4, 8, 8), gpu=GPU, max_slowdown=0.01,
        backend=get_backend("sim", gpu=GPU), sim_costs=sim_costs(4, 1), profile_iters=2,
        frontier_points=20, save_dir=out,
    )  # fmt: skip
    x, y = torch.randn(32, 8), torch.randn(32, 8)
    for step in range(STEPS):
        if step == STRAGGLER[0]:
            sched.set_straggler(0.3)
        if step == STRAGGLER[1]:
            sched.set_straggler(None)
        sched.step(x, target=y)
    sched.close()
    dist.destroy_process_group()


#: The timeline run: steps, and when the straggler comes and goes (after the plan settled).
STEPS, STRAGGLER = 14, (9, 12)


def _spawn(fn, args: argparse.Namespace, out: str) -> None:
    import torch.distributed.pipelining  # noqa: F401  (imported before the fork)
    import torch.multiprocessing as mp

    mp.start_processes(fn, args=(_port(), args, out), nprocs=RANKS, join=True, start_method="fork")


def overhead(args: argparse.Namespace) -> None:
    out = tempfile.mkdtemp()
    _spawn(_overhead, args, out)
    docs = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(RANKS)]
    # an iteration is as long as its slowest rank: per step, the max over ranks
    plain = [max(d["plain"][i] for d in docs) for i in range(len(docs[0]["plain"]))]
    ours = [max(d["energy"][i] for d in docs) for i in range(len(docs[0]["energy"]))]
    p, o = statistics.median(plain), statistics.median(ours)
    paired = statistics.median(b - a for a, b in zip(plain, ours, strict=True))
    sync = statistics.median(s for d in docs for s in d["sync"])
    comps = 2 * args.microbatches * (1 if args.schedule == "1F1B" else 2)
    print(
        f"| {args.schedule} | {args.hidden} | {args.microbatches} | {p * 1e3:.2f} | {o * 1e3:.2f} "
        f"| {o / p:.3f} | {paired * 1e3:+.2f} | {paired / comps * 1e6:+.0f} | {sync * 1e3:.2f} "
        f"| {max(d['setup_s'] for d in docs):.2f} |"
    )


def timeline(args: argparse.Namespace) -> None:
    from fxenergy.pipeline.online_plan import RunRecord, replay

    out = tempfile.mkdtemp()
    _spawn(_timeline_run, args, out)
    run = RunRecord.load(out)
    rows = []
    for it in run.ranks[0]:
        recs = run.iteration(it["index"])
        t, e = replay(run.dag, recs, run.meta["blocked_power_w"], True)
        rows.append((it["index"], it["phase"], t, e))
        print(f"iteration {it['index']}: {it['phase']:9s} {t:.4f} s {e:.1f} J (simulated)")
    _plot(run, rows, Path(args.timeline))
    print(f"timeline written to {args.timeline}")


def _plot(run, rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fxenergy.pipeline.probe import parse_label

    colors = {
        "profile": "tab:gray", "refine": "tab:olive", "planned": "tab:green",
        "straggler": "tab:orange",
    }  # fmt: skip
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), layout="constrained")
    ax = axes[0]
    ax.bar([r[0] for r in rows], [r[3] for r in rows], color=[colors.get(r[1], "k") for r in rows])
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=ph) for ph, c in colors.items()]
    plans = [1.5] + [e["iteration"] - 0.5 for e in run.meta.get("refinement", [])[:-1]]
    for x in plans:
        line = ax.axvline(x, color="k", ls=":", label="rank 0 (re-)plans")
    handles.append(line)
    ax.set_ylabel("energy / iteration (J)")
    ax.set_xlabel("iteration")
    ax.set_title(
        "one online run (SIMULATED A100, 1F1B 4x8): profile, plan, refine, steady, straggler"
    )
    ax.legend(handles=handles, ncol=6, fontsize=8, loc="lower left")
    steady = STRAGGLER[0] - 1
    for ax, index, title in (
        (axes[1], steady, "steady iteration"),
        (axes[2], STRAGGLER[0], "straggler iteration"),
    ):
        _gantt(ax, run, index, parse_label)
        ax.set_title(f"{title} {index}: SM clock per computation", fontsize=9)
    import matplotlib.cm as cm
    from matplotlib.colors import Normalize

    bar = cm.ScalarMappable(norm=Normalize(700, 1410), cmap="viridis")
    fig.colorbar(bar, ax=axes[1:], label="SM clock (MHz)", fraction=0.03)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _gantt(ax, run, index: int, parse_label) -> None:
    import matplotlib.cm as cm

    recs = {r: it for r in range(len(run.ranks)) for it in run.ranks[r] if it["index"] == index}
    dur = {
        parse_label(c[0]): (c[2] + c[4], c[1]) for it in recs.values() for c in it["computations"]
    }
    finish: dict = {}
    for c in run.dag.topological:
        start = max((finish[p] for p in run.dag.predecessors[c]), default=0.0)
        finish[c] = start + dur[c][0]
        rank = run.dag.rank_of[c]
        shade = cm.viridis((dur[c][1] - 700) / (1410 - 700))
        ax.barh(rank, dur[c][0], left=start, color=shade, edgecolor="white")
        ax.text(
            start + dur[c][0] / 2,
            rank,
            f"{'F' if c[1] == 'forward' else 'B'}{c[2]}",
            ha="center",
            va="center",
            fontsize=6,
            color="white",
        )
    ax.set_yticks(range(len(run.ranks)), [f"rank {r}" for r in range(len(run.ranks))])
    ax.invert_yaxis()
    ax.set_xlabel("simulated time (s)")


def micro(calls: int = 20000) -> None:
    """Host cost per computation of the hook alone, one process, no communication."""
    from fxenergy.pipeline.probe import ComputeRecorder
    from fxenergy.pipeline.runner import ClockPlanHook
    from fxenergy.runtime.factory import get_backend
    from fxenergy.runtime.sim import NullBackend

    class Stage:
        stage_index = 0

        def forward_one_chunk(self, mb: int) -> int:
            return mb

        def backward_one_chunk(self, mb: int) -> int:
            return mb

    def per_call(stage: Stage) -> float:
        t0 = time.perf_counter()
        for mb in range(calls):
            stage.forward_one_chunk(mb)
        return (time.perf_counter() - t0) / calls * 1e6

    bare = min(per_call(Stage()) for _ in range(3))
    print(f"| bare forward_one_chunk call | {bare:.2f} |")
    for name, backend, recorder in (
        ("hook, null backend, same clock", NullBackend(GPU), False),
        ("hook + recorder, simulated GPU, same clock", get_backend("sim", gpu=GPU), True),
    ):
        stage = Stage()
        plan = {(0, "forward", mb): backend.supported_clocks_mhz()[0] for mb in range(calls)}
        rec = ComputeRecorder(backend, sim_costs(4, 1)) if recorder else None
        with ClockPlanHook(stage, plan, backend, observer=rec):
            if rec is not None:
                rec.begin(0, "planned")
            t = min(per_call(stage) for _ in range(3))
        print(f"| {name} | {t:.2f} (+{t - bare:.2f}) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schedule", default="1F1B", choices=["1F1B", "Interleaved1F1B"])
    ap.add_argument("--hidden", type=int, default=8)
    ap.add_argument("--microbatches", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--timeline", default=None, help="PNG: run the timeline example instead")
    ap.add_argument("--micro", action="store_true", help="host cost of the hook per computation")
    args = ap.parse_args()
    if args.micro:
        print("| per computation | µs |")
        micro()
    elif args.timeline:
        timeline(args)
    else:
        print(
            "| schedule | hidden | microbatches | plain ms | energy_schedule ms | ratio "
            "| paired diff ms | per computation µs | sync all-reduce ms | profile+plan s |"
        )
        overhead(args)


if __name__ == "__main__":
    main()
