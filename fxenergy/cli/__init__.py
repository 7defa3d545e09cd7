"""The ``fxenergy`` command line.

Each subcommand lives in its own module in this package and exposes
``register(subparsers) -> None`` (modules without it, such as the ``docs`` generator, are
skipped); the module adds its parser and sets ``func`` (a callable taking
the parsed ``argparse.Namespace`` and returning an exit code). Modules are discovered, so adding
a file adds a command.
"""

from __future__ import annotations

import argparse
import importlib
import os
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
    from fxenergy.cli._common import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="fxenergy",
        description="Cut a PyTorch model's GPU energy without slowing it down.",
        epilog="examples:\n  fxenergy models\n  fxenergy report gpt-tiny\n"
        "  fxenergy optimize gpt-tiny --max-slowdown 2% --trace trace.json\n"
        "`fxenergy COMMAND --help` shows each command's options.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fxenergy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):  # docs.py is a script, not a command
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
    from fxenergy.cli._common import cli_words

    try:
        importlib.import_module(f"{__name__}.gpus").apply_gpu_params(args)
        return int(args.func(args) or 0)
    except FxEnergyError as exc:
        _error(cli_words(str(exc)))
        return 1
    except OSError as exc:  # a file the user named: missing, unreadable, a full disk
        _error(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as exc:
        if os.environ.get("FXENERGY_TRACEBACK"):
            raise
        _error(
            f"internal error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            "; rerun with FXENERGY_TRACEBACK=1 for the traceback and please report it"
        )
        return 1


def _error(message: str) -> None:
    # soft_wrap: one line however narrow the terminal, so logs and tests see one message
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    sys.exit(main())
