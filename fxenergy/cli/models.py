"""``fxenergy models``: the built-in models."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from fxenergy.models import list_models


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the built-in models (MODEL names for report)")
    p.add_argument("--format", choices=["table", "json"], default="table")
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
