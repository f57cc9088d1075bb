"""The edge's receipt: the compact inventory that ``ferry export --since`` reads.

Written at the edge by ``ferry receipt`` and carried back to the hub, it lists every chunk
the site holds, the OCI blobs (and image manifests) its registry or OCI layout holds, by
digest, its installed artifacts with versions and content digests, and the last sequence
imported per channel (format 1.1; a 1.0 receipt, without ``blobs`` and ``content``, is still
read). What a delta leaves out because of it: :func:`held_blob` and :func:`holds_artifact`
(docs/bundle-format.md, "Receipts"). Canonical JSON like the manifest; optionally signed with the edge's key in a
detached ``FILE.sig`` (payload type ``application/vnd.ferry.receipt.v1+json``). A forged
receipt can only make a delta bundle that the edge cannot complete, never one it accepts
wrongly: the bundle manifest still lists and hashes every chunk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .variants import VARIANT_NAME_RE
from . import canonical, limits
from .digest import is_chunk_id, sha256_digest
from .errors import FormatError, LimitError
from .model import ARTIFACT_KINDS, NAME_RE, check_format
from .text import parse_utc

RECEIPT_FORMAT = "ferry-receipt"
RECEIPT_VERSION = "1.1"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
#: An ``Artifact.content_digest`` (manifests.digest.artifact_content_digest).
CONTENT_RE = re.compile(r"^blake3:[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class InstalledArtifact:
    """One installed unit: ``name`` is ``repository:tag`` for an image (``Artifact.key``);
    ``content`` its ``Artifact.content_digest`` (None in a 1.0 receipt)."""

    kind: str
    name: str
    version: str
    content: str | None = None
    variant: str | None = None  # the model variant installed (optional field; manifests.variants)


@dataclass(frozen=True)
class Receipt:
    site: str
    created: str
    chunks: tuple[str, ...]  # sorted, unique
    artifacts: tuple[InstalledArtifact, ...] = ()
    channels: tuple[tuple[str, int], ...] = ()  # (channel, last sequence), sorted
    #: ``sha256:<hex>`` of every OCI blob and image manifest the site's registry or layout
    #: holds (recorded as images were applied), sorted, unique: one line per blob, however
    #: many chunks it has, so thousands of blobs stay small (about 75 bytes each).
    blobs: tuple[str, ...] = ()

    def to_bytes(self) -> bytes:
        return canonical.encode({
            "format": RECEIPT_FORMAT,
            "formatVersion": RECEIPT_VERSION,
            "site": self.site,
            "created": self.created,
            "chunks": sorted(set(self.chunks)),
            "blobs": sorted(set(self.blobs)),
            "artifacts": [{"kind": a.kind, "name": a.name, "version": a.version}
                          | ({"content": a.content} if a.content is not None else {})
                          | ({"variant": a.variant} if a.variant else {})
                          for a in sorted(self.artifacts, key=lambda a: (a.kind, a.name))],
            "channels": dict(sorted(self.channels)),
        })

    @classmethod
    def from_bytes(cls, data: bytes) -> Receipt:
        if len(data) > limits.MAX_RECEIPT_BYTES:
            raise LimitError(f"receipt is {len(data)} bytes, over the limit of {limits.MAX_RECEIPT_BYTES}")
        d: Any = canonical.decode(data, what="receipt")
        if not isinstance(d, dict):
            raise FormatError("receipt must be a JSON object")
        check_format(d.get("format"), d.get("formatVersion"), RECEIPT_FORMAT, "receipt")
        site, created = d.get("site"), d.get("created")
        if not isinstance(site, str) or not NAME_RE.match(site):
            raise FormatError("receipt site must be a name")
        parse_utc(created, where="receipt created")  # FormatError unless a string naming a real instant
        created = str(created)
        chunks = d.get("chunks")
        if not isinstance(chunks, list) or len(chunks) > limits.MAX_CHUNKS * 16:
            raise FormatError("receipt chunks must be a list of chunk ids")
        if not all(is_chunk_id(c) for c in chunks) or chunks != sorted(set(chunks)):
            raise FormatError("receipt chunks must be sorted, unique chunk ids")
        arts = d.get("artifacts", [])
        if not isinstance(arts, list):
            raise FormatError("receipt artifacts must be a list")
        artifacts = []
        for a in arts:
            if (not isinstance(a, dict) or a.get("kind") not in ARTIFACT_KINDS
                    or not all(isinstance(a.get(k), str) and len(a[k]) <= limits.MAX_NAME_LEN
                               for k in ("name", "version"))):
                raise FormatError("receipt artifacts must have kind, name and version")
            content = a.get("content")
            if content is not None and (not isinstance(content, str) or not CONTENT_RE.match(content)):
                raise FormatError("receipt artifact content must be a blake3: content digest")
            variant = a.get("variant")
            if variant is not None and (not isinstance(variant, str) or not VARIANT_NAME_RE.match(variant)):
                raise FormatError("receipt artifact variant must be a variant name")
            artifacts.append(InstalledArtifact(a["kind"], a["name"], a["version"], content, variant))
        chans = d.get("channels", {})
        if not isinstance(chans, dict) or not all(
                NAME_RE.match(k) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for k, v in chans.items()):
            raise FormatError("receipt channels must map channel names to sequence numbers")
        blobs = d.get("blobs", [])  # absent in a 1.0 receipt
        if not isinstance(blobs, list) or len(blobs) > limits.MAX_ENTRIES * 16:
            raise FormatError("receipt blobs must be a list of sha256: digests")
        if not all(isinstance(b, str) and _DIGEST_RE.match(b) for b in blobs) or blobs != sorted(set(blobs)):
            raise FormatError("receipt blobs must be sorted, unique sha256: digests")
        return cls(site=site, created=created, chunks=tuple(chunks), artifacts=tuple(artifacts),
                   channels=tuple(sorted(chans.items())), blobs=tuple(blobs))

    def holds_artifact(self, kind: str, name: str, version: str, content: str) -> bool:
        """Whether the site has this very unit installed (same version and content): the
        edge then skips it (``importer.policy.decide``: same), so a delta need carry none of
        its bytes. ``name`` as ``Artifact.key`` names it; False for a 1.0 receipt (no content)."""
        return any(a.kind == kind and a.name == name and a.version == version and a.content == content
                   for a in self.artifacts)

    def held_blob(self, digest: str | None) -> bool:
        """Whether the site's registry or OCI layout holds the blob (or manifest) ``digest``."""
        return digest is not None and _bisect_has(self.blobs, digest)


def _bisect_has(items: tuple[str, ...], value: str) -> bool:
    from bisect import bisect_left

    i = bisect_left(items, value)
    return i < len(items) and items[i] == value


def receipt_digest(data: bytes) -> str:
    """How a delta bundle's ``base.receipt`` names the receipt it was made against."""
    return sha256_digest(data)
