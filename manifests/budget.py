"""The memory budget: one number from which export's and import's queues and buffers are sized.

Peak memory of ``ferry export`` and ``ferry import`` must not grow with the model's size, its
tensor sizes, its safetensors header or the number of cores (issue 19, goal 2). Every buffer
that could grow is therefore sized here from one budget, :data:`MEMORY_BUDGET` (256 MiB), which
``--memory-budget`` lowers on small hosts (down to :data:`MIN_MEMORY_BUDGET`). What is left of
the budget once the fixed parts are paid (:func:`export_sizes`, :func:`import_sizes`) is
shared out; docs/spec.md, *Speed and memory*, lists the terms and the measured peaks.

Not budgeted: the parsed manifest of the bundle (about 1 KiB per chunk, so a few MiB for the
tens of thousands of chunks of a 100 GB model), and the chunk cache rows sqlite pages in.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError
from .limits import MAX_CHUNK_SIZE, MAX_STORED_CHUNK_SIZE, MiB

#: The default bound on peak resident memory, in bytes.
MEMORY_BUDGET = 256 * MiB
#: The lowest budget accepted: the fixed parts plus a little room for each share.
MIN_MEMORY_BUDGET = 192 * MiB
#: The interpreter, its libraries (zstandard, blake3, cryptography, typer/rich) and sqlite's
#: page caches, measured at about 40 MiB resident on CPython 3.11; rounded up.
RUNTIME = 48 * MiB
#: The exporter's cutting windows: two largest chunks each (a FastCDC decision looks one chunk
#: ahead), both kept for the whole run: one is cut while the kernel reads the next ahead, and
#: chunks leave them as views that the hash/compress pool releases before the window is reused.
WINDOWS = 2 * 2 * MAX_CHUNK_SIZE
#: One chunk and its frame being handled on the cutting thread.
ONE_CHUNK = MAX_CHUNK_SIZE + MAX_STORED_CHUNK_SIZE
#: A zstd level-3 compression context once it has compressed a 16 MiB chunk (measured 3.5 MiB).
ZSTD_CONTEXT = 4 * MiB
#: Parsing a safetensors header costs about this many times its size in Python objects.
HEADER_PARSE_FACTOR = 10
#: The most raw (decompressed, checked) bytes an import from a registry fetches ahead and holds
#: (:class:`importer.link.RegistryPacks`); :func:`import_sizes` gives less when the budget is small.
FETCH_AHEAD = 8 * MiB


@dataclass(frozen=True)
class ExportSizes:
    """What :func:`export_sizes` gives the exporter (bytes, except ``workers``)."""

    in_flight: int  # raw bytes handed to the hashing/compressing pool and not yet written
    queued: int  # frames queued for the pack writer's I/O thread
    workers: int  # hashing/compressing threads (each keeps a zstd context)
    max_header: int  # largest safetensors header parsed for tensor boundaries
    trim: int  # free heap the C allocator may keep for reuse (glibc M_TRIM_THRESHOLD)


@dataclass(frozen=True)
class ImportSizes:
    """What :func:`import_sizes` gives the importer."""

    read_ahead: int  # chunks decompressed and checked ahead of the one being written
    workers: int  # decompressing threads
    max_header: int  # largest safetensors header parsed for the published model's facts
    fetch_ahead: int  # raw bytes a registry import fetches, checks and holds ahead (FETCH_AHEAD at most)


def check(budget: int) -> int:
    """``budget`` if it is one ferry can keep to.

    Args:
        budget: bytes (``--memory-budget``).
    Returns:
        ``budget``.
    Raises:
        UsageError: below :data:`MIN_MEMORY_BUDGET`.
    """
    if budget < MIN_MEMORY_BUDGET:
        raise UsageError(f"--memory-budget must be at least {MIN_MEMORY_BUDGET // MiB} MiB "
                         f"(ferry's fixed needs: a 32 MiB cutting window, a 16 MiB chunk and its frame, the runtime)")
    return budget


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask, so a process pinned to 2 of 16 cores
    sizes for 2), at least 1."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def export_sizes(budget: int = MEMORY_BUDGET, cpus: int = 1) -> ExportSizes:
    """Size the exporter's buffers from ``budget``.

    The fixed parts (:data:`RUNTIME`, :data:`WINDOWS`, :data:`ONE_CHUNK`) come first; the rest,
    *free*, is shared so that the shares add up to at most it: a sixth for raw bytes in flight
    in the pool (counted twice: each may turn into a frame as large before it is written), an
    eighth for frames queued for writing, a sixth for the workers' zstd contexts (so the
    budget, not the core count, caps the pool: raise it to use more cores), a fortieth for the
    safetensors header (parsed at :data:`HEADER_PARSE_FACTOR` times its size, so a quarter of
    *free*), and an eighth for freed heap the C allocator keeps for reuse
    (measured: without that cap, retained heap is where peaks overshoot). Each queue may
    overshoot its share by one chunk or frame, which :data:`ONE_CHUNK` covers. At the default
    256 MiB: 18 MiB in flight, 13 MiB queued, 4 workers, a 2.8 MiB header, 13 MiB kept.

    Args:
        budget: bytes, at least :data:`MIN_MEMORY_BUDGET` (:func:`check`).
        cpus: usable cores; the pool never has more workers.
    Returns:
        The sizes, each at least 1 MiB (or one worker): a small budget is slower, never stuck
        (a queue always takes one chunk or frame).
    """
    free = max(0, budget - RUNTIME - WINDOWS - ONE_CHUNK)
    return ExportSizes(
        in_flight=max(MiB, free // 6),
        queued=max(MiB, free // 8),
        workers=max(1, min(cpus, free // 6 // ZSTD_CONTEXT)),
        max_header=max(MiB, min(8 * MiB, free // 40)),
        trim=max(MiB, free // 8),
    )


def import_sizes(budget: int = MEMORY_BUDGET, cpus: int = 1) -> ImportSizes:
    """Size the importer's read-ahead from ``budget``.

    Each chunk read ahead holds its frame and its raw bytes (:data:`ONE_CHUNK` at most); half
    of what is left after :data:`RUNTIME` and the chunk being written goes to read-ahead, at
    most 4 chunks (more does not help: one thread writes), the other half to parsing a
    safetensors header when the model is published (ModelPack facts). A sixteenth of what is
    left, at most :data:`FETCH_AHEAD`, is taken from the read-ahead half for a registry import's
    fetch-ahead (``fetch_ahead``, raw bytes: the fetcher hands chunks over decompressed and
    checked, so they are counted at their raw size, the larger one); the fetcher may hold one
    raw chunk beyond it and receives one chunk (:data:`ONE_CHUNK`) meanwhile, while the
    read-ahead window then holds raw bytes only (no frames: half of each chunk's share), which
    covers that. At 256 MiB: 2 workers, 2 chunks ahead, an 8 MiB header, 8 MiB fetched ahead;
    at 192 MiB: 1 worker, 1 chunk ahead, 6.9 MiB fetched ahead.

    Args:
        budget: bytes, at least :data:`MIN_MEMORY_BUDGET`.
        cpus: usable cores.
    Returns:
        The sizes, at least one chunk ahead and one worker.
    """
    free = max(0, budget - RUNTIME - ONE_CHUNK)
    fetch = max(MiB, min(FETCH_AHEAD, free // 16))
    ahead = max(1, min(4, (free // 2 - fetch) // ONE_CHUNK))
    return ImportSizes(read_ahead=ahead, workers=max(1, min(2, cpus, ahead)),
                       max_header=max(MiB, min(8 * MiB, free // 2 // HEADER_PARSE_FACTOR)),
                       fetch_ahead=fetch)
