"""``fxenergy optimize MODEL``: plan clocks for a model and print the plan."""

from __future__ import annotations

import argparse
import json

from fxenergy.cli.report import add_model_arguments, example_inputs
from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S


def add_planning_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``optimize`` and ``frontier``."""
    p.add_argument("--gpu", default="A100-SXM4-80GB", help="GPU to plan for (fxenergy gpus)")
    p.add_argument(
        "--switch-latency-ms",
        type=float,
        default=DEFAULT_SWITCH_LATENCY_S * 1e3,
        help="stall per clock switch, ms (default %(default)s)",
    )
    p.add_argument("--time-limit", type=float, default=30.0, help="solver budget, seconds")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "optimize",
        help="plan an SM clock per partition of a model and show the plan",
        description="Capture MODEL, plan an op order and an SM clock per partition that "
        "minimizes energy within the slowdown budget, and print the plan. Without a GPU the "
        "numbers come from the DVFS model (a simulated GPU).",
    )
    add_model_arguments(p)
    add_planning_arguments(p)
    p.add_argument("--max-slowdown", type=float, default=0.01, help="e.g. 0.01 = 1%%")
    p.add_argument("--objective", choices=["energy", "memory", "switches"], default="energy")
    p.add_argument("--backend", choices=["auto", "nvml", "sim", "null"], default="sim")
    p.add_argument("--out", default=None, help="write the plan as JSON here")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--run", action="store_true", help="also run the model once under the plan")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fxenergy.api import optimize
    from fxenergy.cli import console
    from fxenergy.hardware.specs import get_gpu
    from fxenergy.models.loader import load_model

    get_gpu(args.gpu)  # fail fast, listing the known GPUs
    loaded = load_model(args.model, args.device)
    inputs, kwargs = example_inputs(args, loaded)
    opt = optimize(
        loaded.module,
        inputs,
        kwargs,
        gpu=args.gpu,
        max_slowdown=args.max_slowdown,
        backend=args.backend,
        switch_latency_s=args.switch_latency_ms / 1e3,
        objective=args.objective,
        time_limit_s=args.time_limit,
        method=args.method,
        progress=args.format == "table",
    )
    if args.run:
        if loaded.device == "meta":
            console.print("[yellow]--run skipped: a meta-device model has no weights to run[/]")
        else:
            opt(*inputs, **kwargs)
    if args.out:
        opt.plan.save(args.out)
    if args.format == "json":
        console.print_json(json.dumps(json.loads(opt.plan.to_json())))
    else:
        console.print(f"[bold]{loaded.name}[/] on {args.gpu}", highlight=False)
        opt.report(console=console)
        if args.out:
            console.print(f"plan written to {args.out}")
    opt.restore_clocks()
    return 0
