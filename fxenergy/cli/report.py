"""``fxenergy report MODEL``: FLOPs, bytes, roofline time, critical path and peak memory.

MODEL is a built-in name (``fxenergy models``), ``pkg.module:attr`` or ``path/to/file.py:attr``.
Built-in models come with example inputs; other models need ``--input-shape`` (once per
positional input).
"""

from __future__ import annotations

import argparse
import ast
import sys
from typing import Any

import torch
from rich.console import Console

from fxenergy.cli._common import UsageError, add_command, canonical_gpu, parse_shape
from fxenergy.errors import CaptureError
from fxenergy.models import make_input
from fxenergy.models.loader import LoadedModel, load_model

__all__ = ["UsageError", "add_model_arguments", "capture_model", "example_inputs", "parse_shape"]

MODEL_HELP = (
    "MODEL is a built-in name (`fxenergy models`), pkg.module:attr or path/to/file.py:attr. "
    "Built-in models come with example inputs; other models need --input-shape (once per "
    "positional input)."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "report",
        "cost, roofline, critical path and peak memory of a model",
        MODEL_HELP + " Nothing is planned or run: the figures come from the cost model.",
        [
            "fxenergy report gpt-tiny --gpu H100-SXM5 --top 10",
            "fxenergy report llama-7b --input-shape 1,2048 --format json",
            "fxenergy report torchvision.models:resnet18 --input-shape 1,3,224,224 --device meta",
        ],
    )
    add_model_arguments(p)
    p.add_argument("--gpu", default=None, help="GPU for the roofline (`fxenergy gpus` lists them)")
    p.add_argument("--top", type=int, default=20, help="rows in the top-ops and rollup tables")
    p.add_argument(
        "--group-by", choices=["module", "op"], default="module", help="rollup table rows"
    )
    p.add_argument("--depth", type=int, default=None, help="cut module paths to this many parts")
    p.add_argument(
        "--format", choices=["table", "json"], default="table", help="rich tables or JSON"
    )
    p.set_defaults(func=run)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """MODEL and the input/capture options (shared with other commands that capture a model)."""
    p.add_argument("model", metavar="MODEL", help="built-in name, pkg.module:attr or file.py:attr")
    p.add_argument(
        "--input-shape",
        action="append",
        type=parse_shape,
        default=[],
        metavar="1,3,224,224",
        help="shape of a positional input (repeat per input; default: the built-in's)",
    )
    p.add_argument(
        "--input-dtype",
        action="append",
        default=[],
        metavar="DTYPE",
        help="dtype of the inputs (once for all, or once per --input-shape)",
    )
    p.add_argument(
        "--kwarg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword input, a Python literal (use_cache=False); repeatable",
    )
    p.add_argument(
        "--device", default=None, help="where to build the model (meta: no weights, plan only)"
    )
    p.add_argument(
        "--train",
        action="store_true",
        help="a training step (forward + backward, loss = sum of the first output)",
    )
    p.add_argument(
        "--method",
        choices=["auto", "symbolic", "export"],
        default="auto",
        help="capture method (--train always uses aot_autograd)",
    )


def parse_dtype(text: str) -> torch.dtype:
    """``"int64"`` / ``"torch.bfloat16"`` -> the torch dtype."""
    dtype = getattr(torch, text.replace("torch.", ""), None)
    if not isinstance(dtype, torch.dtype):
        raise UsageError(f"unknown dtype {text!r}; e.g. float32, bfloat16, float16, int64")
    return dtype


def parse_kwargs(items: list[str]) -> dict[str, Any]:
    """``["use_cache=False", "mode=fast"]`` -> ``{"use_cache": False, "mode": "fast"}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UsageError(f"--kwarg {item!r} is not KEY=VALUE (e.g. use_cache=False)")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()  # a bare word is a string
    return out


def example_inputs(args: argparse.Namespace, loaded: LoadedModel) -> tuple[tuple, dict[str, Any]]:
    """Inputs from ``--input-shape``/``--input-dtype``/``--kwarg``, else the built-in's."""
    kwargs = parse_kwargs(args.kwarg)
    device = torch.device(loaded.device)
    spec = loaded.spec
    if not args.input_shape:
        if spec is None:
            raise UsageError(f"{loaded.name!r} is not a built-in model: give --input-shape")
        if args.input_dtype:
            dtype = parse_dtype(args.input_dtype[0])
            return tuple(make_input(s, dtype, device) for s in spec.input_shapes), {
                **spec.example_kwargs, **kwargs}  # fmt: skip
        inputs, spec_kwargs = spec.example_inputs(device)
        return inputs, {**spec_kwargs, **kwargs}
    dtypes = [parse_dtype(d) for d in args.input_dtype] or [
        spec.input_dtype if spec else torch.float32
    ]
    if len(dtypes) not in (1, len(args.input_shape)):
        raise UsageError(
            f"{len(dtypes)} --input-dtype for {len(args.input_shape)} --input-shape: "
            "give one for all inputs or one per input"
        )
    dtypes = dtypes * len(args.input_shape) if len(dtypes) == 1 else dtypes
    high = spec.vocab_size if spec else 2
    tensors = tuple(
        make_input(s, d, device, high) for s, d in zip(args.input_shape, dtypes, strict=True)
    )
    base = dict(spec.example_kwargs) if spec else {}
    return tensors, {**base, **kwargs}


def capture_model(args: argparse.Namespace) -> tuple[torch.fx.GraphModule, str]:
    """Load MODEL, build its inputs and capture it; returns the graph and a title."""
    from fxenergy.graph.capture import capture, capture_training

    loaded = load_model(args.model, args.device)
    inputs, kwargs = example_inputs(args, loaded)
    if args.train:
        # non-tensor keyword inputs (use_cache=False) are specialized; tensors must be positional
        gm = capture_training(loaded.module.train(), inputs, example_kwargs=kwargs)
    else:
        method = args.method
        if method == "auto" and loaded.spec is not None:
            method = loaded.spec.capture_method
        gm = capture(loaded.module, inputs, kwargs, method=method)
    shapes = " ".join("x".join(map(str, t.shape)) for t in inputs)
    mode = "training step" if args.train else "inference"
    return gm, f"{loaded.name} [{shapes}] {mode} on {loaded.device}"


def run(args: argparse.Namespace) -> int:
    from fxenergy.cli import console
    from fxenergy.report import analyze, build_report, render_json, render_tables

    if args.gpu is not None:
        args.gpu = canonical_gpu(args.gpu)  # fail fast (listing the known GPUs) before a capture
    try:
        gm, title = capture_model(args)
    except CaptureError as err:  # graph breaks: one report per graph (branch `cycle`, issue 15)
        if args.train or args.method != "auto":
            raise
        return _run_with_breaks(args, str(err))
    gm = analyze(gm, args.gpu)
    report = build_report(gm, title=title, group_by=args.group_by, depth=args.depth)
    if args.format == "json":
        sys.stdout.write(render_json(report) + "\n")
    else:
        # Pipes and CI logs get rich's 80-column default, which folds every table.
        wide = console if console.is_terminal else Console(width=max(console.width, 160))
        render_tables(report, wide, top=args.top)
    return 0


def _run_with_breaks(args: argparse.Namespace, error: str) -> int:
    """A model torch.compile splits into graphs: report each graph, then the breaks."""
    from fxenergy.cli import console
    from fxenergy.report import render_json, render_tables, totals_table
    from fxenergy.training.graphs import graph_reports, report_with_breaks, summed_totals

    loaded = load_model(args.model, args.device)
    inputs, kwargs = example_inputs(args, loaded)
    opt = report_with_breaks(loaded.module, tuple(inputs), kwargs, args.gpu, error)
    reports = graph_reports(opt, args.gpu, loaded.name, args.group_by, args.depth)
    if args.format == "json":
        sys.stdout.write("[" + ",\n".join(render_json(r) for r in reports) + "]\n")
        return 0
    wide = console if console.is_terminal else Console(width=max(console.width, 160))
    for report in reports:
        render_tables(report, wide, top=args.top)
    params = sum(p.numel() for p in loaded.module.parameters())
    total = summed_totals(reports, params)
    wide.print(totals_table(total, f"{loaded.name}: all {len(reports)} graphs, summed"))
    for line in opt.break_lines():
        wide.print(line, highlight=False, markup=False)
    return 0
