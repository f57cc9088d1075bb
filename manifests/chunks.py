"""How a chunk is stored: one zstd frame that declares its content size.

Pure functions: the hub compresses, the edge decompresses *at most* the size the signed
manifest declares and checks the BLAKE3 id, so a decompression bomb costs nothing and a
tampered or truncated frame is named, never applied.
"""

from __future__ import annotations

import zstandard

from . import limits
from .digest import blake3_hex
from .errors import ChunkError, FormatError

#: zstd level the exporter uses (as ``zstd -3``).
DEFAULT_LEVEL = 3


def compressor(level: int = DEFAULT_LEVEL) -> zstandard.ZstdCompressor:
    """A compressor whose frames carry their content size and a checksum-free body
    (integrity is the BLAKE3 id's job). One per thread: they are not thread-safe."""
    return zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)


def compress_chunk(raw: bytes | memoryview, cctx: zstandard.ZstdCompressor | None = None) -> bytes:
    """One chunk's stored form: a zstd frame that declares its content size.

    Args:
        raw: the chunk's bytes (at most MAX_CHUNK_SIZE); cctx: a compressor from
            :func:`compressor` (one per thread), or None for a new one.
    Returns:
        the frame (docs/bundle-format.md, Chunks).
    Raises:
        FormatError: ``raw`` is over MAX_CHUNK_SIZE.
    """
    if len(raw) > limits.MAX_CHUNK_SIZE:
        raise FormatError(f"chunk of {len(raw)} bytes is over the limit of {limits.MAX_CHUNK_SIZE}")
    return (cctx or compressor()).compress(raw)


def decompress_chunk(stored: bytes | memoryview, *, chunk_id: str, size: int,
                     dctx: zstandard.ZstdDecompressor | None = None) -> bytes:
    """Return the raw bytes of a stored chunk, or raise ChunkError naming it and why.

    The frame header must declare exactly ``size`` bytes (the manifest's figure, itself within
    MAX_CHUNK_SIZE) and set neither the content checksum flag nor a dictionary id
    (docs/bundle-format.md section 4), decompression is capped at ``size``, and the result must hash to ``chunk_id``.
    """
    if size > limits.MAX_CHUNK_SIZE:
        raise ChunkError(chunk_id, "size", f"chunk {chunk_id}: declared size {size} is over the limit")
    try:
        params = zstandard.get_frame_parameters(stored)
    except zstandard.ZstdError:
        raise ChunkError(chunk_id, "corrupt", f"chunk {chunk_id}: not a zstd frame (tampered or truncated)") from None
    if params.has_checksum or params.dict_id:  # one encoding: no checksum, no dictionary (section 4)
        raise ChunkError(chunk_id, "corrupt", f"chunk {chunk_id}: frame sets the content checksum flag or a dictionary id; "
                                "format 1 frames have neither")
    if params.content_size != size:
        raise ChunkError(chunk_id, "size", 
            f"chunk {chunk_id}: frame declares {params.content_size} bytes, manifest says {size}")
    d = dctx or zstandard.ZstdDecompressor()
    try:
        raw = d.decompress(stored, max_output_size=size) if size else b""
    except zstandard.ZstdError as exc:
        raise ChunkError(chunk_id, "corrupt", f"chunk {chunk_id}: corrupt zstd data ({exc})") from None
    if len(raw) != size:
        raise ChunkError(chunk_id, "size", f"chunk {chunk_id}: decompressed to {len(raw)} bytes, expected {size}")
    if blake3_hex(raw) != chunk_id:
        raise ChunkError(chunk_id, "digest", f"chunk {chunk_id}: content does not match its id (tampered)")
    return raw
