"""How library code reports long work: the :class:`Progress` and :class:`Task` interfaces.

The bundler and the importer never print. They call a :class:`Progress` that their caller
hands in (as restic's core reports through its ``Printer``/``Counter`` interfaces and never
imports its UI): the command line passes ``ferry.ui.UI`` (rich bars on a terminal, plain lines
otherwise); library users and tests pass :class:`Silent`. :func:`human_bytes` is the one way
sizes are written for people. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

__all__ = ["Progress", "Silent", "Task", "human_bytes"]


class Task(Protocol):
    """One piece of long work in progress (an artifact being exported, a bundle being verified)."""

    def advance(self, nbytes: int) -> None:
        """Record that ``nbytes`` more bytes (>= 0) of the task's total are done."""
        ...


class Progress(Protocol):
    """What library code may call to report long work and notable events."""

    def task(self, description: str, total: int | None) -> AbstractContextManager[Task]:
        """A context manager for one piece of work of ``total`` bytes (None: unknown) that
        yields the :class:`Task` to advance; ``description`` is one line for people."""
        ...

    def info(self, message: str) -> None:
        """A notable event, one line for people (never markup)."""
        ...

    def warn(self, message: str) -> None:
        """Something the operator should look at; the work goes on."""
        ...


class _NullTask:
    def advance(self, nbytes: int) -> None:
        pass


class Silent:
    """A :class:`Progress` that says nothing (library use, tests)."""

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Task]:
        yield _NullTask()

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


def human_bytes(n: int | float) -> str:
    """``n`` bytes in IEC units for people: ``512 B``, ``1.5 KiB``, ``2.0 GiB`` (TiB at most).

    Args:
        n: a byte count (may be negative or fractional, e.g. a rate).
    Returns:
        whole bytes below 1 KiB, else one decimal in the largest unit (KiB, MiB, GiB, TiB; IEC
        80000-13 binary prefixes) that keeps the number below 1024.
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
