"""Cutting content into chunks: FastCDC, with cuts forced at tensor boundaries.

Content-defined chunking (FastCDC 2020 via ``pyfastcdc``) finds the same cut points in the
same bytes wherever they sit in a file, so a new model version shares every unchanged chunk
with the old one. For safetensors files we also cut where each tensor's data begins: a
changed tensor then changes only the chunks inside it, never a neighbour's, which is what
keeps a delta bundle for "10% of the tensors changed" near 10%. Tiny tensors (norms, biases)
are coalesced with their neighbours so that no forced piece is smaller than the minimum
chunk size. GGUF is chunked by content alone.

The pure parts (:func:`safetensors_cuts`, :func:`coalesce`) are kept apart from the I/O.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pyfastcdc

from manifests import limits

MiB = 1 << 20
MIN_CHUNK = 1 * MiB
AVG_CHUNK = 4 * MiB
MAX_CHUNK = min(16 * MiB, limits.MAX_CHUNK_SIZE)
#: Largest safetensors header we parse for boundaries (the format caps it at 100 MB).
MAX_SAFETENSORS_HEADER = 100_000_000

_cdc = pyfastcdc.FastCDC(AVG_CHUNK, min_size=MIN_CHUNK, max_size=MAX_CHUNK)


def safetensors_cuts(header_len: int, header: object, size: int) -> list[int]:
    """Offsets in the file where tensor data begins, from a parsed safetensors header.

    Returns [] for anything that is not a well-formed header (the file is then chunked by
    content alone: boundaries are an optimisation, never a requirement).
    """
    if not isinstance(header, dict):
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


def coalesce(cuts: list[int], size: int, min_gap: int = MIN_CHUNK) -> list[tuple[int, int]]:
    """Split ``[0, size)`` at ``cuts``, dropping cuts that would leave a piece under ``min_gap``
    (tiny tensors join the next piece). Returns (start, end) pieces covering the whole."""
    pieces: list[tuple[int, int]] = []
    start = 0
    for cut in sorted(set(cuts)):
        if cut - start >= min_gap and size - cut >= 1:
            pieces.append((start, cut))
            start = cut
    if size > start or not pieces:
        pieces.append((start, size))
    return pieces


def segments(path: Path, size: int) -> list[tuple[int, int]]:
    """The pieces of a local file that are chunked independently (see the module docstring)."""
    if size < 8:
        return [(0, size)]
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            (header_len,) = struct.unpack("<Q", head)
            if not 2 <= header_len <= min(MAX_SAFETENSORS_HEADER, size - 8):
                return [(0, size)]
            first = f.read(1)
            if first != b"{":
                return [(0, size)]
            header = json.loads(first + f.read(header_len - 1))
    except (OSError, ValueError, struct.error, RecursionError):
        return [(0, size)]
    return coalesce(safetensors_cuts(header_len, header, size), size)


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
        for data in _accepted(window, last):
            yield data
            accepted += len(data)
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
