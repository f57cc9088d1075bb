"""Rebuilding a file or blob from its chunks, verified end to end.

Used by import (to install) and by verify (to check without installing): every chunk is
checked against its id by the chunk source, and the whole entry against its BLAKE3 (and,
for OCI blobs, its sha256 digest) as the bytes stream past. Memory stays at one chunk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

from manifests.budget import MEMORY_BUDGET, ImportSizes, import_sizes, usable_cpus
from manifests.chunks import decompress_chunk
from manifests.digest import Hasher
from manifests.errors import FerryError, VerificationError
from manifests.model import Chunk, Entry, Manifest

if TYPE_CHECKING:
    from .store import ChunkStore


class ChunkSource(Protocol):
    """Anything that returns a chunk's raw bytes, already checked against ``chunk.id``."""

    def read_chunk(self, chunk: Chunk) -> bytes: ...


class CarriedChunks(Protocol):
    """Where an import finds the chunks a bundle carries: all that planning (:func:`importer.run.plan_bundle`)
    and applying (:class:`StoreThenPacks`, the spill) ask of it. Implemented by the medium's
    :class:`importer.medium.PackReader`; a registry reader that fetches by Range into memory is
    the planned second one (issue #18: import from a registry without writing the data twice)."""

    def packs_at_hand(self) -> frozenset[int]:
        """Indexes (into ``manifest.packs``) of the packs whose chunks can be read."""
        ...

    def volumes_at_hand(self) -> frozenset[int]:
        """Numbers of the volumes given (docs/bundle-format.md section 1)."""
        ...

    def missing_volumes(self) -> list[int]:
        """Volumes neither given nor found, for 'insert volume N' messages."""
        ...

    def read_stored(self, chunk: Chunk) -> bytes:
        """The stored (zstd frame) bytes of a carried chunk, ``chunk.stored`` of them, not yet
        checked against its id (the caller decompresses and verifies). Raises ChunkError when
        the chunk cannot be read (its pack or volume missing, truncated)."""
        ...


def entry_label(entry: Entry) -> str:
    return entry.path or entry.digest or entry.blake3


def stream_entry(entry: Entry, manifest: Manifest, source: ChunkSource) -> Iterator[bytes]:
    """Yield the entry's bytes chunk by chunk; raise VerificationError at the end if the
    whole does not match. Consumers must not commit what they wrote until the generator
    is exhausted without error."""
    hasher = Hasher(sha256=entry.digest is not None)
    for chunk_id in entry.chunks:
        data = source.read_chunk(manifest.chunk(chunk_id))
        hasher.update(data)
        yield data
    if hasher.size != entry.size:
        raise VerificationError(f"{entry_label(entry)}: rebuilt {hasher.size} bytes, expected {entry.size}")
    if hasher.blake3 != entry.blake3:
        raise VerificationError(f"{entry_label(entry)}: content does not match its BLAKE3")
    if entry.digest is not None and hasher.sha256 != entry.digest:
        raise VerificationError(f"{entry_label(entry)}: rebuilt blob does not match {entry.digest}")


# --------------------------------------------------------------------------- the import's source


class StoreThenPacks:
    """Chunks from the site's store first, else from the packs at hand (both verified).

    :meth:`entry_source` reads ahead: while the caller hashes and writes one chunk, the next
    few are decompressed and checked against their ids in worker threads (zstd and BLAKE3
    release the GIL). The window bounds memory: at most ``sizes.read_ahead`` chunks in flight,
    on ``sizes.workers`` threads (:func:`manifests.budget.import_sizes`)."""

    def __init__(self, store: ChunkStore, reader: CarriedChunks, sizes: ImportSizes | None = None) -> None:
        self.store, self.reader = store, reader
        self.sizes = sizes or import_sizes(MEMORY_BUDGET, usable_cpus())
        self._pool: ThreadPoolExecutor | None = None

    def read_chunk(self, chunk: Chunk) -> bytes:
        return self.start(chunk).result()

    def start(self, chunk: Chunk) -> Future[bytes]:
        """Begin fetching ``chunk``: sqlite and file descriptors stay on this thread, the
        CPU work (decompress, hash) goes to the pool."""
        done: Future[bytes] = Future()
        try:
            data = self.store.read_chunk(chunk)
            if data is not None:
                done.set_result(data)
                return done
            if not chunk.carried:
                raise VerificationError(f"chunk {chunk.id} is not in this (delta) bundle and this site does not hold it")
            stored = self.reader.read_stored(chunk)
        except FerryError as exc:
            done.set_exception(exc)
            return done
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.sizes.workers,
                                            thread_name_prefix="ferry-chunk")
        return self._pool.submit(decompress_chunk, stored, chunk_id=chunk.id, size=chunk.size)

    def entry_source(self, entry: Entry, manifest: Manifest) -> ReadAhead:
        return ReadAhead(self, [manifest.chunk(c) for c in entry.chunks])

    def reader_for(self, manifest: Manifest, advance: Callable[[int], None]) -> Callable[[Entry], Iterator[bytes]]:
        """``read_entry(entry)`` for the apply targets: the entry's verified bytes, chunk by
        chunk, counted on ``advance``; a failure names the entry."""

        def read(entry: Entry) -> Iterator[bytes]:
            label = entry_label(entry)
            try:
                for data in stream_entry(entry, manifest, self.entry_source(entry, manifest)):
                    advance(len(data))
                    yield data
            except VerificationError as exc:
                msg = str(exc)
                raise VerificationError(msg if msg.startswith(label) else f"{label}: {msg}") from None

        return read

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class ReadAhead:
    """A ChunkSource for one entry whose chunks are requested in order (as stream_entry does)."""

    def __init__(self, source: StoreThenPacks, chunks: list[Chunk]) -> None:
        self._source, self._todo = source, deque(chunks)
        self._inflight: deque[tuple[str, Future[bytes]]] = deque()
        self._fill()

    def _fill(self) -> None:
        while self._todo and len(self._inflight) < self._source.sizes.read_ahead:
            c = self._todo.popleft()
            self._inflight.append((c.id, self._source.start(c)))

    def read_chunk(self, chunk: Chunk) -> bytes:
        if not self._inflight or self._inflight[0][0] != chunk.id:  # out of order: no read-ahead
            return self._source.read_chunk(chunk)
        _, fut = self._inflight.popleft()
        self._fill()
        return fut.result()
