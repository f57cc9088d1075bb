"""The edge's receipt: the compact inventory that ``ferry export --since`` reads.

Written at the edge by ``ferry receipt`` and carried back to the hub, it lists every chunk
the site holds, its installed artifacts and versions, and the last sequence imported per
channel. Canonical JSON like the manifest; optionally signed with the edge's key in a
detached ``FILE.sig`` (payload type ``application/vnd.ferry.receipt.v1+json``). A forged
receipt can only make a delta bundle that the edge cannot complete, never one it accepts
wrongly: the bundle manifest still lists and hashes every chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .variants import VARIANT_NAME_RE
from . import canonical, limits
from .digest import is_chunk_id, sha256_digest
from .errors import FormatError, LimitError
from .model import ARTIFACT_KINDS, NAME_RE, check_format
from .text import parse_utc

RECEIPT_FORMAT = "ferry-receipt"
RECEIPT_VERSION = "1.0"


@dataclass(frozen=True)
class InstalledArtifact:
    kind: str
    name: str
    version: str
    variant: str | None = None  # the model variant installed (optional field; manifests.variants)


@dataclass(frozen=True)
class Receipt:
    site: str
    created: str
    chunks: tuple[str, ...]  # sorted, unique
    artifacts: tuple[InstalledArtifact, ...] = ()
    channels: tuple[tuple[str, int], ...] = ()  # (channel, last sequence), sorted

    def to_bytes(self) -> bytes:
        return canonical.encode({
            "format": RECEIPT_FORMAT,
            "formatVersion": RECEIPT_VERSION,
            "site": self.site,
            "created": self.created,
            "chunks": sorted(set(self.chunks)),
            "artifacts": [{"kind": a.kind, "name": a.name, "version": a.version,
                           **({"variant": a.variant} if a.variant else {})}
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
            variant = a.get("variant")
            if variant is not None and (not isinstance(variant, str) or not VARIANT_NAME_RE.match(variant)):
                raise FormatError("receipt artifact variant must be a variant name")
            artifacts.append(InstalledArtifact(a["kind"], a["name"], a["version"], variant))
        chans = d.get("channels", {})
        if not isinstance(chans, dict) or not all(
                NAME_RE.match(k) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for k, v in chans.items()):
            raise FormatError("receipt channels must map channel names to sequence numbers")
        return cls(site=site, created=created, chunks=tuple(chunks), artifacts=tuple(artifacts),
                   channels=tuple(sorted(chans.items())))


def receipt_digest(data: bytes) -> str:
    """How a delta bundle's ``base.receipt`` names the receipt it was made against."""
    return sha256_digest(data)
