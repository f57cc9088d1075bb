"""Writing chunk frames into pack files on the medium, and the export's resume journal.

A pack is written under a temporary name (``.NAME.tmp``, which a reader never looks at),
fsynced, renamed to ``packs/NAME`` and its folder fsynced; only then is it reported as
finished (and recorded in the export journal). A crash therefore leaves either a finished
pack or a temporary file that the next run deletes: nothing in between.

Packs are bounded (:data:`PACK_SIZE`) and placed on volumes as they are written, so that
no volume exceeds its budget.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

from manifests import limits
from manifests.bundle import PACKS_DIR, volume_dir_name
from manifests.durable import WRITE_FLAGS, fsync_dir, make_dirs, tmp_path, write_atomic
from manifests.errors import LimitError, UsageError

#: Pack size bound. Small enough that a killed export redoes little (work in flight is at
#: most one pack) and a FAT32 stick is happy; large enough that 4 TiB needs at most 32,768
#: files (half the format's 65,536 packs).
PACK_SIZE = 128 * 1024 * 1024


def pack_name(number: int) -> str:
    return f"pack-{number:05d}"


def pack_number(name: str) -> int | None:
    if name.startswith("pack-") and name[5:].isdigit():
        return int(name[5:])
    return None


@dataclass(frozen=True)
class Placed:
    """Where a stored chunk frame went."""

    id: str
    size: int
    stored: int
    offset: int


@dataclass
class FinishedPack:
    name: str
    volume: int
    size: int
    chunks: list[Placed] = field(default_factory=list)
    #: BLAKE3 of the pack file's bytes, hashed as they are written (None in a journal from
    #: before it was recorded): a resumed export checks a kept pack against it (:func:`pack_intact`)
    blake3: str | None = None


class PackWriter:
    """Appends frames to bounded packs, placing packs on volumes within a byte budget.

    ``out`` is the bundle folder; with ``volume_budget`` (bytes a volume may hold for packs)
    packs go to ``out/vol-NNN/packs``, else to ``out/packs``. ``on_finish`` is called with
    each pack once it is durable under its final name (the journal records it).

    Placement is decided at once on the caller's thread; the writes run in order on an I/O
    thread and each finished pack's fsync, rename and report on a sync thread, so the disk
    works while the next chunks are cut and compressed. At most ``max_queued`` bytes wait for
    the disk (the export's share of the memory budget, :func:`manifests.budget.export_sizes`).
    """

    def __init__(self, out: Path, *, volume_budget: int | None, on_finish: Callable[[FinishedPack], None],
                 pack_size: int = PACK_SIZE, first_number: int = 1, volume: int = 1,
                 volume_used: int = 0, max_queued: int = 24 * 1024 * 1024) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.out = out
        self.budget = volume_budget
        self.on_finish = on_finish
        self.max_queued = max_queued
        self.pack_size = pack_size
        self.number = first_number
        self.volume = volume
        self.volume_used = volume_used
        self._fd: int | None = None
        self._hash: Any = None  # the open pack's BLAKE3, updated on the I/O thread
        self._tmp: Path | None = None
        self._current: FinishedPack | None = None
        self._cap = 0
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferry-pack-io")
        self._sync = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ferry-pack-sync")
        self._synced: list[Any] = []  # futures of packs being made durable, in order
        self._dirs: set[Path] = set()  # pack folders whose renames close() makes durable
        self._queue: list[tuple[Any, int]] = []  # (future, bytes) in submission order
        self._queued = 0

    def packs_dir(self, volume: int) -> Path:
        return (self.out / volume_dir_name(volume) if self.budget is not None else self.out) / PACKS_DIR

    def _open(self, frame_len: int) -> None:
        if self.budget is not None:
            if frame_len > self.budget:
                raise UsageError(f"a chunk frame of {frame_len} bytes does not fit a volume; "
                                 "give a larger --max-volume-size")
            if self.budget - self.volume_used < frame_len:
                self.volume += 1
                self.volume_used = 0
                if self.volume > limits.MAX_VOLUMES:
                    raise LimitError(f"the bundle needs more than {limits.MAX_VOLUMES} volumes; "
                                     "give a larger --max-volume-size")
            self._cap = min(self.pack_size, self.budget - self.volume_used)
        else:
            self._cap = self.pack_size
        folder = self.packs_dir(self.volume)
        make_dirs(folder)
        name = pack_name(self.number)
        self._tmp = tmp_path(folder / name)
        self._fd = os.open(self._tmp, WRITE_FLAGS, 0o644)
        self._hash = blake3.blake3(max_threads=1)
        self._current = FinishedPack(name=name, volume=self.volume, size=0)

    def _submit(self, nbytes: int, fn: Callable[..., None], *args: Any) -> None:
        self._queue.append((self._io.submit(fn, *args), nbytes))
        self._queued += nbytes
        while self._queue and (self._queued > self.max_queued or self._queue[0][0].done()):
            fut, n = self._queue.pop(0)
            self._queued -= n
            fut.result()  # raises the I/O thread's error here
        while self._synced and self._synced[0].done():
            self._synced.pop(0).result()  # and the sync thread's

    @staticmethod
    def _write(fd: int, frame: bytes, digest: Any) -> None:
        """On the I/O thread: write one frame and add it to its pack's BLAKE3 (about 0.13 s
        of CPU per GiB stored, beside the write; it spares a resumed export decompressing
        every kept pack: :func:`pack_intact`)."""
        digest.update(frame)
        view = memoryview(frame)
        while view:
            view = view[os.write(fd, view):]

    def append(self, chunk_id: str, size: int, frame: bytes) -> tuple[str, Placed]:
        """Queue one frame; returns the pack name and where in it (final once the pack is finished)."""
        if self._current is not None and self._current.size + len(frame) > self._cap:
            self.finish()
        if self._current is None:
            self._open(len(frame))
        assert self._fd is not None and self._current is not None
        placed = Placed(id=chunk_id, size=size, stored=len(frame), offset=self._current.size)
        self._current.size += len(frame)
        self._current.chunks.append(placed)
        self._submit(len(frame), self._write, self._fd, frame, self._hash)
        return self._current.name, placed

    def finish(self) -> None:
        """Close the open pack; the I/O thread makes it durable under its final name, then
        reports it. Packs are reported (journaled) strictly in order."""
        if self._current is None:
            return
        assert self._fd is not None and self._tmp is not None
        job = (self._fd, self._tmp, self._current, self._hash)
        self._fd, self._tmp, self._current, self._hash = None, None, None, None
        self.volume_used += job[2].size
        self.number += 1
        self._submit(0, self._hand_over, *job)

    def _hand_over(self, fd: int, tmp: Path, pack: FinishedPack, digest: Any) -> None:
        """On the I/O thread, after the pack's last write: fsync it on the sync thread while
        the I/O thread goes on writing the next pack."""
        pack.blake3 = digest.hexdigest()
        self._synced.append(self._sync.submit(self._make_durable, fd, tmp, pack))

    def _make_durable(self, fd: int, tmp: Path, pack: FinishedPack) -> None:
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        final = tmp.with_name(pack.name)
        os.replace(tmp, final)
        # The folder is fsynced once, in close(): a rename lost to a power cut only means
        # the pack is redone (the journal line naming it finds no file).
        self._dirs.add(final.parent)
        self.on_finish(pack)

    def close(self) -> None:
        """Finish the open pack and wait until every pack is durable and reported."""
        self.finish()
        while self._queue:
            fut, n = self._queue.pop(0)
            self._queued -= n
            fut.result()
        self._io.shutdown()
        self._sync.shutdown()
        for fut in self._synced:
            fut.result()
        for d in sorted(self._dirs):
            fsync_dir(d)

    def abort(self) -> None:
        """Stop without finishing the open pack (its temporary file is deleted by the next
        run); packs already finished are still made durable and reported."""
        fd = self._fd
        self._fd = None
        self._io.shutdown(wait=True)
        self._sync.shutdown(wait=True)
        if fd is not None:
            os.close(fd)


# --------------------------------------------------------------------------- resume journal

JOURNAL_DIR = ".ferry-export"
JOURNAL_NAME = "journal.jsonl"
#: ``OUT/.ferry-export/lock``: held by the export writing OUT (:func:`manifests.locking.acquire`).
MEDIUM_LOCK = "lock"


@dataclass(frozen=True)
class JournalHeader:
    """What must stay the same when an export is resumed."""

    fingerprint: str
    bundle_id: str
    sequence: int
    created: str


class Journal:
    """``OUT/.ferry-export/journal.jsonl``: a header line, then one line per finished pack.

    Each line is appended after its pack is durable, so every pack the journal names is
    complete. A torn last line (a crash while appending) is ignored: that pack is
    then unknown and rewritten. The journal is removed once the manifest is written.
    """

    def __init__(self, out: Path) -> None:
        self.dir = out / JOURNAL_DIR
        self.path = self.dir / JOURNAL_NAME

    def read(self) -> tuple[JournalHeader, list[FinishedPack]] | None:
        import json

        try:
            lines = self.path.read_bytes().split(b"\n")
        except FileNotFoundError:
            return None
        try:
            head = json.loads(lines[0])
            header = JournalHeader(str(head["fingerprint"]), str(head["id"]), int(head["sequence"]),
                                   str(head["created"]))
        except (ValueError, KeyError, TypeError, IndexError):
            return None
        packs: list[FinishedPack] = []
        for line in lines[1:]:
            try:
                d = json.loads(line)
                digest = d.get("blake3")
                packs.append(FinishedPack(
                    name=str(d["name"]), volume=int(d["volume"]), size=int(d["size"]),
                    chunks=[Placed(str(c), int(s), int(st), int(o)) for c, s, st, o in d["chunks"]],
                    blake3=str(digest) if digest is not None else None))
            except (ValueError, KeyError, TypeError):
                break  # a torn last line ends the journal
        return header, packs

    def start(self, header: JournalHeader) -> None:
        import json

        make_dirs(self.dir)
        line = json.dumps({"fingerprint": header.fingerprint, "id": header.bundle_id,
                           "sequence": header.sequence, "created": header.created}) + "\n"
        write_atomic(self.path, line.encode(), "medium")

    def record(self, pack: FinishedPack) -> None:
        """Append a finished pack. Not fsynced: the pack itself is durable before its line is
        written, so a line lost to a power cut only means that pack is written again."""
        import json

        doc: dict[str, Any] = {"name": pack.name, "volume": pack.volume, "size": pack.size}
        if pack.blake3 is not None:
            doc["blake3"] = pack.blake3
        doc["chunks"] = [[c.id, c.size, c.stored, c.offset] for c in pack.chunks]
        line = json.dumps(doc, separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def rewrite(self, header: JournalHeader, packs: list[FinishedPack]) -> None:
        """Replace the journal with ``header`` and the packs that passed their check."""
        self.start(header)
        for p in packs:
            self.record(p)

    def remove(self) -> None:
        """Delete the journal, and the medium's lock file (its holder still holds the lock until
        it closes the file), then the folder: a finished bundle keeps no trace of the export."""
        for path in (self.path, tmp_path(self.path), self.dir / MEDIUM_LOCK):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        try:
            self.dir.rmdir()
        except FileNotFoundError:
            pass
        fsync_dir(self.dir.parent)


def pack_intact(path: Path, pack: FinishedPack) -> bool:
    """Whether a finished pack may be kept on resume: it has its recorded size and, when the
    journal recorded its BLAKE3, its bytes hash to it (read once, hashed on every core: about
    a tenth of a second per GiB here); else (a journal without it) every chunk frame it
    recorded still decompresses to its id (the edge's check, five times as costly).

    Args:
        path: the pack file; pack: what the journal recorded of it.
    Returns:
        True to keep it; False to delete and write it again (also when it cannot be read).
    """
    from manifests.chunks import decompress_chunk
    from manifests.errors import VerificationError

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_size != pack.size:
            return False
        if pack.blake3 is not None:
            return pack.size > 0 and _file_blake3(fd, pack.size) == pack.blake3
        for c in pack.chunks:
            decompress_chunk(os.pread(fd, c.stored, c.offset), chunk_id=c.id, size=c.size)
        return True
    except (VerificationError, OSError, ValueError):
        return False
    finally:
        os.close(fd)


def _file_blake3(fd: int, size: int) -> str:
    """BLAKE3 of an open file's ``size`` bytes, mapped and hashed on every core."""
    import mmap

    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as m:
        return blake3.blake3(m, max_threads=blake3.blake3.AUTO).hexdigest()
