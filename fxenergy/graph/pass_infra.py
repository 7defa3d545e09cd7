"""Pass infrastructure: a PassBase subclass with declared required/provides/preserves, a registry
by kebab-case name, and pipelines that round-trip through text.

Example::

    >>> from fxenergy.graph.pass_infra import Pipeline
    >>> p = Pipeline.parse("annotate-cost{gpu=H100-SXM5},critical-path")
    >>> str(p)
    'annotate-cost{gpu=H100-SXM5},critical-path'

Every pass is a ``torch.fx.passes.infra.pass_base.PassBase``, so ours and torch's compose in one
``torch.fx.passes.infra.pass_manager.PassManager``. Analyses only write metadata and return
``modified=False``; transforms drop every ``fxenergy.*`` key they do not declare in
``preserves``, and :class:`Pipeline` reruns a missing analysis before a pass that requires it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch.fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from fxenergy.errors import PassError
from fxenergy.graph import meta

_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_REGISTRY: dict[str, type[FxPass]] = {}
_PROVIDERS: dict[str, str] = {}  # analysis key -> name of the pass that provides it


class FxPass(PassBase):
    """Base of every fxenergy pass.

    Subclasses set ``name`` (kebab-case), ``required`` (analysis keys that must be current),
    ``provides`` (keys they make current) and ``preserves`` (keys a transform keeps valid; an
    analysis preserves everything) and implement :meth:`run`. Options go in ``__init__`` as
    keyword arguments; :meth:`options` returns them for printing pipelines.
    """

    name: ClassVar[str] = ""
    required: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ()
    preserves: ClassVar[tuple[str, ...]] = ()
    is_analysis: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self._options = dict(options)

    def options(self) -> dict[str, Any]:
        """Options this instance was built with (printed in pipeline strings)."""
        return dict(self._options)

    def requires(self, graph_module: torch.fx.GraphModule) -> None:  # type: ignore[override]
        """PassBase hook: fail with the pass's name if a required analysis is missing."""
        have = meta.analyses(graph_module)
        missing = [k for k in self.required if k not in have]
        if missing:
            providers = [_PROVIDERS.get(k, "?") for k in missing]
            raise PassError(
                f"pass {self.name!r} needs {missing} on the graph; run {providers} first "
                f"(or use fxenergy.graph.pass_infra.Pipeline, which inserts them)"
            )

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        result = self.run(graph_module)
        gm = result.graph_module
        have = set(meta.analyses(gm))
        if result.modified and not self.is_analysis:
            keep = set(self.preserves)
            dropped = have - keep
            _drop_keys(gm, dropped)
            have &= keep
        have |= set(self.provides)
        gm.meta[meta.ANALYSES] = frozenset(have)
        return result

    def run(self, gm: torch.fx.GraphModule) -> PassResult:
        """Do the pass's work. Analyses write metadata and return ``PassResult(gm, False)``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return _format_pass(self.name, self.options())


def _drop_keys(gm: torch.fx.GraphModule, keys: Iterable[str]) -> None:
    keys = set(keys)
    if not keys:
        return
    for node in gm.graph.nodes:
        for k in keys & node.meta.keys():
            del node.meta[k]
    for k in keys & gm.meta.keys():
        del gm.meta[k]


def register_pass(cls: type[FxPass]) -> type[FxPass]:
    """Class decorator: register a pass under its kebab-case ``name`` (duplicates rejected)."""
    if not _NAME_RE.match(cls.name or ""):
        raise PassError(f"pass name {cls.name!r} of {cls.__qualname__} is not kebab-case")
    old = _REGISTRY.get(cls.name)
    if old is not None and old is not cls and not _same_source(old, cls):
        raise PassError(f"a pass named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    for key in cls.provides:
        _PROVIDERS.setdefault(key, cls.name)
    return cls


def _same_source(a: type, b: type) -> bool:
    """One class definition imported twice under two module names (``passes.x`` from a
    checkout and ``fxenergy.passes.x``): the same pass, not a clash."""
    try:
        return a.__qualname__ == b.__qualname__ and inspect.getfile(a) == inspect.getfile(b)
    except TypeError:
        return False


def _load_builtin_passes() -> None:
    import fxenergy.passes as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")


def registered_passes() -> dict[str, type[FxPass]]:
    """All registered passes by name (built-in ones are imported on first use)."""
    _load_builtin_passes()
    return dict(sorted(_REGISTRY.items()))


def get_pass(name: str, **options: Any) -> FxPass:
    """Build a registered pass by name with keyword options."""
    passes = registered_passes()
    if name not in passes:
        raise PassError(f"unknown pass {name!r}; registered passes: {', '.join(passes)}")
    return passes[name](**options)


# --- pipeline strings ------------------------------------------------------------------------


def _format_value(v: Any) -> str:
    if (
        isinstance(v, str)
        and re.fullmatch(r"[A-Za-z_][\w.\-]*", v)
        and v
        not in {
            "True",
            "False",
            "None",
        }
    ):
        return v
    return repr(v)


def _format_pass(name: str, options: dict[str, Any]) -> str:
    if not options:
        return name
    inner = ",".join(f"{k}={_format_value(v)}" for k, v in options.items())
    return f"{name}{{{inner}}}"


def _parse_value(text: str) -> Any:
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _split_top(text: str, sep: str = ",") -> list[str]:
    parts, depth, cur, quote = [], 0, [], ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def parse_pass(text: str) -> FxPass:
    """Parse one ``name{opt=value,...}`` item."""
    m = re.fullmatch(r"\s*([a-z][a-z0-9\-]*)\s*(?:\{(.*)\})?\s*", text, re.S)
    if not m:
        raise PassError(f"cannot parse pass {text!r}; expected name or name{{key=value,...}}")
    options: dict[str, Any] = {}
    for item in _split_top(m.group(2) or ""):
        if "=" not in item:
            raise PassError(f"option {item!r} of pass {m.group(1)!r} is not key=value")
        k, v = item.split("=", 1)
        options[k.strip()] = _parse_value(v)
    return get_pass(m.group(1), **options)


@dataclass
class PassTiming:
    """How long one pass took inside a pipeline run."""

    name: str
    seconds: float
    modified: bool


@dataclass
class Pipeline:
    """An ordered list of passes that round-trips through text.

    Before each pass, analyses it requires but the graph lacks are (re)run with their default
    options, so a transform that invalidated them does not break what comes after.
    """

    passes: list[FxPass]
    auto_requires: bool = True
    dump_after: Callable[[str, torch.fx.GraphModule], None] | None = None
    timings: list[PassTiming] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str, **kwargs: Any) -> Pipeline:
        """Build a pipeline from ``"pass-a,pass-b{opt=1}"``."""
        return cls([parse_pass(t) for t in _split_top(text)], **kwargs)

    def __str__(self) -> str:
        return ",".join(repr(p) for p in self.passes)

    def __call__(self, gm: torch.fx.GraphModule) -> PassResult:
        self.timings = []
        modified = False
        for p in self.passes:
            if self.auto_requires:
                gm = self._ensure(gm, type(p).required, stack=(p.name,))
            gm, changed = self._run_one(p, gm)
            modified |= changed
        return PassResult(gm, modified)

    def _ensure(
        self, gm: torch.fx.GraphModule, keys: Sequence[str], stack: tuple[str, ...]
    ) -> torch.fx.GraphModule:
        for key in keys:
            if key in meta.analyses(gm):
                continue
            provider = _PROVIDERS.get(key)
            if provider is None or provider in stack:
                continue  # the pass's own requires() check reports it
            dep = get_pass(provider)
            gm = self._ensure(gm, type(dep).required, (*stack, provider))
            gm, _ = self._run_one(dep, gm)
        return gm

    def _run_one(self, p: FxPass, gm: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, bool]:
        t0 = time.perf_counter()
        result = p(gm)
        if result is None:
            raise PassError(f"pass {p.name!r} returned no PassResult")
        self.timings.append(PassTiming(p.name, time.perf_counter() - t0, result.modified))
        if self.dump_after is not None:
            self.dump_after(p.name, result.graph_module)
        return result.graph_module, result.modified


def run_passes(gm: torch.fx.GraphModule, pipeline: str | Sequence[FxPass]) -> torch.fx.GraphModule:
    """Run a pipeline (string or pass list) on ``gm`` and return the resulting module."""
    pipe = Pipeline.parse(pipeline) if isinstance(pipeline, str) else Pipeline(list(pipeline))
    return pipe(gm).graph_module
