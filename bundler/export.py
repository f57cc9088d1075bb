"""``ferry export``: spec -> sources -> chunks -> dedupe -> packs -> volumes -> signed manifest.

The order of work is what makes the bundle trustworthy and resumable:

1. Everything that can be refused is checked before the medium is touched: the spec, the
   keys, the receipt, every source (paths, symlinks, registries), and free space.
2. Chunks are cut on the main thread (:class:`bundler.chunker.Cutter`: two windows kept for
   the run, read into with the kernel reading ahead, the whole-file hash on a thread of its
   own where cores allow) and handed, as views into a window, to a small pool that hashes and
   compresses them (BLAKE3 and zstd release the GIL), with a bounded number of bytes in flight
   so memory stays flat whatever the model size. A chunk seen before in this bundle, or held
   by the edge (``--since``), is not stored again.
3. Frames go into bounded packs (:mod:`bundler.packs`), written and fsynced on I/O threads;
   a finished pack is journaled once it is durable, so a rerun redoes at most the packs in
   flight (the one being written and the one being flushed).
4. The signature file and then ``manifest.json`` are written last into every volume; only
   then is the journal removed.

Core code reports through :class:`manifests.progress.Progress` and never prints.
"""

from __future__ import annotations

import os
from datetime import timedelta
import secrets
import shutil
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3 as _blake3

from manifests import PUBLISH_FORMAT_VERSION, VARIANTS_FORMAT_VERSION, __version__, budget as memory, canonical, limits
from manifests.bundle import MANIFEST_NAME, PACKS_DIR, SIGNATURE_NAME, VOLUME_PREFIX, read_bounded, volume_dir_name
from manifests.chunks import DEFAULT_LEVEL, chunk_level, compress_chunk, compressor
from manifests.digest import Hasher, artifact_content_digest, blake3_hex, manifest_digest
from manifests.durable import fsync_dir, make_dirs, tmp_path, write_atomic
from manifests.errors import FerryError, FormatError, Interrupted, Place, PlaceError, PolicyError, SpecError, UsageError
from manifests.keys import KeyRef, load_signing_keys
from manifests.locking import FolderLock, acquire
from manifests.model import Artifact, Base, BundleInfo, Chunk, Entry, Manifest, Pack, apply_rank, utc_now
from manifests.progress import Progress
from manifests.receipt import Receipt, receipt_digest
from manifests.signing import MANIFEST_PAYLOAD_TYPE, sign
from manifests.variants import Choice, Resources, Variant, choose

from . import chunker
from .hubstate import FileKey, HubState
from .modeldigests import STATE_PREFIX, ModelDigests, modelcar_by_reading, resume_point, sha_threads, state_key, state_root
from .selfinstall import ARTIFACT_NAME, SUMS_NAME, Target, copy_to_medium, sha256_file
from .packs import (JOURNAL_DIR, MEDIUM_LOCK, PACK_SIZE, FinishedPack, Journal, JournalHeader, PackWriter, Placed,
                    pack_intact, pack_number)
from .sources import SourceArtifact, SourceFile
from .spec import ModelItem, Spec, VariantItem, load_spec

#: Under the hub state: models read from a registry, one folder per manifest digest.
OCI_MODELS_DIR = "oci-models"


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
    self_install: Target | None = None  # add ferry's own wheels for this edge Python/platform
    ask: Callable[[str], bytes | None] | None = None  # terminal passphrase prompt, for encrypted keys
    expires: timedelta | None = None  # signed validity from creation (bundle.expires, format 1.1)
    memory_budget: int = memory.MEMORY_BUDGET  # bytes; buffers and threads are sized from it (manifests.budget)
    payload_type: str = MANIFEST_PAYLOAD_TYPE  # RETURN_PAYLOAD_TYPE for a site's return bundle (format §13)
    site: Resources | None = None  # the site's resources (--site/--profile): choose model variants
    site_name: str | None = None
    max_bytes: int | None = None  # byte budget for choosing variants (--max-bytes, else the profile's link)
    state_label: str = "hub state"  # names ``state`` in messages ("edge state" for a site's return bundles)


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
    state: Path
    warnings: list[str] = field(default_factory=list)
    self_install: dict[str, Any] | None = None  # folder, wheels, sums (sha256 of SHA256SUMS), target
    left_out: list[LeftOut] = field(default_factory=list)  # what a delta did not carry, and why
    choices: list[Choice] = field(default_factory=list)  # the variant chosen per model, and why
    variant_deltas: list[str] = field(default_factory=list)  # what a delta carries per model variant

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "bundle": m.bundle.to_dict(),
            "digest": self.digest,
            "out": str(self.out),
            "volumes": [str(v) for v in self.volume_dirs],
            "artifacts": [{"kind": a.kind, "name": a.name, "version": a.version, "size": a.size,
                           "entries": len(a.entries), "variant": a.variant.to_dict() if a.variant else None}
                          for a in m.artifacts],
            "variants": [c.to_json() for c in self.choices],
            "variantDeltas": self.variant_deltas,
            "chunks": len(m.chunks),
            "carriedChunks": sum(1 for c in m.chunks if c.carried),
            "packs": len(m.packs),
            "rawBytes": self.raw_bytes,
            "storedBytes": self.stored_bytes,
            "writtenThisRun": self.written_bytes,
            "reusedPacks": self.reused_packs,
            "state": str(self.state),
            "selfInstall": self.self_install,
            "base": m.base.to_dict() if m.base else None,
            "leftOut": [x.to_json() for x in self.left_out],
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class LeftOut:
    """One reason a delta bundle did not carry some of its bytes (``ExportResult.left_out``).

    ``reason`` is ``installed`` (the receipt lists the same unit, version and content
    installed: the edge skips it), ``site-blobs`` (OCI blobs the receipt says the site's
    registry or layout holds, by digest) or ``site-chunks`` (chunks the site's chunk store
    holds); ``entries`` files or blobs and ``chunks`` chunks (``raw_bytes`` bytes) were left
    out for it; ``artifacts`` names the artifacts concerned (``kind name``)."""

    reason: str
    entries: int
    chunks: int
    raw_bytes: int
    artifacts: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "entries": self.entries, "chunks": self.chunks, "rawBytes": self.raw_bytes,
                "artifacts": list(self.artifacts)}

    def describe(self) -> str:
        """One line for the text summary."""
        from manifests.progress import human_bytes

        why = {"installed": "the site has these installed at the same version and content",
               "site-blobs": "the site's registry or OCI layout holds these blobs (by digest)",
               "site-chunks": "the site's chunk store holds these chunks"}[self.reason]
        what = f"{self.entries} blob(s)" if self.reason == "site-blobs" else (
            f"{self.entries} file(s)" if self.reason == "installed" else f"{self.chunks} chunk(s)")
        return f"left out {what}, {human_bytes(self.raw_bytes)} raw, of {', '.join(self.artifacts)}: {why}"


# --------------------------------------------------------------------------- pure helpers


def check_space(need: int, have: int, where: Path | str, note: str = "", place: Place = "medium",
                label: str = "") -> None:
    """Refuse up front, with the figures, when ``need`` bytes will not fit in ``have``.

    Args:
        need, have: bytes. where: the folder; place and label name it (the ``medium`` by
            default; ``state`` and ``hub state`` for the writer's state folder).
    Raises:
        PlaceError: at ``place``, with both figures.
    """
    if need > have:
        from manifests.progress import human_bytes

        on = f"{label} {where}" if label else str(where)
        raise PlaceError(place, str(where), f"not enough free space: need {human_bytes(need)}{note}, "
                                            f"have {human_bytes(have)} on {on}")


def stored_estimate(size: int, allocated: int) -> int:
    """Raw bytes a file may add to the packs, for the free-space check.

    A sparse file's holes read as zeros; zero chunks are identical and stored once, each as a
    few bytes of zstd. So a file occupying fewer bytes on disk than its length counts as what
    it occupies plus two largest chunks (the zero chunks around its data), never more than its
    length. This is an estimate, said so in the refusal (docs/spec.md, *Free space*).

    Args:
        size: the file's length in bytes.
        allocated: bytes it occupies on disk (``st_blocks * 512``).
    Returns:
        Bytes to reserve.
    """
    return min(size, allocated + 2 * chunker.MAX_CHUNK) if allocated < size else size


def chunk_bound(raw_bytes: int, pieces: int) -> int:
    """Most chunks the chunker can cut from ``raw_bytes`` bytes split into ``pieces`` pieces.

    Each piece (:func:`bundler.chunker.segments`; one per streamed blob) is cut by FastCDC
    into chunks of at least ``MIN_CHUNK`` bytes but its last: at most
    ``len // MIN_CHUNK + 1`` chunks. Summed, at most ``raw_bytes // MIN_CHUNK + pieces``; this
    returns twice the first term, for slack.
    """
    return 2 * raw_bytes // chunker.MIN_CHUNK + pieces


def manifest_reserve(files: int, raw_bytes: int, path_bytes: int, pieces: int | None = None) -> int:
    """An upper bound on manifest + signature bytes, reserved on every volume.

    Args:
        files: files and blobs in the bundle.
        raw_bytes: their bytes together.
        path_bytes: their paths' UTF-8 bytes together.
        pieces: the pieces they are cut in (:func:`bundler.chunker.segments`), ``2 * files``
            when not given.
    Returns:
        Bytes: each chunk (:func:`chunk_bound`) costs at most ~200 bytes listed and ~70 per
        reference.
    """
    chunks = chunk_bound(raw_bytes, 2 * files if pieces is None else pieces + files)
    return 64 * 1024 + chunks * 280 + files * 400 + path_bytes + limits.MAX_SIGNATURES * 200


def free_bytes(path: Path) -> int:
    p = Path(path)
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def tune_malloc(trim: int) -> None:
    """Keep chunk-sized buffers in the heap instead of a fresh mmap per buffer.

    glibc serves allocations over 128 KiB with mmap and returns them with munmap, so every
    4 MiB chunk, frame and read buffer would be page-faulted and zeroed anew: about a third
    of the export's system time. Raising the mmap threshold to its maximum (32 MiB) and the
    trim threshold lets freed buffers be reused. Free heap kept past what is in flight is at
    most ``trim`` bytes (:attr:`manifests.budget.ExportSizes.trim`, a share of the memory
    budget). Best effort: other C libraries are left alone.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, trim)
    except (OSError, AttributeError):
        pass


def fingerprint(spec_bytes: bytes, receipt_bytes: bytes | None, max_volume_size: int | None,
                self_install: Target | None = None, variants: dict[str, str] | None = None) -> str:
    """What a resumed run must share with the first one for its packs to be reused."""
    from manifests.digest import sha256_digest

    doc: dict[str, Any] = {
        "spec": sha256_digest(spec_bytes),
        "since": sha256_digest(receipt_bytes) if receipt_bytes is not None else None,
        "maxVolumeSize": max_volume_size,
        "packSize": PACK_SIZE,
        "chunker": [chunker.MIN_CHUNK, chunker.AVG_CHUNK, chunker.MAX_CHUNK, chunker.MIN_PIECE],
    }
    if self_install is not None:
        doc["selfInstall"] = [self_install.python, self_install.platform]
    if variants:  # another site's choice is another bundle
        doc["variants"] = variants
    return sha256_digest(canonical.encode(doc))


# --------------------------------------------------------------------------- sources


def build_sources(spec: Spec, opts: ExportOptions, progress: Progress,
                  choices: list[Choice] | None = None) -> list[SourceArtifact]:
    """Every artifact of the spec, checked (paths, symlinks, registries) before any write.

    A model with variants carries the one :func:`manifests.variants.choose` picks for
    ``opts.site`` and ``opts.max_bytes`` (appended to ``choices`` when given)."""
    from .sources.models import model_source

    artifacts: list[SourceArtifact] = []
    for img in spec.images:
        from .sources.images import image_source

        artifacts.append(image_source(img.ref, layout=img.layout, version=img.version, platform=opts.platform,
                                      insecure_registries=opts.insecure_registries, progress=progress))
    offered: list[tuple[ModelItem, list[tuple[Variant, SourceArtifact]]]] = []
    for i, m in enumerate(spec.models):
        if m.variants:
            offered.append((m, [_variant_source(spec, opts, i, j, m, v) for j, v in enumerate(m.variants)]))
        elif m.ref is not None:
            from .sources.oci_models import oci_model

            artifacts.append(oci_model(m.name, m.version, m.ref, cache=opts.state / OCI_MODELS_DIR,
                                       insecure_registries=opts.insecure_registries)[0])
        else:
            assert m.path is not None
            artifacts.append(model_source(m.name, m.version, m.path))
    for ms in spec.manifests:
        from .sources.kube import manifests_source

        artifacts.append(manifests_source(ms.name, ms.version, ms.path))
    if offered:
        fixed = sum(f.size for a in artifacts for f in a.files)
        chosen = choose([(m.name, [v for v, _ in vs]) for m, vs in offered], opts.site, opts.max_bytes, fixed)
        for (m, vs), c in zip(offered, chosen):
            artifacts.append(dict((v.name, a) for v, a in vs)[c.variant.name])
        if choices is not None:
            choices.extend(chosen)
    total = sum(f.size for a in artifacts for f in a.files)
    if opts.max_bytes is not None and total > opts.max_bytes:  # choose() keeps to it; a spec without variants may not
        from manifests.progress import human_bytes

        raise PolicyError(f"{spec.file}: the bundle is {human_bytes(total)} raw, over the byte budget of "
                          f"{human_bytes(opts.max_bytes)} (--max-bytes or the profile's link); list smaller "
                          "variants or carry less")
    seen: set[tuple[str, str, str | None]] = set()
    for a in artifacts:  # the same unit twice (importer.policy.unit): an image by repository and tag
        once = (a.kind, a.name, a.image.tag if a.image is not None else None)
        if once in seen:
            shown = f"{a.name}:{once[2]}" if once[2] else a.name
            raise SpecError(f"{spec.file}: two {a.kind} artifacts are both {shown!r}")
        seen.add(once)
    artifacts.sort(key=lambda a: apply_rank(a.kind))  # the edge's apply order
    return artifacts


def _variant_source(spec: Spec, opts: ExportOptions, i: int, j: int, m: ModelItem,
                    v: VariantItem) -> tuple[Variant, SourceArtifact]:
    """One variant's files (a folder, or a ModelPack/ModelKit ``ref`` fetched and unpacked as a
    model's ``ref`` is) and its manifest record: its declaration checked against the files
    (and a ModelPack config's statement), its size measured (docs/spec.md, *Variants*)."""
    from .sources.models import model_source
    from .weights import check_declaration, weight_facts

    if v.ref is not None:
        from .sources.oci_models import oci_model

        source, facts = oci_model(m.name, m.version, v.ref, cache=opts.state / OCI_MODELS_DIR,
                                  insecure_registries=opts.insecure_registries)
    else:
        assert v.path is not None
        source = model_source(m.name, m.version, v.path)
        facts = weight_facts((f.path or "", f.local_path) for f in source.files if f.local_path is not None)
    precision, quantization = check_declaration(f"{spec.file}: spec.models[{i}].variants[{j}]", v.precision,
                                                v.quantization, facts)
    source.variant = Variant(name=v.name, size=sum(f.size for f in source.files), min_memory=v.min_memory,
                             accelerator=v.accelerator, precision=precision, quantization=quantization,
                             quality=v.quality)
    return source.variant, source


def variant_deltas(manifest: Manifest, receipt: Receipt) -> list[str]:
    """What a delta bundle carries for each model variant, against what the receipt says the
    site runs (docs/spec.md, *Variants*, "Switching"): another variant of the same version
    carries what differs (usually everything: other weights are other bytes), another version
    of the same variant only its changed chunks.

    Returns:
        one line per model artifact with a variant that the receipt also lists.
    """
    runs = {a.name: a for a in receipt.artifacts if a.kind == "model"}
    lines: list[str] = []
    for a in manifest.artifacts:
        have = runs.get(a.name)
        if a.variant is None or have is None:
            continue
        ids = {cid for e in a.entries for cid in e.chunks}
        carried = sum(1 for cid in ids if manifest.chunk(cid).carried)
        counts = f"{carried} of {len(ids)} chunk(s) carried"
        if have.version == a.version and have.variant != a.variant.name:
            lines.append(f"model {a.name} {a.version}: variant {have.variant or '(none)'} -> {a.variant.name} of the "
                         f"same version: carries what differs, {counts} (other weights are other bytes: "
                         "usually everything)")
        elif have.variant == a.variant.name and have.version != a.version:
            lines.append(f"model {a.name} variant {a.variant.name}: {have.version} -> {a.version}: only changed "
                         f"chunks, {counts}")
        else:
            lines.append(f"model {a.name} {a.version} variant {a.variant.name}: {counts}")
    return lines


def uncarried_image_warnings(artifacts: list[SourceArtifact]) -> list[str]:
    """Warnings for workload images a manifest set names that the bundle does not carry.

    A container image that is a model's hub-side name (``models/<name>:<version>``, a modelcar:
    :func:`manifests.kube.model_name`) is not an image the hub pulls: the edge pins it to the
    model it publishes, so it is warned about only when the bundle carries no such model
    version (the site must then hold it already, or the set is refused there)."""
    from manifests.kube import image_is_carried, model_name
    from manifests.modelpack import MODELCAR_TAG_SUFFIX

    carried = [a.image for a in artifacts if a.kind == "image" and a.image is not None]
    models = {(a.name.lower(), a.version.replace("+", "_")) for a in artifacts if a.kind == "model"}
    out: list[str] = []
    for a in artifacts:
        if a.kind != "manifests" or not a.images:
            continue
        for ref in a.images:
            named = model_name(ref)
            if named is not None:
                name, tag, _digest = named
                if tag is None or (name, tag.removesuffix(MODELCAR_TAG_SUFFIX)) not in models:
                    out.append(f"manifests {a.name!r} name model {ref!r}, which this bundle does not carry "
                               "(the site must hold it already)")
            elif not image_is_carried(ref, carried):
                out.append(f"manifests {a.name!r} name image {ref!r}, which this bundle does not carry")
    return out


# --------------------------------------------------------------------------- chunk work


class _StaleCache(Exception):
    pass


_local = threading.local()


def _cctx(level: int) -> Any:
    """This pool thread's compressor for ``level``: one context per thread, replaced when the
    level changes (a model file's header, then its tensors: twice a file), so a thread holds
    one context's memory (``manifests.budget.ZSTD_CONTEXT``), never one per level."""
    c = getattr(_local, "cctx", None)
    if c is None or c[0] != level:
        c = _local.cctx = (level, compressor(level))
    return c[1]


def _held_whole(cid: str) -> bool:
    """The skip test for a file or blob the edge holds whole: none of its chunks is stored
    (one that another entry needs is stored for that entry)."""
    return True


def _chunk_work(data: bytes | memoryview | None, read: Callable[[], bytes] | None, expect: str | None,
                skip: Callable[[str], bool], level: int = DEFAULT_LEVEL) -> tuple[str, int, bytes | None]:
    """In a pool thread: (read,) hash, and compress at zstd ``level`` unless the chunk need not be stored."""
    if data is None:
        assert read is not None
        data = read()
    cid = _blake3.blake3(data, max_threads=1).hexdigest()
    if expect is not None and cid != expect:
        raise _StaleCache(expect)
    if skip(cid):
        return cid, len(data), None
    return cid, len(data), compress_chunk(data, _cctx(level))


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
    held: str | None = None  # why the edge holds this whole file or blob (LeftOut.reason), or None
    cut_done: bool = False
    sha256: str | None = None  # a model file's sha256 (format 1.3), from bundler.modeldigests

    def entry(self) -> Entry:
        assert all(self.ids)
        s = self.source
        return Entry(size=s.size, blake3=self.blake3, chunks=tuple(self.ids),  # type: ignore[arg-type]
                     path=s.path, digest=s.digest, media_type=s.media_type, sha256=self.sha256)


class _Run:
    """One export run's mutable state: the pool, the pack writer, what is placed where."""

    def __init__(self, writer: PackWriter, state: HubState, held: frozenset[str],
                 placed: dict[str, tuple[str, Placed]], sizes: memory.ExportSizes) -> None:
        self.writer = writer
        self.state = state
        self.held = held
        self.placed = placed  # chunk id -> (pack name, placement)
        self.sizes = sizes
        # The cutting thread waits once sizes.in_flight raw bytes are in the pool, however many
        # workers there are: in-flight memory does not grow with the number of cores.
        self.pool = ThreadPoolExecutor(max_workers=sizes.workers, thread_name_prefix="ferry-chunk")
        # The whole-file hash gets a thread of its own only where a core is left beside the pool
        # and the cutting thread: on fewer cores it would take turns with them and add a
        # hand-off per window (measured on 2 cores: no gain), so the cutting thread hashes.
        self.hash_thread = memory.usable_cpus() >= sizes.workers + 2
        # Chunks go to the pool as views into the cutter's two windows, not copies; before a
        # window is written again, the pool's work on it is waited for (reuse).
        self.cutter = chunker.Cutter(self.reuse)
        # (result, entry, index in it, the window its bytes are a view of or None)
        self.inflight: deque[tuple[Future[tuple[str, int, bytes | None]], _EntryBuild, int, object]] = deque()
        self.inflight_bytes = 0
        self.written = 0
        self.held_whole: set[str] = set()  # chunks of files and blobs the edge holds whole (not stored)
        self.sha: ModelDigests | None = None  # the publishing digests of the model being cut
        self.sha_threads = sha_threads(memory.usable_cpus(), sizes.workers)
        self.sha_read = True  # read the model's cached files for them (not all in the caches)
        self.sha_covered: set[str] = set()  # files the layer's hash was resumed after (not read)
        self.blake3_of: dict[str, str] = {}  # path -> BLAKE3 of the model's files cut so far
        self.link: dict[str, str] = {}  # path -> the layer state's key after it (modeldigests.state_key)
        self.last_link = ""

    def start_model(self, a: SourceArtifact) -> None:
        """Set up the publishing digests of model ``a`` (format 1.3): read nothing for them
        when the caches hold them all, else go on from the furthest saved layer state
        (:func:`bundler.modeldigests.resume_point`)."""
        files = [(f.path or "", f.size) for f in a.files]
        self.sha_read = not _digests_cached(self.state, a)
        point = _layer_resume_point(self.state, a) if self.sha_read else None
        self.sha = ModelDigests(files, self.sha_threads, point[:2] if point else None)
        self.sha_covered = set(point[2]) if point and self.sha.resumed else set()
        self.blake3_of, self.link, self.last_link = {}, {}, state_root(files)

    def file_hashed(self, path: str, blake3: str) -> None:
        """A model file's BLAKE3 is known (files come in layer order): extend the chain of
        layer state keys."""
        if path not in self.blake3_of:
            self.blake3_of[path] = blake3
            self.last_link = self.link[path] = state_key(self.last_link, path, blake3)

    def skip(self, cid: str) -> bool:
        return cid in self.held or cid in self.placed

    def submit(self, build: _EntryBuild, size: int, data: bytes | memoryview | None = None,
               read: Callable[[], bytes] | None = None, expect: str | None = None,
               level: int = DEFAULT_LEVEL) -> None:
        index = len(build.ids)
        build.ids.append(None)
        build.sizes.append(size)
        fut = self.pool.submit(_chunk_work, data, read, expect, _held_whole if build.held else self.skip, level)
        build.pending += 1
        self.inflight.append((fut, build, index, data.obj if isinstance(data, memoryview) else None))
        self.inflight_bytes += size
        while self.inflight_bytes > self.sizes.in_flight:
            self.handle_one()

    def remember_digests(self) -> None:
        """Put the sha256 of each model file hashed since the last call into the hub state's
        digest cache at once, so that an export killed mid-model resumes without cutting
        those files again."""
        if self.sha is not None:
            for path, sha256 in self.sha.finished():
                if self.blake3_of.get(path):
                    self.state.remember_digest("blake3:" + self.blake3_of[path], sha256)
            for path, saved in self.sha.saved_states():
                if path in self.link:
                    self.state.remember_digest(STATE_PREFIX + self.link[path], saved)

    def known(self, build: _EntryBuild, cid: str, size: int) -> None:
        """A chunk whose id is known and that need not be read (cache hit, already stored)."""
        build.ids.append(cid)
        build.sizes.append(size)

    def reuse(self, window: object) -> None:
        """Before the cutter writes ``window`` again: finish every chunk that is a view of it,
        and every sha256 of the model being cut (fed views of the windows too)."""
        if self.sha is not None:
            self.sha.settle()
            self.remember_digests()
        while any(w is window for _, _, _, w in self.inflight):
            self.handle_one()

    def handle_one(self) -> None:
        fut, build, index, _ = self.inflight.popleft()
        try:
            cid, size, frame = fut.result()
        except _StaleCache:
            path = build.key.path if build.key else build.source.path
            if build.key is not None:
                self.state.forget(build.key.path)
            raise PlaceError("source", str(path), f"{path} changed since ferry last chunked it; run the export again") from None
        self.inflight_bytes -= build.sizes[index]
        build.ids[index] = cid
        build.pending -= 1
        if build.cut_done and not build.pending:
            self.finished_cutting(build)
        if frame is None and build.held:
            self.held_whole.add(cid)
        if frame is not None and cid not in self.placed and cid not in self.held:
            with writing_medium(self.writer.out):
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
        if self.sha is not None:
            self.sha.abort()
        for fut, _, _, _ in self.inflight:
            fut.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _read_exact(path: Path, offset: int, size: int) -> Callable[[], bytes]:
    def read() -> bytes:
        data = chunker.read_range(path, offset, size)
        if len(data) != size:
            raise _StaleCache("")
        return data
    return read


def _chunk_file(run: _Run, sf: SourceFile, task: Any, overall: Any, held: str | None = None) -> _EntryBuild:
    """Submit every chunk of one file or blob; returns its entry (ids filled as work ends)."""
    build = _EntryBuild(source=sf, held=held)
    if sf.local_path is not None:
        try:
            build.key = FileKey.of(sf.local_path)
        except OSError as exc:
            raise PlaceError("source", str(sf.local_path), f"{sf.local_path}: {exc.strerror or exc}") from None
        if build.key.size != sf.size:
            raise PlaceError("source", str(sf.local_path), f"{sf.local_path} changed size while exporting; run the export again")
        cached = run.state.cached(build.key)
        known_sha = run.state.known_digest("blake3:" + cached.blake3) if cached is not None and run.sha else None
        # a model file whose sha256 is in no cache is read again (format 1.3 records it)
        if cached is not None and sf.digest is None and (run.sha is None or known_sha is not None):
            build.blake3, build.in_cache = cached.blake3, True
            segments = chunker.segments(sf.local_path, sf.size, run.sizes.max_header)  # for the level, as cut
            if run.sha is not None:
                run.file_hashed(sf.path or "", cached.blake3)
            if run.sha is not None and (sf.path or "") in run.sha_covered:  # the layer's hash went on after it
                run.sha.known(sf.path or "", known_sha, in_layer=True)
            elif run.sha is not None and run.sha_read:  # the modelcar layer's hash needs its bytes
                run.sha.read_file(sf.path or "", sf.size, sf.open, known_sha)
                # the bytes just hashed must be the cached version's, whose chunks are shipped
                # and whose BLAKE3 keys the layer states saved from them
                _same_version(run.state, sf.local_path, build.key)
            elif run.sha is not None:
                run.sha.known(sf.path or "", known_sha)
            offset = 0
            for cid, size in cached.chunks:
                if run.skip(cid) or held:
                    if held and not run.skip(cid):
                        run.held_whole.add(cid)
                    run.known(build, cid, size)
                else:
                    run.submit(build, size, read=_read_exact(sf.local_path, offset, size), expect=cid,
                               level=chunk_level(chunker.in_tensor_data(segments, offset)))
                offset += size
                task.advance(size)
                overall.advance(size)
            return build
    hasher = Hasher(sha256=sf.digest is not None, threaded=False)
    label = sf.path or sf.digest or "blob"
    sink: Hasher | _Tee = hasher if run.sha is None else _Tee(hasher, run.sha)
    if run.sha is not None:
        run.sha.start(sf.path or "")
    try:
        with sf.open() as f:
            if sf.local_path is not None:
                # The whole-file hash (hasher) is fed by the cutter: on its hashing thread where cores allow.
                segments = chunker.segments(sf.local_path, sf.size, run.sizes.max_header)
                chunks = run.cutter.file(f, segments, sink, run.hash_thread)
                pieces: Generator[tuple[int, memoryview], None, None] = (
                    (chunk_level(chunker.in_tensor_data(segments, offset)), data) for offset, data in chunks)
            else:
                pieces = ((DEFAULT_LEVEL, _hashed(sink, data)) for data in run.cutter.stream(f))
            with closing(pieces):
                for level, data in pieces:
                    if hasher.size > sf.size:  # a stream longer than its blob's size (checked below)
                        break
                    run.submit(build, len(data), data=data, level=level)  # a view: see _Run.reuse
                    task.advance(len(data))
                    overall.advance(len(data))
    except OSError as exc:
        raise PlaceError("source", str(label), f"cannot read {label}: {exc.strerror or exc}") from None
    if hasher.size != sf.size:
        raise PlaceError("source", str(label), f"{label}: read {hasher.size} bytes, expected {sf.size} (changed while exporting?)")
    if sf.digest is not None and hasher.sha256 != sf.digest:
        raise PlaceError("source", str(label), f"{label}: content does not match its digest {sf.digest}")
    build.blake3 = hasher.blake3
    if run.sha is not None:
        run.file_hashed(sf.path or "", build.blake3)  # before its sha256 can be finished
        run.sha.end(sf.path or "", sf.size)
    run.finished_cutting(build)
    return build


def _same_version(state: HubState, path: Path, key: FileKey) -> None:
    """Refuse a file changed since ``key`` was taken (a write moves its ctime): bytes read
    for the modelcar layer's hash after a chunk-cache hit are not checked against the cached
    BLAKE3, so without this a file rewritten while the export reads it would get a modelcar
    digest signed (and cached, and saved layer states) that is not that of the bytes shipped.

    Raises:
        PlaceError: place ``source``: the file changed or cannot be read (its cache entry is dropped).
    """
    try:
        now = FileKey.of(path)
    except OSError as exc:
        raise PlaceError("source", str(path), f"{path}: {exc.strerror or exc}") from None
    if now != key:
        state.forget(key.path)
        raise PlaceError("source", str(path), f"{path} changed while exporting; run the export again")


class _Tee:
    """The cutter's sink for a model file: the whole-file BLAKE3 (and sha256 of a blob) here,
    the publishing digests queued to their own thread (:class:`bundler.modeldigests.ModelDigests`)."""

    def __init__(self, hasher: Hasher, sha: ModelDigests) -> None:
        self.hasher, self.sha = hasher, sha

    @property
    def size(self) -> int:
        return self.hasher.size

    def update(self, data: bytes | memoryview) -> None:
        self.hasher.update(data)
        self.sha.update(data)


def _hashed(hasher: Hasher | _Tee, data: memoryview) -> memoryview:
    hasher.update(data)
    return data


def _cached_digests(state: HubState, f: SourceFile) -> tuple[str, str] | None:
    """(BLAKE3, ``sha256:<hex>``) of model file ``f``'s version when the chunk cache holds it
    (unchanged since, :class:`bundler.hubstate.FileKey`) and the digest cache its sha256; else None
    (also where it cannot be looked at: :func:`_chunk_file` says what is wrong with it)."""
    if f.local_path is None:
        return None
    try:
        cached = state.cached(FileKey.of(f.local_path))
    except OSError:
        return None
    sha = state.known_digest("blake3:" + cached.blake3) if cached is not None else None
    return (cached.blake3, sha) if cached is not None and sha is not None else None


def _digests_cached(state: HubState, a: SourceArtifact) -> bool:
    """Whether every file of model ``a`` is in the chunk cache with its sha256 in the digest
    cache, and the model's modelcar digest too: then the export reads none of them."""
    pairs = []
    for f in a.files:
        known = _cached_digests(state, f)
        if known is None:
            return False
        pairs.append((f.path or "", known[0]))
    return state.known_digest("modelcar:" + artifact_content_digest(pairs)) is not None


def _layer_resume_point(state: HubState, a: SourceArtifact) -> tuple[str, str, list[str]] | None:
    """Where model ``a``'s modelcar layer hash can go on from a state saved in the hub state
    (:func:`bundler.modeldigests.resume_point`): the files before it are unchanged versions
    (chunk cache) whose sha256 is known."""
    by_path = {f.path or "": f for f in a.files}

    def known(path: str) -> tuple[str, str] | None:
        f = by_path[path]
        return _cached_digests(state, f) if f.digest is None else None

    return resume_point([(f.path or "", f.size) for f in a.files], known, state.known_digest)


def _model_digests(run: _Run, a: SourceArtifact, entries: list[_EntryBuild]) -> str | None:
    """Close the model's :class:`ModelDigests`: give each entry its sha256 and return the
    modelcar layer's digest, from the hashing thread, the hub state's digest cache, or by
    reading the files once more (:func:`bundler.modeldigests.modelcar_by_reading`)."""
    assert run.sha is not None
    files, layer = run.sha.close()
    run.remember_digests()  # those not remembered yet
    run.sha = None
    for b in entries:
        b.sha256 = files.get(b.source.path or "")
    if any(b.sha256 is None for b in entries):
        return None  # no modelcar digest without every file's
    key = "modelcar:" + artifact_content_digest([(b.source.path or "", b.blake3) for b in entries])
    if layer is None:
        layer = run.state.known_digest(key)
    if layer is None:
        try:
            layer = modelcar_by_reading([(f.path or "", f.size, f.open) for f in a.files])
        except FormatError:
            return None  # paths no modelcar can hold: publishing at the edge refuses them too
    run.state.remember_digest(key, layer)
    return layer


# --------------------------------------------------------------------------- the medium


@contextmanager
def writing_medium(out: Path) -> Iterator[None]:
    """Turn an OSError while writing the bundle folder into an error that names the medium.

    Raises:
        PlaceError: place ``medium``, path ``out``: ``--out OUT: cannot write FILE (why)``.
    """
    try:
        yield
    except OSError as exc:
        what = f" {exc.filename}" if exc.filename else ""
        raise PlaceError("medium", str(out),
                         f"--out {out}: cannot write{what} ({(exc.strerror or str(exc)).lower()})") from None


def lock_medium(out: Path) -> FolderLock:
    """Create ``OUT/.ferry-export`` and hold its lock for this export.

    Raises:
        PlaceError: another export writes to ``out`` (naming it), or ``out`` cannot be written.
    """
    with writing_medium(out):
        make_dirs(out / JOURNAL_DIR)
    return acquire(out / JOURNAL_DIR, MEDIUM_LOCK, place="medium", label=f"--out {out}", what="export")


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
        raise UsageError(f"--out {out} is a file; give a folder for the bundle")
    if out.is_dir() and not journal.path.exists():
        if (out / MANIFEST_NAME).exists() or any(out.glob(f"{VOLUME_PREFIX}*/{MANIFEST_NAME}")):
            raise UsageError(f"--out {out} already holds a finished bundle; give another folder")
        leftovers = [p.name for p in out.iterdir() if p.name != JOURNAL_DIR]
        if leftovers:
            raise UsageError(f"--out {out} is not empty ({leftovers[0]} ...); give an empty or new folder")


# --------------------------------------------------------------------------- the export


def export(opts: ExportOptions, progress: Progress) -> ExportResult:
    """Write the signed bundle ``opts.spec`` describes into ``opts.out`` (``ferry export``).

    Resumable: an interrupted run with the same spec and options reuses the packs already
    written under ``opts.out``. The layout written is docs/bundle-format.md (format 1.x).

    With ``opts.self_install``, ferry's own wheels for the edge are made first
    (:mod:`bundler.selfinstall`, in a temporary folder) and carried as the model artifact
    ``ferry-self-install`` and as plain files in ``OUT/self-install``.

    Args:
        opts: the spec file, output folder, signing key files, hub state folder, optional
            receipt (``since``) for a delta and ``max_volume_size`` in bytes (None: one volume).
        progress: where long work and events are reported (:class:`manifests.progress.Progress`;
            ``manifests.progress.Silent()`` for none).
    Returns:
        the manifest written, its digest (``sha256:<64 hex>``), the output folder and the raw
        and stored byte counts.
    Raises:
        SpecError: the spec or a file it names is malformed. UsageError: options that cannot
        work (``--out`` not empty, no key, volumes too small). KeyFileError: a signing key.
        PlaceError: reading a source, writing the medium or the hub state failed.
        RegistryError: pulling an image failed. LimitError: a format limit would be exceeded.
        PlaceError also when the hub state or ``--out`` is held by another export (naming it).
        Interrupted: Ctrl-C; finished packs are kept (journaled) and the same command resumes.
    """
    if opts.self_install is None:
        return _export(opts, progress, None)
    import tempfile

    from .selfinstall import build

    with tempfile.TemporaryDirectory(prefix="ferry-self-install-") as tmp:
        staging = Path(tmp) / "payload"
        progress.info(f"self-install: making wheels with pip for {opts.self_install.describe()}")
        wheels = build(staging, opts.self_install)
        progress.info(f"self-install: {len(wheels)} wheel(s) for {opts.self_install.describe()}")
        return _export(opts, progress, staging)


def _export(opts: ExportOptions, progress: Progress, staging: Path | None) -> ExportResult:
    """Write the bundle ``opts.spec`` describes into ``opts.out`` (see the module's order of work).

    Args:
        opts: the spec, the medium folder, signing keys, the hub state folder and options.
        progress: where long work and events are reported (:class:`manifests.progress.Progress`).

    Returns:
        What was written: the manifest, its digest, the volume folders, byte counts.

    Raises:
        SpecError, FerryError: the spec, a key, the receipt or a source is refused (before the
            medium is touched); errors reading a source name the source.
        PlaceError: the hub state or ``--out`` is held by another export (naming it), or writing
            there failed (naming that folder: ``medium`` or ``state``).
        Interrupted: Ctrl-C; finished packs are kept (journaled) and the same command resumes.
    """
    tune_malloc(memory.export_sizes(opts.memory_budget).trim)
    memory.check(opts.memory_budget)  # before anything is read: a budget too small is a usage error
    spec = load_spec(opts.spec)
    spec_bytes = opts.spec.read_bytes()
    if not opts.keys:
        raise UsageError("give at least one signing key with --key")
    keys = load_signing_keys(opts.keys, ask=opts.ask)

    receipt_bytes: bytes | None = None
    receipt: Receipt | None = None
    held: frozenset[str] = frozenset()
    base: Base | None = None
    if opts.since is not None:
        receipt_bytes = read_bounded(opts.since, limits.MAX_RECEIPT_BYTES, "receipt", place="source")
        receipt = Receipt.from_bytes(receipt_bytes)
        held = frozenset(receipt.chunks)
        base = Base(receipt=receipt_digest(receipt_bytes), site=receipt.site, created=receipt.created)

    out = Path(os.path.abspath(opts.out))
    journal = Journal(out)
    _check_out_folder(out, journal)

    choices: list[Choice] = []
    artifacts = build_sources(spec, opts, progress, choices)
    for c in choices:
        progress.info(c.describe())
    if staging is not None:
        from .sources.models import model_source

        artifacts.append(model_source(ARTIFACT_NAME, __version__, staging))
        artifacts.sort(key=lambda a: apply_rank(a.kind))
    warnings = [w for a in artifacts for w in a.warnings] + uncarried_image_warnings(artifacts)
    for w in warnings:
        progress.warn(w)

    files = [f for a in artifacts for f in a.files]
    raw_total = sum(f.size for f in files)
    sizes = memory.export_sizes(opts.memory_budget, memory.usable_cpus())
    pieces = sum(len(chunker.segments(f.local_path, f.size, sizes.max_header)) if f.local_path is not None else 1
                 for f in files)
    reserve = manifest_reserve(len(files), raw_total, sum(len((f.path or "").encode()) for f in files), pieces)
    budget: int | None = None
    if opts.max_volume_size is not None:
        budget = opts.max_volume_size - reserve
        smallest = limits.MAX_STORED_CHUNK_SIZE + reserve
        if budget < limits.MAX_STORED_CHUNK_SIZE:
            from manifests.progress import human_bytes

            raise UsageError(f"--max-volume-size must be at least {human_bytes(smallest)} for this bundle "
                             f"(a chunk of up to {human_bytes(limits.MAX_STORED_CHUNK_SIZE)} plus the manifest)")

    fp = fingerprint(spec_bytes, receipt_bytes, opts.max_volume_size, opts.self_install,
                     {c.model: c.variant.name for c in choices})
    state = HubState(opts.state, opts.state_label)
    medium: FolderLock | None = None
    created = not out.exists()
    try:
        state.lock()  # one export per hub state, one per medium folder: refused at once, naming the holder
        medium = lock_medium(out)
        _check_out_folder(out, journal)  # again, now that no other export can change OUT
        previous = journal.read()
        if previous is not None and previous[0].fingerprint != fp:
            raise FerryError(f"--out {out} holds an unfinished export of another spec or other options; "
                             f"rerun the same command, or give another folder")
        try:
            result = _export_locked(spec, opts, out, journal, state, artifacts, files, raw_total, reserve, pieces,
                                    budget, held, base, keys, fp, previous, progress, staging, receipt)
        except KeyboardInterrupt:
            raise Interrupted(_interrupted_message(out, journal)) from None
        result.warnings = warnings
        result.choices = choices
        result.variant_deltas = variant_deltas(result.manifest, receipt) if receipt is not None else []
        return result
    except BaseException:
        if medium is not None and not journal.path.exists():  # nothing of this run to resume: no trace
            try:
                journal.remove()
                if created:
                    out.rmdir()
            except OSError:
                pass
        raise
    finally:
        if medium is not None:
            medium.release()
        state.close()


def _interrupted_message(out: Path, journal: Journal) -> str:
    """What an interrupted export kept, and how to go on (the journal lists the finished packs)."""
    from manifests.progress import human_bytes

    try:
        previous = journal.read()
    except (OSError, FerryError):
        previous = None
    if previous is None or not previous[1]:
        kept = "nothing finished yet"
    else:
        kept = f"{len(previous[1])} finished pack(s) ({human_bytes(sum(p.size for p in previous[1]))}) kept"
    return f"export interrupted: {kept} in --out {out}; run the same command to resume"


def _export_locked(spec: Spec, opts: ExportOptions, out: Path, journal: Journal, state: HubState,
                   artifacts: list[SourceArtifact], files: list[SourceFile], raw_total: int, reserve: int, pieces: int,
                   budget: int | None, held: frozenset[str], base: Base | None, keys: list[Any], fp: str,
                   previous: tuple[JournalHeader, list[FinishedPack]] | None, progress: Any,
                   staging: Path | None, receipt: Receipt | None = None) -> ExportResult:
    """The export proper, with the hub state and the medium locked."""
    volumes_mode = opts.max_volume_size is not None
    # Free space: an upper bound of what is left to write (see docs/spec.md).
    done = sum(p.size for p in previous[1]) if previous else 0
    need_raw = 0
    sparse = False
    for f in files:
        cached = state.cached(FileKey.of(f.local_path)) if f.local_path is not None else None
        if cached is not None:
            need_raw += sum(s for c, s in cached.chunks if c not in held)
        elif f.local_path is not None:
            estimate = stored_estimate(f.size, os.stat(f.local_path).st_blocks * 512)
            sparse = sparse or estimate < f.size
            need_raw += estimate
        else:
            need_raw += f.size
    frames = need_raw + need_raw // 1024 + 64 * chunk_bound(need_raw, pieces + len(files))
    volumes_guess = 1 if budget is None else max(1, -(-frames // budget))
    need = max(0, frames - done) + reserve * volumes_guess
    check_space(need, free_bytes(out), out,
                note=" (an estimate: sparse files count at the bytes they occupy on disk)" if sparse else "")
    check_space(1024 * 1024 + 200 * len(files), free_bytes(opts.state), opts.state, place="state",
                label=state.label)

    with writing_medium(out):
        kept = _prepare_medium(out, journal, volumes_mode, previous)
    if previous is not None:
        header = previous[0]
    else:
        sequence = state.next_sequence(spec.channel)
        header = JournalHeader(fingerprint=fp, sequence=sequence, created=utc_now(),
                               bundle_id=f"{spec.name[:96]}-{sequence}-{secrets.token_hex(6)}")
    with writing_medium(out):
        journal.rewrite(header, kept)
    progress.info(f"bundle {spec.name} channel {spec.channel} sequence {header.sequence} ({state.label} {state.root})"
                  + (f" (resuming: {len(kept)} finished pack(s) kept)" if previous else ""))

    placed: dict[str, tuple[str, Placed]] = {}
    for p in kept:
        for c in p.chunks:
            placed.setdefault(c.id, (p.name, c))
    last = kept[-1] if kept else None
    sizes = memory.export_sizes(opts.memory_budget, memory.usable_cpus())
    writer = PackWriter(out, volume_budget=budget, on_finish=journal.record, max_queued=sizes.queued,
                        first_number=(pack_number(last.name) or 0) + 1 if last else 1,
                        volume=last.volume if last else 1,
                        volume_used=sum(p.size for p in kept if last and p.volume == last.volume))
    finished: list[FinishedPack] = list(kept)
    record = writer.on_finish

    def on_finish(p: FinishedPack) -> None:
        record(p)
        finished.append(p)

    writer.on_finish = on_finish
    run = _Run(writer, state, held, placed, sizes)
    builds: list[tuple[SourceArtifact, list[_EntryBuild]]] = []
    modelcars: dict[str, str] = {}  # model name -> its modelcar layer's digest (format 1.3)
    try:
        with progress.task("export", raw_total) as overall:
            for a in artifacts:
                entries: list[_EntryBuild] = []
                installed = receipt is not None and _installed_at_site(a, receipt)
                # model files in layer order (by path, manifests.modelpack.modelcar_plan): the
                # modelcar layer's sha256 is hashed as they are read
                order = sorted(a.files, key=lambda f: f.path or "") if a.kind == "model" else a.files
                if a.kind == "model":
                    run.start_model(a)
                with progress.task(f"{a.kind} {a.name} {a.version}", sum(f.size for f in a.files)) as task:
                    by_file: dict[int, _EntryBuild] = {}
                    for sf in order:
                        why = "installed" if installed else (
                            "site-blobs" if receipt is not None and receipt.held_blob(sf.digest) else None)
                        build = by_file[id(sf)] = _chunk_file(run, sf, task, overall, why)
                        run.remember_digests()
                    entries = [by_file[id(sf)] for sf in a.files]
                if run.sha is not None:
                    layer = _model_digests(run, a, entries)
                    if layer is not None:
                        modelcars[a.name] = layer
                builds.append((a, entries))
            run.drain()
        with writing_medium(out):
            writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        run.close()

    manifest = _manifest(spec, header, builds, finished, placed, held | run.held_whole, base, opts.expires,
                         modelcars)
    self_install = None
    if staging is not None and opts.self_install is not None:  # before the manifest: a finished bundle is whole
        plain = copy_to_medium(staging, out)
        self_install = {"folder": str(plain), "wheels": len(list((plain / "wheels").iterdir())),
                        "sha256sums": sha256_file(plain / SUMS_NAME), "target": opts.self_install.describe()}
    with writing_medium(out):
        result = _write_manifests(out, manifest, keys, opts.max_volume_size, volumes_mode, finished,
                                  _policy_files(opts.state), opts.payload_type)
        journal.remove()
    stored = sum(c.stored or 0 for c in manifest.chunks)
    return ExportResult(manifest=manifest, digest=result[0], out=out, volume_dirs=result[1],
                        raw_bytes=raw_total, stored_bytes=stored, written_bytes=run.written,
                        reused_packs=len(kept), state=state.root, self_install=self_install,
                        left_out=left_out(manifest, builds) if base is not None else [])


def _installed_at_site(a: SourceArtifact, receipt: Receipt) -> bool:
    """Whether the receipt lists this manifest set installed with the same version and
    content (``Receipt.holds_artifact``): the edge skips it, so a delta carries none of its
    files. Asked only of manifest sets, whose bytes are in memory (bounded by
    MAX_KUBE_SET_BYTES) so that their content digest is known before they are chunked; models
    and images are left out chunk by chunk and blob by blob."""
    if a.kind != "manifests":
        return False

    pairs = []
    for f in a.files:
        with f.open() as stream:
            pairs.append((f.path or "", blake3_hex(stream.read())))
    return receipt.holds_artifact(a.kind, a.name, a.version, artifact_content_digest(pairs))


def left_out(manifest: Manifest, builds: list[tuple[SourceArtifact, list[_EntryBuild]]]) -> list[LeftOut]:
    """What a delta bundle did not carry, grouped by why (:class:`LeftOut`): whole files and
    blobs first (installed units, blobs the site holds), then the other chunks the receipt
    lists. A chunk is counted once, under the first reason that left it out."""
    carried = {c.id for c in manifest.chunks if c.carried}
    sizes = {c.id: c.size for c in manifest.chunks}
    seen: set[str] = set()
    out = []
    for reason in ("installed", "site-blobs", None):
        entries, chunk_ids, names = 0, [], []
        for a, builds_of in builds:
            hit = False
            for b in builds_of:
                if b.held != reason:
                    continue
                new = [c for c in b.ids if c is not None and c not in carried and c not in seen]
                if reason is not None or new:
                    entries += 1 if reason is not None else 0
                    hit = True
                seen.update(new)
                chunk_ids.extend(new)
            if hit:
                names.append(f"{a.kind} {a.name}")
        if chunk_ids or entries:
            out.append(LeftOut(reason or "site-chunks", entries, len(set(chunk_ids)),
                               sum(sizes[c] for c in set(chunk_ids)), tuple(dict.fromkeys(names))))
    return out


def _manifest(spec: Spec, header: JournalHeader, builds: list[tuple[SourceArtifact, list[_EntryBuild]]],
              finished: list[FinishedPack], placed: dict[str, tuple[str, Placed]], held: frozenset[str],
              base: Base | None, expires: timedelta | None = None,
              modelcars: dict[str, str] | None = None) -> Manifest:
    pack_index = {p.name: i for i, p in enumerate(finished)}
    sizes: dict[str, int] = {}
    artifacts = []
    for a, entries in builds:
        built = tuple(b.entry() for b in entries)
        for b in entries:
            for cid, size in zip(b.ids, b.sizes):
                sizes[cid] = size  # type: ignore[index]
        artifacts.append(Artifact(kind=a.kind, name=a.name, version=a.version, entries=built,
                                  image=a.image, images=tuple(a.images), variant=a.variant,
                                  modelcar=(modelcars or {}).get(a.name) if a.kind == "model" else None))
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
        volumes=max([p.volume for p in finished] or [1]), base=base,
        **({"format_version": _format_version(artifacts)}))


def _format_version(artifacts: list[Artifact]) -> str:
    """The lowest format version that holds what the manifest carries (docs/bundle-format.md
    section 8): 1.3 with publishing digests (3.2.3), 1.2 with a model variant (3.2.2), else 1.1."""
    if any(a.modelcar or any(e.sha256 for e in a.entries) for a in artifacts):
        return PUBLISH_FORMAT_VERSION
    if any(a.variant for a in artifacts):
        return VARIANTS_FORMAT_VERSION
    from manifests import FORMAT_VERSION

    return FORMAT_VERSION


def _expiry(created: str, valid: timedelta | None) -> str | None:
    from manifests.root import format_time, parse_time

    return None if valid is None else format_time(parse_time(created) + valid)


def _policy_files(state: Path) -> list[tuple[str, bytes]]:
    """The hub's signed trust policy history (manifests.policy_files), carried in every volume's
    ``trust/`` so that edges behind can rotate forward (docs/bundle-format.md §11)."""
    from manifests.policy_files import PolicyHistory, root_file_names

    files = []
    for stored in PolicyHistory(state).history():
        doc, sig = root_file_names(stored.root.version)
        files += [(doc, stored.root.raw), (sig, stored.signature)]
    return files


def _write_manifests(out: Path, manifest: Manifest, keys: list[Any], max_volume_size: int | None,
                     volumes_mode: bool, finished: list[FinishedPack],
                     policy_files: list[tuple[str, bytes]] = [],
                     payload_type: str = MANIFEST_PAYLOAD_TYPE) -> tuple[str, list[Path]]:
    """Trust policy files, signature then manifest, into every volume: the last writes of an export."""
    data = manifest.to_bytes()
    sig = sign(data, keys, payload_type).to_bytes()
    roots = []
    for v in range(1, manifest.volumes + 1):
        root = _volume_root(out, v, volumes_mode)
        if max_volume_size is not None:
            used = (sum(p.size for p in finished if p.volume == v) + len(data) + len(sig)
                    + sum(len(b) for _, b in policy_files))
            if used > max_volume_size:
                raise UsageError(f"volume {v} would hold {used} bytes, over --max-volume-size {max_volume_size}; "
                                 "give a larger size")
        make_dirs(root)
        roots.append(root)
    for root in roots:
        if policy_files:
            make_dirs(root / "trust")
        for name, body in policy_files:
            write_atomic(root / "trust" / name, body, "medium")
        write_atomic(root / SIGNATURE_NAME, sig, "medium")
    for root in roots:
        write_atomic(root / MANIFEST_NAME, data, "medium")
    fsync_dir(out)
    return manifest_digest(data), roots
