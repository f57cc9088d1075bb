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
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

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


#: Bytes cut at a time. A chunk is accepted from a window only when the FastCDC decision
#: for it (which looks at most MAX_CHUNK bytes ahead) lies wholly inside the window, so the
#: cuts are exactly those of cutting the whole piece at once, with memory bounded. Just
#: under 32 MiB, so that glibc (tuned by the exporter) reuses heap memory for it.
WINDOW = 2 * MAX_CHUNK - 64 * 1024


def _accepted(window: bytes, last: bool) -> Iterator[memoryview]:
    """The chunks of ``window`` that cutting the whole would also give (all of them if ``last``).

    Chunks are views into ``window``: no copy, and the window lives as long as they do."""
    for c in _cdc.cut_buf(memoryview(window)):
        if not last and c.offset + MAX_CHUNK > len(window):
            return
        yield c.data


def _cut_at(fd: int, begin: int, end: int) -> Iterator[memoryview]:
    """Chunks of bytes [begin, end) of a file, read window by window with pread: the bytes
    after the last accepted chunk are simply read again with the next window."""
    pos = begin
    while pos < end:
        want = min(WINDOW, end - pos)
        window = os.pread(fd, want, pos)
        if not window:
            return
        last = len(window) < want or pos + len(window) == end
        for data in _accepted(window, last):
            yield data
            pos += len(data)
        if last:
            return


def cut_stream(stream: BinaryIO) -> Iterator[memoryview]:
    """Chunks of a stream read to its end (content-defined cuts only)."""
    carry = b""
    while True:
        want = WINDOW - len(carry)
        parts, got = [carry], 0
        while got < want:
            data = stream.read(want - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        last = got < want
        window = b"".join(parts)
        if not window:
            return
        accepted = 0
        for chunk in _accepted(window, last):
            yield chunk
            accepted += len(chunk)
        if last:
            return
        carry = window[accepted:]


def cut_file(f: BinaryIO, pieces: list[tuple[int, int]]) -> Iterator[tuple[int, memoryview]]:
    """(offset, bytes) of each chunk of an open file, cutting each piece independently.

    Stops early if the file is shorter than its pieces; the caller checks the total.
    """
    fd = f.fileno()
    for begin, end in pieces:
        offset = begin
        for data in _cut_at(fd, begin, end):
            yield offset, data
            offset += len(data)
        if offset != end:
            return


def read_range(path: Path, offset: int, length: int) -> bytes:
    """Exactly ``length`` bytes at ``offset`` (short if the file shrank)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)
