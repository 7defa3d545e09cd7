"""The frequency runtime entered on this thread/context: set by ``FrequencyRuntime`` (session)
on enter, read by the inserted ``enter_partition`` calls and by ``measure()`` (meter), which
so need not import the session."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fxenergy.runtime.session import FrequencyRuntime

CURRENT: contextvars.ContextVar[FrequencyRuntime | None] = contextvars.ContextVar(
    "fxenergy_runtime", default=None
)


def current_runtime() -> FrequencyRuntime | None:
    """The runtime entered on this thread/context, if any."""
    return CURRENT.get()
