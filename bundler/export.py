"""``ferry export``: spec -> sources -> chunks -> dedupe -> packs -> volumes -> signed manifest.

The order of work is what makes the bundle trustworthy and resumable:

1. Everything that can be refused is checked before the medium is touched: the spec, the
   keys, the receipt, every source (paths, symlinks, registries), and free space.
2. Chunks are cut on the main thread and hashed and compressed by a small thread pool
   (BLAKE3 and zstd release the GIL), with a bounded number of bytes in flight so memory
   stays flat whatever the model size. A chunk seen before in this bundle, or held by the
   edge (``--since``), is not stored again.
3. Frames go into bounded packs (:mod:`bundler.packs`), written and fsynced on I/O threads;
   a finished pack is journaled once it is durable, so a rerun redoes at most the packs in
   flight (the one being written and the one being flushed).
4. The signature file and then ``manifest.json`` are written last into every volume; only
   then is the journal removed.

Core code reports through :class:`ferry.ui.Progress` and never prints.
"""

from __future__ import annotations

import os
from datetime import timedelta
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3 as _blake3

from manifests import __version__, canonical, limits
from manifests.bundle import MANIFEST_NAME, PACKS_DIR, SIGNATURE_NAME, VOLUME_PREFIX, read_bounded, volume_dir_name
from manifests.chunks import compress_chunk, compressor
from manifests.digest import Hasher, manifest_digest
from manifests.durable import fsync_dir, make_dirs, tmp_path, write_atomic
from manifests.errors import FerryError
from manifests.keys import KeyRef, load_signing_keys
from manifests.model import Artifact, Base, BundleInfo, Chunk, Entry, Manifest, Pack
from manifests.receipt import Receipt, receipt_digest
from manifests.signing import sign

from . import chunker
from .hubstate import FileKey, HubState
from .packs import (JOURNAL_DIR, PACK_SIZE, FinishedPack, Journal, JournalHeader, PackWriter, Placed, pack_intact,
                    pack_number)
from .sources import SourceArtifact, SourceFile
from .spec import Spec, load_spec

#: Raw bytes handed to the pool and not yet written: bounds memory (plus one chunk and its frame).
MAX_IN_FLIGHT = 32 * 1024 * 1024
#: Order of artifacts in the manifest, which is the edge's apply order.
KIND_ORDER = {"image": 0, "model": 1, "manifests": 2}


@dataclass(frozen=True)
class ExportOptions:
    spec: Path
    out: Path
    keys: tuple[Path | KeyRef, ...]  # each with its own passphrase source (manifests.keys)
    state: Path
    max_volume_size: int | None = None
    since: Path | None = None
    platform: str | None = None
    insecure_registries: frozenset[str] = frozenset()
    ask: Callable[[str], bytes | None] | None = None  # terminal passphrase prompt, for encrypted keys
    expires: timedelta | None = None  # signed validity from creation (bundle.expires, format 1.1)


@dataclass
class ExportResult:
    manifest: Manifest
    digest: str
    out: Path
    volume_dirs: list[Path]
    raw_bytes: int
    stored_bytes: int
    written_bytes: int
    reused_packs: int
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "bundle": m.bundle.to_dict(),
            "digest": self.digest,
            "out": str(self.out),
            "volumes": [str(v) for v in self.volume_dirs],
            "artifacts": [{"kind": a.kind, "name": a.name, "version": a.version, "size": a.size,
                           "entries": len(a.entries)} for a in m.artifacts],
            "chunks": len(m.chunks),
            "carriedChunks": sum(1 for c in m.chunks if c.carried),
            "packs": len(m.packs),
            "rawBytes": self.raw_bytes,
            "storedBytes": self.stored_bytes,
            "writtenThisRun": self.written_bytes,
            "reusedPacks": self.reused_packs,
            "base": m.base.to_dict() if m.base else None,
            "warnings": self.warnings,
        }


# --------------------------------------------------------------------------- pure helpers


def check_space(need: int, have: int, where: Path | str) -> None:
    """Refuse up front, with the figures, when ``need`` bytes will not fit in ``have``."""
    if need > have:
        from ferry.ui import human_bytes

        raise FerryError(f"not enough free space: need {human_bytes(need)}, have {human_bytes(have)} on {where}")


def manifest_reserve(files: int, raw_bytes: int, path_bytes: int) -> int:
    """An upper bound on manifest + signature bytes, reserved on every volume.

    Chunks per file are at most 2 * size / MIN_CHUNK + 2 (a forced piece of at least the
    minimum, plus a short tail); each costs at most ~200 bytes listed and ~70 per reference.
    """
    chunks = 2 * raw_bytes // chunker.MIN_CHUNK + 2 * files
    return 64 * 1024 + chunks * 280 + files * 400 + path_bytes + limits.MAX_SIGNATURES * 200


def free_bytes(path: Path) -> int:
    p = Path(path)
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def tune_malloc() -> None:
    """Keep chunk-sized buffers in the heap instead of a fresh mmap per buffer.

    glibc serves allocations over 128 KiB with mmap and returns them with munmap, so every
    4 MiB chunk, frame and read buffer would be page-faulted and zeroed anew: about a third
    of the export's system time. Raising the mmap threshold to its maximum (32 MiB) and the
    trim threshold lets freed buffers be reused; memory stays bounded by what is in flight.
    Best effort: other C libraries are left alone.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 128 * 1024 * 1024)
    except (OSError, AttributeError):
        pass


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def fingerprint(spec_bytes: bytes, receipt_bytes: bytes | None, max_volume_size: int | None) -> str:
    """What a resumed run must share with the first one for its packs to be reused."""
    from manifests.digest import sha256_digest

    return sha256_digest(canonical.encode({
        "spec": sha256_digest(spec_bytes),
        "since": sha256_digest(receipt_bytes) if receipt_bytes is not None else None,
        "maxVolumeSize": max_volume_size,
        "packSize": PACK_SIZE,
        "chunker": [chunker.MIN_CHUNK, chunker.AVG_CHUNK, chunker.MAX_CHUNK],
    }))


# --------------------------------------------------------------------------- sources


def build_sources(spec: Spec, opts: ExportOptions, progress: Any) -> list[SourceArtifact]:
    """Every artifact of the spec, checked (paths, symlinks, registries) before any write."""
    from .sources.models import model_source

    artifacts: list[SourceArtifact] = []
    for img in spec.images:
        from .sources.images import image_source

        artifacts.append(image_source(img.ref, layout=img.layout, version=img.version, platform=opts.platform,
                                      insecure_registries=opts.insecure_registries, progress=progress))
    for m in spec.models:
        artifacts.append(model_source(m.name, m.version, m.path))
    for ms in spec.manifests:
        from .sources.kube import manifests_source

        artifacts.append(manifests_source(ms.name, ms.version, ms.path))
    seen: dict[tuple[str, str], str] = {}
    for a in artifacts:
        if (a.kind, a.name) in seen:
            raise FerryError(f"{spec.file}: two {a.kind} artifacts are both named {a.name!r}")
        seen[(a.kind, a.name)] = a.version
    artifacts.sort(key=lambda a: KIND_ORDER[a.kind])
    return artifacts


def uncarried_image_warnings(artifacts: list[SourceArtifact]) -> list[str]:
    carried = [a.image for a in artifacts if a.kind == "image" and a.image is not None]
    out: list[str] = []
    for a in artifacts:
        if a.kind != "manifests" or not a.images:
            continue
        from .sources.kube import image_is_carried

        for ref in a.images:
            if not image_is_carried(ref, carried):
                out.append(f"manifests {a.name!r} name image {ref!r}, which this bundle does not carry")
    return out


# --------------------------------------------------------------------------- chunk work


class _StaleCache(Exception):
    pass


_local = threading.local()


def _cctx() -> Any:
    c = getattr(_local, "cctx", None)
    if c is None:
        c = _local.cctx = compressor()
    return c


def _chunk_work(data: bytes | memoryview | None, read: Callable[[], bytes] | None, expect: str | None,
                skip: Callable[[str], bool]) -> tuple[str, int, bytes | None]:
    """In a pool thread: (read,) hash, and compress unless the chunk need not be stored."""
    if data is None:
        assert read is not None
        data = read()
    cid = _blake3.blake3(data, max_threads=1).hexdigest()
    if expect is not None and cid != expect:
        raise _StaleCache(expect)
    if skip(cid):
        return cid, len(data), None
    return cid, len(data), compress_chunk(data, _cctx())


@dataclass
class _EntryBuild:
    """An entry whose chunk ids arrive from the pool in order."""

    source: SourceFile
    ids: list[str | None] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    blake3: str = ""
    key: FileKey | None = None
    in_cache: bool = False  # its chunk list is in the hub cache (read from it, or remembered)
    pending: int = 0  # chunks handed to the pool and not yet back
    cut_done: bool = False

    def entry(self) -> Entry:
        assert all(self.ids)
        s = self.source
        return Entry(size=s.size, blake3=self.blake3, chunks=tuple(self.ids),  # type: ignore[arg-type]
                     path=s.path, digest=s.digest, media_type=s.media_type)


class _Run:
    """One export run's mutable state: the pool, the pack writer, what is placed where."""

    def __init__(self, writer: PackWriter, state: HubState, held: frozenset[str],
                 placed: dict[str, tuple[str, Placed]]) -> None:
        self.writer = writer
        self.state = state
        self.held = held
        self.placed = placed  # chunk id -> (pack name, placement)
        self.pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="ferry-chunk")
        self.inflight: deque[tuple[Future[tuple[str, int, bytes | None]], _EntryBuild, int]] = deque()
        self.inflight_bytes = 0
        self.written = 0

    def skip(self, cid: str) -> bool:
        return cid in self.held or cid in self.placed

    def submit(self, build: _EntryBuild, size: int, data: bytes | memoryview | None = None,
               read: Callable[[], bytes] | None = None, expect: str | None = None) -> None:
        index = len(build.ids)
        build.ids.append(None)
        build.sizes.append(size)
        fut = self.pool.submit(_chunk_work, data, read, expect, self.skip)
        build.pending += 1
        self.inflight.append((fut, build, index))
        self.inflight_bytes += size
        while self.inflight_bytes > MAX_IN_FLIGHT:
            self.handle_one()

    def known(self, build: _EntryBuild, cid: str, size: int) -> None:
        """A chunk whose id is known and that need not be read (cache hit, already stored)."""
        build.ids.append(cid)
        build.sizes.append(size)

    def handle_one(self) -> None:
        fut, build, index = self.inflight.popleft()
        try:
            cid, size, frame = fut.result()
        except _StaleCache:
            path = build.key.path if build.key else build.source.path
            if build.key is not None:
                self.state.forget(build.key.path)
            raise FerryError(f"{path} changed since ferry last chunked it; run the export again") from None
        self.inflight_bytes -= build.sizes[index]
        build.ids[index] = cid
        build.pending -= 1
        if build.cut_done and not build.pending:
            self.finished_cutting(build)
        if frame is not None and cid not in self.placed and cid not in self.held:
            self.placed[cid] = self.writer.append(cid, size, frame)
            self.written += len(frame)

    def drain(self) -> None:
        while self.inflight:
            self.handle_one()

    def finished_cutting(self, build: _EntryBuild) -> None:
        """Called when a file is cut and again when its last chunk is back: once every id is
        known, a local file's chunk list goes to the cache at once (so it survives a kill)."""
        build.cut_done = True
        if (not build.pending and build.key is not None and not build.in_cache
                and build.source.digest is None):
            self.state.remember(build.key, build.blake3, list(zip(build.ids, build.sizes)))  # type: ignore[arg-type]
            build.in_cache = True

    def close(self) -> None:
        for fut, _, _ in self.inflight:
            fut.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _read_exact(path: Path, offset: int, size: int) -> Callable[[], bytes]:
    def read() -> bytes:
        data = chunker.read_range(path, offset, size)
        if len(data) != size:
            raise _StaleCache("")
        return data
    return read


def _chunk_file(run: _Run, sf: SourceFile, task: Any, overall: Any) -> _EntryBuild:
    """Submit every chunk of one file or blob; returns its entry (ids filled as work ends)."""
    build = _EntryBuild(source=sf)
    if sf.local_path is not None:
        try:
            build.key = FileKey.of(sf.local_path)
        except OSError as exc:
            raise FerryError(f"{sf.local_path}: {exc.strerror or exc}") from None
        if build.key.size != sf.size:
            raise FerryError(f"{sf.local_path} changed size while exporting; run the export again")
        cached = run.state.cached(build.key)
        if cached is not None and sf.digest is None:
            build.blake3, build.in_cache = cached.blake3, True
            offset = 0
            for cid, size in cached.chunks:
                if run.skip(cid):
                    run.known(build, cid, size)
                else:
                    run.submit(build, size, read=_read_exact(sf.local_path, offset, size), expect=cid)
                offset += size
                task.advance(size)
                overall.advance(size)
            return build
    hasher = Hasher(sha256=sf.digest is not None, threaded=False)
    label = sf.path or sf.digest or "blob"
    try:
        with sf.open() as f:
            if sf.local_path is not None:
                chunks = chunker.cut_file(f, chunker.segments(sf.local_path, sf.size))
                pieces = (data for _, data in chunks)
            else:
                pieces = chunker.cut_stream(f)
            for data in pieces:
                hasher.update(data)
                if hasher.size > sf.size:
                    break
                run.submit(build, len(data), data=data)
                task.advance(len(data))
                overall.advance(len(data))
    except OSError as exc:
        raise FerryError(f"cannot read {label}: {exc.strerror or exc}") from None
    if hasher.size != sf.size:
        raise FerryError(f"{label}: read {hasher.size} bytes, expected {sf.size} (changed while exporting?)")
    if sf.digest is not None and hasher.sha256 != sf.digest:
        raise FerryError(f"{label}: content does not match its digest {sf.digest}")
    build.blake3 = hasher.blake3
    run.finished_cutting(build)
    return build


# --------------------------------------------------------------------------- the medium


def _volume_root(out: Path, volume: int, volumes_mode: bool) -> Path:
    return out / volume_dir_name(volume) if volumes_mode else out


def _prepare_medium(out: Path, journal: Journal, volumes_mode: bool,
                    state: tuple[JournalHeader, list[FinishedPack]] | None) -> list[FinishedPack]:
    """Delete temporary and unjournaled pack files; keep finished packs that check out."""
    kept: list[FinishedPack] = []
    known = {(p.volume, p.name): p for p in (state[1] if state else [])}
    pack_dirs: list[tuple[int, Path]] = []
    if volumes_mode:
        for d in sorted(out.glob(f"{VOLUME_PREFIX}*")):
            if d.is_dir() and d.name[len(VOLUME_PREFIX):].isdigit():
                pack_dirs.append((int(d.name[len(VOLUME_PREFIX):]), d / PACKS_DIR))
    else:
        pack_dirs.append((1, out / PACKS_DIR))
    for volume, d in pack_dirs:
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            p = known.get((volume, f.name))
            if p is not None and f.is_file() and not f.is_symlink() and pack_intact(f, p):
                kept.append(p)
            else:
                f.unlink()
        fsync_dir(d)
    for root in {_volume_root(out, v, volumes_mode) for v, _ in pack_dirs} | {out}:
        for name in (MANIFEST_NAME, SIGNATURE_NAME):
            for stale in (root / name, tmp_path(root / name)):
                if stale.exists():
                    stale.unlink()
    kept.sort(key=lambda p: pack_number(p.name) or 0)
    return kept


def _check_out_folder(out: Path, journal: Journal) -> None:
    if out.exists() and not out.is_dir():
        raise FerryError(f"--out {out} is a file; give a folder for the bundle")
    if out.is_dir() and not journal.path.exists():
        if (out / MANIFEST_NAME).exists() or any(out.glob(f"{VOLUME_PREFIX}*/{MANIFEST_NAME}")):
            raise FerryError(f"--out {out} already holds a finished bundle; give another folder")
        leftovers = [p.name for p in out.iterdir() if p.name != JOURNAL_DIR]
        if leftovers:
            raise FerryError(f"--out {out} is not empty ({leftovers[0]} ...); give an empty or new folder")


# --------------------------------------------------------------------------- the export


def export(opts: ExportOptions, progress: Any) -> ExportResult:
    tune_malloc()
    spec = load_spec(opts.spec)
    spec_bytes = opts.spec.read_bytes()
    if not opts.keys:
        raise FerryError("give at least one signing key with --key")
    keys = load_signing_keys(opts.keys, ask=opts.ask)

    receipt_bytes: bytes | None = None
    held: frozenset[str] = frozenset()
    base: Base | None = None
    if opts.since is not None:
        receipt_bytes = read_bounded(opts.since, limits.MAX_RECEIPT_BYTES, f"receipt {opts.since}")
        receipt = Receipt.from_bytes(receipt_bytes)
        held = frozenset(receipt.chunks)
        base = Base(receipt=receipt_digest(receipt_bytes), site=receipt.site, created=receipt.created)

    volumes_mode = opts.max_volume_size is not None
    out = Path(os.path.abspath(opts.out))
    journal = Journal(out)
    _check_out_folder(out, journal)

    artifacts = build_sources(spec, opts, progress)
    warnings = [w for a in artifacts for w in a.warnings] + uncarried_image_warnings(artifacts)
    for w in warnings:
        progress.warn(w)

    files = [f for a in artifacts for f in a.files]
    raw_total = sum(f.size for f in files)
    reserve = manifest_reserve(len(files), raw_total, sum(len((f.path or "").encode()) for f in files))
    budget: int | None = None
    if opts.max_volume_size is not None:
        budget = opts.max_volume_size - reserve
        smallest = limits.MAX_STORED_CHUNK_SIZE + reserve
        if budget < limits.MAX_STORED_CHUNK_SIZE:
            from ferry.ui import human_bytes

            raise FerryError(f"--max-volume-size must be at least {human_bytes(smallest)} for this bundle "
                             f"(a chunk of up to {human_bytes(limits.MAX_STORED_CHUNK_SIZE)} plus the manifest)")

    fp = fingerprint(spec_bytes, receipt_bytes, opts.max_volume_size)
    previous = journal.read()
    if previous is not None and previous[0].fingerprint != fp:
        raise FerryError(f"--out {out} holds an unfinished export of another spec or other options; "
                         f"rerun the same command, or give another folder")

    state = HubState(opts.state)
    try:
        # Free space: an upper bound of what is left to write (see docs/spec.md).
        done = sum(p.size for p in previous[1]) if previous else 0
        need_raw = 0
        for f in files:
            cached = state.cached(FileKey.of(f.local_path)) if f.local_path is not None else None
            if cached is not None:
                need_raw += sum(s for c, s in cached.chunks if c not in held)
            else:
                need_raw += f.size
        frames = need_raw + need_raw // 1024 + 64 * (2 * need_raw // chunker.MIN_CHUNK + 2 * len(files))
        volumes_guess = 1 if budget is None else max(1, -(-frames // budget))
        need = max(0, frames - done) + reserve * volumes_guess
        check_space(need, free_bytes(out), out if out.exists() else out.parent)
        check_space(1024 * 1024 + 200 * len(files), free_bytes(opts.state), opts.state)

        make_dirs(out)
        kept = _prepare_medium(out, journal, volumes_mode, previous)
        if previous is not None:
            header = previous[0]
        else:
            sequence = state.next_sequence(spec.channel)
            header = JournalHeader(fingerprint=fp, sequence=sequence, created=utc_now(),
                                   bundle_id=f"{spec.name[:96]}-{sequence}-{secrets.token_hex(6)}")
        journal.rewrite(header, kept)
        progress.info(f"bundle {spec.name} channel {spec.channel} sequence {header.sequence}"
                      + (f" (resuming: {len(kept)} finished pack(s) kept)" if previous else ""))

        placed: dict[str, tuple[str, Placed]] = {}
        for p in kept:
            for c in p.chunks:
                placed.setdefault(c.id, (p.name, c))
        last = kept[-1] if kept else None
        writer = PackWriter(out, volume_budget=budget, on_finish=journal.record,
                            first_number=(pack_number(last.name) or 0) + 1 if last else 1,
                            volume=last.volume if last else 1,
                            volume_used=sum(p.size for p in kept if last and p.volume == last.volume))
        finished: list[FinishedPack] = list(kept)
        record = writer.on_finish

        def on_finish(p: FinishedPack) -> None:
            record(p)
            finished.append(p)

        writer.on_finish = on_finish
        run = _Run(writer, state, held, placed)
        builds: list[tuple[SourceArtifact, list[_EntryBuild]]] = []
        try:
            with progress.task("export", raw_total) as overall:
                for a in artifacts:
                    entries: list[_EntryBuild] = []
                    with progress.task(f"{a.kind} {a.name} {a.version}", sum(f.size for f in a.files)) as task:
                        for sf in a.files:
                            entries.append(_chunk_file(run, sf, task, overall))
                    builds.append((a, entries))
                run.drain()
            writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            run.close()

        manifest = _manifest(spec, header, builds, finished, placed, held, base, opts.expires)
        result = _write_manifests(out, manifest, keys, opts.max_volume_size, volumes_mode, finished,
                                  _policy_files(opts.state))
        journal.remove()
        stored = sum(c.stored or 0 for c in manifest.chunks)
        return ExportResult(manifest=manifest, digest=result[0], out=out, volume_dirs=result[1],
                            raw_bytes=raw_total, stored_bytes=stored, written_bytes=run.written,
                            reused_packs=len(kept), warnings=warnings)
    finally:
        state.close()


def _manifest(spec: Spec, header: JournalHeader, builds: list[tuple[SourceArtifact, list[_EntryBuild]]],
              finished: list[FinishedPack], placed: dict[str, tuple[str, Placed]], held: frozenset[str],
              base: Base | None, expires: timedelta | None = None) -> Manifest:
    pack_index = {p.name: i for i, p in enumerate(finished)}
    sizes: dict[str, int] = {}
    artifacts = []
    for a, entries in builds:
        built = tuple(b.entry() for b in entries)
        for b in entries:
            for cid, size in zip(b.ids, b.sizes):
                sizes[cid] = size  # type: ignore[index]
        artifacts.append(Artifact(kind=a.kind, name=a.name, version=a.version, entries=built,
                                  image=a.image, images=tuple(a.images)))
    chunks = []
    for cid in sorted(sizes):
        where = placed.get(cid)
        if where is None:
            if cid not in held:
                raise FerryError(f"internal: chunk {cid} was neither stored nor held by the edge")
            chunks.append(Chunk(id=cid, size=sizes[cid]))
        else:
            name, p = where
            chunks.append(Chunk(id=cid, size=sizes[cid], stored=p.stored, pack=pack_index[name], offset=p.offset))
    packs = tuple(Pack(name=p.name, volume=p.volume, size=p.size) for p in finished)
    return Manifest(
        bundle=BundleInfo(name=spec.name, id=header.bundle_id, channel=spec.channel, sequence=header.sequence,
                          created=header.created, producer=f"ferry {__version__}",
                          expires=_expiry(header.created, expires)),
        artifacts=tuple(artifacts), chunks=tuple(chunks), packs=packs,
        volumes=max([p.volume for p in finished] or [1]), base=base)


def _expiry(created: str, valid: timedelta | None) -> str | None:
    from manifests.root import format_time, parse_time

    return None if valid is None else format_time(parse_time(created) + valid)


def _policy_files(state: Path) -> list[tuple[str, bytes]]:
    """The hub's signed trust policy history (importer.trust_store), carried in every volume's
    ``trust/`` so that edges behind can rotate forward (docs/bundle-format.md §10)."""
    from importer.trust_store import TrustStore, root_file_names

    files = []
    for stored in TrustStore(state).history():
        doc, sig = root_file_names(stored.root.version)
        files += [(doc, stored.root.raw), (sig, stored.signature)]
    return files


def _write_manifests(out: Path, manifest: Manifest, keys: list[Any], max_volume_size: int | None,
                     volumes_mode: bool, finished: list[FinishedPack],
                     policy_files: list[tuple[str, bytes]] = []) -> tuple[str, list[Path]]:
    """Trust policy files, signature then manifest, into every volume: the last writes of an export."""
    data = manifest.to_bytes()
    sig = sign(data, keys).to_bytes()
    roots = []
    for v in range(1, manifest.volumes + 1):
        root = _volume_root(out, v, volumes_mode)
        if max_volume_size is not None:
            used = (sum(p.size for p in finished if p.volume == v) + len(data) + len(sig)
                    + sum(len(b) for _, b in policy_files))
            if used > max_volume_size:
                raise FerryError(f"volume {v} would hold {used} bytes, over --max-volume-size {max_volume_size}; "
                                 "give a larger size")
        make_dirs(root)
        roots.append(root)
    for root in roots:
        if policy_files:
            make_dirs(root / "trust")
        for name, body in policy_files:
            write_atomic(root / "trust" / name, body)
        write_atomic(root / SIGNATURE_NAME, sig)
    for root in roots:
        write_atomic(root / MANIFEST_NAME, data)
    fsync_dir(out)
    return manifest_digest(data), roots
