"""Every examples/*.py runs to completion on a CPU (as a user would run it)."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("[0-9]*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}
    proc = subprocess.run(
        [sys.executable, str(path)],
        cwd=path.parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"{path.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    assert proc.stdout.strip(), f"{path.name} printed nothing"


def _fxenergy_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from fxenergy... import name`` and ``fxenergy.name`` in an
    example."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fxenergy")
        for alias in node.names
    ]
    found += [
        ("fxenergy", node.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "fxenergy"
    ]
    return found


def test_examples_are_numbered_documented_and_use_the_current_api() -> None:
    """Numbered examples (01_, 02_, ...), each opening with a docstring that says what it shows, and
    every fxenergy name an example imports exists (examples follow the layout)."""
    assert [p.name[:3] for p in EXAMPLES] == [f"{i:02d}_" for i in range(1, len(EXAMPLES) + 1)]
    assert len(EXAMPLES) >= 4
    for path in EXAMPLES:
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc.split()) >= 5, f"{path.name}: no docstring saying what it shows"
        imports = _fxenergy_imports(path)
        assert imports, f"{path.name} uses no fxenergy API"
        for module, name in imports:
            assert hasattr(importlib.import_module(module), name), f"{path.name}: {module}.{name}"
