"""Rebuilding an entry from its chunks (importer.content.stream_entry): every byte in order, and a
whole that does not match its size, BLAKE3 or digest refused after the last chunk, before the
consumer may commit (docs/bundle-format.md section 6, step 6), although each chunk matched its id."""

from __future__ import annotations

import hashlib
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.content import stream_entry
from manifests.digest import blake3_hex
from manifests.errors import VerificationError
from manifests.model import Chunk, Entry, Manifest


class _Chunks:
    """What stream_entry asks of a manifest and a chunk source: chunks by id, their bytes."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.raw = {blake3_hex(p): p for p in pieces}

    def chunk(self, chunk_id: str) -> Chunk:
        return Chunk(id=chunk_id, size=len(self.raw[chunk_id]))

    def read_chunk(self, chunk: Chunk) -> bytes:
        return self.raw[chunk.id]


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(edges, edges[1:])] or [b""]


def _entry(pieces: list[bytes], *, blake3: str | None = None, digest: str | None = None,
           size: int | None = None) -> Entry:
    whole = b"".join(pieces)
    return Entry(size=len(whole) if size is None else size, blake3=blake3 or blake3_hex(whole),
                 chunks=tuple(blake3_hex(p) for p in pieces), path="w.bin", digest=digest)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=64 * 1024), cuts=st.lists(st.integers(min_value=0), max_size=12),
       blob=st.booleans())
def test_the_bytes_come_out_in_order_and_the_whole_is_checked(data: bytes, cuts: list[int], blob: bool) -> None:
    pieces = _split(data, cuts)
    src = _Chunks(pieces)
    digest = "sha256:" + hashlib.sha256(data).hexdigest() if blob else None
    got = b"".join(stream_entry(_entry(pieces, digest=digest), cast(Manifest, src), src))
    assert got == data


@pytest.mark.parametrize("wrong", ["blake3", "digest", "size"])
def test_a_whole_that_does_not_match_is_refused_after_the_last_chunk(wrong: str) -> None:
    pieces = [bytes([i]) * 70_000 for i in range(1, 5)]  # four chunks, each valid on its own
    src = _Chunks(pieces)
    whole = b"".join(pieces)
    good = "sha256:" + hashlib.sha256(whole).hexdigest()
    entry = {"blake3": _entry(pieces, blake3=blake3_hex(whole[::-1]), digest=good),
             "digest": _entry(pieces, digest="sha256:" + hashlib.sha256(whole[1:]).hexdigest()),
             "size": _entry(pieces, size=len(whole) + 1, digest=good)}[wrong]
    seen = []
    with pytest.raises(VerificationError, match="w.bin"):
        for piece in stream_entry(entry, cast(Manifest, src), src):
            seen.append(piece)
    assert seen == pieces  # the consumer wrote every chunk, and must not commit: the error came at the end
