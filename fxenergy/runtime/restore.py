"""Put GPU clocks back however the process ends: normal exit, exception, SIGINT or SIGTERM.

Anything that has changed a clock registers a *restorer* (an object with ``restore()``) here; it is
released once it has put the clocks back itself. On interpreter exit (``atexit``) and on SIGINT or
SIGTERM every registered restorer runs. The signal handlers chain to whatever handler was there
before: a Python handler is called after the restore, ``SIG_IGN`` stays ignored, and ``SIG_DFL``
re-raises the signal with the default action so the process still dies the way it would have
(exit status -15 for SIGTERM). SIGINT's default handler raises ``KeyboardInterrupt`` as usual.

Handlers can only be installed from the main thread (a Python rule); from another thread only the
``atexit`` hook is installed, and a debug line says so.

Restorers are held by **weak reference**: protecting a runtime or an optimized module does not
keep the model alive. Whatever must outlive its owner (an NVML clock lock) registers a small
object of its own with ``strong=True`` (``NvmlBackend`` does: its unlocker holds only the device
handle and what to put back).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from types import FrameType
from typing import Any, Protocol

log = logging.getLogger("fxenergy.runtime")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Restorer(Protocol):
    """Anything that can put clocks back; ``restore`` must be idempotent."""

    def restore(self) -> None: ...


_lock = threading.RLock()  # re-entrant: a signal handler runs on the main thread mid-anything
_restorers: dict[int, weakref.ref[Any] | _Strong] = {}


class _Strong:
    """A strong reference with the call signature of a weak one."""

    __slots__ = ("obj",)

    def __init__(self, obj: Restorer) -> None:
        self.obj = obj

    def __call__(self) -> Restorer:
        return self.obj


_previous: dict[int, Any] = {}
_atexit_installed = False
_signals_installed = False


def protect(restorer: Restorer, *, strong: bool = False) -> None:
    """Run ``restorer.restore()`` at exit or on SIGINT/SIGTERM until :func:`release` is called.

    Held weakly (a freed restorer is forgotten) unless ``strong`` or it cannot be weakly
    referenced.
    """
    key = id(restorer)
    try:
        ref: weakref.ref[Any] | _Strong = (
            _Strong(restorer) if strong else weakref.ref(restorer, lambda _: _forget(key))
        )
    except TypeError:  # no __weakref__ slot: hold it strongly
        ref = _Strong(restorer)
    with _lock:
        _restorers[key] = ref
        _install()


def _forget(key: int) -> None:
    with _lock:
        ref = _restorers.get(key)
        if ref is not None and ref() is None:
            del _restorers[key]


def release(restorer: Restorer) -> None:
    """Stop protecting ``restorer`` (it has restored the clocks itself)."""
    with _lock:
        _restorers.pop(id(restorer), None)


def protected() -> list[Restorer]:
    """The restorers that would run now, in registration order."""
    with _lock:
        return [r for r in (ref() for ref in _restorers.values()) if r is not None]


def restore_all() -> int:
    """Run every registered restorer (errors are logged, never raised); return how many ran."""
    with _lock:
        pending = [r for r in (ref() for ref in _restorers.values()) if r is not None]
        _restorers.clear()
    for restorer in reversed(pending):  # last protected, first restored (like nested exits)
        try:
            restorer.restore()
        except Exception:  # a failing restore must not stop the others
            log.exception("fxenergy: restoring clocks failed for %r", restorer)
    return len(pending)


def _install() -> None:
    global _atexit_installed, _signals_installed
    if _signals_installed:  # the common case, on every call of a planned module: keep it cheap
        return
    if not _atexit_installed:
        atexit.register(restore_all)
        _atexit_installed = True
    if threading.current_thread() is not threading.main_thread():
        log.debug("fxenergy: not on the main thread; clocks are restored by atexit only")
        return
    for signum in _SIGNALS:
        current = signal.getsignal(signum)
        if current is _on_signal:
            continue
        _previous[signum] = current
        signal.signal(signum, _on_signal)
    _signals_installed = True


def _on_signal(signum: int, frame: FrameType | None) -> None:
    ran = restore_all()
    if ran:
        log.warning("fxenergy: %s received; restored GPU clocks", signal.Signals(signum).name)
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    # SIG_DFL (or a handler installed outside Python): die the default way.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def uninstall() -> None:
    """Put the previous signal handlers back and forget every restorer (for tests)."""
    global _signals_installed
    with _lock:
        _signals_installed = False
        _restorers.clear()
        if threading.current_thread() is threading.main_thread():
            for signum, previous in _previous.items():
                if signal.getsignal(signum) is _on_signal:
                    signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        _previous.clear()
