"""Output for people and for scripts.

On a terminal, long work shows rich progress bars (bytes, rate, ETA; IEC units, KiB/MiB/GiB,
as everywhere) on stderr; otherwise plain one-line messages. With ``--json`` nothing but the
final JSON document goes to stdout, so scripts can parse it; bars still show on a terminal's
stderr. Core code (bundler, importer) reports through the small
:class:`manifests.progress.Progress` protocol and never prints itself; :class:`UI` implements it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, DownloadColumn, Progress as RichProgress, ProgressColumn, Task as RichTaskInfo,
                           TaskID, TextColumn, TimeRemainingColumn)
from rich.text import Text

from manifests.progress import Task, human_bytes

__all__ = ["UI", "write_output"]


class _RichTask:
    def __init__(self, progress: RichProgress, task_id: TaskID) -> None:
        self._progress, self._id = progress, task_id

    def advance(self, nbytes: int) -> None:
        self._progress.advance(self._id, nbytes)


class _PlainTask:
    def __init__(self) -> None:
        self.done = 0

    def advance(self, nbytes: int) -> None:
        self.done += nbytes


class _RateColumn(ProgressColumn):
    """Transfer speed in IEC units (MiB/s), as every summary line prints sizes."""

    def render(self, task: RichTaskInfo) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else f"{human_bytes(speed)}/s", style="progress.data.speed")


class UI:
    """The CLI's Progress: rich bars on a terminal, plain lines otherwise, JSON for scripts."""

    def __init__(self, *, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.out = Console(highlight=False, soft_wrap=True)
        if not self.out.is_terminal:  # a log or a pipe: tables as wide as they need, names never cut
            self.out = Console(highlight=False, soft_wrap=True, width=200)
        # --json keeps stdout for the document; bars on a terminal's stderr do not disturb it
        self.interactive = self.err.is_terminal and not quiet
        self.quiet = quiet or json_mode
        self._bars: RichProgress | None = None
        self._depth = 0

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Task]:
        if self.interactive:
            if self._bars is None:
                self._bars = RichProgress(
                    TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                    _RateColumn(), TimeRemainingColumn(), console=self.err, transient=False)
                self._bars.start()
            self._depth += 1
            task_id = self._bars.add_task(escape(description), total=total)
            try:
                yield _RichTask(self._bars, task_id)
                if total is not None:  # done: full; an error or Ctrl-C leaves the bar where it stopped
                    self._bars.update(task_id, completed=total)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._bars.stop()
                    self._bars = None
            return
        started = time.monotonic()
        task = _PlainTask()
        yield task
        if not self.quiet:
            seconds = time.monotonic() - started
            rate = task.done / seconds / 2**20 if seconds > 0 else 0.0
            self.err.print(f"{description}: {human_bytes(task.done)} in {seconds:.1f}s ({rate:.0f} MiB/s)",
                           markup=False, highlight=False)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message, markup=False, highlight=False)  # data, never markup

    def warn(self, message: str) -> None:
        if not self.json_mode:
            self.err.print(f"[yellow]warning:[/] {escape(message)}")
        else:
            print(f"warning: {message}", file=sys.stderr)

    def emit(self, document: Any) -> None:
        """The machine-readable result, on stdout, with --json."""
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
        sys.stdout.flush()


def write_output(path: Path, data: bytes, what: str) -> None:
    """Write a file the user named (a report, a receipt, an audit export) atomically, relative
    to its opened folder (manifests.durable.write_atomic_at); ``what`` names the option in errors."""
    import os

    from manifests.durable import write_atomic_at
    from manifests.errors import PlaceError

    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise PlaceError("output", str(path), f"{what} {path}: folder {parent} does not exist")
    if path.is_dir():
        raise PlaceError("output", str(path), f"{what} {path}: is a folder; name a file to write")
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        write_atomic_at(fd, path.name, data, "output")
    finally:
        os.close(fd)
