"""Dynamo's graph breaks, as fxenergy reports them: why the graph ended, and at which line.

When ``torch.compile`` cannot put a whole ``forward`` into one graph (a Python branch on a
tensor's value, a ``.item()``, an unsupported call), it splits the program into several graphs
and runs the Python in between itself. Each graph dynamo hands a backend carries the reason it
was cut (``gm.compile_subgraph_reason``, the same record ``torch._dynamo.explain`` reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: dynamo's terse reasons, said in words a model author knows
_PLAIN = (
    ("generic_jump", "a Python branch on a tensor's value (`if tensor...:`)"),
    ("Tensor.item", "a `.item()` call"),
    ("data dependent", "an operation whose output shape depends on the data"),
    ("call_function", "a call dynamo cannot trace"),
)


@dataclass(frozen=True)
class GraphBreak:
    """One graph break: dynamo's reason, and the user code line where the graph was cut."""

    reason: str  #: dynamo's reason (first line)
    where: str  #: ``file:line in function`` of the innermost user frame ('' if unknown)
    stack: tuple[str, ...] = ()  #: the user frames, outermost first

    @property
    def plain(self) -> str:
        """The reason in plain words (dynamo's own text in parentheses)."""
        for key, words in _PLAIN:
            if key in self.reason:
                return f"{words} ({self.reason})"
        return self.reason

    def __str__(self) -> str:
        return f"{self.where or '<unknown line>'}: {self.plain}"


def _frame(f: Any) -> str:
    path = str(f.filename)
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:  # a library's file: its import path says enough
            path = path.split(marker, 1)[1]
    return f"{path}:{f.lineno} in {f.name}"


def graph_break_of(gm: Any) -> GraphBreak | None:
    """The break that ended the graph dynamo handed a backend, or None if it was not cut."""
    reason = getattr(gm, "compile_subgraph_reason", None)
    if reason is None or not getattr(reason, "graph_break", False):
        return None
    stack = tuple(_frame(f) for f in getattr(reason, "user_stack", None) or ())
    text = (str(getattr(reason, "reason", "")).strip().splitlines() or ["graph break"])[0]
    return GraphBreak(text, stack[-1] if stack else "", stack)


def describe_breaks(breaks: list[GraphBreak], graphs: int) -> list[str]:
    """Lines for the user: how many graphs, every distinct break, and what it costs."""
    distinct = list({(b.where, b.plain): b for b in breaks}.values())
    lines = [
        f"the model ran as {graphs} graph{'s' if graphs != 1 else ''} through torch.compile "
        f"({len(distinct)} distinct graph break{'s' if len(distinct) != 1 else ''}):"
    ]
    lines += [f"  break at {b}" for b in distinct]
    lines.append(
        "  each graph is planned, and the graphs of one call are planned as one cycle (the clock "
        "carries across breaks); the host work between graphs (the Python at the break, "
        "dynamo's guards) is not planned: it runs at whatever clock is in force"
    )
    return lines
