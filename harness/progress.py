"""Progress for long operations: a rich bar (with transfer rate) on a terminal, plain log lines otherwise.

Drivers call ``progress(done, total, message)``; they never know whether anyone is watching.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from harness.targets.base import ProgressFn

log = logging.getLogger("harness")


@contextmanager
def progress_reporter(title: str, *, unit: str = "steps") -> Iterator[ProgressFn]:
    """Yield a progress callback. ``unit="bytes"`` shows sizes and a transfer rate."""
    if not sys.stderr.isatty():
        def plain(done: int, total: int | None, message: str) -> None:
            if message:
                log.info("%s: %s", title, message)

        yield plain
        return

    columns = [TextColumn("[bold]{task.description}"), BarColumn()]
    if unit == "bytes":
        columns += [DownloadColumn(), TransferSpeedColumn()]
    else:
        columns += [MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    console = Console(stderr=True)
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(title, total=None)

        def rich_progress(done: int, total: int | None, message: str) -> None:
            bar.update(task, completed=done, total=total)
            if message:
                bar.console.print(f"  {message}", highlight=False, markup=False)

        yield rich_progress
