"""One lock per folder that ferry changes: the medium (``--out``), the hub state, the edge state.

A lock is an exclusive ``flock(2)`` on a file inside the folder, taken without waiting: a second
ferry that wants the same folder is refused at once, told who holds it (process id, host,
command, since when) and what to do. The kernel drops the lock when its holder exits, so a
killed run never leaves a stale lock behind; the holder line in the file is only information.

This module does I/O (like :mod:`manifests.durable`): both sides use it, so it lives with the
shared contract rather than on one side.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from manifests.errors import Place, PlaceError

#: Flags for opening a lock file: never through a link planted at its name.
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
#: The most of a holder record that is read back (a record is one short JSON line).
_MAX_RECORD = 4096


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: process id, host name, the command line (shortened), and since when (UTC)."""

    pid: int
    host: str
    command: str
    since: str

    @classmethod
    def me(cls) -> Holder:
        """This process, as it would be recorded in a lock file it takes."""
        args = " ".join(sys.argv[1:])
        command = f"ferry {args}" if args else "ferry"
        return cls(os.getpid(), os.uname().nodename, command[:300],
                   time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def to_bytes(self) -> bytes:
        return (json.dumps({"pid": self.pid, "host": self.host, "command": self.command,
                            "since": self.since}, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Holder | None:
        """The record in a lock file; None when it is empty or unreadable. A bare process id (what
        the edge's lock file held before it recorded more) is read as that pid, the rest unknown."""
        text = data.decode("utf-8", "replace").strip()
        if text.isdigit():
            return cls(int(text), "?", "?", "?")
        try:
            doc = json.loads(text)
            return cls(int(doc["pid"]), str(doc["host"]), str(doc["command"]), str(doc["since"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        """``pid 4242 on hub-1 (`ferry export ...`, since 2026-12-01T00:10:00Z)``."""
        return f"pid {self.pid} on {self.host} (`{self.command}`, since {self.since})"


class FolderLock:
    """A held lock; :meth:`release` (or leaving the ``with`` block) lets the next run in."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd: int | None = fd
        self.path = path

    def release(self, *, remove: bool = False) -> None:
        """Drop the lock; ``remove`` first deletes the lock file (a medium folder keeps no trace).

        Removing while holding is safe here: a run that opened the old file and gets the lock
        after this one finds the work finished and says so."""
        if self.fd is None:
            return
        if remove:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(folder: Path, name: str, *, place: Place, label: str, what: str,
            dir_fd: int | None = None) -> FolderLock:
    """Take the lock file ``folder/name`` for this process, without waiting.

    Args:
        folder: the folder to lock (it must exist).
        name: the lock file's name inside it (e.g. ``lock``).
        place: where errors point (``medium`` for ``--out``, ``state`` for a state folder).
        label: how the folder is named in errors, e.g. ``--out /media/usb`` or ``--state /var/lib/ferry``.
        what: what the lock guards, for the refusal: e.g. ``export`` or ``import``.
        dir_fd: an open descriptor of ``folder``, to open the lock file relative to it.

    Returns:
        The held :class:`FolderLock`; its file holds this process's :class:`Holder` record.

    Raises:
        PlaceError: the folder is in use by another ferry run (naming the holder), or the lock
            file cannot be created or written (read-only file system, permissions), naming the
            folder.
    """
    path = folder / name
    try:
        fd = os.open(name if dir_fd is not None else path, _FLAGS, 0o644, dir_fd=dir_fd)
    except OSError as exc:
        why = "read-only file system" if exc.errno == errno.EROFS else (exc.strerror or str(exc)).lower()
        raise PlaceError(place, str(folder), f"{label}: cannot take the lock {path} ({why})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Holder.from_bytes(os.pread(fd, _MAX_RECORD, 0))
            who = holder.describe() if holder else "another process"
            raise PlaceError(place, str(folder),
                             f"{label} is in use by another ferry {what}: {who}; two runs never interleave: "
                             f"wait for it to finish, then run again") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, Holder.me().to_bytes(), 0)
        except OSError as exc:
            raise PlaceError(place, str(folder),
                             f"{label}: cannot write the lock {path} ({(exc.strerror or str(exc)).lower()})") from None
    except BaseException:
        os.close(fd)
        raise
    return FolderLock(fd, path)
