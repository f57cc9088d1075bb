"""Cutting content into chunks: FastCDC, with cuts forced at tensor boundaries.

Content-defined chunking (FastCDC 2020 via ``pyfastcdc``) finds the same cut points in the
same bytes wherever they sit in a file, so a new model version shares every unchanged chunk
with the old one. For safetensors files we also cut where each tensor's data begins: a
changed tensor then changes only the chunks inside it, never a neighbour's, which is what
keeps a delta bundle for "10% of the tensors changed" near 10%. Every tensor of at least
:data:`MIN_PIECE` (64 KiB, the chunk size of Hugging Face's Xet storage) is a piece of its own,
whatever the FastCDC minimum, so a changed 512 KiB tensor is one 512 KiB chunk and drags no
neighbour along; runs of smaller tensors (norms, biases) are grouped into pieces of about
64 KiB, and a lone small tensor between two large ones is a piece of its own. The chunk count
thus grows by at most the tensor count, never with the model's size (docs/bundle-format.md,
section 4). GGUF files (llama.cpp) get the same treatment from their binary header.

Headers come from files the operator chose but may be malformed: anything odd about one
means content-defined chunking only, never an error (a file that looks like a model but isn't
is still a file to carry). The pure parts (:func:`safetensors_cuts`, :func:`gguf_cuts`,
:func:`coalesce`) are kept apart from the I/O.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Protocol

import pyfastcdc

from manifests import budget, limits

MiB = 1 << 20
MIN_CHUNK = 1 * MiB
AVG_CHUNK = 4 * MiB
MAX_CHUNK = min(16 * MiB, limits.MAX_CHUNK_SIZE)
#: Smallest piece a run of small tensors is grouped into (see :func:`coalesce`).
MIN_PIECE = 64 * 1024
#: Most tensor-boundary cut hints one file may give. Boundaries are an optimisation (a delta
#: stays proportional to what changed); a file with more tensors than this is chunked by
#: content alone, so that no header makes the exporter hold a Python object per tensor.
#: 65,536 covers every published checkpoint shard (hundreds to a few thousand tensors each).
MAX_CUT_HINTS = 65_536
#: Largest safetensors header parsed for boundaries (the format allows 100 MB) at the default
#: memory budget: its share of the budget (:func:`manifests.budget.export_sizes`, about 2.8 MiB,
#: parsed into about ten times that in Python objects). Larger headers: content cuts only.
MAX_SAFETENSORS_HEADER = budget.export_sizes().max_header
#: How much of a GGUF file is read for its header, step by step until it fits: vocabularies
#: make headers a few MiB; past the last step (or the header's share of the memory budget,
#: ten times the safetensors header cap: about 28 MiB at the default) the file is chunked by
#: content alone.
GGUF_HEADER_READS = (4 * MiB, 16 * MiB, 64 * MiB)
GGUF_MAGIC = b"GGUF"

_cdc = pyfastcdc.FastCDC(AVG_CHUNK, min_size=MIN_CHUNK, max_size=MAX_CHUNK)


def safetensors_cuts(header_len: int, header: object, size: int) -> list[int]:
    """Offsets in the file where tensor data begins, from a parsed safetensors header.

    Args:
        header_len: the header's length in bytes (the file's first 8 bytes, little-endian).
        header: the parsed JSON header.
        size: the file's size in bytes.
    Returns:
        Sorted byte offsets, at most :data:`MAX_CUT_HINTS`; [] for anything that is not a
        well-formed header or names more tensors than that (the file is then chunked by
        content alone: boundaries are an optimisation, never a requirement).
    """
    if not isinstance(header, dict) or len(header) - ("__metadata__" in header) > MAX_CUT_HINTS:
        return []
    base = 8 + header_len
    cuts = {base}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            return []
        start, end = offsets
        if not 0 <= start <= end or base + end > size:
            return []
        cuts.add(base + start)
    return sorted(c for c in cuts if 0 < c < size)


# GGUF value types (ggml's gguf_type): fixed sizes; 8 is a string, 9 an array.
_GGUF_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY, _GGUF_UINT32 = 8, 9, 4
_GGUF_MAX_NESTING = 4  # arrays of arrays, bounded so a crafted header cannot recurse deeply
_GGUF_DEFAULT_ALIGNMENT = 32
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


class _Malformed(Exception):
    """The header claims more than the file holds, or breaks a rule of the format."""


class _Short(Exception):
    """The header runs on past the bytes read so far (but not past the file)."""


class _Cursor:
    """Reads a GGUF header front to back; every length is checked against the file size
    before it is used, so no claimed count or length ever sizes an allocation or a loop."""

    def __init__(self, head: bytes, size: int) -> None:
        self.head, self.size, self.pos = head, size, 0

    def skip(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > self.size:
            raise _Malformed
        if start + n > len(self.head):
            raise _Short
        self.pos = start + n
        return start

    def u32(self) -> int:
        return int(_U32.unpack_from(self.head, self.skip(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack_from(self.head, self.skip(8))[0])

    def string(self) -> bytes:
        n = self.u64()
        start = self.skip(n)
        return self.head[start:start + n]

    def value(self, kind: int, depth: int = 0) -> None:
        """Skip one metadata value of type ``kind``."""
        if kind in _GGUF_FIXED:
            self.skip(_GGUF_FIXED[kind])
        elif kind == _GGUF_STRING:
            self.skip(self.u64())
        elif kind == _GGUF_ARRAY and depth < _GGUF_MAX_NESTING:
            item, count = self.u32(), self.u64()
            if item in _GGUF_FIXED:
                self.skip(count * _GGUF_FIXED[item])
                return
            # Each string or array item takes at least 8 bytes: a count the file cannot
            # hold is refused before the loop, which the bytes read bound anyway.
            if count * 8 > self.size - self.pos:
                raise _Malformed
            for _ in range(count):
                self.value(item, depth + 1)
        else:
            raise _Malformed


def gguf_cuts(head: bytes, size: int) -> list[int] | None:
    """Offsets in a GGUF file (v2/v3, little-endian) where tensor data begins, from the first
    bytes of the file (``head``) and its size.

    Returns ``None`` when the header runs on past ``head`` (read more and call again) and []
    for anything that is not a well-formed header or that has more than
    :data:`MAX_CUT_HINTS` tensors. Tensor sizes are not needed: each tensor
    ends where the next begins, so the starts are the cuts.
    """
    cur = _Cursor(head, size)
    try:
        cur.skip(4)
        if head[:4] != GGUF_MAGIC or cur.u32() not in (2, 3):
            return []
        tensor_count, kv_count = cur.u64(), cur.u64()
        if tensor_count > MAX_CUT_HINTS:
            return []
        # A key/value takes at least 8 + 4 + 1 bytes, a tensor info 8 + 4 + 4 + 8.
        if kv_count * 13 + tensor_count * 24 > size - cur.pos:
            return []
        alignment = _GGUF_DEFAULT_ALIGNMENT
        for _ in range(kv_count):
            key, kind = cur.string(), cur.u32()
            if key == b"general.alignment":
                if kind != _GGUF_UINT32:
                    return []
                alignment = cur.u32()
                if alignment == 0 or alignment & (alignment - 1):
                    return []
            else:
                cur.value(kind)
        offsets: list[int] = []
        for _ in range(tensor_count):
            cur.string()
            cur.skip(8 * cur.u32())  # dims
            cur.u32()  # ggml type
            offsets.append(cur.u64())
        data = cur.pos + -cur.pos % alignment
        if data > size or any(o % alignment or o > size - data for o in offsets):
            return []
    except _Short:
        return [] if len(head) >= size else None
    except _Malformed:
        return []
    return sorted(c for c in {data, *(data + o for o in offsets)} if 0 < c < size)


def coalesce(cuts: list[int], size: int, min_gap: int = MIN_PIECE) -> list[tuple[int, int]]:
    """Split ``[0, size)`` at tensor boundaries into the pieces that are chunked independently.

    A cut is dropped only when both the bytes since the last kept cut and the bytes up to the
    next given cut are under ``min_gap``: a run of small tensors is grouped into pieces of about
    ``min_gap``, while a tensor of ``min_gap`` bytes or more always begins and ends a piece (it
    never shares a chunk with a neighbour), and a lone small tensor between two large ones is a
    piece of its own.

    Args:
        cuts: byte offsets where tensors begin (any order; those outside ``(0, size)`` ignored).
        size: the file's size in bytes.
        min_gap: bytes; the size runs of small tensors are grouped up to.
    Returns:
        (start, end) byte ranges, in order, covering ``[0, size)`` exactly (one empty piece
        for an empty file). Every piece but the last is followed by one of at least
        ``min_gap`` bytes or is itself that long, so there are at most
        ``2 * size // min_gap + 2`` pieces.
    """
    points = sorted({c for c in cuts if 0 < c < size})
    points.append(size)
    pieces: list[tuple[int, int]] = []
    start = 0
    for cut, nxt in zip(points, points[1:]):
        if cut - start >= min_gap or nxt - cut >= min_gap:
            pieces.append((start, cut))
            start = cut
    pieces.append((start, size))
    return pieces


def segments(path: Path, size: int, max_header: int | None = None) -> list[tuple[int, int]]:
    """The pieces of a local file that are chunked independently (see the module docstring).

    Args:
        path: the file; size: its size in bytes.
        max_header: largest safetensors header parsed, in bytes (default
            :data:`MAX_SAFETENSORS_HEADER`; ``--memory-budget`` lowers it).
    Returns:
        (start, end) byte ranges covering the file (:func:`coalesce`); the whole file as one
        piece when it is not a model file or its header cannot be used.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            limit = MAX_SAFETENSORS_HEADER if max_header is None else max_header
            cuts = (_gguf_file_cuts(f, size, limit * budget.HEADER_PARSE_FACTOR) if head[:4] == GGUF_MAGIC
                    else _safetensors_file_cuts(f, head, size, limit))
    except (OSError, ValueError, struct.error, RecursionError):
        return [(0, size)]
    return coalesce(cuts, size)


def in_tensor_data(pieces: list[tuple[int, int]], offset: int) -> bool:
    """Whether the chunk at ``offset`` of a file cut into ``pieces`` (:func:`segments`) is
    tensor data.

    Pieces come from a model file's header (safetensors or GGUF) or not at all: the first piece
    holds the header (and the tensors grouped with it, if they are small), every later one is
    tensor data only, and a chunk never spans two pieces. A file of one piece (not a model
    file, an unusable header, or a model too small to split) has none, as far as the exporter
    knows.

    Args:
        pieces: consecutive (start, end) byte ranges of one file, as :func:`segments` gives.
        offset: where a chunk of it begins, in bytes.
    Returns:
        True from the second piece on: the exporter compresses such a chunk at
        ``manifests.chunks.TENSOR_LEVEL`` (:func:`manifests.chunks.chunk_level`).
    """
    return len(pieces) > 1 and offset >= pieces[1][0]


def _safetensors_file_cuts(f: BinaryIO, head: bytes, size: int, max_header: int) -> list[int]:
    if len(head) < 8:
        return []
    (header_len,) = struct.unpack("<Q", head)
    if not 2 <= header_len <= min(max_header, size - 8):
        return []
    text = f.read(header_len)
    if text[:1] != b"{" or text.count(b'"data_offsets"') > MAX_CUT_HINTS:
        return []  # counted before parsing: no object per tensor is ever built past the cap
    return safetensors_cuts(header_len, json.loads(text), size)


def _gguf_file_cuts(f: BinaryIO, size: int, most: int) -> list[int]:
    """Read the header in growing steps, each read whole, until it parses (so memory never
    exceeds the largest step, and no step exceeds ``most`` bytes: the header's share of the
    memory budget, as a safetensors header's parse)."""
    for want in [s for s in GGUF_HEADER_READS if s < most] + [most] if most < GGUF_HEADER_READS[-1] else GGUF_HEADER_READS:
        f.seek(0)
        cuts = gguf_cuts(f.read(min(want, size)), size)
        if cuts is not None:
            return cuts
    return []


#: Bytes of one cutting window. A chunk is accepted from a window when it ends before the
#: window does: FastCDC decides a cut from the bytes up to it alone (the gear hash is rolled
#: forward from the chunk's start, and the mask in force at a position depends on the distance
#: from that start, never on the bytes left), so a chunk that ends inside the window is exactly
#: the chunk that cutting the whole piece at once gives; the one that ends at the window's end
#: may have been cut short, and is cut again at the start of the other window (copied there,
#: not read again). A window holds more than a largest chunk, so every window but a piece's
#: last accepts at least one. Just under 32 MiB: two of them are ``manifests.budget.WINDOWS``.
WINDOW = 2 * MAX_CHUNK - 64 * 1024


class _Sink(Protocol):
    def update(self, data: bytes | memoryview) -> None: ...


def accepted(cdc: pyfastcdc.FastCDC, window: memoryview, last: bool) -> Iterator[memoryview]:
    """The chunks of ``window`` that cutting its whole piece at once would also give.

    Args:
        cdc: the chunker (its min/avg/max sizes).
        window: bytes of a piece, from a chunk boundary on.
        last: whether the piece ends with ``window`` (then every chunk is accepted).
    Returns:
        Views into ``window``, in order: every chunk that ends before the window does (see
        :data:`WINDOW` for why those are exact), all of them if ``last``.
    """
    end = len(window)
    for c in cdc.cut_buf(window):
        if not last and c.offset + c.length >= end:
            return
        yield c.data


def _nothing() -> None:
    return None


def _no_views_kept(window: mmap.mmap) -> None:
    return None


class Cutter:
    """Cuts pieces of files and streams into chunks in two cutting windows, used in turn and
    kept for every piece of every file (anonymous maps of :data:`WINDOW` bytes, outside the C
    heap: no chunk-sized allocation, no copy of a chunk, no page fault after the first use).

    Chunks are handed out as views into a window, in order. Small pieces and files share a
    window; a piece that does not fit what is left of one continues in the other, and before
    a window is written again ``reuse(window)`` is called: the caller must then be done with
    every view of that window it was given (the exporter waits for the pool's work on them).
    The default ``reuse`` does nothing: a view is then valid until the next is asked for.

    Args:
        reuse: called with a window (an ``mmap.mmap``, which is each view's ``.obj``) before
            it is overwritten.
        cdc: the chunker (default: ferry's, 1/4/16 MiB); window: bytes of each window, more
            than ``cdc``'s largest chunk.
    """

    def __init__(self, reuse: Callable[[mmap.mmap], None] = _no_views_kept,
                 cdc: pyfastcdc.FastCDC | None = None, window: int = WINDOW) -> None:
        self.reuse, self.cdc, self.window = reuse, cdc or _cdc, window
        self.maps = (mmap.mmap(-1, window), mmap.mmap(-1, window))
        self.views = tuple(memoryview(m) for m in self.maps)
        self.current = 0  # the window being cut
        self.base = 0  # where the next bytes go in it: what is before is handed out

    def pieces(self, fill: Callable[[memoryview], int], lengths: Iterable[int | None],
               settle: Callable[[], None] = _nothing) -> Iterator[memoryview]:
        """Chunks of consecutive pieces of one byte source, each piece cut independently.

        Args:
            fill: copies the source's next bytes into the view it is given and returns how
                many (0 at its end); the source is read once, front to back.
            lengths: each piece's length in bytes, in order; ``None``: up to the source's end.
            settle: called when the chunks are all cut (a source that reads what it gave on
                another thread waits for it there).
        Returns:
            Views into the windows (see the class). Stops early when the source ends before a
            piece does: the caller checks the total.
        """
        window = self.window
        try:
            for length in lengths:
                unread, filled = length, 0  # the piece's bytes not yet cut: views[current][base:base + filled]
                while True:
                    need = window if unread is None else min(window, filled + unread)
                    if window - self.base < need:  # continue in the other window, the uncut bytes first
                        other = 1 - self.current
                        self.reuse(self.maps[other])
                        self.views[other][:filled] = self.views[self.current][self.base:self.base + filled]
                        self.current, self.base = other, 0
                    view, start = self.views[self.current], self.base
                    want = window - start - filled if unread is None else min(window - start - filled, unread)
                    got = 0
                    while got < want:
                        n = fill(view[start + filled + got:start + filled + want])
                        if not n:
                            break
                        got += n
                    filled += got
                    if unread is not None:
                        unread -= got
                    last = got < want or unread == 0
                    for data in accepted(self.cdc, view[start:start + filled], last):
                        yield data
                        self.base += len(data)
                        filled -= len(data)
                    if got < want:
                        return  # the source ended
                    if last:
                        break
        finally:
            settle()

    def stream(self, stream: BinaryIO) -> Iterator[memoryview]:
        """Chunks of a stream read to its end (content-defined cuts only)."""
        readinto = getattr(stream, "readinto", None)
        if readinto is None:
            def readinto(view: memoryview) -> int:
                data = stream.read(len(view))
                view[:len(data)] = data
                return len(data)
        return self.pieces(readinto, [None])

    def file(self, f: BinaryIO, pieces: list[tuple[int, int]], sink: _Sink | None = None,
             hash_thread: bool = True) -> Iterator[tuple[int, memoryview]]:
        """(offset, bytes) of each chunk of an open file, cutting each piece independently.

        Args:
            f: the file, open for reading (read with ``pread``: its position is not used).
            pieces: consecutive (start, end) byte ranges (:func:`segments`).
            sink: given every byte of the pieces once, in order (the whole-file BLAKE3 and
                sha256, :class:`manifests.digest.Hasher`): on a hashing thread of its own with
                ``hash_thread``, while the window is cut, else on the caller's; when the
                iterator is exhausted or closed, every byte read has been given.
        Returns:
            (offset in the file, view) per chunk (see the class for how long a view is valid).
            Stops early if the file is shorter than its pieces; the caller checks the total.
        Raises:
            ValueError: the pieces are not consecutive.
            OSError: reading failed.
        """
        if not pieces:
            return
        for (_, end), (start, _) in zip(pieces, pieces[1:]):
            if end != start:
                raise ValueError("pieces must be consecutive")
        source = _FileSource(f.fileno(), pieces[0][0], pieces[-1][1], sink, hash_thread)
        try:
            offset = pieces[0][0]
            for data in self.pieces(source.fill, [end - start for start, end in pieces], source.settle):
                yield offset, data
                offset += len(data)
        finally:
            source.close()


class _FileSource:
    """Bytes ``[begin, end)`` of an open file for :meth:`Cutter.pieces`, read with ``pread``
    straight into the window, the kernel asked to read the next window ahead meanwhile
    (``POSIX_FADV_WILLNEED``), and handed to ``sink``: on a hashing thread (BLAKE3 and sha256
    release the GIL) while the window is cut, which the next read waits for, or at once."""

    def __init__(self, fd: int, begin: int, end: int, sink: _Sink | None, thread: bool) -> None:
        self.fd, self.pos, self.end, self.sink = fd, begin, end, sink
        self.hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferry-hash") if sink and thread else None
        self.pending: Future[None] | None = None

    def fill(self, view: memoryview) -> int:
        self.settle()  # in order, and before the window it reads can be overwritten
        n = os.preadv(self.fd, [view[:max(0, min(len(view), self.end - self.pos))]], self.pos)
        self.pos += n
        if n and self.pos < self.end and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, self.pos, min(WINDOW, self.end - self.pos), os.POSIX_FADV_WILLNEED)
        if n and self.hashing is not None:
            assert self.sink is not None
            self.pending = self.hashing.submit(self.sink.update, view[:n])
        elif n and self.sink is not None:
            self.sink.update(view[:n])
        return n

    def settle(self) -> None:
        """Wait until the sink has every byte read so far (re-raising its error)."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def close(self) -> None:
        if self.hashing is not None:
            self.hashing.shutdown(wait=True)


def read_range(path: Path, offset: int, length: int) -> bytes:
    """Exactly ``length`` bytes at ``offset`` (short if the file shrank)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)
