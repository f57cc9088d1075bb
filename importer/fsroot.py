"""The one writer for everything under EDGE: paths opened relative to a root folder descriptor.

docs/edge-state.md promises that no write below the state folder follows a symbolic link: a
link planted at ``EDGE/oci/blobs`` or ``EDGE/manifests/<set>`` must not send ferry's bytes
elsewhere. :class:`FsRoot` keeps that promise in one place. It holds an open descriptor of
a root folder (the state folder, or a ``--manifests-dir`` the operator named) and opens every
path below it one component at a time with ``O_NOFOLLOW`` (through
:func:`importer.state.open_dir` and :func:`importer.state.create_file`), so a link anywhere
below the root is refused with a :class:`manifests.errors.PlaceError` naming the path. The
root itself is the operator's choice and is opened as given.

Every apply target (:mod:`importer.apply`) gets one and writes nothing by path.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Literal

from manifests.errors import FerryError, PlaceError

from manifests.durable import write_atomic_at

from .state import create_file, open_dir

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _split(rel: str) -> tuple[str, str]:
    """(parent folder, last component) of a ``/``-separated relative path."""
    parent, _, name = rel.strip("/").rpartition("/")
    if not name or name in (".", ".."):
        raise FerryError(f"refusing path {rel!r}: it must name something below the root")
    return parent, name


class FsRoot:
    """A folder opened once; all I/O below it is relative to its descriptor, never following links.

    Paths given to the methods are ``/``-separated and relative to the root (``"oci/index.json"``);
    ``.`` and ``..`` components are refused. Errors of the file system are raised as
    :class:`PlaceError` with ``place`` ``"state"`` (or what ``place`` says) and the full path.
    """

    def __init__(self, fd: int, path: Path, *, place: Literal["state", "output"] = "state") -> None:
        """Take ownership of ``fd``, an open folder descriptor for ``path`` (used in messages)."""
        self.fd = fd
        self.path = Path(path)
        self.place: Literal["state", "output"] = place

    @classmethod
    def open(cls, path: Path, *, create: bool = False, place: Literal["state", "output"] = "state") -> FsRoot:
        """Open folder ``path`` (made with its parents when ``create``) as a root.

        Raises:
            PlaceError: ``path`` cannot be created or opened, or is not a folder.
        """
        path = Path(os.path.abspath(path))
        try:
            if create:
                path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, _DIR_FLAGS)
        except OSError as exc:
            raise PlaceError(place, str(path), f"{path}: cannot open as a folder ({exc.strerror or exc})") from None
        return cls(fd, path, place=place)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # a root owns its descriptor
        try:
            self.close()
        except OSError:
            pass

    def __enter__(self) -> FsRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def where(self, rel: str) -> str:
        """The full path of ``rel``, for messages."""
        return str(self.path / rel) if rel else str(self.path)

    def _error(self, rel: str, exc: OSError) -> PlaceError:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return PlaceError(self.place, self.where(rel),
                              f"{self.where(rel)}: refusing to write through a symbolic link or a non-folder")
        return PlaceError(self.place, self.where(rel), f"{self.where(rel)}: {exc.strerror or exc}")

    # ---- folders

    def open_dir(self, rel: str, *, create: bool = False) -> int:
        """A descriptor of folder ``rel`` (the root itself for ``""``); the caller closes it.

        Raises:
            FileNotFoundError: ``rel`` does not exist and ``create`` is false.
            PlaceError: a component is a link or not a folder, or another I/O error.
        """
        try:
            return open_dir(self.fd, rel, create=create)
        except FileNotFoundError:
            raise
        except FerryError as exc:
            raise PlaceError(self.place, self.where(rel), f"{self.where(rel)}: {exc}") from None
        except OSError as exc:
            raise self._error(rel, exc) from None

    def sub(self, rel: str, *, create: bool = False) -> FsRoot:
        """Folder ``rel`` below this root, as a root of its own (same rules)."""
        return FsRoot(self.open_dir(rel, create=create), self.path / rel, place=self.place)

    @contextmanager
    def folder(self, rel: str, *, create: bool = False) -> Iterator[int]:
        fd = self.open_dir(rel, create=create)
        try:
            yield fd
        finally:
            os.close(fd)

    def makedirs(self, rel: str) -> None:
        """Create folder ``rel`` and missing parents (each fsynced into its parent)."""
        os.close(self.open_dir(rel, create=True))

    def listdir(self, rel: str = "") -> list[str]:
        """Names in folder ``rel`` ([] when it does not exist)."""
        try:
            with self.folder(rel) as fd:
                return os.listdir(fd)
        except FileNotFoundError:
            return []

    def mkdtemp(self, rel_dir: str, prefix: str) -> str:
        """Create a fresh folder ``prefix<random>`` inside ``rel_dir``; return its name."""
        with self.folder(rel_dir, create=True) as fd:
            for _ in range(100):
                name = f"{prefix}{secrets.token_hex(4)}"
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                except FileExistsError:
                    continue
                return name
        raise PlaceError(self.place, self.where(rel_dir), f"{self.where(rel_dir)}: no free temporary name")

    def rmtree(self, rel: str) -> None:
        """Remove ``rel`` and everything below it (links are removed, never followed)."""
        parent, name = _split(rel)
        try:
            with self.folder(parent) as fd:
                if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    shutil.rmtree(name, dir_fd=fd)  # fd-based: never follows links
                else:
                    os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._error(rel, exc) from None

    # ---- files

    def lstat(self, rel: str) -> os.stat_result | None:
        """The entry ``rel`` itself (a link is not followed), or None when absent."""
        parent, name = _split(rel)
        try:
            with self.folder(parent) as fd:
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except PlaceError:
            raise
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                return None
            raise self._error(rel, exc) from None

    def file_size(self, rel: str) -> int | None:
        """Size of regular file ``rel``, or None when it is absent or not a regular file."""
        st = self.lstat(rel)
        return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None

    def read(self, rel: str, limit: int) -> bytes:
        """Up to ``limit`` + 1 bytes of regular file ``rel`` (the caller checks the limit).

        Raises:
            FileNotFoundError: it does not exist. PlaceError: a link, not a regular file, I/O error.
        """
        parent, name = _split(rel)
        with self.folder(parent) as dfd:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise self._error(rel, exc) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PlaceError(self.place, self.where(rel), f"{self.where(rel)}: not a regular file")
            parts, left = [], limit + 1
            while left > 0:
                data = os.read(fd, min(left, 1 << 20))
                if not data:
                    break
                parts.append(data)
                left -= len(data)
            return b"".join(parts)
        finally:
            os.close(fd)

    def write_atomic(self, rel: str, data: bytes) -> None:
        """Replace file ``rel`` with ``data`` (temp name, fsync, rename, fsync the folder)."""
        parent, name = _split(rel)
        with self.folder(parent, create=True) as fd:
            try:
                write_atomic_at(fd, name, data)
            except FerryError as exc:
                raise PlaceError(self.place, self.where(rel), f"{self.where(rel)}: {exc}") from None
            except OSError as exc:
                raise self._error(rel, exc) from None

    def create(self, rel: str, mode: int = 0o644) -> BinaryIO:
        """A new file ``rel`` open for writing (a stale regular file is replaced, a link never followed)."""
        parent, name = _split(rel)
        with self.folder(parent, create=True) as dfd:
            try:
                fd = create_file(dfd, name, mode)
            except FerryError as exc:
                raise PlaceError(self.place, self.where(rel), f"{self.where(rel)}: {exc}") from None
            except OSError as exc:
                raise self._error(rel, exc) from None
        return os.fdopen(fd, "wb")

    @contextmanager
    def replacing(self, rel: str) -> Iterator[BinaryIO]:
        """Yield a file for ``rel``'s new content, written under ``.NAME.tmp``. On a clean exit it
        is fsynced and renamed over ``rel`` and the folder fsynced; if the block raises the
        temporary file is removed and ``rel`` is untouched (the caller checks what it streamed
        before it becomes visible)."""
        parent, name = _split(rel)
        tmp = f".{name}.tmp"
        with self.folder(parent, create=True) as dfd:
            try:
                fd = create_file(dfd, tmp)
            except OSError as exc:
                raise self._error(f"{parent}/{tmp}" if parent else tmp, exc) from None
            try:
                with os.fdopen(fd, "wb") as f:
                    yield f
                    f.flush()
                    os.fsync(f.fileno())
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dfd)
                except FileNotFoundError:
                    pass
                raise
            os.fsync(dfd)

    def rename(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` (both relative to the root), then fsync their folders."""
        sp, sn = _split(src)
        dp, dn = _split(dst)
        with self.folder(sp) as sfd, self.folder(dp) as dfd:
            try:
                os.rename(sn, dn, src_dir_fd=sfd, dst_dir_fd=dfd)
            except OSError as exc:
                raise self._error(dst, exc) from None
            os.fsync(dfd)
            if sp != dp:
                os.fsync(sfd)

    def exchange(self, a: str, b: str) -> bool:
        """Swap ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``), both in one
        folder; False where the kernel or file system does not support it."""
        import ctypes

        ap, an = _split(a)
        bp, bn = _split(b)
        try:
            renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
        except (OSError, AttributeError):
            return False
        rename_exchange = 2
        with self.folder(ap) as afd, self.folder(bp) as bfd:
            if renameat2(afd, os.fsencode(an), bfd, os.fsencode(bn), rename_exchange) == 0:
                os.fsync(bfd)
                return True
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise self._error(b, OSError(err, os.strerror(err)))

    def fsync(self, rel: str = "") -> None:
        """Make the names in folder ``rel`` durable."""
        with self.folder(rel) as fd:
            os.fsync(fd)

    def chmod(self, rel: str, mode: int) -> None:
        with self.folder(rel) as fd:
            os.fchmod(fd, mode)
