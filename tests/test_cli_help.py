"""Every command has a description, an example and shown defaults; docs/cli.md is current."""

from __future__ import annotations

import argparse
from pathlib import Path

from fxenergy.cli import build_parser
from fxenergy.cli.docs import _subparsers, render

DOCS = Path(__file__).parent.parent / "docs" / "cli.md"


def _commands(parser: argparse.ArgumentParser, path: str = "fxenergy"):
    yield path, parser
    for name, child in _subparsers(parser):
        yield from _commands(child, f"{path} {name}")


def test_every_command_has_description_example_and_defaults() -> None:
    for path, parser in _commands(build_parser()):
        text = parser.format_help()
        assert parser.description, path
        assert "examples:\n  fxenergy" in text, path
        assert "%%" not in text and "``" not in text, path  # raw RST or a doubled percent
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{path} {action.option_strings[0]} has no help"
            shows = action.default not in (None, False, True, [], argparse.SUPPRESS)
            if shows and action.option_strings and action.help:
                assert "(default:" in _help_of(parser, action), f"{path} {action.dest}"


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    return formatter._expand_help(action) if action.help else ""


def test_docs_cli_md_is_current() -> None:
    assert DOCS.read_text() == render(), (
        "docs/cli.md is out of date: run `python -m fxenergy.cli.docs > docs/cli.md`"
    )
