"""Chunking: pieces cover the file exactly, and a changed tensor changes only its own chunks."""

from __future__ import annotations

import errno
import io
import os
import random
import struct
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler import chunker
from manifests import budget, limits
from manifests.digest import Hasher, blake3_hex
from tests.support.export import MiB, tensors, write_safetensors


@given(st.lists(st.integers(min_value=0, max_value=10**7), max_size=40), st.integers(min_value=0, max_value=10**7),
       st.integers(min_value=1, max_value=10**6))
def test_coalesce_covers_file_and_keeps_every_large_tensor_apart(cuts: list[int], size: int, min_gap: int) -> None:
    pieces = chunker.coalesce(cuts, size, min_gap)
    assert pieces[0][0] == 0 and pieces[-1][1] == size
    for (a, b), (c, _) in zip(pieces, pieces[1:]):
        assert b == c and a < b
    assert len(pieces) <= 2 * size // min_gap + 2
    bounds = {b for _, b in pieces}
    given_cuts = sorted({c for c in cuts if 0 < c < size}) + [size]
    starts = [0] + given_cuts
    for begin, end in zip(starts, given_cuts):
        if end - begin >= min_gap:  # a large tensor begins and ends a piece: no neighbour shares its chunks
            assert (begin == 0 or begin in bounds) and end in bounds
    for cut in given_cuts[:-1]:
        if cut not in bounds:  # a dropped cut lies inside a run of small tensors
            before = max(b for b in [0, *bounds] if b < cut)
            after = min(c for c in given_cuts if c > cut)
            assert cut - before < min_gap and after - cut < min_gap


def test_small_tensors_between_large_ones_are_pieces_of_their_own() -> None:
    K = 1024
    cuts = [100, 100 + 512 * K, 100 + 512 * K + 4 * K, 100 + 1028 * K, 100 + 1029 * K, 100 + 1030 * K]
    size = 100 + 2000 * K
    assert chunker.coalesce(cuts, size) == [
        (0, 100),  # the header
        (100, 100 + 512 * K),  # a 512 KiB tensor alone, whatever the FastCDC minimum (1 MiB)
        (100 + 512 * K, 100 + 516 * K),  # a 4 KiB norm between two large tensors
        (100 + 516 * K, 100 + 1028 * K),
        (100 + 1028 * K, 100 + 1030 * K),  # two 1 KiB tensors: one run, one piece
        (100 + 1030 * K, 100 + 2000 * K),
    ]


def test_safetensors_cuts_at_each_tensor() -> None:
    header = {"__metadata__": {}, "a": {"data_offsets": [0, 10]}, "b": {"data_offsets": [10, 30]}}
    assert chunker.safetensors_cuts(100, header, 8 + 100 + 30) == [108, 118]
    assert chunker.safetensors_cuts(100, {"a": {"data_offsets": [0, 10**9]}}, 200) == []
    assert chunker.safetensors_cuts(100, ["not", "a", "header"], 200) == []


def _chunks(path: Path) -> list[bytes]:
    with open(path, "rb") as f:
        return [bytes(data) for _, data in chunker.Cutter().file(f, chunker.segments(path, path.stat().st_size))]


def test_chunks_rebuild_the_file_within_limits(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    write_safetensors(path, tensors(3, 3 * MiB, seed=1) + [("tiny.bias", b"\x01" * 64)] + tensors(2, 5 * MiB, seed=2))
    chunks = _chunks(path)
    assert b"".join(chunks) == path.read_bytes()
    assert all(len(c) <= limits.MAX_CHUNK_SIZE for c in chunks)


def test_changed_tensor_changes_only_its_chunks(tmp_path: Path) -> None:
    ts = tensors(10, 3 * MiB, seed=3)
    write_safetensors(tmp_path / "v1.safetensors", ts)
    changed = list(ts)
    changed[4] = (changed[4][0], random.Random(9).randbytes(3 * MiB))
    write_safetensors(tmp_path / "v2.safetensors", changed)
    v1, v2 = set(_chunks(tmp_path / "v1.safetensors")), _chunks(tmp_path / "v2.safetensors")
    new = [c for c in v2 if c not in v1]
    assert sum(map(len, new)) <= 3 * MiB  # only the changed tensor's bytes are new


def test_plain_files_and_streams_are_chunked_by_content(tmp_path: Path) -> None:
    data = random.Random(5).randbytes(9 * MiB)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert chunker.segments(path, len(data)) == [(0, len(data))]
    with open(path, "rb") as f:
        assert b"".join(bytes(d) for d in chunker.Cutter().stream(f)) == data



def test_windowed_cutting_equals_cutting_at_once(tmp_path: Path) -> None:
    data = random.Random(8).randbytes(3 * chunker.WINDOW + 12345)
    whole = [bytes(c.data) for c in chunker._cdc.cut_buf(data)]
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    with open(path, "rb") as f:
        assert [bytes(d) for d in chunker.Cutter().stream(f)] == whole
    hasher = Hasher(threaded=False)
    with open(path, "rb") as f:
        assert [bytes(d) for _, d in chunker.Cutter().file(f, [(0, len(data))], hasher)] == whole
    # the whole-file hash, computed on the reader's hashing thread, saw every byte once, in order
    assert hasher.size == len(data) and hasher.blake3 == blake3_hex(data)


def _content(seed: int, size: int) -> bytes:
    """Random bytes with runs of zeros, so that cuts fall at the largest size as well as by content."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(rng.randint(1, 3000)) if rng.random() < 0.7 else bytes(rng.randint(1, 3000))
    return bytes(out[:size])


SMALL_CDC = chunker.pyfastcdc.FastCDC(256, min_size=64, max_size=1024)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 20000), st.lists(st.integers(0, 6000), max_size=6),
       st.integers(1025, 4096), st.integers(1, 5000))
def test_cutting_window_by_window_equals_cutting_each_piece_at_once(seed: int, size: int, splits: list[int],
                                                                    window: int, read: int) -> None:
    """The rule that lets a window's chunks through (every chunk ending before the window does)
    gives exactly the cuts of each whole piece, whatever the window, the piece boundaries and
    the sizes the source hands out: bundles keep their chunk ids, deltas their shared chunks."""
    data = _content(seed, size)
    bounds = sorted({min(s, size) for s in splits} | {0, size})
    pieces = list(zip(bounds, bounds[1:])) or [(0, 0)]
    expect = [bytes(c.data) for a, b in pieces for c in SMALL_CDC.cut_buf(data[a:b])]
    pos = 0

    def fill(view: memoryview) -> int:
        nonlocal pos
        n = min(len(view), read, size - pos)
        view[:n] = data[pos:pos + n]
        pos += n
        return n

    got = [bytes(d) for d in chunker.Cutter(cdc=SMALL_CDC, window=window).pieces(fill, [b - a for a, b in pieces])]
    assert got == expect


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32), st.integers(0, 5000), st.lists(st.integers(0, 5000), max_size=4)),
                min_size=1, max_size=5), st.integers(1025, 3000))
def test_views_stay_intact_until_their_window_is_given_back(sources: list[tuple[int, int, list[int]]],
                                                            window: int) -> None:
    """Chunks are handed out as views, not copies: no window is written while views of it may
    be in use, i.e. before ``reuse`` is called with it; sources (files) one after another share
    the two windows and still cut as each piece cut whole."""
    held: list[tuple[memoryview, bytes]] = []

    def reuse(buf: object) -> None:
        for view, expect in held:
            if view.obj is buf:
                assert bytes(view) == expect
        held[:] = [(v, e) for v, e in held if v.obj is not buf]

    cutter = chunker.Cutter(reuse, cdc=SMALL_CDC, window=window)
    for seed, size, splits in sources:
        data = _content(seed, size)
        bounds = sorted({min(s, size) for s in splits} | {0, size})
        pieces = list(zip(bounds, bounds[1:])) or [(0, 0)]
        source = io.BytesIO(data)
        got = []
        for view in cutter.pieces(source.readinto, [b - a for a, b in pieces]):
            got.append(bytes(view))
            held.append((view, got[-1]))
        assert got == [bytes(c.data) for a, b in pieces for c in SMALL_CDC.cut_buf(data[a:b])]
    reuse(None)
    assert all(bytes(v) == e for v, e in held)


def test_a_source_shorter_than_its_pieces_stops_early() -> None:
    data = _content(3, 5000)
    source = io.BytesIO(data[:3000])
    got = b"".join(bytes(d) for d in chunker.Cutter(cdc=SMALL_CDC, window=2048).pieces(source.readinto, [2000, 3000]))
    assert got == data[:3000]


def test_the_cutting_windows_stay_within_the_budgets_share() -> None:
    assert chunker.MAX_CHUNK < chunker.WINDOW and 2 * chunker.WINDOW <= budget.WINDOWS  # every window but a piece's last accepts a chunk


def _hashing_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ferry-hash")]


def test_a_read_error_reaches_the_caller_and_the_hashing_thread_ends(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)  # pread on a folder: EISDIR
    try:
        with pytest.raises(OSError) as err, os.fdopen(os.dup(fd), "rb", closefd=True) as f:
            list(chunker.Cutter().file(f, [(0, 10 * MiB)], Hasher(threaded=False)))
        assert err.value.errno == errno.EISDIR
    finally:
        os.close(fd)
    assert _hashing_threads() == []


class _Broken:
    def update(self, data: bytes | memoryview) -> None:
        raise MemoryError("sink failed")


def test_an_error_on_the_hashing_thread_reaches_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(random.Random(4).randbytes(2 * chunker.WINDOW))
    with open(path, "rb") as f, pytest.raises(MemoryError, match="sink failed"):
        list(chunker.Cutter().file(f, [(0, 2 * chunker.WINDOW)], _Broken()))
    assert _hashing_threads() == []


def test_stopping_early_ends_the_hashing_thread(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(random.Random(4).randbytes(2 * chunker.WINDOW))
    with open(path, "rb") as f:
        chunks = chunker.Cutter().file(f, [(0, 2 * chunker.WINDOW)], Hasher(threaded=False))
        assert len(next(chunks)[1]) >= chunker.MIN_CHUNK
        chunks.close()
    assert _hashing_threads() == []


# GGUF (llama.cpp): a real v3 file written by hand, as the format describes it.

def _gstr(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


#: Metadata of several types: string, u32, f32, bool, u64, a string array, an f32 array and an
#: array of arrays, so that skipping each by its type is exercised.
GGUF_KVS: list[tuple[bytes, int, bytes]] = [
    (b"general.architecture", 8, _gstr(b"llama")),
    (b"llama.context_length", 4, struct.pack("<I", 4096)),
    (b"llama.rope.freq_base", 6, struct.pack("<f", 10000.0)),
    (b"general.quantized", 7, b"\x01"),
    (b"general.parameter_count", 10, struct.pack("<Q", 7_000_000)),
    (b"tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 4) + b"".join(map(_gstr, [b"<s>", b"</s>", b"hi", b""]))),
    (b"tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 3) + struct.pack("<3f", 0.0, -1.0, -2.5)),
    (b"test.nested", 9, struct.pack("<IQ", 9, 2) + struct.pack("<IQ", 5, 2) + struct.pack("<2i", 1, -1)
     + struct.pack("<IQ", 8, 1) + _gstr(b"x")),
]


def gguf_bytes(tensors: list[tuple[str, bytes]], alignment: int = 32,
               kvs: list[tuple[bytes, int, bytes]] = GGUF_KVS) -> tuple[bytes, list[int]]:
    """A GGUF v3 file and the absolute offset where each tensor's data starts."""
    kvs = kvs + [(b"general.alignment", 4, struct.pack("<I", alignment))]
    relative, at = [], 0
    for _, data in tensors:
        relative.append(at)
        at += len(data) + -len(data) % alignment
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    head += b"".join(_gstr(key) + struct.pack("<I", kind) + value for key, kind, value in kvs)
    for (name, data), offset in zip(tensors, relative):
        head += _gstr(name.encode()) + struct.pack("<IQQ", 2, 2, len(data) // 4) + struct.pack("<IQ", 1, offset)
    head += b"\0" * (-len(head) % alignment)
    body = b"".join(data + b"\0" * (-len(data) % alignment) for _, data in tensors)
    return head + body, [len(head) + r for r in relative]


GGUF_LAYOUT = [3 * MiB, 64, 100, 2 * MiB, 1 * MiB, 10, 2 * MiB, 5, 3 * MiB, 2 * MiB]


def _gguf_tensors(seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    return [(f"blk.{i}.weight", rng.randbytes(n)) for i, n in enumerate(GGUF_LAYOUT)]


def test_gguf_cuts_fall_on_tensor_starts(tmp_path: Path) -> None:
    tensors = _gguf_tensors(seed=11)
    data, starts = gguf_bytes(tensors)
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    assert chunker.gguf_cuts(data, len(data)) == starts
    assert chunker.gguf_cuts(data[:200], len(data)) is None  # header goes on: read more
    pieces = chunker.segments(path, len(data))
    assert pieces[0][0] == 0 and pieces[-1][1] == len(data)
    assert {a for a, _ in pieces[1:]} <= set(starts)
    big = [s for s, (_, t) in zip(starts, tensors) if len(t) >= MiB]
    for a, b in pieces:  # a piece never holds two large tensors: they never share a chunk
        assert sum(a <= s < b for s in big) == 1 or b - a < chunker.MIN_PIECE  # or it is a run of tiny ones
    assert b"".join(_chunks(path)) == data


def test_changed_gguf_tensor_changes_only_its_chunks(tmp_path: Path) -> None:
    tensors = _gguf_tensors(seed=12)
    changed = list(tensors)
    changed[3] = (changed[3][0], random.Random(13).randbytes(len(changed[3][1])))
    (tmp_path / "v1.gguf").write_bytes(gguf_bytes(tensors)[0])
    (tmp_path / "v2.gguf").write_bytes(gguf_bytes(changed)[0])
    v1, v2 = set(_chunks(tmp_path / "v1.gguf")), _chunks(tmp_path / "v2.gguf")
    new = [c for c in v2 if c not in v1]
    # Only the changed tensor (and any run of tiny tensors grouped in front of it) is new.
    assert 2 * MiB <= sum(map(len, new)) <= 2 * MiB + 4096


def test_malformed_gguf_is_chunked_by_content(tmp_path: Path) -> None:
    data, _ = gguf_bytes(_gguf_tensors(seed=14)[:3])
    bad = {
        "version 1": data[:4] + struct.pack("<I", 1) + data[8:],
        "huge tensor count": data[:8] + struct.pack("<Q", 2**63) + data[16:],
        "truncated header": data[:300],
        "alignment 0": data.replace(b"alignment\4\0\0\0\x20\0\0\0", b"alignment\4\0\0\0\0\0\0\0"),
        "alignment 48": data.replace(b"alignment\4\0\0\0\x20\0\0\0", b"alignment\4\0\0\0\x30\0\0\0"),
        "offset past the end": data.replace(struct.pack("<IQ", 1, 3 * MiB + 64), struct.pack("<IQ", 1, 2**40)),
    }
    for why, content in bad.items():
        assert chunker.gguf_cuts(content, len(content)) == [], why
        path = tmp_path / "bad.gguf"
        path.write_bytes(content)
        assert chunker.segments(path, len(content)) == [(0, len(content))], why


@st.composite
def gguf_headers(draw: st.DrawFn) -> bytes:
    """A valid GGUF header (tiny tensors), then maybe truncated or with bytes overwritten."""
    sizes = draw(st.lists(st.integers(0, 300), max_size=6))
    kvs = draw(st.lists(st.sampled_from(GGUF_KVS), max_size=len(GGUF_KVS)))
    data, _ = gguf_bytes([(f"t{i}", b"\x07" * n) for i, n in enumerate(sizes)],
                         alignment=draw(st.sampled_from([1, 8, 32, 64, 3])), kvs=kvs)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        patch = draw(st.binary(max_size=9) | st.sampled_from([b"\xff" * 8, struct.pack("<Q", 2**62), b"\x09\0\0\0"]))
        data = data[:at] + patch + data[at + len(patch):]
    return data[:draw(st.integers(0, len(data)))] if draw(st.booleans()) else data


@given(gguf_headers() | st.binary(max_size=200).map(lambda b: b"GGUF\x03\0\0\0" + b), st.integers(0, 1000))
def test_any_gguf_header_gives_sorted_cuts_inside_the_file(data: bytes, more: int) -> None:
    """Malformed headers never raise: they give no cuts (or ask for more bytes while the file
    goes on); any cuts are sorted and strictly inside the file."""
    for size in (len(data), len(data) + more):
        cuts = chunker.gguf_cuts(data, size)
        if cuts is None:
            assert size > len(data)
            continue
        assert cuts == sorted(set(cuts)) and all(0 < c < size for c in cuts)


@given(st.lists(st.integers(0, 300), max_size=8), st.sampled_from([1, 16, 32, 4096]))
def test_valid_gguf_headers_give_every_tensor_start(sizes: list[int], alignment: int) -> None:
    data, starts = gguf_bytes([(f"t{i}", b"\x01" * n) for i, n in enumerate(sizes)], alignment)
    assert chunker.gguf_cuts(data, len(data)) == sorted({s for s in starts if s < len(data)})


def _tiny_tensor_safetensors(path: Path, count: int) -> None:
    """``count`` one-element F16 tensors, the header written as text (no dict per tensor here)."""
    body = ",".join(f'"t{i}":{{"dtype":"F16","shape":[1],"data_offsets":[{2 * i},{2 * i + 2}]}}'
                    for i in range(count))
    raw = ("{" + body + "}").encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\1" * count)


def test_more_tensors_than_the_cut_hint_cap_means_content_cuts_only(tmp_path: Path, monkeypatch) -> None:
    """Issue 11 item 6: a header naming more tensors than MAX_CUT_HINTS is never parsed into
    objects; the file is chunked by content alone and still rebuilds exactly."""
    monkeypatch.setattr(chunker, "MAX_CUT_HINTS", 100)
    path = tmp_path / "many.safetensors"
    _tiny_tensor_safetensors(path, 101)
    seen: list[bytes] = []
    monkeypatch.setattr(chunker.json, "loads", lambda text: seen.append(text) or {})
    assert chunker.segments(path, path.stat().st_size) == [(0, path.stat().st_size)]
    assert seen == []  # counted, not parsed
    assert b"".join(_chunks(path)) == path.read_bytes()


def test_headers_over_the_parse_bound_are_not_read(tmp_path: Path) -> None:
    path = tmp_path / "big-header.safetensors"
    header_len = chunker.MAX_SAFETENSORS_HEADER + 8
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", header_len) + b"{" + b" " * (header_len - 2) + b"}" + b"\0" * 64)
    assert chunker.segments(path, path.stat().st_size) == [(0, path.stat().st_size)]


@given(st.integers(0, 300), st.integers(1, 300))
def test_cut_hints_never_exceed_the_cap(count: int, cap: int) -> None:
    header = {f"t{i}": {"data_offsets": [i, i + 1]} for i in range(count)}
    old = chunker.MAX_CUT_HINTS
    chunker.MAX_CUT_HINTS = cap
    try:
        cuts = chunker.safetensors_cuts(16, header, 8 + 16 + count + 1)
        data, _ = gguf_bytes([(f"t{i}", b"\x07" * 32) for i in range(min(count, 40))])
        gcuts = chunker.gguf_cuts(data, len(data))
    finally:
        chunker.MAX_CUT_HINTS = old
    assert len(cuts) <= cap
    assert (cuts != []) == (count <= cap)
    assert gcuts is not None and len(gcuts) <= cap


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=200 * 1024), min_size=1, max_size=12),
       st.integers(min_value=0, max_value=300))
def test_tensor_data_is_what_follows_the_header(tmp_path_factory, sizes: list[int], pad: int) -> None:  # noqa: ANN001
    """Chunks compressed at the tensor level (manifests.chunks.chunk_level) are tensor bytes
    only: no byte of the header is ever tensor data, every byte of a tensor of MIN_PIECE or
    more is, and a file that is not a model has none."""
    sizes = [2 * (s // 2 + 1) for s in sizes]
    path = tmp_path_factory.mktemp("t") / "m.safetensors"
    write_safetensors(path, [(f"t{i}" + "x" * pad, b"\x01" * s) for i, s in enumerate(sizes)])
    size = path.stat().st_size
    data_start = size - sum(sizes)
    pieces = chunker.segments(path, size)
    starts = [a for a, _ in pieces]
    for a, b in pieces:
        assert chunker.in_tensor_data(pieces, a) == chunker.in_tensor_data(pieces, b - 1)  # one level per piece
    assert not any(chunker.in_tensor_data(pieces, a) for a in starts if a < data_start)
    offset = data_start
    for s in sizes:
        if s >= chunker.MIN_PIECE:
            assert offset in starts and chunker.in_tensor_data(pieces, offset)
        offset += s
    other = path.with_name("notes.txt")
    other.write_bytes(b"{" + b"x" * size)
    assert not any(chunker.in_tensor_data(chunker.segments(other, size + 1), a) for a in range(0, size, 4096))
