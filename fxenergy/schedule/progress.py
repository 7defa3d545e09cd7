"""A rich progress bar over the windows of :mod:`fxenergy.schedule.decompose`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(enabled: bool, windows: int, tasks: int) -> Iterator:
    """A rich progress bar over windows; yields ``advance(tasks, status, reused, optimal)``."""
    if not enabled:
        yield lambda *_: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]scheduling[/] {task.fields[status]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "tasks · {task.fields[windows]} windows · {task.fields[optimal]} optimal · "
            "{task.fields[reused]} reused"
        ),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        job = bar.add_task("schedule", total=tasks, status="", windows=windows, reused=0, optimal=0)
        yield lambda n, status, reused, optimal: bar.update(
            job, advance=n, status=status, reused=reused, optimal=optimal
        )
