"""Import direction of the fxenergy package, read from the source (ast; nothing is imported).

Layers, top to bottom; a module may import its own layer (without a circle) and any layer below::

    cli -> faces (api, training, report, __init__) -> passes/, pipeline/, plans/
        -> runtime/, schedule/ -> memory/, redundancy/, hardware/, cost/, models/
        -> graph/ -> errors

Imports inside functions count for direction (a deferred upward import is still upward) and
for circles (deferring an import hides a circle from Python, not from a reader). The plain-data
modules (``schedule/problem.py``, ``schedule/validate.py``, ``memory/problem.py``) import neither
torch nor ortools, and only ``schedule/cpsat/`` imports ortools.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = {"fxenergy": ROOT / "fxenergy", "fxenergy.passes": ROOT / "passes"}

#: (layer index, module-name prefixes); lower index = higher layer. First match wins.
LAYERS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (0, ("fxenergy.cli", "fxenergy.__main__")),
    (1, ("fxenergy.api", "fxenergy.training", "fxenergy.report")),
    (2, ("fxenergy.passes", "fxenergy.pipeline", "fxenergy.plans")),
    (3, ("fxenergy.runtime", "fxenergy.schedule")),
    (4, ("fxenergy.memory", "fxenergy.redundancy", "fxenergy.hardware", "fxenergy.cost",
         "fxenergy.models")),
    (5, ("fxenergy.graph",)),
    (6, ("fxenergy.errors",)),
)  # fmt: skip

#: Known upward imports, each matched exactly and naming who removes it (and how).
ALLOWED_UPWARD: dict[tuple[str, str], str] = {
    # The pass registry finds its built-in plugins by importing the package that holds them
    # (registered_passes/get_pass); no code of graph/ depends on a pass. Design exception.
    ("fxenergy.graph.pass_infra", "fxenergy.passes"): "house: plugin discovery",
}
#: Known circles (the modules in them), each naming who removes it.
ALLOWED_CIRCLES: dict[frozenset[str], str] = {}


def _module_name(path: Path) -> str:
    for package, base in PACKAGE_DIRS.items():
        if path.is_relative_to(base):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([package, *parts])
    raise ValueError(path)


def _modules() -> dict[str, Path]:
    out = {}
    for base in PACKAGE_DIRS.values():
        for path in sorted(base.rglob("*.py")):
            out[_module_name(path)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The fxenergy module ``name`` refers to (``from fxenergy.x import y`` may name module y)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> set[str]:
    """Every absolute module name ``module`` imports, at any depth of its body.

    Imports under ``if TYPE_CHECKING:`` never run, so they are not counted.
    """
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _layer(module: str) -> int:
    if module == "fxenergy":
        return 1
    for index, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS in {__file__}")


def _edges() -> set[tuple[str, str]]:
    edges = set()
    for module in MODULES:
        for name in _imports(module):
            target = _resolve(name) if name.startswith("fxenergy") else None
            if target is not None and target != module:
                edges.add((module, target))
    return edges


EDGES = _edges()


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        _layer(module)


def test_no_upward_import() -> None:
    upward = sorted(
        f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
        for a, b in EDGES
        if _layer(b) < _layer(a) and (a, b) not in ALLOWED_UPWARD
    )
    assert not upward, "upward imports:\n" + "\n".join(upward)


def _circles() -> list[list[str]]:
    graph = nx.DiGraph()
    for a, b in EDGES:
        if not (a.startswith(b + ".") or b == "fxenergy"):  # a package's own __init__
            graph.add_edge(a, b)
    return list(nx.simple_cycles(graph))


def test_no_import_circle() -> None:
    circles = [" -> ".join([*c, c[0]]) for c in _circles() if frozenset(c) not in ALLOWED_CIRCLES]
    assert not circles, "import circles:\n" + "\n".join(sorted(circles))


def test_allowlists_are_still_needed() -> None:
    """An allowlist entry the code no longer needs must go (the owner fixed it)."""
    stale = [f"{a} -> {b}" for a, b in ALLOWED_UPWARD if (a, b) not in EDGES]
    found = {frozenset(c) for c in _circles()}
    stale += [" <-> ".join(sorted(c)) for c in ALLOWED_CIRCLES if c not in found]
    assert not stale, f"remove these allowlist entries: {stale}"


@pytest.mark.parametrize(
    "module",
    ["fxenergy.schedule.problem", "fxenergy.schedule.validate", "fxenergy.memory.problem"],
)
def test_plain_data_modules_import_neither_torch_nor_ortools(module: str) -> None:
    roots = {name.partition(".")[0] for name in _imports(module)}
    assert not roots & {"torch", "ortools"}, (
        f"{module} imports {sorted(roots & {'torch', 'ortools'})}"
    )


def test_only_cpsat_imports_ortools() -> None:
    users = sorted(
        m
        for m in MODULES
        if any(n.partition(".")[0] == "ortools" for n in _imports(m))
        and not m.startswith("fxenergy.schedule.cpsat")
    )
    assert not users, f"ortools outside fxenergy/schedule/cpsat/: {users}"
