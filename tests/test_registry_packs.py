"""The registry reader's fetch-ahead (:class:`importer.link.RegistryPacks`, issue #18): one
thread fetches the wanted chunks in pack order while the import reads them. Whatever order the
import asks in, each chunk is its verified stored bytes, memory stays within ``ahead`` plus one
chunk, and faults met while the fetcher is ahead are retried or refused as on one thread.

The registry here is a blob served by pieces from memory (its Range answers cut where a socket
may cut them, faults injected per answer); the real registry and the loopback fault proxy are
in tests/test_link.py."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.content import Verified
from importer.link import FetchStats, RateLimit, RegistryPacks
from manifests.chunks import compress_chunk, decompress_chunk
from manifests.digest import blake3_hex
from manifests.errors import ChunkError, RegistryError
from manifests.model import Chunk, Pack
from manifests.oci import Descriptor
from manifests.progress import Silent
from transport.registry import RangeAnswer


class _Registry:
    """Pack blobs answered by Range from memory (read through the client's own
    :class:`transport.registry.RangeAnswer`), at most ``piece`` bytes per read as a socket may
    deliver them; each answer takes the next of ``faults`` (None: a good answer): ``truncate``
    ends it after half its bytes, ``corrupt`` flips the byte at blob offset ``corrupt_at``."""

    host = "test"

    def __init__(self, blobs: dict[str, bytes], piece: int, faults: list[str | None] | None = None,
                 corrupt_at: int = 0) -> None:
        self.blobs, self.piece, self.faults, self.corrupt_at = blobs, piece, list(faults or []), corrupt_at
        self.requests: list[tuple[str, int, int]] = []  # digest, start, length

    def open_range(self, repo: str, digest: str, start: int, length: int) -> RangeAnswer:
        self.requests.append((digest, start, length))
        fault = self.faults.pop(0) if self.faults else None
        data = bytearray(self.blobs[digest][start:start + length])
        if fault == "corrupt" and start <= self.corrupt_at < start + length:
            data[self.corrupt_at - start] ^= 0xFF
        sent = 0
        end = len(data) // 2 if fault == "truncate" else len(data)

        def read(n: int) -> bytes:  # as a socket delivers: at most a piece at a time
            nonlocal sent
            out = bytes(data[sent:min(sent + n, sent + self.piece, end)])
            sent += len(out)
            return out

        return RangeAnswer(read, start, length, "registry test: blob")


def _bundle(packs: list[list[tuple[int, bytes]]]) -> tuple[SimpleNamespace, SimpleNamespace, dict[str, bytes]]:
    """A manifest and artifact (only what RegistryPacks reads) of packs of frames with gaps between them."""
    chunks, pack_list, descriptors, blobs = [], [], {}, {}
    for p, parts in enumerate(packs):
        blob = bytearray()
        for gap, raw in parts:
            blob += os.urandom(gap)
            stored = compress_chunk(raw)
            chunks.append(Chunk(id=blake3_hex(raw), size=len(raw), stored=len(stored), pack=p, offset=len(blob)))
            blob += stored
        digest = "sha256:" + f"{p:064x}"
        pack_list.append(Pack(name=f"p{p}", volume=1, size=len(blob)))
        descriptors[f"p{p}"] = Descriptor("application/octet-stream", digest, len(blob))
        blobs[digest] = bytes(blob)
    return SimpleNamespace(chunks=chunks, packs=pack_list, volumes=1), SimpleNamespace(packs=descriptors), blobs


def _stored(c: Chunk, blobs: dict[str, bytes]) -> bytes:
    assert c.offset is not None and c.stored is not None and c.pack is not None
    return blobs[f"sha256:{c.pack:064x}"][c.offset:c.offset + c.stored]


def _verified(c: Chunk, blobs: dict[str, bytes]) -> tuple[str, bytes]:
    """What the reader must hand over for ``c``: its id and the raw bytes of the frame the registry stores."""
    return c.id, decompress_chunk(_stored(c, blobs), chunk_id=c.id, size=c.size)


def _handed(got: object) -> tuple[str, bytes]:
    """What the reader handed over: always a Verified (checked once, by the fetcher)."""
    assert isinstance(got, Verified)
    return got.chunk_id, got.raw


def _reader(reg: _Registry, m: SimpleNamespace, art: SimpleNamespace, **kw: object) -> tuple[RegistryPacks, FetchStats]:
    stats = FetchStats("oci://test/r:1")
    kw.setdefault("sleep", lambda s: None)
    return RegistryPacks(reg, "r", art, m, stats, Silent(), **kw), stats  # type: ignore[arg-type]


_RAW = st.binary(min_size=1, max_size=300).map(lambda b: b + os.urandom(8))  # distinct chunk ids
_PACK = st.lists(st.tuples(st.integers(0, 200), _RAW), min_size=1, max_size=8)


@given(packs=st.lists(_PACK, min_size=1, max_size=3), data=st.data(), ahead=st.integers(1, 2000),
       span=st.integers(1, 3000), piece=st.integers(1, 700))
@settings(max_examples=60, deadline=None)
def test_chunks_read_in_any_order_are_their_verified_bytes_within_the_memory_bound(
        packs: list[list[tuple[int, bytes]]], data: st.DataObject, ahead: int, span: int, piece: int) -> None:
    m, art, blobs = _bundle(packs)
    chunks: list[Chunk] = m.chunks
    wanted = data.draw(st.lists(st.sampled_from(chunks), unique_by=lambda c: c.id), label="wanted")
    # the import reads the wanted chunks in some order, maybe others and some twice, maybe not all of them
    reads = data.draw(st.permutations(wanted), label="order") + data.draw(st.lists(st.sampled_from(chunks), max_size=4))
    reads = reads[:data.draw(st.integers(0, len(reads)), label="stop after")]
    reg = _Registry(blobs, piece)
    packs_, stats = _reader(reg, m, art, ahead=ahead, span=span)
    with packs_:
        packs_.want(c.id for c in wanted)
        for c in reads:
            assert _handed(packs_.read_stored(c)) == _verified(c, blobs)
    assert packs_.peak <= ahead + max(c.size for c in chunks)
    assert packs_.failure is None and stats.retries == 0


@given(packs=st.lists(_PACK, min_size=1, max_size=3), ahead=st.integers(1, 2000), piece=st.integers(1, 700))
@settings(max_examples=40, deadline=None)
def test_chunks_read_in_pack_order_are_each_fetched_once(packs: list[list[tuple[int, bytes]]], ahead: int,
                                                         piece: int) -> None:
    m, art, blobs = _bundle(packs)
    reg = _Registry(blobs, piece)
    packs_, stats = _reader(reg, m, art, ahead=ahead)
    with packs_:
        packs_.want(c.id for c in m.chunks)
        for c in m.chunks:
            assert _handed(packs_.read_stored(c)) == _verified(c, blobs)
    assert stats.chunks_fetched == len(m.chunks)
    assert packs_.peak <= ahead + max(c.size for c in m.chunks)
    assert len(reg.requests) == len(packs)  # one Range request per pack, its answer read across every chunk
    assert stats.bytes_fetched == sum(length for _, _, length in reg.requests)


def _big(n: int = 12, size: int = 64 * 1024) -> tuple[SimpleNamespace, SimpleNamespace, dict[str, bytes]]:
    return _bundle([[(100, os.urandom(size)) for _ in range(n)]])


@pytest.mark.parametrize("ahead", [1, 200 * 1024, 8 << 20])
def test_a_range_truncated_while_the_fetcher_is_ahead_is_retried_from_the_first_chunk_not_verified(ahead: int) -> None:
    m, art, blobs = _big()
    reg = _Registry(blobs, 16 * 1024, faults=["truncate"])
    waits: list[float] = []
    packs_, stats = _reader(reg, m, art, ahead=ahead, sleep=waits.append)
    with packs_:
        packs_.want(c.id for c in m.chunks)
        for c in m.chunks:
            assert _handed(packs_.read_stored(c)) == _verified(c, blobs)
    assert stats.retries == 1 and waits == [0.5]
    (_, start1, length1), (_, start2, length2) = reg.requests
    got = length1 // 2  # the answer's bytes before it broke off
    first_half = [c for c in m.chunks if c.offset + c.stored <= start1 + got]
    assert first_half and start2 == m.chunks[len(first_half)].offset  # verified chunks are not fetched again
    assert start2 + length2 == start1 + length1
    assert stats.chunks_fetched == len(m.chunks)


@pytest.mark.parametrize("ahead", [1, 8 << 20])
def test_bytes_that_never_match_are_refused_after_the_retries_and_never_handed_over(ahead: int) -> None:
    m, art, blobs = _big()
    bad = m.chunks[5]
    reg = _Registry(blobs, 16 * 1024, faults=["corrupt"] * 3, corrupt_at=bad.offset + bad.stored // 2)
    waits: list[float] = []
    packs_, stats = _reader(reg, m, art, ahead=ahead, attempts=3, backoff=0.25, sleep=waits.append)
    with packs_:
        packs_.want(c.id for c in m.chunks)
        for c in m.chunks[:5]:  # verified before the bad one: handed over
            assert _handed(packs_.read_stored(c)) == _verified(c, blobs)
        with pytest.raises(ChunkError, match="gave up after 3 attempts.*do not match a signed chunk id") as e:
            packs_.read_stored(bad)
        assert e.value.chunk_id == bad.id
        assert packs_.failure is e.value
        with pytest.raises(ChunkError):  # and every later read
            packs_.read_stored(m.chunks[6])
    assert waits == [0.25, 0.5] and stats.retries == 2
    assert [start for _, start, _ in reg.requests[1:]] == [bad.offset, bad.offset]


def test_a_registry_that_fails_while_nothing_is_asked_is_not_an_error_until_asked() -> None:
    m, art, blobs = _big(n=4)
    reg = _Registry(blobs, 16 * 1024, faults=["corrupt"] * 4, corrupt_at=m.chunks[3].offset)
    packs_, stats = _reader(reg, m, art, ahead=8 << 20)
    with packs_:
        packs_.want(c.id for c in m.chunks)
        for c in m.chunks[:3]:
            assert _handed(packs_.read_stored(c)) == _verified(c, blobs)
    # the import stopped before the chunk the registry spoils (another artifact failed, say)
    assert packs_.failure is None


def test_limit_rate_is_paid_for_every_byte_the_fetcher_reads() -> None:
    m, art, blobs = _big()
    clock = [0.0]

    def sleep(s: float) -> None:
        clock[0] += s

    rate = 1 << 20
    limit = RateLimit(rate, clock=lambda: clock[0], sleep=sleep)
    reg = _Registry(blobs, 16 * 1024)
    packs_, stats = _reader(reg, m, art, limit=limit, ahead=100 * 1024)
    with packs_:
        packs_.want(c.id for c in m.chunks)
        for c in m.chunks:
            packs_.read_stored(c)
    assert limit.taken == stats.bytes_fetched > sum(c.stored for c in m.chunks)
    assert clock[0] == pytest.approx(stats.bytes_fetched / rate)


@pytest.mark.parametrize("ahead", [1, 100 * 1024, 300 * 1024])
def test_a_slow_import_holds_at_most_ahead_and_one_chunk(ahead: int) -> None:
    m, art, blobs = _big(n=16)
    reg = _Registry(blobs, 16 * 1024)
    packs_, stats = _reader(reg, m, art, ahead=ahead)
    with packs_:
        packs_.want(c.id for c in m.chunks)
        for c in m.chunks:
            assert _handed(packs_.read_stored(c)) == _verified(c, blobs)
            time.sleep(0.02)  # the import writes: the fetcher runs ahead meanwhile, as far as it may
    largest = max(c.size for c in m.chunks)
    assert packs_.peak <= ahead + largest
    assert stats.chunks_fetched == len(m.chunks) and len(reg.requests) == 1


def test_closing_stops_a_fetcher_that_waits_for_room() -> None:
    m, art, blobs = _big()
    reg = _Registry(blobs, 16 * 1024)
    packs_, stats = _reader(reg, m, art, ahead=1)
    packs_.want(c.id for c in m.chunks)
    assert _handed(packs_.read_stored(m.chunks[0])) == _verified(m.chunks[0], blobs)
    packs_.close()  # the fetcher holds one chunk and waits: it is stopped, its answer closed
    assert packs_._thread is not None and not packs_._thread.is_alive()
    assert stats.chunks_fetched < len(m.chunks)


@given(raw=st.binary(max_size=5000), other=st.binary(min_size=1, max_size=50))
@settings(max_examples=50, deadline=None)
def test_a_verified_chunk_kept_for_later_is_a_frame_of_the_same_bytes_and_a_mixup_is_refused(raw: bytes,
                                                                                              other: bytes) -> None:
    """The spill keeps frames: a Verified chunk from the registry is compressed again (the
    frame the store checks when it keeps it); one handed over for another chunk is refused."""
    from importer.content import stored_frame
    from manifests.errors import VerificationError

    c = Chunk(id=blake3_hex(raw), size=len(raw), stored=0, pack=0, offset=0)
    frame = stored_frame(c, Verified(c.id, raw))
    assert decompress_chunk(frame, chunk_id=c.id, size=c.size) == raw
    assert stored_frame(c, frame) is frame  # a medium's frame passes as it is (the store checks it)
    wrong = raw + other
    with pytest.raises(VerificationError, match="handed over as chunk"):
        stored_frame(c, Verified(blake3_hex(wrong), wrong))
    with pytest.raises(VerificationError, match="handed over as chunk"):
        stored_frame(c, Verified(c.id, wrong))
