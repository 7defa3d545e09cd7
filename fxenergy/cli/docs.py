"""``python -m fxenergy.cli.docs > docs/cli.md``: the command-line reference, from the parser.

Not a command (``register`` is absent on purpose: discovery skips modules without it). A test
regenerates the page and fails when docs/cli.md is out of date.
"""

from __future__ import annotations

import argparse
import os
import sys


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def _section(path: str, parser: argparse.ArgumentParser, level: int) -> list[str]:
    out = [f"{'#' * level} `{path}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, child in _subparsers(parser):
        out += _section(f"{path} {name}", child, level + 1)
    return out


def render() -> str:
    """The whole page as Markdown (help at a fixed width, so it does not depend on the terminal)."""
    from fxenergy.cli import build_parser

    os.environ["COLUMNS"] = "100"
    parser = build_parser()
    lines = [
        "# Command-line reference",
        "",
        "Generated from the parser by `python -m fxenergy.cli.docs > docs/cli.md`; "
        "`tests/test_cli_help.py` fails when this page is out of date. Every figure the "
        "commands print without a GPU comes from the DVFS model (a simulated GPU) and says so.",
        "",
    ]
    return "\n".join(lines + _section("fxenergy", parser, 2)).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
