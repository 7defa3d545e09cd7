"""``fxenergy models``: the built-in models."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from fxenergy.cli._common import add_command
from fxenergy.models import list_models


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "models",
        "list the built-in models (MODEL names for report, optimize, frontier)",
        "Built-in models come with example inputs; meta-device ones have no weights (planning "
        "only). Any other model is named pkg.module:attr or file.py:attr with --input-shape.",
        ["fxenergy models", "fxenergy models --format json"],
    )
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fxenergy.cli import console

    specs = list_models()
    if args.format == "json":
        rows = [
            {
                "name": s.name,
                "description": s.description,
                "input_shapes": [list(x) for x in s.input_shapes],
                "input_dtype": str(s.input_dtype).replace("torch.", ""),
                "kwargs": s.example_kwargs,
                "default_device": s.default_device,
                "requires": list(s.requires),
            }
            for s in specs
        ]
        console.print_json(json.dumps(rows))
        return 0
    table = Table(title="Built-in models (fxenergy report NAME)")
    for col in ("name", "inputs", "device", "description"):
        table.add_column(col)
    for s in specs:
        shapes = " ".join(",".join(map(str, x)) for x in s.input_shapes)
        dtype = str(s.input_dtype).replace("torch.", "")
        table.add_row(s.name, f"{shapes} {dtype}", s.default_device, s.description)
    console.print(table)
    return 0
