"""What the hub remembers between exports (``--state HUBDIR``, default ~/.local/share/ferry).

* ``channels.json``: the last sequence number handed out per channel, so every bundle of a
  channel gets the next number (the edge refuses to go back). Updated atomically under the
  state's lock (``lock``, :func:`manifests.locking.acquire`), which an export holds from start
  to end: a second export with the same hub state is refused, told who holds it.
* ``chunk-cache.sqlite``: for each local file version (:class:`FileKey`: path, size, mtime,
  ctime, inode, device), its BLAKE3 and chunk list, so an unchanged file is not cut again.
  Cached chunk ids are checked against the bytes whenever a chunk is read for storing; a
  mismatch drops the entry. Beside it, content-addressed digests (BLAKE3 -> sha256, a model's
  content -> its modelcar layer's sha256, :meth:`HubState.known_digest`), so that a file
  version is hashed for publishing once (format 1.3, :mod:`bundler.modeldigests`).
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from manifests.digest import OCI_DIGEST
from manifests.durable import write_atomic
from manifests.errors import FerryError, PlaceError
from manifests.locking import FolderLock, acquire

#: The lock file of a hub state folder.
LOCK_NAME = "lock"


def default_state_dir() -> Path:
    """The hub state used without ``--state``: ``$XDG_DATA_HOME/ferry``, else ``~/.local/share/ferry``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "ferry"


def existing_hub_state(path: Path, option: str = "--hub") -> Path:
    """``path``, when it is a folder: the hub commands that only read or add to a hub state
    (``sites``, ``return import``, ``aggregate``, ``profile list``) refuse a mistyped one
    instead of answering as for a hub that holds nothing.

    Args:
        path: the hub state folder given; option: the option that named it, for the message.
    Returns:
        ``path``.
    Raises:
        PlaceError: (``state``) no such folder: ``--hub /x: no such hub state folder``.
    """
    if not Path(path).is_dir():
        raise PlaceError("state", str(path), f"{option} {path}: no such hub state folder")
    return Path(path)


@dataclass(frozen=True)
class FileKey:
    """What identifies a file version without reading it: the hub trusts a cached BLAKE3,
    chunk list and sha256 (which it signs, format 1.3) for a file whose key is unchanged.

    Path, size, inode and device name the file; ``mtime_ns`` changes with every write that
    does not set it back (``touch -d``, ``rsync -t``, ``cp -p`` do); ``ctime_ns`` changes with
    every write and every ``utime``, and cannot be set by a user, so a file rewritten in place
    with the same size and an mtime set back still gets a new key (git's index uses the same
    fields). A rename or hard link changes ``ctime_ns`` too: that file is hashed again once.
    """

    path: str
    size: int
    mtime_ns: int
    inode: int
    dev: int = 0
    ctime_ns: int = 0

    @classmethod
    def of(cls, path: Path) -> FileKey:
        """The key of ``path`` now (``os.stat``, following links). Raises OSError."""
        st = os.stat(path)
        return cls(os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns)


@dataclass(frozen=True)
class CachedFile:
    blake3: str
    chunks: tuple[tuple[str, int], ...]  # (id, size) in file order


class HubState:
    """The writer's state folder ``root``.

    ``label`` names it in every message: ``hub state`` for ``ferry export --state``, ``edge
    state`` where a site writes its return bundles (``EDGE/return/writer``, docs/bundle-format.md §13).
    """

    def __init__(self, root: Path, label: str = "hub state") -> None:
        self.root = Path(root)
        self.label = label
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PlaceError("state", str(self.root),
                             f"{label} {self.root}: cannot create the folder ({exc.strerror or exc})") from None
        self._db: sqlite3.Connection | None = None
        self._lock: FolderLock | None = None

    def lock(self) -> None:
        """Hold this hub state for one export (until :meth:`close`).

        Raises:
            PlaceError: another export holds it (naming pid, host, command, since), or the
                folder cannot be written (read-only file system, permissions).
        """
        if self._lock is None:
            self._lock = acquire(self.root, LOCK_NAME, place="state", label=f"{self.label} {self.root}", what="export")

    # ---- sequence numbers

    def _channels(self) -> dict[str, int]:
        path = self.root / "channels.json"
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise PlaceError("state", str(path), f"{self.label} {path}: unreadable ({exc}); fix or remove it") from None
        if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
            raise PlaceError("state", str(path), f"{self.label} {path}: not a map of channel to sequence number; "
                                                "fix or remove it")
        return data

    def last_sequence(self, channel: str) -> int:
        return self._channels().get(channel, 0)

    def next_sequence(self, channel: str) -> int:
        """Hand out the next sequence number of ``channel`` and remember it (takes the lock if not held)."""
        self.lock()
        channels = self._channels()
        number = channels.get(channel, 0) + 1
        channels[channel] = number
        try:
            write_atomic(self.root / "channels.json", json.dumps(channels, sort_keys=True, indent=1).encode())
        except OSError as exc:
            raise PlaceError("state", str(self.root),
                             f"{self.label} {self.root}: cannot record the sequence number ({exc.strerror or exc})") from None
        return number

    # ---- chunking cache

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(self.root / "chunk-cache.sqlite", timeout=30, check_same_thread=False)
            # A cache: a power cut may lose the last entries (WAL keeps it consistent), which
            # only costs re-chunking; no fsync per entry.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # file_versions replaced files (keyed without device and ctime): dropped, so each
            # file is cut once more after an upgrade
            self._db.execute("DROP TABLE IF EXISTS files")
            self._db.execute("CREATE TABLE IF NOT EXISTS file_versions (path TEXT PRIMARY KEY, size INTEGER, "
                             "mtime_ns INTEGER, inode INTEGER, dev INTEGER, ctime_ns INTEGER, blake3 TEXT, "
                             "chunks TEXT)")
            self._db.execute("CREATE TABLE IF NOT EXISTS digests (key TEXT PRIMARY KEY, sha256 TEXT)")
        return self._db

    def known_digest(self, key: str) -> str | None:
        """A sha256 remembered for content: ``key`` is ``blake3:<hex>`` (a file's content),
        ``modelcar:<artifact content digest>`` (a model's modelcar layer) or
        ``modelcar-state:<hex>`` (the layer hash's saved state after a file, by the chain of
        the files' BLAKE3 up to it: the value is that state, not a sha256;
        :mod:`bundler.modeldigests`). Content-addressed, so never stale; None when unknown,
        and for a ``blake3:`` or ``modelcar:`` key whose value is not ``sha256:<64 lowercase
        hex>`` (a damaged row: the hub signs these values, and an edge refuses a malformed one,
        so it is hashed again instead)."""
        try:
            row = self._conn().execute("SELECT sha256 FROM digests WHERE key=?", (key,)).fetchone()
        except sqlite3.Error:
            return None
        if row is None or not isinstance(row[0], str):
            return None
        if key.startswith(("blake3:", "modelcar:")) and not OCI_DIGEST.fullmatch(row[0]):
            return None
        return row[0]

    def remember_digest(self, key: str, sha256: str) -> None:
        """Remember ``sha256`` for ``key`` (see :meth:`known_digest`)."""
        try:
            with self._conn() as db:
                db.execute("INSERT OR REPLACE INTO digests VALUES (?,?)", (key, sha256))
        except sqlite3.Error:
            pass  # the cache is an optimisation

    def cached(self, key: FileKey) -> CachedFile | None:
        try:
            row = self._conn().execute(
                "SELECT blake3, chunks FROM file_versions WHERE path=? AND size=? AND mtime_ns=? AND inode=? "
                "AND dev=? AND ctime_ns=?", (key.path, key.size, key.mtime_ns, key.inode, key.dev,
                                             key.ctime_ns)).fetchone()
        except sqlite3.Error:
            return None  # a damaged cache only costs re-chunking
        if row is None:
            return None
        try:
            chunks = tuple((str(c), int(s)) for c, s in json.loads(row[1]))
        except (ValueError, TypeError):
            return None
        if sum(s for _, s in chunks) != key.size:
            return None
        return CachedFile(blake3=row[0], chunks=chunks)

    def remember(self, key: FileKey, blake3: str, chunks: list[tuple[str, int]]) -> None:
        try:
            with self._conn() as db:
                db.execute("INSERT OR REPLACE INTO file_versions VALUES (?,?,?,?,?,?,?,?)",
                           (key.path, key.size, key.mtime_ns, key.inode, key.dev, key.ctime_ns, blake3,
                            json.dumps(chunks)))
        except sqlite3.Error:
            pass  # the cache is an optimisation; the export goes on without it

    def forget(self, path: str) -> None:
        try:
            with self._conn() as db:
                db.execute("DELETE FROM file_versions WHERE path=?", (path,))
        except sqlite3.Error:
            pass

    def close(self) -> None:
        """Close the chunk cache and let the next export in."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
