"""Rebuilding a file or blob from its chunks, verified end to end.

Used by import (to install) and by verify (to check without installing): every chunk is
checked against its id by the chunk source, and the whole entry against its BLAKE3 (and,
for OCI blobs, its sha256 digest) as the bytes stream past. Memory stays at one chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from manifests.digest import Hasher
from manifests.errors import VerificationError
from manifests.model import Chunk, Entry, Manifest


class ChunkSource(Protocol):
    """Anything that returns a chunk's raw bytes, already checked against ``chunk.id``."""

    def read_chunk(self, chunk: Chunk) -> bytes: ...


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
