"""Crash-safe writes both sides use: temp name in the same folder, fsync file, rename, fsync folder.

A reader (or a power cut) therefore sees the old file or the new one, never a torn one. The
temporary name is ``.NAME.tmp``: hidden, and never a name the bundle format or an OCI layout
gives meaning to, so leftovers are recognisable and safe to delete.

:func:`write_atomic_at` is the one atomic write: it works relative to an open folder (no
symbolic link can be swapped in between checks; the edge state writes only this way), and
:func:`write_atomic` is the same write for a path. :func:`replacing` streams instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import Place, PlaceError

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


def write_atomic_at(dir_fd: int, name: str, data: bytes, place: Place = "state") -> None:
    """Replace file ``name`` in the open folder ``dir_fd`` with ``data``, crash-safely.

    Writes a fresh ``.NAME.tmp`` (a stale one is removed first; never through a link:
    ``O_EXCL | O_NOFOLLOW``), fsyncs it, renames it over ``name`` and fsyncs the folder, so a
    reader or a power cut sees the old file or the new one, never a torn one.

    Args:
        dir_fd: an open folder (``O_DIRECTORY``) the caller keeps and closes.
        name: one path component (no ``/``).
        data: the whole new content.
        place: where the folder is, for errors (the edge or hub ``state``, the ``medium``, an ``output``).
    Raises:
        PlaceError: a folder is in the way of the temporary name or of ``name`` (nothing is left behind).
        OSError: the file system refused (no space, read-only, permissions).
    """
    tmp = f".{name}.tmp"
    try:
        os.unlink(tmp, dir_fd=dir_fd)  # a stale one from a crash (or a planted link: removed, not followed)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise PlaceError(place, tmp, f"cannot write {tmp!r}: a folder is in the way") from None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException as exc:  # no temporary file left behind (no space, a folder in the way, Ctrl-C)
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        if isinstance(exc, IsADirectoryError):
            raise PlaceError(place, name, f"cannot write {name!r}: a folder is in the way") from None
        raise
    os.fsync(dir_fd)


def write_atomic(path: Path, data: bytes, place: Place = "state") -> None:
    """Replace ``path`` with ``data`` crash-safely: :func:`write_atomic_at` in its folder.

    Raises:
        PlaceError, OSError: as :func:`write_atomic_at`; OSError also when the folder is missing.
    """
    path = Path(path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        write_atomic_at(fd, path.name, data, place)
    finally:
        os.close(fd)
