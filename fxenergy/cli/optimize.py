"""``fxenergy optimize MODEL``: plan clocks for a model (or apply a saved plan), show the plan."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fxenergy.cli._common import (
    UsageError,
    add_command,
    canonical_gpu,
    check_output_path,
    parse_slowdown,
)
from fxenergy.cli.report import MODEL_HELP, add_model_arguments, capture_model, example_inputs
from fxenergy.cost.annotate import DEFAULT_GPU
from fxenergy.hardware.dvfs import DEFAULT_SWITCH_LATENCY_S


def add_planning_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``optimize`` and ``frontier``."""
    p.add_argument(
        "--gpu", default=DEFAULT_GPU, help="GPU to plan for (`fxenergy gpus` lists them)"
    )
    p.add_argument(
        "--switch-latency-ms",
        type=float,
        default=DEFAULT_SWITCH_LATENCY_S * 1e3,
        help="stall per clock switch, ms",
    )
    p.add_argument("--time-limit", type=float, default=30.0, help="solver budget, seconds")


def add_timeline_arguments(p: argparse.ArgumentParser) -> None:
    """``--trace`` and ``--timeline`` (shared with ``pipeline``)."""
    p.add_argument(
        "--trace",
        default=None,
        metavar="OUT.json",
        help="write the predicted timeline as Chrome trace-event JSON (open in "
        "https://ui.perfetto.dev or chrome://tracing)",
    )
    p.add_argument(
        "--timeline", default=None, metavar="OUT.png", help="draw the predicted timeline as a PNG"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "optimize",
        "plan an SM clock per partition of a model and show the plan",
        "Capture MODEL, plan an op order and an SM clock per partition that minimizes energy "
        "within the slowdown budget, and print the plan. Without a GPU the numbers come from "
        "the DVFS model (a simulated GPU). --plan applies a saved plan instead of planning "
        "(refused if it was made for another graph or GPU). " + MODEL_HELP,
        [
            "fxenergy optimize gpt-tiny --max-slowdown 2% --out plan.json",
            "fxenergy optimize gpt-tiny --plan plan.json --run",
            "fxenergy optimize gpt-tiny --train --trace step.json --timeline step.png",
        ],
    )
    add_model_arguments(p)
    add_planning_arguments(p)
    p.add_argument(
        "--max-slowdown",
        type=parse_slowdown,
        default=0.01,
        metavar="BUDGET",
        help="allowed slowdown over all clocks at max: a fraction (0.01) or a percentage (1%%)",
    )
    p.add_argument(
        "--objective",
        choices=["energy", "memory", "switches"],
        default="energy",
        help="what the plan minimizes within the budget",
    )
    p.add_argument(
        "--backend",
        choices=["auto", "nvml", "sim", "null"],
        default="sim",
        help="clock control for --run: nvml (a real GPU), sim (simulated), auto, null (none)",
    )
    p.add_argument("--plan", default=None, metavar="PLAN.json", help="apply this saved plan")
    p.add_argument("--out", default=None, metavar="PLAN.json", help="write the plan as JSON here")
    add_timeline_arguments(p)
    p.add_argument(
        "--format", choices=["table", "json"], default="table", help="rich tables or the plan JSON"
    )
    p.add_argument("--run", action="store_true", help="also run the model once under the plan")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fxenergy.cli import console
    from fxenergy.plans.plan import Plan, check_plan_gpu
    from fxenergy.runtime import get_backend

    # Everything that can be refused is refused before the (long) capture and solve.
    args.gpu = canonical_gpu(args.gpu)
    for option in ("out", "trace", "timeline"):
        check_output_path(getattr(args, option), f"--{option}")
    saved = None
    if args.plan:
        saved = Plan.load(args.plan)
        check_plan_gpu(saved, args.gpu)
    if args.train and args.run:
        raise UsageError(
            "--run runs inference only; to run training steps under plans use "
            "torch.compile(model, backend=fxenergy.backend(...)) (docs/optimize.md)"
        )
    latency_s = saved.switch_latency_s if saved else args.switch_latency_ms / 1e3
    backend = get_backend(args.backend, gpu=args.gpu, switch_latency_s=latency_s)
    opt, plan, title = (_plan_training if args.train else _plan_inference)(args, saved, backend)
    _write_outputs(args, plan)
    if args.format == "json":
        console.print_json(json.dumps(json.loads(plan.to_json())))
    else:
        from fxenergy.plans.report import print_plan

        console.print(f"[bold]{title}[/] on {args.gpu}", highlight=False)
        print_plan(plan, console=console, run=opt.last_run if opt else None, backend=backend)
        for option in ("out", "trace", "timeline"):
            if getattr(args, option):
                console.print(f"{option} written to {getattr(args, option)}")
    if opt is not None:
        opt.restore_clocks()
    return 0


def _plan_inference(args: argparse.Namespace, saved: Any, backend: Any) -> tuple:
    from fxenergy.api import optimize
    from fxenergy.models.loader import load_model

    loaded = load_model(args.model, args.device)
    inputs, kwargs = example_inputs(args, loaded)
    method = args.method
    if method == "auto" and loaded.spec is not None:
        method = loaded.spec.capture_method
    opt = optimize(
        loaded.module,
        inputs,
        kwargs,
        gpu=args.gpu,
        max_slowdown=args.max_slowdown,
        backend=backend,
        switch_latency_s=args.switch_latency_ms / 1e3,
        objective=args.objective,
        time_limit_s=args.time_limit,
        method=method,
        plan=saved,
        progress=args.format == "table",
    )
    if args.run:
        from fxenergy.cli import console

        if loaded.device == "meta":
            console.print("[yellow]--run skipped: a meta-device model has no weights to run[/]")
        else:
            opt(*inputs, **kwargs)
    shapes = " ".join("x".join(map(str, t.shape)) for t in inputs)
    return opt, opt.plan, f"{loaded.name} [{shapes}] inference"


def _plan_training(args: argparse.Namespace, saved: Any, backend: Any) -> tuple:
    """The joint forward+backward graph of one training step, planned like any graph."""
    from fxenergy.plans.planner import annotate, apply_plan, plan_graph

    gm, title = capture_model(args)
    gm = annotate(gm, args.gpu)
    plan = saved or plan_graph(
        gm,
        args.gpu,
        args.max_slowdown,
        switch_latency_s=args.switch_latency_ms / 1e3,
        objective=args.objective,
        time_limit_s=args.time_limit,
        progress=args.format == "table",
    )
    apply_plan(gm, plan)  # refuses a saved plan made for another graph
    return None, plan, title


def _write_outputs(args: argparse.Namespace, plan: Any) -> None:
    if args.out:
        plan.save(args.out)
    if args.trace:
        plan.to_trace(args.trace)
    if args.timeline:
        plan.to_timeline_png(args.timeline)
