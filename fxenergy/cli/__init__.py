"""The ``fxenergy`` command line.

Each subcommand lives in its own module in this package and exposes
``register(subparsers) -> None``; the module adds its parser and sets ``func`` (a callable taking
the parsed ``argparse.Namespace`` and returning an exit code). Modules are discovered, so adding
a file adds a command.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from rich.console import Console

from fxenergy.errors import FxEnergyError

console = Console()
err_console = Console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every discovered subcommand."""
    from fxenergy import __version__

    parser = argparse.ArgumentParser(
        prog="fxenergy",
        description="Cut a PyTorch model's GPU energy without slowing it down.",
    )
    parser.add_argument("--version", action="version", version=f"fxenergy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    importlib.import_module(f"{__name__}.gpus").add_gpu_params_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fxenergy`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        importlib.import_module(f"{__name__}.gpus").apply_gpu_params(args)
        return int(args.func(args) or 0)
    except FxEnergyError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
