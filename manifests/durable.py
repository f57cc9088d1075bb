"""Crash-safe writes both sides use: temp name in the same folder, fsync file, rename, fsync folder.

A reader (or a power cut) therefore sees the old file or the new one, never a torn one. The
temporary name is ``.NAME.tmp``: hidden, and never a name the bundle format or an OCI layout
gives meaning to, so leftovers are recognisable and safe to delete.

These work on paths; :func:`importer.state.write_atomic` is the edge's variant relative to
an open folder (no symbolic link can be swapped in between checks), for the edge state.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

#: Flags for opening a temporary file: never write through a symbolic link planted at its name.
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def tmp_path(path: Path) -> Path:
    """The temporary name ``path`` is written under before it is renamed into place."""
    return path.with_name(f".{path.name}.tmp")


def fsync_dir(path: Path) -> None:
    """Make the names in folder ``path`` (a rename, a new file) survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """Create ``path`` and missing parents, fsyncing each parent so the folders survive a crash."""
    missing = []
    p = Path(path)
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir()
        fsync_dir(d.parent)


@contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """Yield a file to write ``path``'s new content to. On a clean exit it is fsynced, renamed
    over ``path`` and the folder fsynced; if the block raises it is deleted and ``path`` is
    untouched (so a caller can check what it streamed before it becomes visible)."""
    tmp = tmp_path(path)
    fd = os.open(tmp, WRITE_FLAGS, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp name in the same folder, fsync, rename, fsync the folder."""
    with replacing(path) as f:
        f.write(data)
