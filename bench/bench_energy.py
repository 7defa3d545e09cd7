"""Energy saved on training steps run THROUGH the torch.compile backend (simulated GPUs).

For each model and GPU, the model (on the ``meta`` device: shapes only, no weights) is compiled
with ``fxenergy.backend`` and AdamW's ``step`` is compiled by the same backend; training steps
run on the simulated GPU (``SimulatedBackend``, default 10 ms switch latency). The backend
records the forward, backward and optimizer graphs in the first step, plans them as ONE cycle,
and applies the plan from the next step; "ours" is the simulated cost of a steady-state step
(the third step run under the plan's budget). Other budgets re-plan the same compiled graphs
(``be.replan``) and run two more steps each. References, on the same graphs:

* (a) every op at the maximum clock (the baseline, what "ours" is compared to);
* (b) the best single global clock within the budget (Zeus-style global tuning; no switch);
* (c) per-op clocks with a zero switch latency: the solver's plan on the zero-latency problem
  (in solver units, not re-checked in seconds: a reference) and its LP bound, the upper bound
  on what per-op clocks can save.

Numbers are the DVFS model's (SIMULATED). Run: ``python bench/bench_energy.py [--quick]
[--llama-layers N] [--out table.md]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from fxenergy.hardware.dvfs import get_dvfs_model
from fxenergy.plans.cycle import concat_problems
from fxenergy.runtime.sim import SimulatedBackend
from fxenergy.schedule.build import build_problem
from fxenergy.schedule.problem import Solution
from fxenergy.schedule.solve import solve
from fxenergy.schedule.validate import evaluate
from fxenergy.training import EnergyBackend
from fxenergy.training.cycle import step_costs

BUDGETS = (0.0, 0.01, 0.05)
GPUS = ("A100-SXM4-80GB", "H100-SXM5")


def gpt2_small() -> tuple:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config()
    with torch.device("meta"):
        model = GPT2LMHeadModel(cfg)
    return model, torch.randint(0, cfg.vocab_size, (8, 1024), device="meta")


def llama_7b_shape(layers: int) -> Callable[[], tuple]:
    def build() -> tuple:
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(num_hidden_layers=layers)  # the 7B widths: 4096 hidden, 11008 MLP
        with torch.device("meta"):
            model = LlamaForCausalLM(cfg)
        return model, torch.randint(0, cfg.vocab_size, (1, 2048), device="meta")

    return build


def _steps(fwd, opt_step, opt, x, n: int) -> None:
    for _ in range(n):
        loss = fwd(x, use_cache=False).logits.float().mean()
        loss.backward()
        opt_step()
        opt.zero_grad(set_to_none=True)


def references(be: EnergyBackend, gpu: str, budget: float, time_limit_s: float) -> dict:
    """(b) best global clock and (c) the zero-latency per-op plan and bound, on the graphs of
    the backend's active cycle."""
    cyc = be.active_cycle
    assert cyc is not None
    gms = [be.graphs[g].graph_module for g in cyc.sequence]
    costs = step_costs(gms)  # the power cap acts on the whole step, as for our plan
    model = get_dvfs_model(gpu)
    first = build_problem(gms[0], model, cycle=costs)
    units = (first.problem.time_unit_s, first.problem.energy_unit_j)
    problems = [
        build_problem(g, model, first.problem.clocks_mhz, units=units, cycle=costs) for g in gms
    ]
    exact = concat_problems([gp.exact for gp in problems]).problem  # seconds and joules
    base = evaluate(exact, Solution.original(exact))
    limit = (1 + budget) * base.time * (1 + 1e-12)
    best = min(
        (evaluate(exact, Solution.original(exact, c)).energy, exact.clocks_mhz[c])
        for c in range(exact.num_clocks)
        if evaluate(exact, Solution.original(exact, c)).time <= limit
    )
    zero_model = get_dvfs_model(gpu, switch_latency_s=0.0)
    zero = concat_problems(
        [build_problem(g, zero_model, exact.clocks_mhz, units=units, cycle=costs).problem
         for g in gms]
    ).problem  # fmt: skip
    upper = solve(zero, budget, time_limit_s=time_limit_s, progress=False)
    zbase = evaluate(zero, Solution.original(zero))
    best_units = best[0] / zero.energy_unit_j
    zero_e = min(upper.evaluation.energy, best_units)
    return {
        "global": 1 - best[0] / base.energy,
        "global_mhz": best[1],
        "perop": 1 - zero_e / zbase.energy,
        "perop_bound": 1 - upper.bound / zbase.energy if upper.bound else float("nan"),
    }


def run_model(name: str, build: Callable[[], tuple], gpu: str, time_limit_s: float) -> list[dict]:
    torch._dynamo.reset()
    model, x = build()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, foreach=False)
    sim = SimulatedBackend(gpu)  # the default switch latency (10 ms)
    be = EnergyBackend(gpu, BUDGETS[0], sim, sim.switch_latency_s, time_limit_s)
    fwd = torch.compile(model, backend=be, dynamic=False)
    opt_step = torch.compile(opt.step, backend=be, dynamic=False)
    t0 = time.perf_counter()
    _steps(fwd, opt_step, opt, x, 3)
    print(f"{name} on {gpu}: compiled, recorded and planned in {time.perf_counter() - t0:.0f} s")
    rows = []
    for i, budget in enumerate(BUDGETS):
        if i:
            t1 = time.perf_counter()
            be.replan(budget)
            plan_s = time.perf_counter() - t1
            _steps(fwd, opt_step, opt, x, 2)
        else:
            plan_s = be.cycles[0].solve_time_s
        cyc = be.active_cycle
        assert cyc is not None and cyc.runs, be.events
        run = cyc.runs[-1]
        base = cyc.baseline
        rows.append(
            {
                "model": name,
                "gpu": gpu,
                "budget": budget,
                "graphs": len(cyc.sequence),
                "tasks": sum(g.nodes for g in (be.graphs[k] for k in cyc.sequence)),
                "step_ms": base.time_s * 1e3,
                "ours": 1 - run.energy_j / base.energy_j,
                "ours_time": run.time_s / base.time_s - 1,
                "ours_switches": run.switches,
                "plan_s": plan_s,
                **references(be, gpu, budget, time_limit_s),
            }
        )
        print(rows[-1], flush=True)
    be.restore_clocks()
    return rows


def markdown(rows: list[dict]) -> str:
    head = (
        "| model | GPU | budget | graphs | tasks | step ms | (b) global clock | ours, through "
        "the backend (10 ms switches) | ours Δt | (c) per-op, 0 ms switches | (c) LP bound "
        "| planning s |\n|" + "---|" * 12
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['gpu']} | ≤{100 * r['budget']:g}% | {r['graphs']} | "
            f"{r['tasks']} | {r['step_ms']:.1f} | {100 * r['global']:.2f}% @ "
            f"{r['global_mhz']} MHz | {100 * r['ours']:.2f}% ({r['ours_switches']} sw) | "
            f"{100 * r['ours_time']:+.2f}% | {100 * r['perop']:.2f}% | "
            f"{100 * r['perop_bound']:.2f}% | {r['plan_s']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="GPT-2 small on the A100 only")
    ap.add_argument("--time-limit", type=float, default=20.0)
    ap.add_argument("--llama-layers", type=int, default=32, help="decoder layers (7B: 32)")
    ap.add_argument("--llama-only", action="store_true", help="skip GPT-2 small")
    ap.add_argument("--gpu", action="append", default=None, help="GPU(s) to run (default both)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cases: list[tuple[str, Callable[[], tuple]]] = []
    if not args.llama_only:
        cases.append(("GPT-2 small (bs 8 × 1024)", gpt2_small))
    if not args.quick:
        depth = f"{args.llama_layers} layers, " if args.llama_layers != 32 else ""
        cases.append((f"Llama-7B shape ({depth}bs 1 × 2048)", llama_7b_shape(args.llama_layers)))
    gpus = args.gpu or (GPUS[:1] if args.quick else GPUS)
    rows = [
        r
        for name, build in cases
        for gpu in gpus
        for r in run_model(name, build, gpu, args.time_limit)
    ]
    table = markdown(rows)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
