"""Rebuilding a file or blob from its chunks, verified end to end.

Used by import (to install) and by verify (to check without installing): every chunk is
checked against its id by the chunk source, and the whole entry against its BLAKE3 (and,
for OCI blobs, its sha256 digest) as the bytes stream past. Memory stays at one chunk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True, eq=False)
class Verified:
    """The raw bytes of chunk ``chunk_id``, already decompressed and checked against that id
    (:func:`manifests.chunks.decompress_chunk`) by this process: what a reader that must check
    each chunk anyway (the registry fetcher, :class:`importer.link.RegistryPacks`, which checks
    so that a bad answer can be retried) hands over, so that the chunk is checked once.

    Why no check is skipped: the hand-off is in-process memory (a frozen object holding an
    immutable ``bytes``), never a file, a pipe or a socket; nothing outside this process can
    change it between the check and the write, and code inside it could change the import
    itself. :meth:`StoreThenPacks.start` still compares ``chunk_id`` and the length with the
    chunk asked for (a mix-up is a VerificationError), and every entry's BLAKE3 (and sha256)
    is checked over the bytes written (:func:`stream_entry`) before it is committed.

    Attributes:
        chunk_id: the chunk's id (BLAKE3 hex of ``raw``, docs/bundle-format.md section 4).
        raw: the chunk's bytes, ``size`` of them.
    """

    chunk_id: str
    raw: bytes


class CarriedChunks(Protocol):
    """Where an import finds the chunks a bundle carries: all that planning (:func:`importer.run.plan_bundle`)
    and applying (:class:`StoreThenPacks`, the spill) ask of it. Implemented by the medium's
    :class:`importer.medium.PackReader` (stored frames, checked by the caller) and the registry's
    :class:`importer.link.RegistryPacks` (:class:`Verified` chunks, checked as they arrived)."""

    def packs_at_hand(self) -> frozenset[int]:
        """Indexes (into ``manifest.packs``) of the packs whose chunks can be read."""
        ...

    def volumes_at_hand(self) -> frozenset[int]:
        """Numbers of the volumes given (docs/bundle-format.md section 1)."""
        ...

    def missing_volumes(self) -> list[int]:
        """Volumes neither given nor found, for 'insert volume N' messages."""
        ...

    def read_stored(self, chunk: Chunk) -> bytes | Verified:
        """A carried chunk: its stored (zstd frame) bytes, ``chunk.stored`` of them, not yet
        checked against its id (the caller decompresses and verifies), or its :class:`Verified`
        raw bytes (checked by the reader in this process). Raises ChunkError when the chunk
        cannot be read (its pack or volume missing, truncated) or, for a reader that checks,
        does not match its id; RegistryError when a registry failed."""
        ...


def stored_frame(chunk: Chunk, got: bytes | Verified) -> bytes:
    """A stored frame for ``chunk`` from what :meth:`CarriedChunks.read_stored` gave: the frame
    itself, or the :class:`Verified` raw bytes compressed again (for the spill, which keeps
    frames; a rare path: a registry holds every pack)."""
    if isinstance(got, bytes):
        return got
    from manifests.chunks import compress_chunk

    return compress_chunk(_checked(chunk, got))


def _checked(chunk: Chunk, got: Verified) -> bytes:
    """``got.raw`` when ``got`` is the chunk asked for (id and size); else VerificationError."""
    if got.chunk_id != chunk.id or len(got.raw) != chunk.size:
        raise VerificationError(f"chunk {chunk.id}: handed over as chunk {got.chunk_id} of {len(got.raw)} bytes "
                                f"({chunk.size} expected)")
    return got.raw


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
    """Chunks from the site's store first, else from the packs at hand (both verified): a
    stored frame is decompressed and checked here, a :class:`Verified` chunk is used as it is.

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
            got = self.reader.read_stored(chunk)
            if isinstance(got, Verified):  # checked by the reader as it arrived: not checked twice
                done.set_result(_checked(chunk, got))
                return done
            stored = got
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
