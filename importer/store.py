"""The edge's chunk store, without writing every byte twice.

Installed files *are* the store: the index (``locations`` in the state database) maps a chunk
id to (file, offset, size) inside an installed model file or OCI layout blob, as casync does
with seeds. Every read is checked against the chunk id, so a file edited since (or a stale
row) is never trusted: the row is dropped and the chunk counts as missing.

The only bytes written for the store itself are in the small *spill* store
(``EDGE/store/spill/<id>``): chunks of an artifact that cannot be applied yet because another
volume is missing, kept as their verified zstd frame so the next run needs only the missing
volume. A chunk already held is never spilled again; spilled chunks that an installed file
now holds are removed by :meth:`ChunkStore.collect_spill`.
"""

from __future__ import annotations

import os
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable

from manifests.chunks import decompress_chunk
from manifests.digest import blake3_hex
from manifests.durable import write_atomic_at
from manifests.errors import VerificationError
from manifests.model import Chunk, Entry, Manifest

from .state import SPILL_DIR, EdgeState, open_dir

_MAX_OPEN = 16


class ChunkStore:
    """Chunks the site holds, served from installed files and the spill store."""

    def __init__(self, state: EdgeState) -> None:
        self.state = state
        self._fds: OrderedDict[str, int] = OrderedDict()

    # ---- queries

    def has(self, chunk_id: str) -> bool:
        return self.state.db.execute("SELECT 1 FROM locations WHERE chunk=? LIMIT 1", (chunk_id,)).fetchone() is not None

    def held(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` the index names (reads still verify them)."""
        ids = list(ids)
        out: set[str] = set()
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            q = f"SELECT DISTINCT chunk FROM locations WHERE chunk IN ({','.join('?' * len(part))})"
            out.update(r[0] for r in self.state.db.execute(q, part))
        return out

    def all_ids(self) -> list[str]:
        return [r[0] for r in self.state.db.execute("SELECT DISTINCT chunk FROM locations ORDER BY chunk")]

    def stats(self) -> dict[str, int]:
        """Chunks indexed, their raw bytes, and the spill store's size on disk."""
        chunks, raw = self.state.db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM (SELECT chunk, max(size) AS size FROM locations "
            "WHERE zstd=0 GROUP BY chunk)").fetchone()
        spilled, spill_bytes = self.state.db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM locations WHERE zstd=1").fetchone()
        return {"chunks": chunks + spilled, "indexedBytes": raw, "spillChunks": spilled, "spillBytes": spill_bytes}

    # ---- reading

    def read_chunk(self, chunk: Chunk) -> bytes | None:
        """The verified raw bytes of ``chunk`` from any location, or None when none holds it.

        A location whose bytes do not hash to the id is dropped (when the state is writable)."""
        rows = self.state.db.execute(
            "SELECT dir, file, offset, size, zstd FROM locations WHERE chunk=? ORDER BY zstd", (chunk.id,)).fetchall()
        for dir_, file, offset, size, zstd in rows:
            data = self._read(f"{dir_}/{file}", offset, size)
            if data is not None:
                if zstd:
                    try:
                        return decompress_chunk(data, chunk_id=chunk.id, size=chunk.size)
                    except VerificationError:
                        pass
                elif len(data) == chunk.size and blake3_hex(data) == chunk.id:
                    return data
            if self.state.writable:
                with self.state.transaction() as db:
                    db.execute("DELETE FROM locations WHERE chunk=? AND dir=? AND file=? AND offset=?",
                               (chunk.id, dir_, file, offset))
        return None

    def _read(self, rel: str, offset: int, size: int) -> bytes | None:
        fd = self._fds.get(rel)
        if fd is None:
            try:
                fd = os.open(rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.state.root_fd)
            except OSError:
                return None
            self._fds[rel] = fd
            if len(self._fds) > _MAX_OPEN:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(rel)
        try:
            data = os.pread(fd, size, offset)
        except OSError:
            return None
        return data if len(data) == size else None

    def forget_fds(self) -> None:
        """Close cached descriptors (before files are renamed or removed)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    close = forget_fds

    # ---- recording

    def index_file(self, dir_: str, file: str, entry: Entry, manifest: Manifest,
                   db: sqlite3.Connection | None = None) -> None:
        """Record that ``dir_/file`` holds ``entry``'s bytes: one location per distinct chunk.

        Called only after the file was written and fsynced (or verified as a blob). With ``db``
        the rows join the caller's transaction."""
        rows = []
        offset = 0
        for cid in entry.chunks:
            size = manifest.chunk(cid).size
            rows.append((cid, offset, size))
            offset += size
        if db is not None:
            self.index_chunks(db, dir_, file, rows)
            return
        with self.state.transaction() as tx:
            self.index_chunks(tx, dir_, file, rows)

    @staticmethod
    def index_chunks(db: sqlite3.Connection, dir_: str, file: str, rows: Iterable[tuple[str, int, int]]) -> None:
        """Inside a transaction: ``dir_/file`` holds chunk ``id`` at ``offset`` (``size`` bytes)."""
        db.executemany("INSERT OR IGNORE INTO locations (chunk, dir, file, offset, size, zstd) VALUES (?,?,?,?,?,0)",
                       [(cid, dir_, file, offset, size) for cid, offset, size in rows])

    def spill(self, chunk: Chunk, stored: bytes) -> None:
        """Keep a verified chunk frame until its artifact can be applied (never twice)."""
        if self.has(chunk.id):
            return
        decompress_chunk(stored, chunk_id=chunk.id, size=chunk.size)  # verify before keeping
        fd = open_dir(self.state.root_fd, SPILL_DIR, create=True)
        try:
            write_atomic_at(fd, chunk.id, stored)
        finally:
            os.close(fd)
        with self.state.transaction() as db:
            db.execute("INSERT OR IGNORE INTO locations (chunk, dir, file, offset, size, zstd) VALUES (?,?,?,0,?,1)",
                       (chunk.id, SPILL_DIR, chunk.id, len(stored)))

    def collect_spill(self) -> int:
        """Remove spilled chunks an installed file now holds, and spill files no row names."""
        with self.state.transaction() as db:
            gone = [r[0] for r in db.execute(
                "SELECT s.chunk FROM locations s WHERE s.zstd=1 AND EXISTS "
                "(SELECT 1 FROM locations f WHERE f.chunk=s.chunk AND f.zstd=0)")]
            db.executemany("DELETE FROM locations WHERE chunk=? AND zstd=1", [(c,) for c in gone])
            keep = {r[0] for r in db.execute("SELECT file FROM locations WHERE zstd=1")}
        self.forget_fds()
        try:
            fd = open_dir(self.state.root_fd, SPILL_DIR)
        except FileNotFoundError:
            return 0
        removed = 0
        try:
            for name in os.listdir(fd):
                if name not in keep:
                    try:
                        os.unlink(name, dir_fd=fd)
                        removed += 1
                    except (FileNotFoundError, IsADirectoryError, PermissionError):
                        pass
            os.fsync(fd)
        finally:
            os.close(fd)
        return removed
