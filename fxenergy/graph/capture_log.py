"""Keep torch's capture noise out of the user's terminal.

While fxenergy captures a model (symbolic_trace, torch.export, aot_autograd, dynamo), torch
prints graph dumps, log lines and warnings (the LeafSpec FutureWarning of every export, dynamo's
graph-break and recompile warnings). :func:`capture_log` sends them to a per-process log file
(named in capture errors); ``FXENERGY_VERBOSE=1`` lets them through.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: set to 1 to let torch's capture output (graph dumps, warnings) through to the terminal
VERBOSE_ENV = "FXENERGY_VERBOSE"


def capture_log_path() -> Path:
    """Where torch's capture output goes: one file per process in the temp directory."""
    return Path(tempfile.gettempdir()) / f"fxenergy-capture-{os.getpid()}.log"


@contextmanager
def capture_log(verbose: bool | None = None) -> Iterator[Path | None]:
    """Send what torch prints while capturing (graph dumps, logging, warnings such as the
    LeafSpec FutureWarning of every export) to :func:`capture_log_path` instead of the terminal.

    ``verbose`` (default: the ``FXENERGY_VERBOSE`` environment variable) lets it through; the
    context then yields None instead of the log's path. The process's file descriptor 2 (C++
    warnings, prints) and torch's log handlers are redirected, warnings are written to the log,
    and all of it is put back on exit. ``sys.stderr`` is redirected too (where it is not fd 2:
    notebooks, test harnesses); log handlers torch makes meanwhile on it are pointed back at
    the real stderr on exit, so none outlives the log file.
    """
    if verbose is None:
        verbose = verbose_capture()
    if verbose:
        yield None
        return
    path = capture_log_path()
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"--- fxenergy capture, {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n")
        log.flush()
        sys.stderr.flush()
        saved_fd = _dup_stderr_fd()
        try:
            if saved_fd is not None:
                os.dup2(log.fileno(), 2)
            with warnings.catch_warnings(), torch_logs_to(log), _python_stderr_to(log):
                warnings.simplefilter("default")
                warnings.showwarning = _to_file(log)
                yield path
        finally:
            sys.stderr.flush()
            if saved_fd is not None:
                os.dup2(saved_fd, 2)
                os.close(saved_fd)


@contextmanager
def _python_stderr_to(log: Any) -> Iterator[None]:
    real = sys.stderr
    sys.stderr = log
    try:
        yield
    finally:
        sys.stderr = real
        for lg in list(logging.root.manager.loggerDict.values()):
            for h in getattr(lg, "handlers", ()):
                if type(h) is logging.StreamHandler and h.stream is log:
                    h.setStream(real)


_handlers_cache: tuple[int, list[logging.StreamHandler]] = (-1, [])


def _torch_stderr_handlers() -> list[logging.StreamHandler]:
    """torch's own log handlers that write to the terminal (torch._logging installs them)."""
    global _handlers_cache
    loggers = logging.root.manager.loggerDict
    if _handlers_cache[0] == len(loggers):
        return _handlers_cache[1]
    found = []
    for name, lg in list(loggers.items()):
        if not (name == "torch" or name.startswith("torch.")) or not isinstance(lg, logging.Logger):
            continue
        for h in lg.handlers:
            # torch._logging's terminal handlers are plain StreamHandlers on the stderr of the
            # time they were made (maybe a test harness's); subclasses (FileHandler, torch's
            # LazyTraceHandler, which closes its stream) own their files and are left alone
            if type(h) is logging.StreamHandler and h.stream is not None:
                if all(h is not f for f in found):  # one handler may serve several loggers
                    found.append(h)
    _handlers_cache = (len(loggers), found)
    return found


@contextmanager
def torch_logs_to(stream: Any | None) -> Iterator[None]:
    """Point torch's terminal log handlers (dynamo's graph-break and recompile warnings) at
    ``stream`` for the duration; ``None`` changes nothing. Cheap enough to wrap every call of
    a compiled model, where dynamo may recompile."""
    if stream is None:
        yield
        return
    swapped = [(h, h.setStream(stream)) for h in _torch_stderr_handlers()]
    try:
        yield
    finally:
        for h, old in reversed(swapped):
            if old is not None:
                h.setStream(old)


def verbose_capture() -> bool:
    """Whether torch's capture output should reach the terminal (``FXENERGY_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def _dup_stderr_fd() -> int | None:
    try:
        return os.dup(2)
    except OSError:  # no fd 2 (some embedded interpreters): Python-level redirection only
        return None


def _to_file(log: Any) -> Callable[..., None]:
    def show(message: Any, category: type, filename: str, lineno: int, *_: Any) -> None:
        log.write(warnings.formatwarning(message, category, filename, lineno))

    return show
