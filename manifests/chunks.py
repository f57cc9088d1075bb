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

#: zstd level the exporter uses for every chunk but tensor data (as ``zstd -3``): text, code,
#: binaries and image layers, where level 3 finds matches level 1 misses (``bench/level_bench.py``,
#: 4 MiB chunks: a tar of Python's standard library 0.242 of raw at level 3, 0.269 at level 1;
#: of /usr/bin 0.351 and 0.400).
DEFAULT_LEVEL = 3
#: zstd level for chunks of tensor data (a model file's weights, past its header). Weights have
#: no repeats to find: all zstd gains on them is the entropy coding of their exponent bytes,
#: which every level >= 1 does alike (``bench/level_bench.py``, 4 MiB chunks of fp16, bf16 and
#: fp32 values from N(0, 0.02): the same size within 0.15%, level 1 the smaller, at 1.37-1.39 GB/s
#: a core against 0.77-1.23 GB/s at level 3). bench/README.md, Goal 3, has the figures.
TENSOR_LEVEL = 1


def chunk_level(tensor_data: bool) -> int:
    """The zstd level ferry's exporter compresses a chunk with: :data:`TENSOR_LEVEL` for a
    chunk of tensor data (past a safetensors or GGUF file's header:
    ``bundler.chunker.in_tensor_data``), :data:`DEFAULT_LEVEL` for any other.

    The level is the writer's choice, not part of the format: any zstd frame that declares its
    size decodes the same (docs/bundle-format.md, section 4), so readers never see it. For a
    given source the choice is fixed, so a bundle's bytes are too.

    Args:
        tensor_data: whether every byte of the chunk is tensor data.
    Returns:
        a zstd compression level for :func:`compressor`.
    """
    return TENSOR_LEVEL if tensor_data else DEFAULT_LEVEL


def compressor(level: int = DEFAULT_LEVEL) -> zstandard.ZstdCompressor:
    """A compressor whose frames carry their content size and a checksum-free body
    (integrity is the BLAKE3 id's job). One per thread: they are not thread-safe.

    Args:
        level: zstd level (:func:`chunk_level`).
    """
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
