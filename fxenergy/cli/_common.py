"""What every ``fxenergy`` command shares: parser construction, value parsers, output checks.

(Underscored: the command discovery in :mod:`fxenergy.cli` skips it.)
"""

from __future__ import annotations

import argparse
import difflib
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

from fxenergy.errors import FxEnergyError, UnknownGPUError


class UsageError(FxEnergyError, ValueError):
    """A command-line value that cannot be used."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the description's and examples' line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        flags = (argparse._StoreTrueAction, argparse._StoreFalseAction)
        if "%(default)" in text or isinstance(action, flags):
            return text
        if action.default in (None, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    summary: str,
    description: str,
    examples: Sequence[str],
) -> argparse.ArgumentParser:
    """A subcommand parser with a one-line ``summary``, a description and runnable examples."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    text = f"{summary[0].upper()}{summary[1:]}.\n\n{description}".rstrip()
    paragraphs = [textwrap.fill(par, 78) for par in text.split("\n\n")]
    return sub.add_parser(
        name,
        help=summary,
        description="\n\n".join(paragraphs),
        epilog=epilog,
        formatter_class=HelpFormatter,
    )


# --- values ---------------------------------------------------------------------------------------


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` or ``"1x3x224x224"`` -> ``(1, 3, 224, 224)``; every dimension >= 1."""
    parts = re.split(r"[,x]", text.strip())
    if not all(re.fullmatch(r"\s*\d+\s*", p) for p in parts):
        raise argparse.ArgumentTypeError(
            f"bad shape {text!r}: write positive integers separated by commas, e.g. 1,3,224,224"
        )
    shape = tuple(int(p) for p in parts)
    if any(d == 0 for d in shape):
        raise argparse.ArgumentTypeError(
            f"bad shape {text!r}: every dimension (the batch too) must be at least 1"
        )
    return shape


#: A budget above this is almost surely a percentage typed as a fraction (5.0 for 5%).
MAX_SLOWDOWN = 1.0


def parse_slowdown(text: str) -> float:
    """``"1%"`` -> 0.01, ``"0.01"`` -> 0.01; refuses negative budgets and ones above 100%."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad slowdown {text!r}: write a fraction (0.02) or a percentage (2%)"
        ) from None
    if not value >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(
            f"bad slowdown {text!r}: a budget is >= 0 (0 = no slower than all clocks at max)"
        )
    if value > MAX_SLOWDOWN:
        hint = "" if raw.endswith("%") else f" For {value:g} percent write {value:g}%."
        raise argparse.ArgumentTypeError(
            f"slowdown {text!r} means {100 * value:g}% slower; budgets above 100% are "
            f"refused.{hint}"
        )
    return value


def canonical_gpu(name: str) -> str:
    """The spec table's name for ``name`` (any case or NVML spelling), or a one-line error that
    suggests every GPU whose name contains it (``A100`` -> both A100s)."""
    from fxenergy.hardware.specs import get_gpu, known_gpus

    try:
        return get_gpu(name).name
    except UnknownGPUError:
        pass
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    known = known_gpus()
    hits = [g for g in known if key and key in re.sub(r"[^a-z0-9]", "", g.lower())]
    hits = hits or difflib.get_close_matches(name, known, n=3, cutoff=0.4)
    hint = f" Did you mean {' or '.join(hits)}?" if hits else ""
    raise UnknownGPUError(
        f"unknown GPU {name!r}.{hint} Known GPUs: {', '.join(known)} (`fxenergy gpus` shows them; "
        "docs/gpus.md says how to add one)"
    )


def check_output_path(path: str | Path | None, option: str) -> None:
    """Refuse an output path whose folder does not exist, before any long work."""
    if path is None or str(path) == "":
        return
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise UsageError(
            f"{option} {path}: folder {parent} does not exist; create it or write elsewhere"
        )
    if Path(path).is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name")


def check_input_file(path: str | Path, what: str) -> None:
    """Refuse a missing input file with its name and what was expected."""
    if not Path(path).is_file():
        raise UsageError(f"{what} {path} not found; check the path")


# --- wording --------------------------------------------------------------------------------------

#: Python-API phrasings in library messages and what a command-line user types instead.
_CLI_WORDS = (
    (r"use get_backend\('sim', gpu=\.\.\.\) to run", "pass --backend sim to run"),
    (r"method='export' or 'symbolic'", "--method export or --method symbolic"),
    (r"method='(\w+)'", r"--method \1"),
    (r"through example_kwargs", "with --kwarg KEY=VALUE"),
    (r"\bexample_kwargs\b", "--kwarg KEY=VALUE"),
    (r"positionally \(example_args\)", "with --input-shape"),
)


def cli_words(message: str) -> str:
    """``message`` with the Python arguments it names replaced by the command-line options."""
    for pattern, repl in _CLI_WORDS:
        message = re.sub(pattern, repl, message)
    return message
