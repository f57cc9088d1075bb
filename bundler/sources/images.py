"""Container images as bundle artifacts, read from a registry or an OCI image layout folder.

An image artifact carries every blob the edge needs to rebuild the image byte for byte: the
top-level manifest (or index) pushed under the tag, the child manifests of an index, each
config and each layer. Manifests are small and read once (checked against their digest);
configs and layers are streamed on demand through :class:`manifests.oci.DigestReader`, so a
tampered or truncated blob fails the export naming the blob.

Image indexes: with ``platform`` only that platform's manifest is carried and pinned (the
tag at the edge then names that manifest); without, the whole index and every manifest it
lists are carried, so the edge's tag has the hub's digest. See docs/images.md.
"""

from __future__ import annotations

import functools
import io
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from manifests.errors import FormatError, PlaceError, SpecError, VerificationError
from manifests.model import ImageInfo
from manifests.oci import (MAX_MANIFEST_BYTES, REF_NAME_ANNOTATION, Descriptor, DigestReader,
                           ImageRef, parse_manifest, parse_reference, select_platform)
from manifests.progress import Progress
from manifests.version import is_version, parse_version

from . import SourceArtifact, SourceFile

#: How deep indexes may nest (an index of indexes is legal OCI, rarely seen).
MAX_INDEX_DEPTH = 2


class BlobSource(Protocol):
    """Where an image is read from: a registry repository or an OCI layout folder."""

    label: str

    def manifest(self, desc: Descriptor) -> bytes: ...

    def open(self, desc: Descriptor) -> BinaryIO: ...


def image_source(ref: str, *, layout: Path | None, version: str | None, platform: str | None,
                 insecure_registries: frozenset[str], progress: Progress) -> SourceArtifact:
    """One spec ``images:`` item as a source artifact (see the module docstring)."""
    parsed = parse_reference(ref)
    if parsed.tag is None:
        raise SpecError(f"image {ref}: give a tag (REPO:TAG@DIGEST); the edge stores the image under it")
    if version is not None:
        parse_version(version, where=f"image {ref} version")
    elif is_version(parsed.tag):
        version = parsed.tag
    else:
        raise SpecError(f"image {ref}: tag {parsed.tag!r} is not a semantic version; "
                         "add `version: X.Y.Z` to this spec item")
    if layout is not None:
        layout_source = LayoutSource(Path(layout))
        source: BlobSource = layout_source
        top = layout_source.select(parsed)
        where = f"image {ref} (layout {layout})"
    else:
        source = RegistrySource(parsed, insecure_registries)
        top = source.top()
        where = f"image {ref}"
    files, chosen, selected = collect(source, top, platform, where)
    warnings = []
    if platform is not None and not selected:
        actual = image_platform(source, chosen)
        if actual is not None and actual != platform and not actual.startswith(platform + "/") \
                and not platform.startswith(actual + "/"):  # a missing variant matches any
            warnings.append(f"{where} is a single-platform image for {actual}; --platform {platform} does not apply to it")
    from manifests.progress import human_bytes

    progress.info(f"{where}: {len(files)} blobs, {human_bytes(sum(f.size for f in files))}")
    image = ImageInfo(repository=parsed.repository, tag=parsed.tag, manifest=chosen.digest,
                      media_type=chosen.media_type, source=ref, platform=platform if selected else None)
    return SourceArtifact(kind="image", name=parsed.repository, version=version, files=files, image=image,
                          warnings=warnings)


def image_platform(source: BlobSource, manifest: Descriptor) -> str | None:
    """``os/arch[/variant]`` from an image's config, or None when it does not say."""
    doc = parse_manifest(source.manifest(manifest), manifest.media_type)
    if doc.config is None or doc.config.size > MAX_MANIFEST_BYTES:
        return None
    with source.open(doc.config) as stream:
        try:
            config = json.loads(stream.read())
        except ValueError:
            return None
    if not isinstance(config, dict) or not all(isinstance(config.get(k), str) for k in ("os", "architecture")):
        return None
    variant = config.get("variant")
    return "/".join([config["os"], config["architecture"], *([variant] if isinstance(variant, str) and variant else [])])


def collect(source: BlobSource, top: Descriptor, platform: str | None,
            where: str) -> tuple[list[SourceFile], Descriptor, bool]:
    """Every blob to carry, each once, manifests first; the descriptor pushed under the tag;
    and whether ``platform`` selected it from an index."""
    files: dict[str, SourceFile] = {}

    def walk(desc: Descriptor, depth: int) -> Descriptor:
        data = source.manifest(desc)
        doc = parse_manifest(data, desc.media_type, where=f"{where}: manifest {desc.digest}")
        desc = Descriptor(doc.media_type, desc.digest, len(data), desc.platform)
        files.setdefault(desc.digest, SourceFile(size=len(data), open=functools.partial(io.BytesIO, data),
                                                 digest=desc.digest, media_type=doc.media_type))
        if doc.is_index:
            if depth >= MAX_INDEX_DEPTH:
                raise FormatError(f"{where}: image indexes nested deeper than {MAX_INDEX_DEPTH}")
            for child in doc.manifests:
                walk(child, depth + 1)
        for blob in doc.blobs:
            if blob.non_distributable:
                shown = f", fetched from {', '.join(blob.urls)}" if blob.urls else ""
                raise SpecError(
                    f"{where}: layer {blob.digest} is non-distributable ({blob.media_type}{shown}): its bytes "
                    "are not served with the image, and an air-gapped site cannot fetch them; rebuild or copy "
                    "the image with that layer as an ordinary layer (e.g. skopeo copy with non-distributable "
                    "layers allowed into an OCI layout), then export that")
            files.setdefault(blob.digest, SourceFile(
                size=blob.size, open=functools.partial(source.open, blob), digest=blob.digest, media_type=blob.media_type))
        return desc

    chosen, selected = top, False
    if platform is not None:
        for _ in range(MAX_INDEX_DEPTH + 1):
            data = source.manifest(chosen)
            doc = parse_manifest(data, chosen.media_type, where=f"{where}: manifest {chosen.digest}")
            if not doc.is_index:
                break
            chosen, selected = select_platform(doc, platform, where=where), True
    chosen = walk(chosen, 0)
    return list(files.values()), chosen, selected


# --------------------------------------------------------------------------- registry


class RegistrySource:
    def __init__(self, ref: ImageRef, insecure_registries: frozenset[str]) -> None:
        from transport.registry import RegistryClient

        self.ref = ref
        self.client = RegistryClient(ref.api_host, insecure_registries)
        self.label = str(ref)
        self._fetched: dict[str, bytes] = {}

    def top(self) -> Descriptor:
        """The manifest the reference names (the digest when pinned, else the tag)."""
        data, media_type, digest = self.client.get_manifest(self.ref.repository, self.ref.reference)
        doc = parse_manifest(data, media_type or None, where=f"image {self.ref}")
        self._fetched[digest] = data
        return Descriptor(doc.media_type, digest, len(data))

    def manifest(self, desc: Descriptor) -> bytes:
        data = self._fetched.get(desc.digest)
        if data is None:
            data, _media_type, _digest = self.client.get_manifest(self.ref.repository, desc.digest)
            self._fetched[desc.digest] = data
        if desc.size and len(data) != desc.size:
            raise VerificationError(f"image {self.ref}: manifest {desc.digest} is {len(data)} bytes, "
                                    f"its descriptor gives {desc.size}")
        return data

    def open(self, desc: Descriptor) -> BinaryIO:
        return self.client.open_blob(self.ref.repository, desc.digest, desc.size)  # type: ignore[return-value]


# --------------------------------------------------------------------------- OCI layout


@dataclass
class LayoutSource:
    """An OCI image layout folder (``oci-layout``, ``index.json``, ``blobs/sha256/...``)."""

    root: Path

    def __post_init__(self) -> None:
        self.label = f"OCI layout {self.root}"
        if not self.root.is_dir():
            raise PlaceError("source", str(self.root), f"image layout {self.root}: no such folder")
        marker = self.root / "oci-layout"
        try:
            version = json.loads(_read_small(marker, 4096, self.label)).get("imageLayoutVersion")
        except (ValueError, AttributeError):
            version = None
        if not isinstance(version, str):
            raise PlaceError("source", str(self.root), f"{self.label}: oci-layout is not an OCI layout marker")

    def index(self) -> list[Descriptor]:
        data = _read_small(self.root / "index.json", MAX_MANIFEST_BYTES, self.label)
        doc = parse_manifest(data, None, where=f"{self.label} index.json")
        if not doc.is_index:
            raise PlaceError("source", str(self.root), f"{self.label}: index.json is not an image index")
        return list(doc.manifests)

    def select(self, ref: ImageRef) -> Descriptor:
        """The index.json entry named by the reference: by digest when pinned; else the
        entry whose ``org.opencontainers.image.ref.name`` is the tag (or ``repo:tag``, as
        ferry writes at the edge); else the only entry."""
        entries = self.index()
        if ref.digest:
            found = [d for d in entries if d.digest == ref.digest]
        else:
            names = {ref.tag, f"{ref.repository}:{ref.tag}", str(ref)}
            found = [d for d in entries if d.annotations.get(REF_NAME_ANNOTATION) in names]
            if not found and len(entries) == 1:
                found = entries
        if not found:
            offered = sorted(d.annotations.get(REF_NAME_ANNOTATION, d.digest) for d in entries)
            raise PlaceError("source", str(self.root), f"{self.label} has no image named {ref.tag or ref.digest!r} "
                             f"(it holds: {', '.join(offered) or 'nothing'})")
        return found[0]

    def _blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest.split(":", 1)[1]

    def manifest(self, desc: Descriptor) -> bytes:
        if desc.size > MAX_MANIFEST_BYTES:
            raise FormatError(f"{self.label}: manifest {desc.digest} is over {MAX_MANIFEST_BYTES} bytes")
        with self.open(desc) as stream:
            return stream.read()

    def open(self, desc: Descriptor) -> BinaryIO:
        path = self._blob_path(desc.digest)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise PlaceError("source", str(path), f"{self.label}: blob {desc.digest} is missing") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise PlaceError("source", str(path), f"{self.label}: blob {desc.digest} is not a regular file")
        stream = os.fdopen(fd, "rb")
        return DigestReader(stream.read, desc.digest, desc.size, f"{self.label}: blob {desc.digest}",
                            close=stream.close)  # type: ignore[return-value]


def _read_small(path: Path, limit: int, label: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise PlaceError("source", str(path), f"{label}: {path.name} is missing; not an OCI image layout") from None
    if len(data) > limit:
        raise FormatError(f"{label}: {path.name} is over {limit} bytes")
    return data


