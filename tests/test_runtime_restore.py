"""Clocks are restored after an exception, SIGTERM, SIGINT and at exit, in a child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fxenergy.runtime import restore

# The child runs a real FrequencyRuntime (threaded controller) over a backend that writes every
# clock call to a file, so the parent can see what was set and whether it was reset.
CHILD = textwrap.dedent(
    """
    import sys, time
    from fxenergy.runtime import FrequencyRuntime, NullBackend, RuntimePartition, enter_partition
    from fxenergy.runtime.controller import ImmediateEvent

    mode, log_path = sys.argv[1], sys.argv[2]

    class FileBackend(NullBackend):
        def __init__(self, tag):
            super().__init__("A100-SXM4-80GB")
            self.tag = tag
        def _log(self, line):
            with open(log_path, "a") as f:
                f.write(f"{self.tag} {line}\\n")
        def set_clock(self, mhz, label=""):
            self._log(f"set {mhz}")
            return super().set_clock(mhz, label)
        def reset(self):
            self._log("reset")
            super().reset()

    def runtime(tag):
        return FrequencyRuntime(
            FileBackend(tag), [RuntimePartition(0, 900)], threaded=True,
            event_factory=ImmediateEvent,
        )

    # "left" is entered and never exited: only the atexit hook (or a signal) can restore it.
    left = runtime("left").__enter__()
    enter_partition(0)
    left.controller.close(drain=True)  # let its thread apply the switch before going on
    with runtime("with") as rt:
        enter_partition(0)
        rt.controller.close(drain=True)
        if mode == "exception":
            raise RuntimeError("boom")
        print("ready", flush=True)
        time.sleep(60)
    """
)


def _spawn(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], Path]:
    script, log = tmp_path / "child.py", tmp_path / f"{mode}.log"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, log


@pytest.mark.slow  # two child processes importing torch: ~4 s idle, ~11 s on a busy 2-core box
def test_clocks_reset_in_child_after_exception_and_sigterm(tmp_path: Path) -> None:
    # Both children start at once: each pays the torch import, so run them side by side.
    exc_proc, exc_log = _spawn(tmp_path, "exception")
    term_proc, term_log = _spawn(tmp_path, "SIGTERM")
    assert term_proc.stdout is not None and term_proc.stdout.readline().strip() == "ready"
    term_proc.send_signal(signal.SIGTERM)
    _, term_err = term_proc.communicate(timeout=120)
    _, exc_err = exc_proc.communicate(timeout=120)
    # exception: the with-block restores on its way out, atexit restores the one left entered
    assert exc_proc.returncode == 1 and "RuntimeError: boom" in exc_err
    assert exc_log.read_text().splitlines() == [
        "left set 900",
        "with set 900",
        "with reset",
        "left reset",
    ], exc_err
    # SIGTERM: the handler restores both (last entered first), then the child dies of the signal
    assert term_proc.returncode == -signal.SIGTERM, term_err
    assert term_log.read_text().splitlines() == [
        "left set 900",
        "with set 900",
        "with reset",
        "left reset",
    ], term_err


class _Restorer:
    def __init__(self) -> None:
        self.calls = 0

    def restore(self) -> None:
        self.calls += 1


def test_signal_handler_chains_to_the_previous_one() -> None:
    seen: list[int] = []
    old_term = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        r = _Restorer()
        restore.protect(r)
        assert restore.protected() == [r]
        os.kill(os.getpid(), signal.SIGTERM)
        assert r.calls == 1 and seen == [signal.SIGTERM]
        assert restore.protected() == []  # restored once; a second signal has nothing to do
        os.kill(os.getpid(), signal.SIGTERM)
        assert r.calls == 1 and seen == [signal.SIGTERM, signal.SIGTERM]
    finally:
        restore.uninstall()
        signal.signal(signal.SIGTERM, old_term)


def test_sigint_still_raises_keyboard_interrupt() -> None:
    r = _Restorer()
    restore.protect(r)
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert r.calls == 1
    finally:
        restore.uninstall()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_failing_restorer_does_not_stop_the_others() -> None:
    class Broken:
        def restore(self) -> None:
            raise OSError("driver gone")

    good, broken = _Restorer(), Broken()  # named: restore holds weak references
    restore.protect(good)
    restore.protect(broken)
    try:
        assert restore.restore_all() == 2
        assert good.calls == 1
    finally:
        restore.uninstall()


def test_protect_holds_weak_references() -> None:
    """Protecting a runtime or module does not keep it (or its model) alive."""
    import gc

    from fxenergy.runtime import restore

    class Restorer:
        def __init__(self) -> None:
            self.ran = 0

        def restore(self) -> None:
            self.ran += 1

    kept, freed = Restorer(), Restorer()
    restore.protect(kept)
    restore.protect(freed)
    del freed
    gc.collect()
    assert restore.protected() == [kept]
    assert restore.restore_all() == 1 and kept.ran == 1
    restore.uninstall()
