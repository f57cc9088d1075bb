"""Publish a model version folder as OCI artifacts: into an OCI layout, or into a registry.

Both forms of :mod:`manifests.modelpack` go to the repository ``models/<name>``:

- ``models/<name>:<version>`` names the **ModelPack artifact** (the spec's form: model-aware
  tools read its config and per-file layers, and each layer is the file itself);
- ``models/<name>:<version>-modelcar`` names the **modelcar image** (for runtimes that mount
  only images: KServe modelcars, Kubernetes image volumes).

Why the plain tag names the ModelPack form: it is the form the CNCF spec defines for models
and the one that costs no extra bytes (its layers *are* the model files); the modelcar is a
compatibility form found by its ``-modelcar`` tag (and workloads pin either by digest).

In a layout, raw layers are hard links to the model store's files where the file system
allows (same device, links permitted), copies otherwise; so the ModelPack form stores no
model byte twice. The modelcar's tar layer puts each file's data on a 4 KiB boundary
(:func:`manifests.modelpack.modelcar_plan`) and clones it from the model store's file
(:func:`clone_range`, ``FICLONERANGE``) where the file system has reflinks (XFS, btrfs): then
it too stores no model byte twice, only its headers and each file's last partial block.
Elsewhere (ext4) the data is copied in the kernel (:func:`copy_range`, ``copy_file_range``),
and only where that is refused through a buffer: a second copy of the bytes.

Publishing at import reads no model file and hashes none when the bundle carries the hub's
signed digests (format 1.3: each file's ``sha256`` and the ``modelcar`` layer's,
docs/bundle-format.md 3.2.3; :func:`signed_digests` says why the edge may trust them). For
an older bundle each file's sha256 and the modelcar layer's are computed while staging
writes the files (:class:`StagingHasher`, two worker threads fed the verified bytes). Either
way they reach publishing as :class:`StagedDigests`. Measured with
``bench/publish_bench.py`` (1 GiB; bench/README.md, "Publishing"): see docs/models-oci.md,
"Publishing cost".
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import queue
import stat
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING


from manifests.errors import FerryError, FormatError, PlaceError, VerificationError
from manifests.model import REPOSITORY_RE, TAG_RE, Artifact, utc_now
from manifests.budget import MIN_MEMORY_BUDGET, import_sizes
from manifests.modelpack import (MODELCAR_ALIGN, MODELCAR_TAG_SUFFIX, TAR_END, ModelcarHasher, ModelFacts,
                                 ModelFile, model_format, modelcar_config, modelcar_layer_size, modelcar_manifest,
                                 modelcar_plan, modelpack_config, modelpack_manifest, safetensors_facts,
                                 safetensors_header_length)
from manifests.oci import OCI_MANIFEST
from manifests.variants import Variant

from ..fsroot import FsRoot
from ..state import PublishedRow
from .images import Layout

if TYPE_CHECKING:
    from transport.registry import RegistryClient

_READ = 1 << 20


@dataclass(frozen=True)
class Published:
    """Where a model version went: ``repository`` (``models/<name>``), the ModelPack
    manifest's ``tag`` and ``digest``, the modelcar's ``modelcar_tag`` and ``modelcar_digest``
    (None when not published), how many raw layers were hard-linked (layouts only), and how
    the modelcar layer's file data got there (layouts only): ``cloned`` bytes shared with the
    model store by reflink (no data blocks added), ``copied`` bytes written (in the kernel by
    ``copy_file_range``, or through a buffer); both 0 when the layer was already there."""

    repository: str
    tag: str
    digest: str
    modelcar_tag: str | None
    modelcar_digest: str | None
    linked: int = 0
    cloned: int = 0
    copied: int = 0


@dataclass
class StagedDigests:
    """What staging learnt of a model version's files, so that publishing need not read them:
    ``files`` maps each path to (size in bytes, ``sha256:<hex>``) for the files staged in this
    run, and ``layer`` is the modelcar layer's ``sha256:<hex>`` (:func:`manifests.modelpack.modelcar_plan`
    of ``layer_files``, the (path, size) of every file in layer order), or None when staging
    did not see every file in that order (a resumed import). Filled by :class:`StagingHasher`."""

    files: dict[str, tuple[int, str]] = field(default_factory=dict)
    layer: str | None = None
    layer_files: tuple[tuple[str, int], ...] = ()


def signed_digests(artifact: Artifact) -> StagedDigests | None:
    """The publishing digests the hub signed into the manifest (format 1.3,
    docs/bundle-format.md 3.2.3): each file's ``sha256`` and the modelcar layer's, or None when
    the artifact does not carry them all (an older bundle: staging hashes, :class:`StagingHasher`).

    Why the edge publishes with them without hashing again: each file's bytes are bound to
    the hub's signature by BLAKE3, checked chunk by chunk and over the whole file before the
    file is staged (:func:`importer.apply.models.stage_model`), and the sha256 values sit in
    the same signed manifest. The edge thus trusts the hub's signed attestation about content
    it has verified; a wrong value would be the hub's bug (or a trusted key's misuse), not a
    change in transit, and every puller checks the layer digests it fetches, so such a bug
    shows as a refused pull, never as other bytes served under a digest. ``ferry verify``
    recomputes the file digests in full when it rebuilds the files (importer/verify.py).

    Args:
        artifact: a model artifact of a verified manifest.
    Returns:
        :class:`StagedDigests` (``files``: path -> (size in bytes, ``sha256:<hex>``);
        ``layer`` and ``layer_files`` as :func:`manifests.modelpack.modelcar_plan` orders
        them), or None.
    """
    if not artifact.publish_digests:
        return None
    files = {e.path or "": (e.size, e.sha256 or "") for e in artifact.entries}
    layer_files = tuple((path, files[path][0]) for path in sorted(files))  # modelcar_plan: sorted by path
    return StagedDigests(files=files, layer=artifact.modelcar, layer_files=layer_files)


def repository_for(name: str) -> str:
    """``models/<name>`` (lowercased, as repository names must be).

    Raises:
        FormatError: the name cannot be a repository path component.
    """
    repo = f"models/{name.lower()}"
    if not REPOSITORY_RE.match(repo) or len(repo) > 255:
        raise FormatError(f"model {name!r} cannot be published: {repo!r} is not a valid repository name")
    return repo


def tag_for(version: str) -> str:
    """The tag of a version (``+`` of semver build metadata becomes ``_``, as tags forbid it).

    Raises:
        FormatError: the version cannot be a tag.
    """
    tag = version.replace("+", "_")
    if not TAG_RE.match(tag) or len(tag) + len(MODELCAR_TAG_SUFFIX) > 128:
        raise FormatError(f"version {version!r} cannot be an OCI tag")
    return tag


# --------------------------------------------------------------------------- reading the folder


def scan_model(folder: Path, known: Mapping[str, tuple[int, str]] | None = None) -> tuple[list[ModelFile], ModelFacts]:
    """The files of a model version folder (sha256 each) and the facts they reveal.

    Args:
        folder: the model version folder (e.g. ``EDGE/models/<name>/<version>``).
        known: path -> (size in bytes, ``sha256:<hex>``) computed while staging wrote the files
            (:attr:`StagedDigests.files`): such a file is not read again when its size still
            matches (only a safetensors file's first MiB, for the facts).
    Returns:
        (files sorted by path, :class:`ModelFacts` with format, and for safetensors files the
        parameter count and majority precision).
    Raises:
        PlaceError: the folder is unreadable, holds a symbolic link or a special file.
    """
    files: list[ModelFile] = []
    params = 0
    by_precision: dict[str, int] = {}
    try:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for fname in sorted(filenames) + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
                path = Path(dirpath) / fname
                rel = path.relative_to(folder).as_posix()
                st = path.lstat()
                if not stat.S_ISREG(st.st_mode):
                    raise PlaceError("state", str(path), f"{path}: not a regular file (links are not published)")
                seen = (known or {}).get(rel)
                digest = seen[1] if seen is not None and seen[0] == st.st_size else None
                if digest is not None and not rel.endswith(".safetensors"):
                    files.append(ModelFile(rel, st.st_size, digest))
                    continue
                sha = hashlib.sha256()
                with open(path, "rb", buffering=0) as f:
                    head = f.read(_READ)
                    if digest is None:
                        sha.update(head)
                        while data := f.read(_READ):
                            sha.update(data)
                    if rel.endswith(".safetensors"):
                        count, precision = _safetensors(head, path)
                        params += count
                        if precision:
                            by_precision[precision] = by_precision.get(precision, 0) + count
                files.append(ModelFile(rel, st.st_size, digest or "sha256:" + sha.hexdigest()))
    except OSError as exc:
        raise PlaceError("state", str(folder), f"{folder}: cannot read the model ({exc.strerror or exc})") from None
    if not files:
        raise PlaceError("state", str(folder), f"{folder}: no model files to publish")
    precision = max(by_precision.items(), key=lambda kv: kv[1])[0] if by_precision else None
    facts = ModelFacts(format=model_format([f.path for f in files]), precision=precision,
                       parameters=params or None)
    return sorted(files, key=lambda f: f.path), facts


#: Largest safetensors header parsed for the parameter count and precision: the importer's
#: header share at the lowest memory budget (:func:`manifests.budget.import_sizes`), so every
#: ``--memory-budget`` holds. A larger header (the format allows 100 MB, about 1 GB parsed)
#: tells nothing: the published config leaves both out.
FACTS_HEADER_MAX = import_sizes(MIN_MEMORY_BUDGET).max_header


def _safetensors(head: bytes, path: Path) -> tuple[int, str | None]:
    """Facts from one safetensors file; an unreadable header, or one over
    :data:`FACTS_HEADER_MAX`, tells nothing (not an error: publishing does not depend on it)."""
    try:
        length = safetensors_header_length(head)
        if length > FACTS_HEADER_MAX:
            return 0, None
        header = head[8:8 + length]
        if len(header) < length:
            with open(path, "rb") as g:
                g.seek(8)
                header = g.read(length)
        return safetensors_facts(header)
    except FormatError:
        return 0, None


def modelcar_chunks(folder: Path, files: list[ModelFile]) -> Iterator[bytes]:
    """The modelcar layer's bytes (:func:`manifests.modelpack.modelcar_plan`: an uncompressed
    tar of the files under ``models/``, each file's data on a 4 KiB boundary), streamed; raises
    VerificationError if a file changed size while read."""
    for m in modelcar_plan(files):
        yield m.header
        if m.file is None:
            continue
        done = 0
        with open(folder / m.file.path, "rb", buffering=0) as src:
            while data := src.read(_READ):
                done += len(data)
                yield data
        if done != m.size:
            raise VerificationError(f"{folder / m.file.path}: changed while being published")
        yield bytes(m.padding)
    yield TAR_END


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while data := f.read(_READ):
            yield data


# --------------------------------------------------------------------------- hashing while staging


class _Worker:
    """One daemon thread running the steps put to it, in order; a bounded queue (``depth``
    items, each holding at most one chunk) bounds the memory it holds. A step that raises stops
    the worker: :attr:`failed` is then True and later steps are dropped."""

    def __init__(self, name: str, depth: int = 1) -> None:
        self._q: queue.Queue[tuple[Callable[..., None], tuple[object, ...]] | None] = queue.Queue(depth)
        self.failed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            if not self.failed:
                try:
                    item[0](*item[1])
                except Exception:  # a hash is an optimisation: publishing reads the file instead
                    self.failed = True

    def put(self, step: Callable[..., None], *args: object) -> None:
        self._q.put((step, args))

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()


class StagingHasher:
    """The sha256 of each model file and of the modelcar layer, computed from the bytes staging
    writes (the same verified bytes the BLAKE3 check sees, :func:`importer.content.stream_entry`),
    so that publishing reads no model file again (issue #14, "Speed and memory").

    Two worker threads, one per hash (hashlib releases the GIL on large buffers, so they run
    beside the main thread's write and BLAKE3): one hashes each file, one hashes the modelcar
    layer as :func:`manifests.modelpack.modelcar_plan` lays it out from the files' paths and
    sizes (headers and padding are known up front). The layer's hash needs every file, in
    layer order (sorted by path, as bundles list them); a file skipped (already staged by an
    interrupted run) or out of order leaves it unknown, and publishing hashes the layer itself.

    Memory: both workers are fed the same chunk objects through queues one item deep, so they
    hold at most two chunks beside the one being written (32 MiB at ``MAX_CHUNK_SIZE``), taken
    from the budget's share for the safetensors header that publishing parses only after
    staging (:func:`manifests.budget.import_sizes`: 55 MiB at the lowest budget).

    Use: ``start(path)``, ``update(data)`` for each chunk, ``end(path, size)`` once the file's
    bytes verified; :meth:`close` (always, e.g. in ``finally``) returns the :class:`StagedDigests`.

    Args:
        files: (path, size in bytes) of every file of the model version.
    """

    def __init__(self, files: list[tuple[str, int]]) -> None:
        self.digests = StagedDigests()
        self._layer: ModelcarHasher | None
        try:
            self._layer = ModelcarHasher(files)
            self.digests.layer_files = self._layer.layer_files
        except FerryError:
            self._layer = None  # paths no modelcar can hold: publishing refuses them anyway
        self._file: hashlib._Hash | None = None
        self._files, self._tar = _Worker("ferry-sha256-file"), _Worker("ferry-sha256-layer")

    # ---- called by staging (main thread)

    def start(self, path: str) -> None:
        self._files.put(self._file_start)
        self._tar.put(self._layer_start, path)

    def update(self, data: bytes | memoryview) -> None:
        self._files.put(self._file_update, data)
        self._tar.put(self._layer_update, data)

    def end(self, path: str, size: int) -> None:
        self._files.put(self._file_end, path, size)
        self._tar.put(self._layer_end, size)

    def close(self) -> StagedDigests:
        self._tar.put(self._layer_close)
        self._files.close()
        self._tar.close()
        if self._tar.failed:
            self.digests.layer = None
        return self.digests

    # ---- on the workers

    def _file_start(self) -> None:
        self._file = hashlib.sha256()

    def _file_update(self, data: bytes | memoryview) -> None:
        assert self._file is not None
        self._file.update(data)

    def _file_end(self, path: str, size: int) -> None:
        assert self._file is not None
        self.digests.files[path] = (size, "sha256:" + self._file.hexdigest())
        self._file = None

    def _layer_start(self, path: str) -> None:
        assert self._layer is not None  # else the worker already stopped
        self._layer.start(path)  # FormatError out of layer order: the worker stops, the layer stays unknown

    def _layer_update(self, data: bytes | memoryview) -> None:
        assert self._layer is not None
        self._layer.update(data)

    def _layer_end(self, size: int) -> None:
        assert self._layer is not None
        self._layer.end(size)

    def _layer_close(self) -> None:
        assert self._layer is not None
        self.digests.layer = self._layer.digest()


# --------------------------------------------------------------------------- publishing


def publish_model(folder: Path, name: str, version: str, *, layout: Path | None = None,
                  client: RegistryClient | None = None, modelcar: bool = True,
                  architecture: str = "amd64", variant: Variant | None = None,
                  digests: StagedDigests | None = None) -> Published:
    """Publish one model version folder as a ModelPack artifact (and a modelcar image).

    Args:
        folder: the model version folder.
        name, version: the model's ferry name and version.
        layout: an OCI layout folder (``EDGE/oci``) to publish into, or
        client: a registry client (:class:`transport.registry.RegistryClient`); exactly one.
        modelcar: also publish the modelcar image under ``<version>-modelcar``.
        architecture: the modelcar config's architecture (the image holds no binaries).
        variant: the model variant installed (the bundle's record, :mod:`manifests.variants`):
            its precision and quantization fill the config's fields (the hub checked them
            against the files); None: what :func:`scan_model` reads.
        digests: the files' and the modelcar layer's sha256 as staging computed them
            (:class:`StagingHasher`); what it lacks is read from the files.
    Returns:
        :class:`Published`.
    Raises:
        FerryError: neither or both targets; FormatError: name or version unusable;
        PlaceError: the folder is unreadable; RegistryError: the registry refused.
    """
    if (layout is None) == (client is None):
        raise FerryError("publish a model into exactly one of an OCI layout or a registry")
    repo, tag = repository_for(name), tag_for(version)
    files, facts = scan_model(folder, digests.files if digests else None)
    known_layer = digests.layer if digests and digests.layer_files == tuple((f.path, f.size) for f in files) \
        else None
    if variant is not None:
        facts = replace(facts, precision=variant.precision or facts.precision,
                        quantization=variant.quantization or facts.quantization)
    config = modelpack_config(name, version, files, facts)
    config_digest = _sha(config)
    manifest = modelpack_manifest(config, config_digest, files)
    car_tag = tag + MODELCAR_TAG_SUFFIX if modelcar else None
    if client is not None:
        car = _modelcar(files, name, version, architecture,
                        known_layer or _hash_chunks(modelcar_chunks(folder, files))) if modelcar else None
        for f in files:
            if not client.has_blob(repo, f.digest):
                client.upload_blob(repo, f.digest, f.size, _file_chunks(folder / f.path))
        _put_small(client, repo, config)
        digest = client.put_manifest(repo, tag, manifest, OCI_MANIFEST)
        car_digest = None
        if car:
            car_config, car_manifest, layer_digest, size = car
            if not client.has_blob(repo, layer_digest):
                client.upload_blob(repo, layer_digest, size, modelcar_chunks(folder, files))
            _put_small(client, repo, car_config)
            car_digest = client.put_manifest(repo, car_tag or "", car_manifest, OCI_MANIFEST)
        return Published(repo, tag, digest, car_tag, car_digest)
    assert layout is not None
    with FsRoot.open(layout, create=True) as fs:
        return _publish_into(Layout(fs, ""), folder, files, name, version, architecture, repo, tag, car_tag,
                             config, manifest, modelcar, known_layer)


def _publish_into(target: Layout, folder: Path, files: list[ModelFile], name: str, version: str,
                  architecture: str, repo: str, tag: str, car_tag: str | None, config: bytes, manifest: bytes,
                  modelcar: bool, layer_digest: str | None) -> Published:
    """The layout half of :func:`publish_model`: every write through the layout's fd-rooted writer."""
    target.ensure()
    linked = 0
    for f in files:
        linked += _place_file(target, folder / f.path, f)
    if linked:
        with target._fs().folder(target.blobs) as dfd:
            os.fsync(dfd)
    _place_bytes(target, config)
    digest = _place_bytes(target, manifest)
    car_digest, cloned, copied = None, 0, 0
    car = None
    if modelcar:
        layer_digest, cloned, copied = _place_modelcar(target, folder, files, layer_digest)
        car = _modelcar(files, name, version, architecture, layer_digest)
        car_config, car_manifest, _, _ = car
        _place_bytes(target, car_config)
        car_digest = _place_bytes(target, car_manifest)
    target.tag(f"{repo}:{tag}", _Top(OCI_MANIFEST, digest, len(manifest)))  # type: ignore[arg-type]
    if car and car_digest:
        target.tag(f"{repo}:{car_tag}", _Top(OCI_MANIFEST, car_digest, len(car[1])))  # type: ignore[arg-type]
    return Published(repo, tag, digest, car_tag, car_digest, linked, cloned, copied)


def _modelcar(files: list[ModelFile], name: str, version: str, architecture: str,
              layer_digest: str) -> tuple[bytes, bytes, str, int]:
    """(config, manifest, layer digest, layer size) of the modelcar whose layer hashed to ``layer_digest``."""
    size = modelcar_layer_size(files)
    config = modelcar_config(layer_digest, name, version, architecture)
    return config, modelcar_manifest(config, _sha(config), layer_digest, size), layer_digest, size


# --------------------------------------------------------------------------- the modelcar layer in a layout

#: ``FICLONERANGE``, Linux ``include/uapi/linux/fs.h``: ``_IOW(0x94, 13, struct file_clone_range)``,
#: the struct being ``{s64 src_fd; u64 src_offset; u64 src_length; u64 dest_offset;}``.
FICLONERANGE = 0x4020940D

#: errnos that mean "this file system (or pair of files) cannot do that": try the next way.
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.ENOSYS,
                          errno.ETXTBSY, errno.EPERM})


def clone_range(src: int, src_offset: int, length: int, dst: int, dst_offset: int) -> bool:
    """Share ``length`` bytes of ``src`` at ``src_offset`` into ``dst`` at ``dst_offset`` by
    reflink (``ioctl(FICLONERANGE)``, ioctl_ficlonerange(2): XFS, btrfs, bcachefs, OCFS2): no data
    is copied and no data block added. Offsets and length must be multiples of the file system's
    block size (:data:`manifests.modelpack.MODELCAR_ALIGN` on the usual 4 KiB-block file systems).

    Args:
        src, dst: open file descriptors (read-only, and writable), on one file system.
        src_offset, length, dst_offset: in bytes.
    Returns:
        True if cloned, False when the file system (or the pair) cannot: the caller copies.
    Raises:
        OSError: a real failure (ENOSPC for the metadata, EIO).
    """
    try:
        fcntl.ioctl(dst, FICLONERANGE, struct.pack("qQQQ", src, src_offset, length, dst_offset))
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return False
        raise
    return True


def copy_range(src: int, src_offset: int, length: int, dst: int, dst_offset: int) -> None:
    """Copy ``length`` bytes of ``src`` at ``src_offset`` into ``dst`` at ``dst_offset``: in the
    kernel with ``os.copy_file_range`` (copy_file_range(2): no user-space buffer; on NFS and some
    file systems a server-side copy or a reflink), else with ``pread``/``pwrite`` through one
    :data:`_READ` buffer.

    Raises:
        OSError: a real failure (ENOSPC, EIO); VerificationError: ``src`` ended early.
    """
    done, kernel = 0, True
    while done < length:
        n = 0
        if kernel:
            try:
                n = os.copy_file_range(src, dst, length - done, src_offset + done, dst_offset + done)
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                kernel = False
                continue
        else:
            data = os.pread(src, min(_READ, length - done), src_offset + done)
            n = len(data)
            view = memoryview(data)
            at = dst_offset + done
            while view:
                w = os.pwrite(dst, view, at)
                view, at = view[w:], at + w
        if n == 0:
            raise VerificationError("a model file ended early while being published")
        done += n


def _place_modelcar(layout: Layout, folder: Path, files: list[ModelFile],
                    digest: str | None) -> tuple[str, int, int]:
    """Write the modelcar layer into the layout, its file data cloned from the model store's
    files where the file system allows (:func:`clone_range`: the data starts on 4 KiB
    boundaries in the layer, :func:`manifests.modelpack.modelcar_plan`), else copied in the
    kernel or through a buffer (:func:`copy_range`); headers, padding and each file's last
    partial block are written. With ``digest`` known (hashed while staging, :class:`StagingHasher`)
    nothing is read back; else the written layer is hashed once. The blob is renamed into place
    only once complete (and fsynced, :meth:`FsRoot.replacing`).

    Returns:
        (the layer's digest, bytes cloned, bytes copied); (digest, 0, 0) when the layout
        already holds it.
    Raises:
        VerificationError: a file changed size while being published.
        PlaceError: the layer cannot be written (e.g. no space left).
    """
    plan = modelcar_plan(files)
    size = (plan[-1].end if plan else 0) + len(TAR_END)
    if digest is not None and _present(layout, digest, size):
        return digest, 0, 0
    fs = layout._fs()
    rel = f"{layout.blobs}/publishing-{os.getpid()}-{os.urandom(6).hex()}"
    cloned = copied = 0
    try:
        with fs.replacing(rel) as out:
            dst = out.fileno()
            for m in plan:
                _pwrite_all(dst, m.header, m.offset)
                if m.file is None:
                    continue
                src = os.open(folder / m.file.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    if os.fstat(src).st_size != m.size:
                        raise VerificationError(f"{folder / m.file.path}: changed while being published")
                    whole = m.size - m.size % MODELCAR_ALIGN  # the tail's block is shared with the next header
                    if whole and clone_range(src, 0, whole, dst, m.data_offset):
                        cloned += whole
                    else:
                        whole = 0
                    copy_range(src, whole, m.size - whole, dst, m.data_offset + whole)
                    copied += m.size - whole
                finally:
                    os.close(src)
                _pwrite_all(dst, bytes(m.padding), m.data_offset + m.size)
            _pwrite_all(dst, TAR_END, size - len(TAR_END))
            os.ftruncate(dst, size)
            if digest is None:
                digest = _hash_written(dst, size) or _hash_chunks(modelcar_chunks(folder, files))
    except OSError as exc:
        raise PlaceError("state", str(fs.where(layout.blobs)),
                         f"{fs.where(layout.blobs)}: cannot write the modelcar layer ({exc.strerror or exc})") from None
    fs.rename(rel, layout.path(digest))
    return digest, cloned, copied


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _hash_written(fd: int, size: int) -> str | None:
    """The sha256 of the ``size`` bytes written to ``fd`` (open write-only: read through
    ``/proc/self/fd``), or None when it cannot be reopened (no /proc)."""
    try:
        rfd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        sha, at = hashlib.sha256(), 0
        while at < size:
            data = os.pread(rfd, min(_READ, size - at), at)
            if not data:
                raise VerificationError("the modelcar layer was cut short while being written")
            sha.update(data)
            at += len(data)
        return "sha256:" + sha.hexdigest()
    finally:
        os.close(rfd)


def _hash_chunks(chunks: Iterator[bytes]) -> str:
    sha = hashlib.sha256()
    for data in chunks:
        sha.update(data)
    return "sha256:" + sha.hexdigest()


@dataclass(frozen=True)
class _Top:
    media_type: str
    digest: str
    size: int


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _put_small(client: RegistryClient, repo: str, data: bytes) -> None:
    digest = _sha(data)
    if not client.has_blob(repo, digest):
        client.upload_blob(repo, digest, len(data), iter([data]))


def _present(layout: Layout, digest: str, size: int) -> bool:
    return layout._size(digest) == size


def _place_bytes(layout: Layout, data: bytes) -> str:
    digest = _sha(data)
    if not _present(layout, digest, len(data)):
        with layout._fs().replacing(layout.path(digest)) as f:
            f.write(data)
    return digest


def _place_file(layout: Layout, source: Path, f: ModelFile) -> int:
    """Hard-link ``source`` as blob ``f.digest`` (1), or copy it, checking its sha256 (0).
    The link is made relative to the blobs folder's descriptor (no path is followed); the
    caller fsyncs the folder once after all links (before any manifest names them)."""
    fs, name = layout._fs(), f.digest.split(":", 1)[1]
    if _present(layout, f.digest, f.size):
        st, src = fs.lstat(layout.path(f.digest)), source.stat()
        return 1 if st is not None and (st.st_dev, st.st_ino) == (src.st_dev, src.st_ino) else 0
    tmp = f".link-{os.getpid()}-{name}"
    with fs.folder(layout.blobs) as dfd:
        try:
            os.link(source, tmp, dst_dir_fd=dfd, follow_symlinks=False)
        except OSError:  # another device, links not allowed: copy, verified
            linked = False
        else:
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            linked = True  # made durable by the caller's one fsync of the folder
    if not linked:
        _place_stream(layout, f.digest, _file_chunks(source))
    return 1 if linked else 0


def _place_stream(layout: Layout, digest: str | None, chunks: Iterator[bytes]) -> str:
    """Write a blob from ``chunks`` through the layout's :meth:`FsRoot.replacing`; with
    ``digest`` given, it becomes visible only if it hashes to that, else it is written under a
    staging name and renamed to the digest it hashed to. Returns the digest.

    Raises:
        VerificationError: the bytes do not hash to ``digest``.
    """
    fs, sha = layout._fs(), hashlib.sha256()
    rel = layout.path(digest) if digest is not None else f"{layout.blobs}/publishing-{os.getpid()}-{os.urandom(6).hex()}"
    with fs.replacing(rel) as out:
        for data in chunks:
            sha.update(data)
            out.write(data)
        got = "sha256:" + sha.hexdigest()
        if digest is not None and got != digest:
            raise VerificationError(f"blob {digest}: the model's bytes changed while being published")
    if digest is None:
        fs.rename(rel, layout.path(got))
    return got


# --------------------------------------------------------------------------- free space


#: Bound on the small blobs a publish adds besides the layers (two configs, two manifests):
#: this much, plus twice (path + 512) bytes per file (a layer descriptor and a diff id).
SMALL_BLOBS_BYTES = 8192


def layout_bytes(state_root: Path, artifact: Artifact) -> int:
    """Bytes publishing ``artifact`` into ``EDGE/oci`` may add to the disk (the free-space plan):
    the modelcar's tar layer (:func:`manifests.modelpack.modelcar_layer_size`, exact, counted
    in full although a file system with reflinks shares its data: whether it clones is known
    only by trying), the small blobs, and the raw layers only when they cannot be hard links
    (``EDGE/oci`` on another file system than ``EDGE/models``); zero extra for them otherwise."""
    from importer.state import MODELS_DIR, OCI_DIR

    files = [ModelFile(e.path or "", e.size, "") for e in artifact.entries]
    total = sum(f.size for f in files)
    try:
        car = modelcar_layer_size(files)
    except FerryError:
        car = total + 1024 * (len(files) + 2)  # the publish refuses such paths anyway
    devices = set()
    for sub in (OCI_DIR, MODELS_DIR):
        try:
            devices.add(os.stat(state_root / sub).st_dev)
        except OSError:
            pass
    small = SMALL_BLOBS_BYTES + 2 * sum(len(f.path.encode()) + 512 for f in files)
    return car + small + (total if len(devices) > 1 else 0)


# --------------------------------------------------------------------------- pinning workloads


def pinned_model_ref(row: PublishedRow, *, modelcar: bool = True) -> str:
    """The digest-pinned reference of a published model version: the modelcar image (what
    image volumes, KServe modelcars and containers mount) unless ``modelcar`` is False or none
    was published, else the ModelPack manifest. ``HOST/models/<name>@sha256:...`` in a
    registry; ``models/<name>@sha256:...`` (the hub-side name, pinned) in ``EDGE/oci``."""
    digest = row.modelcar_digest if modelcar and row.modelcar_digest else row.digest
    return f"{row.place}/{row.repository}@{digest}" if row.place else f"{row.repository}@{digest}"


def model_refs(rows: list[PublishedRow]) -> dict[str, str]:
    """What a workload may write -> the pinned reference, for every published model version in
    ``rows`` (one place): ``models/<name>:<tag>`` and ``models/<name>:<tag>-modelcar`` pin to the
    modelcar (:func:`pinned_model_ref`); ``models/<name>@<digest>`` of either form pins to
    itself at the site. :func:`importer.apply.kube.prepare` applies these by the images' rule."""
    refs: dict[str, str] = {}
    for row in rows:
        pinned = pinned_model_ref(row)
        refs[f"{row.repository}:{row.tag}"] = pinned
        if row.modelcar_tag:
            refs[f"{row.repository}:{row.modelcar_tag}"] = pinned
        refs[f"{row.repository}@{row.digest}"] = pinned_model_ref(row, modelcar=False)
        if row.modelcar_digest:
            refs[f"{row.repository}@{row.modelcar_digest}"] = pinned
    return refs


def where_published(row: PublishedRow) -> str:
    """One line for status and the audit trail: ``models/m:1.0 sha256:… and models/m:1.0-modelcar
    sha256:… in HOST`` (or ``in EDGE/oci``)."""
    forms = [f"{row.repository}:{row.tag} {row.digest}"]
    if row.modelcar_tag and row.modelcar_digest:
        forms.append(f"{row.repository}:{row.modelcar_tag} {row.modelcar_digest}")
    return f"{' and '.join(forms)} in {row.place or 'EDGE/oci'}"


def published_row(published: Published, name: str, version: str, place: str) -> PublishedRow:
    """The ledger row (:func:`importer.state.record_published`) for one publish."""
    return PublishedRow(name=name, version=version, place=place, repository=published.repository,
                        tag=published.tag, digest=published.digest, modelcar_tag=published.modelcar_tag,
                        modelcar_digest=published.modelcar_digest, at=utc_now())


# --------------------------------------------------------------------------- the import's hook


def publish_installed(state_root: Path, name: str, version: str, *, registry: str | None,
                      insecure_registries: frozenset[str] = frozenset(),
                      variant: Variant | None = None, digests: StagedDigests | None = None) -> tuple[Published, str]:
    """Publish an installed model version (``EDGE/models/<name>/<version>``) where the import
    puts images: the site registry when ``registry`` is given, else the layout ``EDGE/oci``
    (``digests``: what staging hashed, :class:`StagedDigests`).

    Returns:
        (:class:`Published`, the ModelPack form's pinned reference: ``HOST/models/<name>@<digest>``
        in a registry, ``models/<name>@<digest>`` — the hub-side name, pinned — in the layout).
    Raises:
        FerryError subclasses as :func:`publish_model`.
    """
    from importer.state import MODELS_DIR, OCI_DIR

    folder = state_root / MODELS_DIR / name / version
    if registry:
        from .images import ImageTarget, client_for

        client = client_for(ImageTarget(registry, None, insecure_registries))
        published = publish_model(folder, name, version, client=client, variant=variant, digests=digests)
        return published, f"{registry}/{published.repository}@{published.digest}"
    published = publish_model(folder, name, version, layout=state_root / OCI_DIR, variant=variant,
                              digests=digests)
    return published, f"{published.repository}@{published.digest}"


# --------------------------------------------------------------------------- pruning


def unpublish(state_root: Path, doomed: list[PublishedRow], kept: list[PublishedRow], *, registry: str | None,
              insecure_registries: frozenset[str] = frozenset()) -> tuple[list[PublishedRow], list[str]]:
    """Remove the published artifacts of pruned model versions (``--keep N``, issue #14 item 5).

    Args:
        state_root: EDGE.
        doomed: the ledger rows (:meth:`importer.state.EdgeState.published`) of the versions pruned.
        kept: every other row: a digest one of them names is never deleted.
        registry: this import's registry (``HOST[:PORT]``), or None.
        insecure_registries: as for :func:`importer.apply.images.client_for`.

    In ``EDGE/oci`` the two tags go from ``index.json`` and then every blob only they reached
    (:meth:`importer.apply.images.Layout.untag`: a raw layer still named by a kept version's
    ModelPack manifest stays). In the registry the two manifests are deleted by digest (their
    tags with them; the registry's own garbage collection frees the blobs). A row at another
    registry, or at a registry that does not allow deletes, stays published, and a note says so.

    Returns:
        (the rows whose artifacts are gone, to drop from the ledger; notes, one per row left).
    Raises:
        Nothing: a failure becomes a note (pruning a model's files never waits on a registry).
    """
    gone: list[PublishedRow] = []
    notes: list[str] = []
    in_layout = [r for r in doomed if not r.place]
    if in_layout:
        from importer.state import OCI_DIR

        names = {f"{r.repository}:{t}" for r in in_layout for t in (r.tag, r.modelcar_tag) if t}
        try:
            if os.path.isdir(state_root / OCI_DIR):
                with FsRoot.open(state_root / OCI_DIR) as fs:
                    Layout(fs, "").untag(names)
            gone.extend(in_layout)
        except (FerryError, OSError) as exc:
            notes.append(f"{', '.join(sorted(names))} stay in {state_root / OCI_DIR}: {exc}")
    at_registry = [r for r in doomed if r.place and r.place == registry]
    if at_registry:
        from .images import ImageTarget, client_for

        held = {(r.repository, d) for r in kept if r.place == registry for d in (r.digest, r.modelcar_digest) if d}
        client = client_for(ImageTarget(registry, None, insecure_registries))
        for r in at_registry:
            try:
                for d in (r.modelcar_digest, r.digest):
                    if d and (r.repository, d) not in held:
                        client.delete_manifest(r.repository, d)
                gone.append(r)
            except FerryError as exc:
                notes.append(f"{r.repository}:{r.tag} stays published in {r.place}: {exc}")
    for r in doomed:
        if r.place and r.place != registry:
            notes.append(f"{r.repository}:{r.tag} stays published in {r.place} (not this import's registry)")
    return gone, notes
