"""What the exporter bundles, as sources produce it.

Each source (models, images, manifests) turns one spec item into a :class:`SourceArtifact`:
kind, name, version and a list of :class:`SourceFile` that the writer streams through the
chunker. Sources never read whole files into memory: they hand out ``open()`` callables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from manifests.model import ArtifactKind, ImageInfo
from manifests.variants import Variant


@dataclass
class SourceFile:
    """One file (model, manifests) or blob (image) to put into the bundle.

    ``open`` returns a fresh binary stream of exactly ``size`` bytes. For an OCI blob the
    stream must be checked against ``digest`` by whoever reads it to the end (the writer
    does: it hashes sha256 alongside BLAKE3 and fails the export on mismatch).
    ``local_path`` (a regular file on the hub) lets the writer cache chunking results keyed
    on (path, size, mtime, inode) and find format-aware boundaries (safetensors, GGUF).
    """

    size: int
    open: Callable[[], BinaryIO]
    path: str | None = None
    digest: str | None = None
    media_type: str | None = None
    local_path: Path | None = None


@dataclass
class SourceArtifact:
    kind: ArtifactKind
    name: str
    version: str
    files: list[SourceFile]
    image: ImageInfo | None = None
    images: tuple[str, ...] = ()  # image references named by a manifest set's workloads
    warnings: list[str] = field(default_factory=list)
    variant: Variant | None = None  # the variant of a model version carried (manifests.variants)
