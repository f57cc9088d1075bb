"""Reading a bundle from a registry (``oci://``): signatures first, then only the chunks the site lacks.

The bundle's OCI artifact (docs/bundle-format.md section 12):

1. the OCI manifest is fetched once, by tag, and everything after it by digest (a tag that
   moves meanwhile changes nothing); then ``manifest.json`` (the config blob) and the
   signature file, each checked against its digest and against the format's size limits,
   and the signatures verified against the site's trust **before any pack byte is fetched**
   (:func:`fetch_signed`); these small files go to a temporary folder, read like a medium's;
2. ``ferry import``: :class:`RegistryPacks` hands the import each chunk it asks for that the
   site lacks, fetched on a thread of its own ahead of the writer (within a bounded number of
   bytes) by HTTP Range requests into the pack blobs, neighbours coalesced into one request
   whose answer is read chunk by chunk, each chunk decompressed and verified against its signed
   id (as on a medium) as soon as it has arrived and handed over as it is (checked once, not
   again by the import); the apply targets write it once, and what survives a kill -9 is what
   the store recorded (the model staging's checkpoints);
3. ``ferry verify``: as the import, through :class:`RegistryPacks` (:func:`open_link`), every
   carried chunk read once in pack order and checked as it arrives; nothing is written but the
   signed files (no copy of the packs).

Failures are retried with exponential backoff (a truncated answer, a refused connection,
bytes that do not match their chunk id); after the last attempt the error is one line
naming the registry, the pack and why. The import checks every entry's BLAKE3 (and sha256)
over the bytes it writes, as from a medium.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import TypeVar
from pathlib import Path

from manifests.budget import FETCH_AHEAD
from manifests.bundle import MANIFEST_NAME, PACKS_DIR, SIGNATURE_NAME, SignedManifest, open_manifest, volume_dir_name
from manifests.chunks import decompress_chunk
from manifests.digest import manifest_digest
from manifests.errors import ChunkError, FormatError, RegistryError, UsageError, VerificationError
from manifests.link import BundleArtifact, OciRef, read_artifact
from manifests.model import Chunk, Manifest
from manifests.oci import Descriptor
from manifests.progress import Progress
from manifests.trust import Trust
from transport.registry import RegistryClient

from .content import Verified

#: Chunks closer than this in one pack are fetched in one request (the gap is read and dropped).
COALESCE_GAP = 256 * 1024
#: The most bytes one Range request asks for.
MAX_RANGE = 64 * 1024 * 1024
#: Seconds :meth:`RegistryPacks.close` waits for its fetcher thread to stop.
CLOSE_WAIT = 10.0
#: The most bytes read from an answer at a time under ``--limit-rate`` (without it, a chunk is read at once).
PIECE = 1 << 20
#: Attempts per range before giving up, and the first wait between them (doubled each time).
ATTEMPTS = 4
FIRST_BACKOFF = 0.5


def parse_rate(text: str) -> int:
    """``--limit-rate`` as bytes per second: ``500K``, ``10M``, ``1G`` (IEC: K = 1024), or a number.

    Raises UsageError for anything else or a rate below 1 KiB/s."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("/S").removesuffix("IB").removesuffix("B")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in "KMG" else (t, "")
    if not num.isdigit() or int(num) * units[unit] < 1024:
        raise UsageError(f"--limit-rate {text!r}: give bytes per second of at least 1K, e.g. 500K, 10M, 1G")
    return int(num) * units[unit]


class RateLimit:
    """Caps the average rate of bytes taken to ``rate`` per second (None: no cap)."""

    def __init__(self, rate: int | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.start = clock()
        self.taken = 0

    def take(self, n: int) -> None:
        """Account ``n`` bytes; sleep until the average is back under the rate."""
        if not self.rate:
            return
        self.taken += n
        ahead = self.taken / self.rate - (self.clock() - self.start)
        if ahead > 0:
            self.sleep(ahead)


@dataclass
class FetchStats:
    """What reading a bundle from a registry cost: requests and bytes received."""

    reference: str
    manifest_digest: str = ""
    artifact_digest: str = ""
    chunks_needed: int = 0
    chunks_already: int = 0  # verified in the folder from an earlier, interrupted run
    chunks_fetched: int = 0
    bytes_fetched: int = 0  # every byte received: manifests, signatures and ranges (gaps included)
    requests: int = 0
    retries: int = 0
    ranges_ignored: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"reference": self.reference, "manifestDigest": self.manifest_digest,
                "artifactDigest": self.artifact_digest, "chunksNeeded": self.chunks_needed,
                "chunksAlready": self.chunks_already, "chunksFetched": self.chunks_fetched,
                "bytesFetched": self.bytes_fetched, "requests": self.requests, "retries": self.retries}


_T = TypeVar("_T")


def retrying(fn: Callable[[], _T], stats: FetchStats, progress: Progress | None, what: str, *,
             attempts: int = ATTEMPTS, backoff: float = FIRST_BACKOFF,
             sleep: Callable[[float], None] = time.sleep) -> _T:
    """``fn()``, again after ``backoff``, ``2 * backoff``, ... seconds while it raises
    RegistryError (unreachable, truncated) or VerificationError (bytes not matching their
    digest), at most ``attempts`` times; then the last error, prefixed with ``what`` and
    ``gave up after N attempts``. A missing bundle (VerificationError "not found") is not retried."""
    wait = backoff
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (RegistryError, VerificationError) as exc:
            if attempt == attempts or "not found in the registry" in str(exc):
                if "not found in the registry" in str(exc):
                    raise RegistryError(str(exc)) from None
                raise type(exc)(f"{what}: gave up after {attempts} attempts: {exc}") from None
            stats.retries += 1
            if progress is not None:
                progress.warn(f"{what}: {exc}; retrying in {wait:g}s (attempt {attempt + 1} of {attempts})")
            sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


def _blob(client: RegistryClient, repo: str, d: Descriptor, stats: FetchStats) -> bytes:
    """A whole small blob (manifest, signature file, trust file), checked against its digest and size."""
    reader = client.open_blob(repo, d.digest, d.size)
    stats.requests += 1
    try:
        parts = []
        while piece := reader.read(1 << 20):
            parts.append(piece)
        data = b"".join(parts)
    finally:
        reader.close()
    stats.bytes_fetched += len(data)
    if len(data) != d.size or "sha256:" + hashlib.sha256(data).hexdigest() != d.digest:
        raise VerificationError(f"registry {client.host}: blob {d.digest} of {repo} does not match its digest")
    return data


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def volume_folders(folder: Path, m: Manifest) -> dict[int, Path]:
    """Where each volume lies in the assembled folder: the folder itself for one volume, else ``vol-NNN``."""
    if m.volumes == 1:
        return {1: folder}
    return {n: folder / volume_dir_name(n) for n in range(1, m.volumes + 1)}


def signed_files(client: RegistryClient, ref: OciRef, stats: FetchStats,
                 progress: Progress | None = None) -> tuple[BundleArtifact, bytes, bytes, dict[str, bytes]]:
    """The OCI manifest of ``ref`` (once, by tag), then by digest ``manifest.json``, the signature
    file and carried trust files, each checked against its digest and size limit; not verified.
    A failed request (unreachable, truncated, bytes not matching their digest) is retried as
    :func:`retrying` says; ``progress`` hears of each retry.

    Returns:
        the artifact, the manifest bytes, the signature bytes, {``trust/N.root.json[.sig]``: bytes}.
    Raises:
        FormatError / LimitError: not a ferry bundle. VerificationError: a blob that does not
        match its digest. RegistryError: the registry failed or does not hold ``ref``.
    """
    def manifest() -> tuple[bytes, str, str]:
        try:
            return client.get_manifest(ref.repository, ref.reference)
        except RegistryError as exc:
            if " not found" in str(exc):
                raise VerificationError(f"bundle {ref}: not found in the registry") from None
            raise

    data, media_type, digest = retrying(manifest, stats, progress, f"bundle {ref}")
    stats.requests += 1
    stats.bytes_fetched += len(data)
    stats.artifact_digest = digest
    art = read_artifact(data, media_type, str(ref))

    def blob(d: Descriptor) -> bytes:
        return retrying(lambda: _blob(client, ref.repository, d, stats), stats, progress, f"bundle {ref}")

    mbytes = blob(art.manifest)
    sbytes = blob(art.signature)
    trust_files = {name: blob(d) for name, d in sorted(art.trust.items())}
    stats.manifest_digest = manifest_digest(mbytes)
    return art, mbytes, sbytes, trust_files


def fetch_signed(client: RegistryClient, ref: OciRef, base: Path, trust: Callable[[list[Path]], Trust],
                 stats: FetchStats, progress: Progress | None = None) -> tuple[SignedManifest, BundleArtifact, Path]:
    """Step 1: the OCI manifest, ``manifest.json`` and its signatures, verified; then the
    folder laid out with the signed files and empty ``packs/`` folders.

    Args:
        client: the registry; ref: the bundle's reference; base: the folder under which the
            bundle is assembled, in ``<base>/sha256-<hex of manifest.json>`` (made when missing,
            reused to resume, whatever tag named it).
        trust: given the volume folders (which hold any carried ``trust/`` files), the Trust
            to verify against (the import's hook, :func:`importer.trust_store.trust_for_import`).
    Returns:
        the verified manifest, what the registry says about the bundle's blobs, and the folder.
    Raises:
        FormatError / LimitError: not a ferry bundle, over a limit. VerificationError: a blob
        not matching its digest, signatures that do not meet the trust, a pack blob whose size
        is not the signed one. RegistryError: the registry failed.
    """
    where = str(ref)
    art, mbytes, sbytes, trust_files = signed_files(client, ref, stats, progress)
    folder = Path(base) / stats.manifest_digest.replace(":", "-")
    staging = folder.parent / (folder.name + ".signed")
    staging.mkdir(parents=True, exist_ok=True)
    for name, body in trust_files.items():
        (staging / "trust").mkdir(exist_ok=True)
        _write(staging / name, body)
    try:
        signed = open_manifest(mbytes, sbytes, trust([staging]))
    except (VerificationError, FormatError) as exc:  # one-message types (PolicyError, LimitError included)
        raise type(exc)(f"bundle {where}: {exc}") from None
    finally:
        _rmtree_quiet(staging)
    m = signed.manifest
    for pack in m.packs:
        blob = art.packs.get(pack.name)
        if blob is None:
            raise VerificationError(f"bundle {where}: pack {pack.name} of the signed manifest is not in the artifact")
        if blob.size != pack.size:
            raise VerificationError(f"bundle {where}: pack {pack.name} is {blob.size} bytes in the registry, the "
                                    f"signed manifest says {pack.size}")
    vols = volume_folders(folder, m)
    for n, vol in vols.items():
        (vol / PACKS_DIR).mkdir(parents=True, exist_ok=True)
        for name, body in trust_files.items():
            (vol / "trust").mkdir(exist_ok=True)
            _write(vol / name, body)
        _write(vol / SIGNATURE_NAME, sbytes)
        _write(vol / MANIFEST_NAME, mbytes)  # last: the volume is whole once its manifest is there
    return signed, art, folder


def _rmtree_quiet(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def coalesce(chunks: list[Chunk], gap: int = COALESCE_GAP, limit: int = MAX_RANGE) -> list[list[Chunk]]:
    """Chunks of one pack grouped into ranges to fetch: sorted by offset; the next chunk joins
    the current range when it starts at most ``gap`` bytes after its end and the range stays
    within ``limit`` bytes (a single chunk larger than ``limit`` is a range of its own)."""
    out: list[list[Chunk]] = []
    for c in sorted(chunks, key=lambda c: c.offset or 0):
        assert c.offset is not None and c.stored is not None
        if out:
            cur = out[-1]
            first, last = cur[0], cur[-1]
            assert first.offset is not None and last.offset is not None and last.stored is not None
            end = last.offset + last.stored
            if c.offset - end <= gap and c.offset + c.stored - first.offset <= limit:
                cur.append(c)
                continue
        out.append([c])
    return out


def _verified_chunks(client: RegistryClient, repo: str, blob: Descriptor, pack_name: str, group: list[Chunk],
                     stats: FetchStats, limit: RateLimit | None, attempts: int, backoff: float,
                     sleep: Callable[[float], None], progress: Progress,
                     stopped: Callable[[], bool] = lambda: False
                     ) -> Generator[tuple[Chunk, bytes, bytes], None, None]:
    """The chunks of ``group`` (one pack, sorted by offset: a :func:`coalesce` range), each
    yielded with its stored bytes and its raw bytes as soon as they have arrived and verified
    against its signed id (:func:`manifests.chunks.decompress_chunk`, whose result the raw bytes
    are: a caller that wants them need not decompress again), read from one Range request whose answer
    stays open across yields (:meth:`transport.registry.RegistryClient.open_range`; the caller
    may take its time with each chunk).

    Memory: the chunk being received (read from the answer at once, or in :data:`PIECE` parts
    under ``limit``); the gaps between chunks (at most :data:`COALESCE_GAP`) are read and
    dropped. A failed answer (truncated, a lie
    about Range, unreachable, bytes not matching a chunk id) is retried from the first chunk not
    yet yielded, after ``backoff``, ``2 * backoff``, ... seconds, ``attempts`` times in all.
    ``stopped()`` is asked before each read: when true, the answer is closed and nothing more
    is yielded. ``limit`` accounts each read (``--limit-rate``).

    Raises:
        RegistryError (exit 2): the range failed ``attempts`` times, naming the registry, the
        pack and the last reason. ChunkError (exit 1): the last attempt served bytes that do not
        match a signed chunk id (none of them was yielded).
    """
    k = 0  # group[k] is the first chunk not yet yielded
    wait = backoff
    for attempt in range(1, attempts + 1):
        start = group[k].offset or 0
        last = group[-1]
        assert last.offset is not None and last.stored is not None
        try:
            stats.requests += 1
            answer = client.open_range(repo, blob.digest, start, last.offset + last.stored - start)
            try:

                def pull(n: int) -> bytes | None:
                    """The answer's next ``n`` bytes (in 1 MiB pieces under a rate limit), or None when stopped."""
                    step = n if limit is None else PIECE
                    parts = []
                    got = 0
                    while got < n:
                        if stopped():
                            return None
                        data = answer.read(min(step, n - got))
                        if limit is not None:
                            limit.take(len(data))
                        parts.append(data)
                        got += len(data)
                    return parts[0] if len(parts) == 1 else b"".join(parts)

                at = start  # the blob offset of the answer's next byte
                while k < len(group):
                    c = group[k]
                    assert c.offset is not None and c.stored is not None
                    if at < c.offset and pull(c.offset - at) is None:  # a gap (chunks not wanted): dropped
                        return
                    stored = pull(c.stored)
                    if stored is None:
                        return
                    at = c.offset + c.stored
                    raw = decompress_chunk(stored, chunk_id=c.id, size=c.size)  # verified before it is handed over
                    stats.chunks_fetched += 1
                    k += 1
                    yield c, stored, raw
            finally:
                stats.bytes_fetched += answer.received
                answer.close()
            return
        except (RegistryError, ChunkError) as exc:
            if k == len(group) or stopped():
                return
            if attempt == attempts:
                what = (f"registry {client.host}: pack {pack_name} ({blob.digest}): gave up after {attempts} "
                        f"attempts: {exc}")
                if isinstance(exc, ChunkError):
                    raise ChunkError(exc.chunk_id, exc.why, f"{what}; bytes that do not match a signed chunk id "
                                     "were not written") from None
                raise RegistryError(what) from None
            stats.retries += 1
            progress.warn(f"registry {client.host}: pack {pack_name}: {exc}; retrying in {wait:g}s "
                          f"(attempt {attempt + 1} of {attempts})")
            sleep(wait)
            wait *= 2


class RegistryPacks:
    """The chunks a bundle carries, read from its pack blobs in a registry as the import asks
    for them (an :class:`importer.content.CarriedChunks`, beside the medium's PackReader):
    nothing is written outside the apply targets, so the data is written once.

    **Fetch-ahead.** One thread fetches the chunks the import wants (:meth:`want`) in pack
    order, by coalesced Range requests (:func:`coalesce`, at most ``span`` bytes each) whose
    answers stay open across reads, and hands each chunk over as soon as its bytes are in,
    decompressed and verified against its signed id (:func:`_verified_chunks`), as a
    :class:`importer.content.Verified` (its raw bytes; the stored bytes are dropped), while the
    import hashes and writes the chunks before it: fetching, checking and writing overlap, and
    each chunk is decompressed and checked once (the import's pool does not do it again; why
    that skips no check: :class:`importer.content.Verified`). The thread stops reading once the
    chunks fetched and not yet read reach ``ahead`` raw bytes, so these stay under ``ahead``
    plus one raw chunk (:data:`manifests.limits.MAX_CHUNK_SIZE`; :attr:`peak` records the most
    held), besides the one chunk being received and checked (its stored bytes, which
    ``http.client`` reads into a buffer of its own first, and its raw bytes). A chunk asked for
    out of that order (behind the fetcher, or past what the buffer holds) restarts the fetcher
    from it; the chunks it held are dropped (fetched again when asked: memory stays bounded).

    A bad answer is retried as :func:`_verified_chunks` says; after the last attempt the error
    is raised to the import at the first chunk it asks for that did not arrive (chunks verified
    before it are still handed over) and kept in :attr:`failure`. What survives a kill -9 is
    what the store recorded (the model staging's checkpoints,
    :data:`importer.apply.models.CHECKPOINT_BYTES`): the next run's plan counts those chunks
    as held and they are not fetched again; what the fetcher held is lost (``ahead`` bytes at most).

    Args:
        client, repo: the registry and repository; art: the artifact's blobs.
        m: the verified manifest; stats: updated with what was fetched; progress: hears of retries.
        limit: the ``--limit-rate`` cap. ahead: raw bytes fetched ahead and held (sized by the
            caller from :func:`manifests.budget.import_sizes`, ``fetch_ahead``). span: bytes one Range request
            may cover. attempts, backoff, sleep: the retry policy.
    """

    def __init__(self, client: RegistryClient, repo: str, art: BundleArtifact, m: Manifest, stats: FetchStats,
                 progress: Progress, *, limit: RateLimit | None = None, ahead: int = FETCH_AHEAD,
                 span: int = MAX_RANGE, attempts: int = ATTEMPTS, backoff: float = FIRST_BACKOFF,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client, self.repo, self.art, self.manifest = client, repo, art, m
        self.stats, self.progress, self.limit, self.ahead, self.span = stats, progress, limit, ahead, span
        self.attempts, self.backoff, self.sleep = attempts, backoff, sleep
        #: every carried chunk in pack order (the fetcher's order) and its place in it
        self._order = sorted((c for c in m.chunks if c.carried and c.pack is not None),
                             key=lambda c: (c.pack or 0, c.offset or 0))
        self._pos = {c.id: i for i, c in enumerate(self._order)}
        self._cond = threading.Condition()
        self._wanted: set[str] = set()
        self._todo: set[str] = set()  # wanted, neither read nor held here
        self._read: set[str] = set()  # handed over
        self._ready: dict[str, Verified] = {}  # fetched and verified, not yet read
        self._held = 0  # raw bytes in _ready
        self._cursor = 0  # index into _order where the fetcher looks for its next chunk
        self._target: str | None = None  # a chunk asked for that the fetcher must bring first
        self._gen = 0  # bumped on each restart: the fetcher drops what it was reading
        self._closed = False
        self._error: Exception | None = None  # what ended the fetcher
        self._thread: threading.Thread | None = None
        #: the most raw bytes held at once (fetched, verified, not yet read)
        self.peak = 0
        #: the error that ended fetching (after its retries) once the import met it; every later read raises it again
        self.failure: Exception | None = None

    def want(self, ids: Iterable[str]) -> None:
        """The chunks the import will read from here (needed, not held): the only ones fetched ahead."""
        with self._cond:
            self._wanted = {i for i in ids if i in self._pos}
            self._todo = self._wanted - self._ready.keys() - self._read

    def packs_at_hand(self) -> frozenset[int]:
        """Every pack: the registry holds them all (checked against the signed sizes)."""
        return frozenset(range(len(self.manifest.packs)))

    def volumes_at_hand(self) -> frozenset[int]:
        return frozenset(range(1, self.manifest.volumes + 1))

    def missing_volumes(self) -> list[int]:
        return []

    def damaged_files(self) -> list[str]:
        """None: the registry holds every pack at its signed size (:func:`fetch_signed` checked)."""
        return []

    def pack_file(self, index: int) -> str:
        """Where pack ``manifest.packs[index]`` is read from: its blob in the registry, for messages."""
        name = self.manifest.packs[index].name
        return f"{name} (blob {self.art.packs[name].digest} of {self.client.host}/{self.repo})"

    def has(self, chunk: Chunk) -> bool:
        """Whether ``chunk`` is carried (then a pack in the registry holds it)."""
        return chunk.id in self._pos

    def read_chunk(self, chunk: Chunk) -> bytes:
        """Carried ``chunk``'s raw bytes, checked against its id (a ChunkSource, for ``ferry verify``);
        raises as :meth:`read_stored`."""
        return self.read_stored(chunk).raw

    def read_stored(self, chunk: Chunk) -> Verified:
        """Carried ``chunk``'s raw bytes, decompressed and verified against its id as they arrived.

        Waits for the fetcher when the chunk is on its way; restarts it from the chunk otherwise.

        Raises:
            RegistryError (exit 2): the registry failed the range ``attempts`` times.
            ChunkError (exit 1): it served bytes that do not match signed chunk ids, or the chunk is not carried.
        """
        if self.failure is not None:
            raise self.failure
        i = self._pos.get(chunk.id)
        if i is None:
            raise ChunkError(chunk.id, "missing", f"chunk {chunk.id} is not carried in this bundle")
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._fetch, name="ferry-fetch", daemon=True)
                self._thread.start()
            while True:
                data = self._ready.pop(chunk.id, None)
                if data is not None:
                    self._held -= len(data.raw)
                    self._read.add(chunk.id)
                    self._cond.notify_all()
                    return data
                if self._error is not None:
                    self.failure = self._error
                    raise self.failure
                coming = (chunk.id == self._target or chunk.id in self._todo) and i >= self._cursor
                if not coming or (self._held >= self.ahead and chunk.id != self._target):
                    self._restart(i)
                self._cond.wait()

    def _restart(self, i: int) -> None:
        """The fetcher goes on from ``_order[i]`` (called with the lock held); what it held is dropped."""
        self._todo |= self._ready.keys() & self._wanted
        self._ready.clear()
        self._held = 0
        self._cursor, self._target = i, self._order[i].id
        self._gen += 1
        self._cond.notify_all()

    def _next_group(self) -> list[Chunk] | None:
        """The next range to fetch from the cursor on, or None (lock held)."""
        order, i = self._order, self._cursor
        while i < len(order) and order[i].id not in self._todo and order[i].id != self._target:
            i += 1
        self._cursor = i
        if i == len(order):
            return None
        first = order[i]
        assert first.offset is not None
        group = [first]
        for j in range(i + 1, len(order)):
            c = order[j]
            assert c.offset is not None
            if c.pack != first.pack or c.offset - first.offset > self.span:
                break
            if c.id in self._todo:
                group.append(c)
        return coalesce(group, limit=self.span)[0]

    def _fetch(self) -> None:
        """The fetcher thread: ranges in pack order into ``_ready``, at most ``ahead`` bytes ahead."""
        while True:
            with self._cond:
                group = None
                while not self._closed and self._error is None and (group := self._next_group()) is None:
                    self._cond.wait()
                if group is None:
                    return
                gen = self._gen
            pack = self.manifest.packs[group[0].pack or 0]

            def stopped() -> bool:
                return self._closed or self._gen != gen

            try:
                chunks = _verified_chunks(self.client, self.repo, self.art.packs[pack.name], pack.name, group,
                                          self.stats, self.limit, self.attempts, self.backoff, self.sleep,
                                          self.progress, stopped)
                try:
                    for c, _, raw in chunks:
                        with self._cond:
                            if stopped():
                                break
                            self._todo.discard(c.id)
                            if c.id == self._target:
                                self._target = None
                            self._ready[c.id] = Verified(c.id, raw)
                            self._held += len(raw)
                            self.peak = max(self.peak, self._held)
                            self._cursor = self._pos[c.id] + 1
                            self._cond.notify_all()
                            while self._held >= self.ahead and not stopped():
                                self._cond.wait()
                finally:
                    chunks.close()
            except Exception as exc:  # RegistryError, ChunkError after the retries; anything else as it is
                with self._cond:
                    if self._gen != gen and not self._closed:
                        continue  # the range of a restarted fetch: the new one is fetched anew
                    self._error = exc
                    self._cond.notify_all()
                return

    def close(self) -> None:
        """Stop the fetcher (it closes its answer at its next piece) and drop what it held.

        Waits for it at most :data:`CLOSE_WAIT` seconds: a registry that stopped sending in the
        middle of an answer (until the read timeout) does not hold up an interrupted import; the
        fetcher, a daemon thread, then ends with its read or with the process."""
        with self._cond:
            self._closed = True
            self._ready.clear()
            self._held = 0
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(CLOSE_WAIT)

    def __enter__(self) -> RegistryPacks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Linked:
    """A bundle in a registry whose signatures verified: its signed files (manifest, signature
    file, carried trust files; no pack) in ``folder``, read like a medium's, and its chunks read
    through :meth:`reader` as the import asks for them."""

    folder: Path
    base: Path  # the temporary folder ``folder`` lies in, removed by :meth:`close`
    signed: SignedManifest
    stats: FetchStats
    art: BundleArtifact
    client: RegistryClient
    ref: OciRef
    limit: RateLimit

    def reader(self, progress: Progress, ahead: int) -> RegistryPacks:
        """The bundle's chunks (:class:`RegistryPacks`), fetched at most ``ahead`` bytes ahead of the import."""
        return RegistryPacks(self.client, self.ref.repository, self.art, self.signed.manifest, self.stats, progress,
                             limit=self.limit, ahead=ahead)

    def verify_reader(self, progress: Progress) -> Callable[[Manifest], RegistryPacks]:
        """For ``ferry verify`` (:func:`importer.verify.verify_paths`): given the manifest, a
        reader that fetches every carried chunk in pack order, ahead as an import does
        (:func:`manifests.budget.import_sizes` at the default budget)."""
        from manifests.budget import import_sizes, usable_cpus

        def open_reader(m: Manifest) -> RegistryPacks:
            packs = self.reader(progress, import_sizes(cpus=usable_cpus()).fetch_ahead)
            packs.want(c.id for c in m.chunks if c.carried)
            return packs

        return open_reader

    def close(self) -> None:
        """Close the connection and remove the folder of signed files."""
        self.client.close()
        _rmtree_quiet(self.base)


def open_link(ref: OciRef, trust: Callable[[list[Path]], Trust], progress: Progress, *,
              insecure: frozenset[str] = frozenset(), rate: int | None = None) -> Linked:
    """Step 1 for an import: the bundle ``ref``'s signatures verified (:func:`fetch_signed`,
    no pack byte fetched), its signed files in a temporary folder; the caller closes it.

    Raises:
        as :func:`fetch_signed`.
    """
    import tempfile

    client = RegistryClient(ref.host, insecure_registries=insecure)
    stats = FetchStats(reference=str(ref))
    base = Path(tempfile.mkdtemp(prefix="ferry-link-"))
    try:
        signed, art, folder = fetch_signed(client, ref, base, trust, stats, progress)
    except BaseException:
        client.close()
        _rmtree_quiet(base)
        raise
    return Linked(folder, base, signed, stats, art, client, ref, RateLimit(rate))
