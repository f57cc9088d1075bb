"""Images at the edge: into the site registry, or into an OCI image layout at ``EDGE/oci``.

The image lands under the same repository path and tag as at the hub, with a byte-identical
manifest digest, and is then named by its pinned reference (``HOST/repo@sha256:...``; for a
layout, under the registry host the hub's reference named), which workloads are rewritten to.

Order makes a half-applied image invisible: blobs first (config, layers), then child
manifests by digest, and the tag last. A registry checks every blob digest itself; a layout
blob is written under a temporary name and renamed only after its bytes were verified.

The layout names images ``repo:tag`` in the ``org.opencontainers.image.ref.name``
annotation of ``index.json``, one layout for every repository, so that
``skopeo copy oci:EDGE/oci:team/app:1.2.0 docker://...`` finds it (skopeo matches that
annotation exactly, and splits ``oci:DIR:REF`` at the first colon after DIR).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from manifests.errors import FerryError, FormatError, VerificationError
from manifests.model import Artifact, Entry, ImageInfo
from manifests.oci import (MANIFEST_TYPES, MAX_MANIFEST_BYTES, OCI_INDEX, REF_NAME_ANNOTATION,
                           parse_manifest, parse_reference)

from ..fsroot import FsRoot
from ..state import OCI_DIR
from . import Applied, Context, Job, ReadEntry

if TYPE_CHECKING:
    from transport.registry import RegistryClient

#: How many (blob, repository) probes a search for a cross-repository mount may make.
MOUNT_PROBES = 200


@dataclass
class ImageTarget:
    """Where images go: ``registry`` (HOST[:PORT]) if given, else the layout folder.

    ``layout`` is a path, or with ``root`` (the edge's :class:`importer.fsroot.FsRoot`) a
    folder relative to it: every layout write then goes through that root (no link followed).
    """

    registry: str | None
    layout: Path | None
    insecure_registries: frozenset[str] = frozenset()
    root: FsRoot | None = None


# --------------------------------------------------------------------------- public API


def pinned_ref(artifact: Artifact, target: ImageTarget) -> str:
    """The reference a workload should use for this image at this edge (digest-pinned)."""
    image = _image(artifact)
    if target.registry:
        return f"{target.registry}/{image.repository}@{image.manifest}"
    # No edge registry: the image waits in the OCI layout. A bare `repo@digest` would make a
    # kubelet pull from Docker Hub; keep the registry host the workload named (a site mirror
    # of that name serves it), pinned by digest.
    host = _source_registry(image)
    return f"{host}/{image.repository}@{image.manifest}" if host else f"{image.repository}@{image.manifest}"


def _source_registry(image: ImageInfo) -> str | None:
    if not image.source:
        return None
    try:
        return parse_reference(image.source).registry
    except FerryError:
        return None


def missing_blobs(artifact: Artifact, target: ImageTarget) -> set[str]:
    """Digests of the artifact's blobs and manifests that the target lacks, i.e. the ones
    :func:`apply_image` will read. Asks only (HEAD); changes nothing. Blobs the registry
    holds under another repository are not missing: apply mounts them."""
    image = _image(artifact)
    if target.registry:
        client = client_for(target)
        repo = image.repository
        blobs, children, top = _split(artifact)
        missing = {e.digest for e in blobs if e.digest is not None and not client.has_blob(repo, e.digest)}
        missing -= set(_mount_sources(client, repo, missing))
        missing |= {e.digest for e in children if e.digest is not None and client.manifest_digest(repo, e.digest) is None}
        if client.manifest_digest(repo, image.tag) != image.manifest:
            missing.add(image.manifest)
        return missing
    layout = _layout(target)
    return {e.digest for e in artifact.entries if e.digest is not None and not layout.has(e)}


def apply_image(artifact: Artifact, read_entry: ReadEntry, target: ImageTarget) -> str:
    """Put the image into the target (see the module docstring); return its pinned reference."""
    image = _image(artifact)
    if target.registry:
        client = client_for(target)
        repo = image.repository
        blobs, children, top = _split(artifact)
        absent = [e for e in blobs if not client.has_blob(repo, e.digest)]  # type: ignore[arg-type]
        sources = _mount_sources(client, repo, {e.digest for e in absent})  # type: ignore[misc]
        for e in absent:
            assert e.digest is not None
            source = sources.get(e.digest)
            if source is not None and client.mount_blob(repo, e.digest, source):
                continue
            client.upload_blob(repo, e.digest, e.size, read_entry(e))
        for e in children:
            assert e.digest is not None and e.media_type is not None
            if client.manifest_digest(repo, e.digest) is None:
                client.put_manifest(repo, e.digest, _read_manifest(read_entry, e), e.media_type)
        if client.manifest_digest(repo, image.tag) != image.manifest:
            assert top.media_type is not None
            client.put_manifest(repo, image.tag, _read_manifest(read_entry, top), top.media_type)
        return pinned_ref(artifact, target)
    layout = _layout(target)
    if layout.fs is None:
        assert target.layout is not None
        layout = Layout(FsRoot.open(Path(os.path.abspath(target.layout)).parent, create=True), layout.rel)
    layout.ensure()
    for e in _layout_order(artifact):
        if not layout.has(e):
            layout.write_blob(e, read_entry(e))
    top = next(e for e in artifact.entries if e.digest == image.manifest)
    layout.check_complete(top)
    layout.tag(f"{image.repository}:{image.tag}", top)
    return pinned_ref(artifact, target)


# --------------------------------------------------------------------------- registry side

_clients: dict[tuple[str, frozenset[str]], RegistryClient] = {}


def client_for(target: ImageTarget) -> RegistryClient:
    """One client per registry for the whole import (keeps its connections and tokens)."""
    from transport.registry import RegistryClient  # lazily: requests is slow to import

    assert target.registry
    key = (target.registry, target.insecure_registries)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = RegistryClient(target.registry, target.insecure_registries)
    return client


def _image(artifact: Artifact) -> ImageInfo:
    if artifact.kind != "image" or artifact.image is None:
        raise FerryError(f"{artifact.kind} {artifact.name!r} is not an image")
    return artifact.image


def _split(artifact: Artifact) -> tuple[list[Entry], list[Entry], Entry]:
    """(config and layer blobs, child manifests, the top-level manifest)."""
    image = _image(artifact)
    blobs = [e for e in artifact.entries if e.media_type not in MANIFEST_TYPES]
    children = [e for e in artifact.entries if e.media_type in MANIFEST_TYPES and e.digest != image.manifest]
    top = next(e for e in artifact.entries if e.digest == image.manifest)
    return blobs, children, top


def _mount_sources(client: RegistryClient, repo: str, digests: set[str]) -> dict[str, str]:
    """For blobs ``repo`` lacks, another repository of the same registry that holds them
    (HEAD only). Bounded by MOUNT_PROBES; repositories sharing the first path component
    are tried first, as images of one team tend to share base layers."""
    if not digests:
        return {}
    others = [r for r in client.repositories() if r != repo]
    if not others:
        return {}
    team = repo.split("/", 1)[0]
    others.sort(key=lambda r: r.split("/", 1)[0] != team)
    found: dict[str, str] = {}
    probes = 0
    for digest in sorted(digests):
        for other in others:
            if probes >= MOUNT_PROBES:
                return found
            probes += 1
            if client.has_blob(other, digest):
                found[digest] = other
                break
    return found


def _read_manifest(read_entry: ReadEntry, entry: Entry) -> bytes:
    """A manifest's exact bytes, whole (bounded), verified by the iterator's end."""
    if entry.size > MAX_MANIFEST_BYTES:
        raise FormatError(f"manifest {entry.digest} is {entry.size} bytes, over {MAX_MANIFEST_BYTES}")
    return b"".join(read_entry(entry))


# --------------------------------------------------------------------------- OCI layout side


def _layout_order(artifact: Artifact) -> list[Entry]:
    blobs, children, top = _split(artifact)
    return [*blobs, *children, top]


class Layout:
    """An OCI image layout folder that ferry adds images to: folder ``rel`` below ``fs``
    (``fs`` None: the layout does not exist and nothing may be written, as in a dry run
    without a state). Every read and write goes through the :class:`FsRoot`."""

    def __init__(self, fs: FsRoot | None, rel: str) -> None:
        self.fs, self.rel = fs, rel.strip("/")
        self.blobs = f"{self.rel}/blobs/sha256" if self.rel else "blobs/sha256"

    def _at(self, name: str) -> str:
        return f"{self.rel}/{name}" if self.rel else name

    def _fs(self) -> FsRoot:
        if self.fs is None:
            raise FerryError("no image target: give --registry HOST[:PORT] or an edge state for EDGE/oci")
        return self.fs

    def ensure(self) -> None:
        """Create the layout if it is not there yet (only when applying; asking creates nothing)."""
        fs = self._fs()
        fs.makedirs(self.blobs)
        if fs.lstat(self._at("oci-layout")) is None:
            fs.write_atomic(self._at("oci-layout"), b'{"imageLayoutVersion":"1.0.0"}')
        if fs.lstat(self._at("index.json")) is None:
            fs.write_atomic(self._at("index.json"), _index_bytes([]))

    def path(self, digest: str) -> str:
        """The blob's path relative to the root."""
        return f"{self.blobs}/{digest.split(':', 1)[1]}"

    def _size(self, digest: str) -> int | None:
        if self.fs is None:
            return None
        try:
            return self.fs.file_size(self.path(digest))
        except FerryError:
            return None

    def has(self, entry: Entry) -> bool:
        """Present with the right size (blobs only appear after verification, by rename)."""
        assert entry.digest is not None
        return self._size(entry.digest) == entry.size

    def write_blob(self, entry: Entry, chunks: Iterator[bytes]) -> None:
        """Stream to a temporary name and check sha256 before it is renamed into place."""
        assert entry.digest is not None
        sha = hashlib.sha256()
        with self._fs().replacing(self.path(entry.digest)) as f:
            for data in chunks:
                sha.update(data)
                f.write(data)
            if "sha256:" + sha.hexdigest() != entry.digest:
                raise VerificationError(f"blob {entry.digest}: rebuilt content does not match its digest")

    def check_complete(self, top: Entry) -> None:
        """Refuse to name an image whose manifests reference a blob the layout lacks (a
        registry refuses such a manifest itself; a layout would silently hold a broken image)."""
        assert top.digest is not None
        pending = [(top.digest, top.media_type, top.size)]
        seen: set[str] = set()
        while pending:
            digest, media_type, size = pending.pop()
            if digest in seen:
                continue
            seen.add(digest)
            data = self._fs().read(self.path(digest), MAX_MANIFEST_BYTES)
            doc = parse_manifest(data, media_type, where=f"manifest {digest}")
            for d in (*doc.manifests, *doc.blobs):
                if self._size(d.digest) != d.size:
                    raise VerificationError(f"manifest {digest} references {d.digest}, which the image does not carry")
                if d.is_manifest:
                    pending.append((d.digest, d.media_type, d.size))

    def reachable(self, tops: list[dict]) -> set[str]:
        """Every digest the index entries ``tops`` reach: their manifests, child manifests,
        configs and layers. Raises FerryError (PlaceError, FormatError) when a manifest on the
        way cannot be read or parsed: then what it references is unknown."""
        pending = [(d["digest"], d.get("mediaType")) for d in tops]
        seen: set[str] = set()
        while pending:
            digest, media_type = pending.pop()
            if digest in seen:
                continue
            seen.add(digest)
            try:
                data = self._fs().read(self.path(digest), MAX_MANIFEST_BYTES)
            except FileNotFoundError:
                continue  # nothing to keep for a blob that is gone
            doc = parse_manifest(data, media_type, where=f"manifest {digest}")
            for d in doc.blobs:
                seen.add(d.digest)
            pending.extend((d.digest, d.media_type) for d in doc.manifests)
        return seen

    def untag(self, names: set[str]) -> list[str]:
        """Remove the index entries named ``names`` (``org.opencontainers.image.ref.name``),
        then every blob only they reached; a blob any remaining entry reaches stays.

        Returns:
            The digests of the blobs removed.
        Raises:
            FerryError: the index or a manifest cannot be read (nothing is changed then).
        """
        entries = self.read_index()
        gone = [d for d in entries if (d.get("annotations") or {}).get(REF_NAME_ANNOTATION) in names]
        if not gone:
            return []
        kept = [d for d in entries if d not in gone]
        doomed = self.reachable(gone) - self.reachable(kept)
        self._fs().write_atomic(self._at("index.json"), _index_bytes(kept))
        removed = []
        for digest in sorted(doomed):
            if self._fs().lstat(self.path(digest)) is not None:
                self._fs().rmtree(self.path(digest))
                removed.append(digest)
        return removed

    def read_index(self) -> list[dict]:
        data = self._fs().read(self._at("index.json"), MAX_MANIFEST_BYTES)
        parse_manifest(data, OCI_INDEX, where=self._fs().where(self._at("index.json")))  # refuse a broken index first
        return list(json.loads(data)["manifests"])

    def tag(self, name: str, top: Entry) -> None:
        """Point ``name`` at ``top`` in index.json (replacing what it named before)."""
        entries = self.read_index()
        wanted = {"mediaType": top.media_type, "digest": top.digest, "size": top.size,
                  "annotations": {REF_NAME_ANNOTATION: name}}
        if wanted in entries:
            return
        kept = [d for d in entries if (d.get("annotations") or {}).get(REF_NAME_ANNOTATION) != name]
        self._fs().write_atomic(self._at("index.json"), _index_bytes([*kept, wanted]))


def _layout(target: ImageTarget) -> Layout:
    """The target's layout: below ``target.root`` when given, else at the path ``target.layout``
    (its parent folder opened as the root; created only when applying)."""
    if target.layout is None:
        raise FerryError("no image target: give --registry HOST[:PORT] or an edge state for EDGE/oci")
    if target.root is not None:
        return Layout(target.root, str(target.layout))
    path = Path(os.path.abspath(target.layout))
    try:
        fs: FsRoot | None = FsRoot.open(path.parent)
    except FerryError:
        fs = None
    return Layout(fs, path.name)


def _index_bytes(manifests: list[dict]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests},
                      indent=2).encode() + b"\n"


# --------------------------------------------------------------------------- the apply target


class EdgeImages:
    """Images into the site registry or the layout ``EDGE/oci`` (:class:`importer.apply.ApplyTarget`)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        layout = None if ctx.registry else Path(OCI_DIR)
        self.target = ImageTarget(ctx.registry, layout, insecure_registries=ctx.insecure_registries, root=ctx.edge)

    def needs(self, artifact: Artifact) -> list[Entry]:
        missing = missing_blobs(artifact, self.target)
        return [e for e in artifact.entries if e.digest in missing]

    def bytes_to_write(self, artifact: Artifact, entries: list[Entry]) -> int:
        return 0 if self.ctx.registry else sum(e.size for e in entries)

    def pinned_ref(self, artifact: Artifact) -> str:
        return pinned_ref(artifact, self.target)

    def apply(self, artifact: Artifact, read_entry: ReadEntry, job: Job) -> Applied:
        ref = apply_image(artifact, read_entry, self.target)
        self._index_layout_blobs(artifact, job)
        self._record_blobs(artifact)
        return Applied(ref=ref)

    def _record_blobs(self, artifact: Artifact) -> None:
        """Every blob and manifest of the image is now in the registry or layout: the
        receipt lists them (by digest), so a delta leaves them out."""
        from ..state import record_blobs

        place = f"registry {self.ctx.registry}" if self.ctx.registry else "layout"
        with self.ctx.state.transaction() as db:
            record_blobs(db, [e.digest for e in artifact.entries if e.digest is not None], place)

    def _index_layout_blobs(self, artifact: Artifact, job: Job) -> None:
        """OCI layout blobs are exact bytes: they serve as the chunk store like model files."""
        if self.ctx.registry or self.ctx.edge is None:
            return
        layout = Layout(self.ctx.edge, OCI_DIR)
        with self.ctx.state.transaction() as db:
            for e in artifact.entries:
                if e.digest is None or layout._size(e.digest) != e.size:
                    continue
                self.ctx.store.index_file(layout.blobs, e.digest.partition(":")[2], e, job.manifest, db=db)
