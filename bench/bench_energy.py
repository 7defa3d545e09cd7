"""Energy saved by fxenergy plans on training steps, against three references (simulated GPUs).

For each model and GPU, one training step = the joint forward+backward graph (aot_autograd,
meta tensors: no weights) followed by an AdamW step over every parameter, planned as ONE cyclic
problem (the step runs in a loop; the clock is kept between steps). At each slowdown budget:

* (a) every op at the maximum clock (the baseline);
* (b) the best single global clock (what Zeus-style global tuning finds): one clock for the
  whole step, no switch;
* (c) per-op clocks with a zero switch latency — the upper bound on savings (the solver's plan
  at latency 0, and the LP bound of that problem);
* ours: the fxenergy plan with 10 ms clock switches (the GPU stalls at idle power).

Numbers are the DVFS model's (simulated GPU). Run: ``python bench/bench_energy.py [--quick]``;
the table goes to stdout and, with ``--out``, to a markdown file.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from fxenergy.graph.capture import capture_training
from fxenergy.hardware.dvfs import get_dvfs_model
from fxenergy.plans.planner import annotate
from fxenergy.schedule.build import build_problem
from fxenergy.schedule.problem import Problem, Solution, Task
from fxenergy.schedule.solve import solve
from fxenergy.schedule.validate import deadline, evaluate

BUDGETS = (0.0, 0.01, 0.05)
GPUS = ("A100-SXM4-80GB", "H100-SXM5")


def _adamw_graph(model: nn.Module) -> torch.fx.GraphModule:
    """The AdamW update of every parameter as an fx graph (make_fx over fake/meta tensors).

    The ops are those of torch.optim.AdamW's single-tensor path (foreach=False,
    capturable=False) at a given step, where the bias corrections are Python floats.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    lr, b1, b2, eps, wd, step = 3e-4, 0.9, 0.95, 1e-8, 0.1, 10
    bc1, bc2 = 1 - b1**step, 1 - b2**step

    def update(ps, gs, m1, m2):
        for p, g, m, v in zip(ps, gs, m1, m2, strict=True):
            p.mul_(1 - lr * wd)
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / bc2**0.5).add_(eps)
            p.addcdiv_(m, denom, value=-lr / bc1)
        return ps

    params = [p.detach() for p in model.parameters()]

    def like() -> list[torch.Tensor]:
        return [torch.empty_like(t) for t in params]

    return make_fx(update, tracing_mode="fake")(params, like(), like(), like())


def _chain(problems: list[Problem]) -> Problem:
    """One problem running ``problems`` one after another (same units, same clocks)."""
    tasks: list[Task] = []
    data, order = [], []
    for p in problems:
        off = len(tasks)
        tasks += [dataclasses.replace(t, name=f"g{len(data)}.{t.name}") for t in p.tasks]
        data.append([(u + off, v + off) for u, v in p.data_edges])
        order.append([(u + off, v + off) for u, v in p.order_edges])
    first = problems[0]
    return dataclasses.replace(
        first,
        tasks=tuple(tasks),
        data_edges=tuple(e for d in data for e in d),
        order_edges=tuple(e for o in order for e in o),
        memory_baseline_bytes=max(p.memory_baseline_bytes for p in problems),
    )


def capture_step(build: Callable[[], tuple]) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule]:
    """The joint forward+backward graph and the AdamW graph of one training step."""
    model, inputs, loss, kwargs = build()
    return capture_training(model, inputs, loss, kwargs), _adamw_graph(model)


def step_problem(graphs: tuple, gpu: str, latency_s: float) -> Problem:
    """One cyclic problem: the joint graph, then the optimizer step, on ``gpu``."""
    joint, opt = (annotate(g, gpu) for g in graphs)
    dvfs = get_dvfs_model(gpu, switch_latency_s=latency_s)
    first = build_problem(joint, dvfs).problem
    units = (first.time_unit_s, first.energy_unit_j)
    second = build_problem(opt, dvfs, clocks_mhz=first.clocks_mhz, units=units).problem
    return _chain([first, second])


def _with_latency(p: Problem, latency_s: float, idle_w: float) -> Problem:
    """The same problem with another switch latency (schedule/switch.py prices the windows)."""
    lat = math.ceil(latency_s / p.time_unit_s)
    return dataclasses.replace(p, switch=dataclasses.replace(p.switch, latency=lat))


def global_clock(p: Problem, limit: int) -> tuple[int, int]:
    """(energy, clock MHz) of the best single clock within the deadline."""
    best = (evaluate(p, Solution.original(p)).energy, p.clocks_mhz[0])
    for c in range(1, p.num_clocks):
        ev = evaluate(p, Solution.original(p, c))
        if ev.time <= limit and ev.energy < best[0]:
            best = (ev.energy, p.clocks_mhz[c])
    return best


def run_case(name: str, graphs: tuple, gpu: str, time_limit_s: float) -> list[dict]:
    base_problem = step_problem(graphs, gpu, 0.010)
    dvfs = get_dvfs_model(gpu)
    rows = []
    for budget in BUDGETS:
        ours_p = base_problem
        zero_p = _with_latency(ours_p, 0.0, dvfs.idle_power_w)
        base = evaluate(ours_p, Solution.original(ours_p))
        limit = deadline(ours_p, budget, base.time)
        g_energy, g_clock = global_clock(ours_p, limit)
        t1 = time.perf_counter()
        ours = solve(ours_p, budget, time_limit_s=time_limit_s, progress=False)
        plan_s = time.perf_counter() - t1
        ours_e = min(ours.evaluation.energy, g_energy)  # optimize() keeps the better of the two
        upper = solve(zero_p, budget, time_limit_s=time_limit_s, progress=False)
        up_e = min(upper.evaluation.energy, g_energy)
        saved = {
            k: 1 - v / base.energy
            for k, v in {"global": g_energy, "ours": ours_e, "perop": up_e}.items()
        }
        bound_saving = 1 - upper.bound / base.energy if upper.bound else float("nan")
        rows.append(
            {
                "model": name,
                "gpu": gpu,
                "budget": budget,
                "tasks": ours_p.num_tasks,
                "step_ms": base.time_s * 1e3,
                "global": saved["global"],
                "global_mhz": g_clock,
                "ours": saved["ours"],
                "ours_switches": ours.evaluation.switches,
                "perop": saved["perop"],
                "perop_bound": bound_saving,
                "frac": saved["ours"] / saved["perop"] if saved["perop"] > 0 else float("nan"),
                "plan_s": plan_s,
                "peak_before_gib": base.peak_memory / 2**30,
                "peak_after_gib": ours.evaluation.peak_memory / 2**30,
            }
        )
        print(rows[-1], flush=True)
    return rows


def gpt2_small() -> tuple:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config()
    with torch.device("meta"):
        m = GPT2LMHeadModel(cfg)
    x = torch.randint(0, cfg.vocab_size, (8, 1024), device="meta")
    return m, (x,), lambda o: o.logits.float().mean(), {"use_cache": False}


def llama_7b() -> tuple:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig()
    with torch.device("meta"):
        m = LlamaForCausalLM(cfg)
    x = torch.randint(0, cfg.vocab_size, (1, 2048), device="meta")
    return m, (x,), lambda o: o.logits.float().mean(), {"use_cache": False}


def markdown(rows: list[dict]) -> str:
    head = (
        "| model | GPU | budget | tasks | step ms | (b) global clock | ours (10 ms switches) "
        "| (c) per-op, 0 ms switches | (c) LP bound | ours / (c) | planning s | peak GiB "
        "before → after |\n|" + "---|" * 12
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['gpu']} | ≤{100 * r['budget']:g}% | {r['tasks']} | "
            f"{r['step_ms']:.1f} | {100 * r['global']:.2f}% @ {r['global_mhz']} MHz | "
            f"{100 * r['ours']:.2f}% ({r['ours_switches']} sw) | {100 * r['perop']:.2f}% | "
            f"{100 * r['perop_bound']:.2f}% | {100 * r['frac']:.0f}% | {r['plan_s']:.1f} | "
            f"{r['peak_before_gib']:.2f} → {r['peak_after_gib']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="GPT-2 small on the A100 only")
    ap.add_argument("--time-limit", type=float, default=20.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cases = [("GPT-2 small (bs 8 × 1024)", gpt2_small)]
    if not args.quick:
        cases.append(("Llama-7B shape (bs 1 × 2048)", llama_7b))
    gpus = GPUS[:1] if args.quick else GPUS
    rows = []
    for name, build in cases:
        t0 = time.perf_counter()
        graphs = capture_step(build)
        print(f"{name}: captured in {time.perf_counter() - t0:.0f} s", flush=True)
        rows += [r for gpu in gpus for r in run_case(name, graphs, gpu, args.time_limit)]
    table = markdown(rows)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
