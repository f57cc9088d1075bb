"""The bundle manifest: what a bundle holds, as typed data classes.

A manifest is the single signed document of a bundle. It lists every artifact (model,
image, manifest set) with each of its files or blobs and the ordered chunks that rebuild
them, every chunk with where it is stored (pack and offset, or not carried in a delta
bundle), the packs with their volume, and the base a delta bundle was made against.

``Manifest.from_bytes`` is the only way a reader should obtain one: it checks the size
limit first, then canonical JSON, then shape and every cross-reference, so that a hostile
manifest is refused before any chunk is read. JSON field names are camelCase, as in
Kubernetes and OCI documents; ``docs/bundle-format.md`` specifies each one.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from . import FORMAT_NAME, FORMAT_VERSION, canonical, limits
from .digest import is_chunk_id, is_oci_digest
from .errors import FormatError, LimitError
from .paths import check_path, check_tree
from .text import UTC_TIME_RE, forbidden_char, parse_utc
from .variants import Variant
from .version import parse_version

ArtifactKind = Literal["model", "image", "manifests"]
ARTIFACT_KINDS: tuple[str, ...] = ("model", "image", "manifests")

#: The order in which the edge applies artifacts, and in which the hub lists them in the
#: manifest (docs/bundle-format.md, "Artifacts"): images, then models, then manifest sets.
#: Manifest sets come last because their workloads need their images and models in place
#: (the edge holds a set back while one of them is missing). Images before models: neither
#: needs the other, and this is the order bundles have always listed them in, so every
#: manifest already made stays "in apply order".
APPLY_ORDER: tuple[ArtifactKind, ...] = ("image", "model", "manifests")


def apply_rank(kind: str) -> int:
    """Position of ``kind`` in :data:`APPLY_ORDER` (sort key). Raises ValueError for an unknown kind."""
    return APPLY_ORDER.index(kind)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
REPOSITORY_RE = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*\Z")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
TIME_RE = UTC_TIME_RE  # shape only; parse_utc checks the instant
MEDIA_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\Z")
PACK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
PLATFORM_RE = re.compile(r"^[a-z0-9_.-]{1,32}/[a-z0-9_.-]{1,32}(?:/[a-z0-9_.-]{1,32})?\Z")


def utc_now() -> str:
    """The current time as every ferry document writes it: RFC 3339 UTC to the second,
    e.g. ``2026-01-31T12:00:00Z`` (matches :data:`TIME_RE`; docs/bundle-format.md). The one
    clock of ferry: the manifest's ``created``, receipts, the edge ledger and the audit trail."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

SUPPORTED_MAJOR = int(FORMAT_VERSION.split(".")[0])


# --------------------------------------------------------------------------- field readers


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(f"{where} must be a JSON object")
    return value


def _list(value: Any, where: str, max_len: int) -> list[Any]:
    if not isinstance(value, list):
        raise FormatError(f"{where} must be a JSON array")
    if len(value) > max_len:
        raise LimitError(f"{where} has {len(value)} entries, more than the limit of {max_len}")
    return value


def _str(d: dict[str, Any], key: str, where: str, pattern: re.Pattern[str] | None = None,
         max_len: int = limits.MAX_NAME_LEN) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise FormatError(f"{where}.{key} must be a string")
    if len(value) > max_len:
        raise LimitError(f"{where}.{key} is longer than {max_len} characters")
    bad = forbidden_char(value)  # printed on terminals: an escape or bidi control could forge output
    if bad is not None:
        raise FormatError(f"{where}.{key} contains a control character or invisible format character ({bad})")
    if pattern is not None and not pattern.match(value):
        raise FormatError(f"{where}.{key} {value!r} is not allowed here")
    return value


def _opt_str(d: dict[str, Any], key: str, where: str, pattern: re.Pattern[str] | None = None,
             max_len: int = limits.MAX_NAME_LEN) -> str | None:
    return None if d.get(key) is None else _str(d, key, where, pattern, max_len)


def _int(d: dict[str, Any], key: str, where: str, lo: int = 0, hi: int = limits.MAX_ENTRY_SIZE) -> int:
    value = d.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise FormatError(f"{where}.{key} must be an integer")
    if not lo <= value <= hi:
        raise FormatError(f"{where}.{key} = {value} is outside {lo}..{hi}")
    return value


def _time(d: dict[str, Any], key: str, where: str) -> str:
    """A UTC time field, checked for meaning (a real instant), not just shape."""
    value = _str(d, key, where, TIME_RE)
    parse_utc(value, where=f"{where}.{key}")
    return value


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# --------------------------------------------------------------------------- data classes


@dataclass(frozen=True)
class Entry:
    """One file of a model or manifest set, or one blob of an image.

    ``blake3`` is the identity of the whole content; ``chunks`` are the chunk ids whose raw
    bytes, concatenated in order, are exactly that content. Files have a ``path``; blobs
    have an OCI ``digest`` (sha256, reproduced exactly at the edge) and ``media_type``.
    ``sha256`` (format 1.3, model files only, docs/bundle-format.md 3.2.3): ``sha256:<64
    lowercase hex>`` of the whole content as the hub read it, the digest of the file's raw
    ModelPack layer, signed with the manifest so that the edge publishes without hashing.
    """

    size: int
    blake3: str
    chunks: tuple[str, ...]
    path: str | None = None
    digest: str | None = None
    media_type: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({
            "path": self.path,
            "digest": self.digest,
            "mediaType": self.media_type,
            "size": self.size,
            "blake3": self.blake3,
            "sha256": self.sha256,
            "chunks": list(self.chunks),
        })

    @classmethod
    def from_dict(cls, value: Any, where: str) -> Entry:
        d = _obj(value, where)
        chunks = _list(d.get("chunks"), f"{where}.chunks", limits.MAX_CHUNK_REFS)
        for i, cid in enumerate(chunks):
            if not is_chunk_id(cid):
                raise FormatError(f"{where}.chunks[{i}] is not a chunk id (64 lowercase hex)")
        b3 = _str(d, "blake3", where)
        if not is_chunk_id(b3):
            raise FormatError(f"{where}.blake3 is not a BLAKE3 hex digest")
        digest = _opt_str(d, "digest", where)
        if digest is not None and not is_oci_digest(digest):
            raise FormatError(f"{where}.digest {digest!r} is not a sha256 digest")
        sha256 = _opt_str(d, "sha256", where)
        if sha256 is not None and not is_oci_digest(sha256):
            raise FormatError(f"{where}.sha256 {sha256!r} is not sha256:<64 lowercase hex>")
        if sha256 is not None and d.get("path") is None:
            raise FormatError(f"{where} has a sha256 but is a blob (blobs give it as digest)")
        path = d.get("path")
        if path is not None:
            check_path(path, where=f"{where}.path")
        return cls(
            size=_int(d, "size", where),
            blake3=b3,
            chunks=tuple(chunks),
            path=path,
            digest=digest,
            media_type=_opt_str(d, "mediaType", where, MEDIA_TYPE_RE),
            sha256=sha256,
        )


@dataclass(frozen=True)
class ImageInfo:
    """Where an image artifact goes at the edge: ``repository:tag`` -> ``manifest`` digest.

    ``manifest`` is the digest of the top-level manifest (or index) pushed under the tag; it
    is one of the artifact's blobs. ``source`` records where the hub read it (informational).
    """

    repository: str
    tag: str
    manifest: str
    media_type: str
    source: str | None = None
    platform: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({
            "repository": self.repository,
            "tag": self.tag,
            "manifest": self.manifest,
            "mediaType": self.media_type,
            "source": self.source,
            "platform": self.platform,
        })

    @classmethod
    def from_dict(cls, value: Any, where: str) -> ImageInfo:
        d = _obj(value, where)
        manifest = _str(d, "manifest", where)
        if not is_oci_digest(manifest):
            raise FormatError(f"{where}.manifest {manifest!r} is not a sha256 digest")
        return cls(
            repository=_str(d, "repository", where, REPOSITORY_RE),
            tag=_str(d, "tag", where, TAG_RE),
            manifest=manifest,
            media_type=_str(d, "mediaType", where, MEDIA_TYPE_RE),
            source=_opt_str(d, "source", where, max_len=limits.MAX_TEXT_LEN),
            platform=_opt_str(d, "platform", where, PLATFORM_RE),
        )


@dataclass(frozen=True)
class Artifact:
    """A versioned thing the edge installs: a model, an image, or a set of manifests.

    :attr:`key` identifies it across bundles (an image by repository and tag);
    ``version`` is a semantic version and decides downgrades. ``entries`` are files (model, manifests) or blobs (image).
    ``images`` lists the image references a manifest set's workloads name.
    ``variant`` (models only, format 1.2) names the variant of the model version carried
    (:mod:`manifests.variants`); variants of one version share the version and the key.
    ``modelcar`` (models only, format 1.3, docs/bundle-format.md 3.2.3): ``sha256:<hex>`` of
    the modelcar layer :func:`manifests.modelpack.modelcar_plan` lays out for the files; given
    only when every file carries its ``sha256``.
    """

    kind: ArtifactKind
    name: str
    version: str
    entries: tuple[Entry, ...]
    image: ImageInfo | None = None
    images: tuple[str, ...] = ()
    variant: Variant | None = None
    modelcar: str | None = None

    @property
    def publish_digests(self) -> bool:
        """Whether the hub recorded the publishing digests: every file's ``sha256`` and the
        ``modelcar`` layer's (format 1.3)."""
        return self.modelcar is not None and all(e.sha256 is not None for e in self.entries)

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)

    @property
    def key(self) -> tuple[str, str]:
        """The unit this artifact is and the version-monotonic rule protects: ``(kind, name)``
        for a model (its ``current``) or a manifest set, ``("image", "repository:tag")`` for an
        image (a tag never moves to older content; several tags of one repository travel side
        by side). A manifest lists each unit once; the edge ledger is keyed by it
        (docs/spec.md "Versions", docs/bundle-format.md "Artifacts")."""
        if self.kind == "image" and self.image is not None:
            return (self.kind, f"{self.name}:{self.image.tag}")
        return (self.kind, self.name)

    @property
    def content_digest(self) -> str:
        """Identity of the content (manifests.digest.artifact_content_digest over each entry's
        path or blob digest and BLAKE3): what importer.policy.decide compares."""
        from .digest import artifact_content_digest

        return artifact_content_digest([(e.path or e.digest or "", e.blake3) for e in self.entries])

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "name": self.name, "version": self.version}
        d["blobs" if self.kind == "image" else "files"] = [e.to_dict() for e in self.entries]
        if self.image is not None:
            d["image"] = self.image.to_dict()
        if self.images:
            d["images"] = list(self.images)
        if self.variant is not None:
            d["variant"] = self.variant.to_dict()
        if self.modelcar is not None:
            d["modelcar"] = self.modelcar
        return d

    @classmethod
    def from_dict(cls, value: Any, where: str) -> Artifact:
        d = _obj(value, where)
        kind = d.get("kind")
        if kind not in ARTIFACT_KINDS:
            raise FormatError(f"{where}.kind must be one of {', '.join(ARTIFACT_KINDS)}")
        name = _str(d, "name", where, REPOSITORY_RE if kind == "image" else NAME_RE)
        where = f"{kind} {name!r}"
        version = _str(d, "version", where)
        parse_version(version, where=f"{where} version")
        key = "blobs" if kind == "image" else "files"
        raw = _list(d.get(key), f"{where}.{key}", limits.MAX_ENTRIES)
        entries = tuple(Entry.from_dict(e, f"{where} {key}[{i}]") for i, e in enumerate(raw))
        image = ImageInfo.from_dict(d["image"], f"{where}.image") if d.get("image") is not None else None
        images = tuple(_list(d.get("images", []), f"{where}.images", limits.MAX_ENTRIES))
        for i, ref in enumerate(images):
            if not isinstance(ref, str) or not 0 < len(ref) <= limits.MAX_TEXT_LEN or forbidden_char(ref):
                raise FormatError(f"{where}.images[{i}] must be a non-empty string of at most "
                                  f"{limits.MAX_TEXT_LEN} characters without control or format characters")
        variant = Variant.from_dict(d["variant"], f"{where}.variant") if d.get("variant") is not None else None
        if variant is not None and kind != "model":
            raise FormatError(f"{where} has a variant but is a {kind} (only models have variants)")
        if kind != "model" and any(e.sha256 is not None for e in entries):
            raise FormatError(f"{where} has files with sha256 but is a {kind} (only model files carry it)")
        modelcar = _opt_str(d, "modelcar", where)
        if modelcar is not None:
            if kind != "model":
                raise FormatError(f"{where} has a modelcar digest but is a {kind} (only models have one)")
            if not is_oci_digest(modelcar):
                raise FormatError(f"{where}.modelcar {modelcar!r} is not sha256:<64 lowercase hex>")
            if any(e.sha256 is None for e in entries):
                raise FormatError(f"{where} has a modelcar digest but not every file has its sha256")
        return cls(kind=kind, name=name, version=version, entries=entries, image=image, images=images,
                   variant=variant, modelcar=modelcar)


@dataclass(frozen=True)
class Chunk:
    """A run of bytes named by the BLAKE3 of its raw content.

    ``stored`` bytes at ``offset`` in pack ``pack`` (an index into the manifest's packs) are
    one zstd frame that declares ``size`` as its content size. A chunk with ``pack`` None is
    not carried: a delta bundle leaves out what its base says the edge already holds.
    """

    id: str
    size: int
    stored: int | None = None
    pack: int | None = None
    offset: int | None = None

    @property
    def carried(self) -> bool:
        return self.pack is not None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"id": self.id, "size": self.size, "stored": self.stored,
                           "pack": self.pack, "offset": self.offset})

    @classmethod
    def from_dict(cls, value: Any, where: str) -> Chunk:
        d = _obj(value, where)
        cid = d.get("id")
        if not isinstance(cid, str) or not is_chunk_id(cid):
            raise FormatError(f"{where}.id is not a chunk id (64 lowercase hex)")
        where = f"chunk {cid}"
        size = _int(d, "size", where, 1, limits.MAX_CHUNK_SIZE)  # an empty file has no chunks
        placed = [d.get(k) is not None for k in ("stored", "pack", "offset")]
        if any(placed) and not all(placed):
            raise FormatError(f"{where} must give stored, pack and offset together, or none of them")
        if not any(placed):
            return cls(id=cid, size=size)
        return cls(
            id=cid,
            size=size,
            stored=_int(d, "stored", where, 1, limits.MAX_STORED_CHUNK_SIZE),
            pack=_int(d, "pack", where, 0, limits.MAX_PACKS - 1),
            offset=_int(d, "offset", where, 0, limits.MAX_PACK_SIZE),
        )


@dataclass(frozen=True)
class Pack:
    """A file ``packs/<name>`` on volume ``volume`` holding chunk frames back to back."""

    name: str
    volume: int
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "volume": self.volume, "size": self.size}

    @classmethod
    def from_dict(cls, value: Any, where: str) -> Pack:
        d = _obj(value, where)
        return cls(
            name=_str(d, "name", where, PACK_NAME_RE),
            volume=_int(d, "volume", where, 1, limits.MAX_VOLUMES),
            size=_int(d, "size", where, 0, limits.MAX_PACK_SIZE),
        )


@dataclass(frozen=True)
class BundleInfo:
    """Who made the bundle, when, and its place in its channel's sequence."""

    name: str
    id: str
    channel: str
    sequence: int
    created: str
    producer: str
    expires: str | None = None  # format 1.1: after this UTC time the edge refuses the bundle

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "id": self.id, "channel": self.channel,
                             "sequence": self.sequence, "created": self.created, "producer": self.producer}
        if self.expires is not None:
            d["expires"] = self.expires
        return d

    @classmethod
    def from_dict(cls, value: Any, where: str = "bundle") -> BundleInfo:
        d = _obj(value, where)
        return cls(
            name=_str(d, "name", where, NAME_RE),
            id=_str(d, "id", where, NAME_RE),
            channel=_str(d, "channel", where, NAME_RE),
            sequence=_int(d, "sequence", where, 1),
            created=_time(d, "created", where),
            producer=_str(d, "producer", where, max_len=limits.MAX_PRODUCER_LEN),
            expires=_time(d, "expires", where) if d.get("expires") is not None else None,
        )


@dataclass(frozen=True)
class Base:
    """What a delta bundle was made against: the edge receipt the hub was given."""

    receipt: str
    site: str
    created: str

    def to_dict(self) -> dict[str, Any]:
        return {"receipt": self.receipt, "site": self.site, "created": self.created}

    @classmethod
    def from_dict(cls, value: Any, where: str = "base") -> Base:
        d = _obj(value, where)
        receipt = _str(d, "receipt", where)
        if not is_oci_digest(receipt):
            raise FormatError(f"{where}.receipt must be a sha256 digest")
        return cls(receipt=receipt, site=_str(d, "site", where, NAME_RE),
                   created=_time(d, "created", where))


@dataclass(frozen=True)
class Manifest:
    """The signed description of one bundle. See the module docstring."""

    bundle: BundleInfo
    artifacts: tuple[Artifact, ...]
    chunks: tuple[Chunk, ...]
    packs: tuple[Pack, ...]
    volumes: int = 1
    base: Base | None = None
    format_version: str = FORMAT_VERSION
    _chunk_index: dict[str, Chunk] = field(default_factory=dict, init=False, repr=False, compare=False)

    def chunk(self, chunk_id: str) -> Chunk:
        """The chunk record for ``chunk_id`` (KeyError if the manifest lists none)."""
        if not self._chunk_index:
            self._chunk_index.update((c.id, c) for c in self.chunks)
        return self._chunk_index[chunk_id]

    def artifact(self, kind: str, name: str) -> Artifact:
        for a in self.artifacts:
            if a.kind == kind and a.name == name:
                return a
        raise KeyError((kind, name))

    # ---- encoding

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT_NAME,
            "formatVersion": self.format_version,
            "bundle": self.bundle.to_dict(),
            "artifacts": [a.to_dict() for a in self.artifacts],
            "chunks": [c.to_dict() for c in self.chunks],
            "packs": [p.to_dict() for p in self.packs],
            "volumes": self.volumes,
        }
        if self.base is not None:
            d["base"] = self.base.to_dict()
        return d

    def to_bytes(self) -> bytes:
        """Canonical bytes, after the same checks a reader makes."""
        validate(self)
        data = canonical.encode(self.to_dict())
        if len(data) > limits.MAX_MANIFEST_BYTES:
            raise LimitError(f"manifest would be {len(data)} bytes, over the limit of {limits.MAX_MANIFEST_BYTES}")
        return data

    @classmethod
    def from_dict(cls, value: Any) -> Manifest:
        d = _obj(value, "manifest")
        check_format(d.get("format"), d.get("formatVersion"), FORMAT_NAME, "manifest")
        artifacts = _list(d.get("artifacts"), "artifacts", limits.MAX_ARTIFACTS)
        chunks = _list(d.get("chunks"), "chunks", limits.MAX_CHUNKS)
        packs = _list(d.get("packs"), "packs", limits.MAX_PACKS)
        manifest = cls(
            bundle=BundleInfo.from_dict(d.get("bundle")),
            artifacts=tuple(Artifact.from_dict(a, f"artifacts[{i}]") for i, a in enumerate(artifacts)),
            chunks=tuple(Chunk.from_dict(c, f"chunks[{i}]") for i, c in enumerate(chunks)),
            packs=tuple(Pack.from_dict(p, f"packs[{i}]") for i, p in enumerate(packs)),
            volumes=_int(d, "volumes", "manifest", 1, limits.MAX_VOLUMES),
            base=Base.from_dict(d["base"]) if d.get("base") is not None else None,
            format_version=d["formatVersion"],
        )
        validate(manifest)
        return manifest

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse and check manifest bytes exactly as found on the medium."""
        if len(data) > limits.MAX_MANIFEST_BYTES:
            raise LimitError(f"manifest is {len(data)} bytes, over the limit of {limits.MAX_MANIFEST_BYTES}")
        return cls.from_dict(canonical.decode(data, what="manifest"))


def check_format(name: Any, version: Any, expected: str, what: str) -> None:
    """Refuse a document of another type or of an unknown major format version.

    Within a major version, later minors only add optional fields; a reader ignores fields
    it does not know (they are still covered by the signature).
    """
    if name != expected:
        raise FormatError(f"{what} is not a {expected} document (format = {name!r})")
    if not isinstance(version, str) or not re.match(r"^[0-9]{1,4}\.[0-9]{1,4}\Z", version):
        raise FormatError(f"{what} formatVersion {version!r} is not MAJOR.MINOR")
    major = int(version.split(".")[0])
    if major != SUPPORTED_MAJOR:
        raise FormatError(
            f"{what} format version {version} is not supported: this ferry reads "
            f"{SUPPORTED_MAJOR}.x (upgrade ferry to read a newer format)"
        )


def validate(m: Manifest) -> None:
    """Every cross-reference and limit a reader relies on; raises FormatError on the first break."""
    if len(m.artifacts) > limits.MAX_ARTIFACTS:
        raise LimitError(f"{len(m.artifacts)} artifacts, over the limit of {limits.MAX_ARTIFACTS}")
    if len(m.chunks) > limits.MAX_CHUNKS:
        raise LimitError(f"{len(m.chunks)} chunks, over the limit of {limits.MAX_CHUNKS}")
    if len(m.packs) > limits.MAX_PACKS:
        raise LimitError(f"{len(m.packs)} packs, over the limit of {limits.MAX_PACKS}")

    # chunks: sorted by id, unique, placed inside a pack without overlap
    previous = ""
    for c in m.chunks:
        if c.id <= previous:
            raise FormatError(f"chunks must be sorted by id without duplicates (at {c.id})")
        previous = c.id
        if c.size > limits.MAX_CHUNK_SIZE:
            raise LimitError(f"chunk {c.id} claims {c.size} bytes, over the limit of {limits.MAX_CHUNK_SIZE}")
        if c.carried:
            assert c.pack is not None and c.offset is not None and c.stored is not None
            if c.pack >= len(m.packs):
                raise FormatError(f"chunk {c.id} names pack {c.pack}, but the manifest lists {len(m.packs)}")
            if c.offset + c.stored > m.packs[c.pack].size:
                raise FormatError(f"chunk {c.id} runs past the end of pack {m.packs[c.pack].name}")
        elif m.base is None:
            raise FormatError(f"chunk {c.id} is not carried, but the bundle is not a delta (no base)")
    placed = sorted((c.pack, c.offset, c.stored, c.id) for c in m.chunks if c.carried)
    for (p1, o1, s1, id1), (p2, o2, _s2, id2) in zip(placed, placed[1:]):
        if p1 == p2 and o1 + s1 > o2:  # type: ignore[operator]
            raise FormatError(f"chunks {id1} and {id2} overlap in pack {m.packs[p1].name}")  # type: ignore[index]

    # packs: unique names, volumes in range
    names: set[str] = set()
    for p in m.packs:
        if p.name in names:
            raise FormatError(f"pack {p.name} is listed twice")
        names.add(p.name)
        if p.volume > m.volumes:
            raise FormatError(f"pack {p.name} is on volume {p.volume}, but the bundle has {m.volumes}")

    # artifacts: unique (kind, name); entries consistent with their kind and chunks
    sizes = {c.id: c.size for c in m.chunks}
    referenced: set[str] = set()
    seen: set[tuple[str, str]] = set()
    entries = refs = 0
    for a in m.artifacts:
        where = f"{a.kind} {a.name!r}"
        # one unit once: a model or manifest set by name, an image by repository *and* tag
        # (several tags of one repository travel side by side; importer.policy.unit)
        if a.key in seen:
            raise FormatError(f"{a.kind} {a.key[1]!r} is listed twice")
        seen.add(a.key)
        entries += len(a.entries)
        if entries > limits.MAX_ENTRIES:
            raise LimitError(f"more than {limits.MAX_ENTRIES} files and blobs in the bundle")
        if a.kind == "image":
            _validate_image(a, where)
        else:
            if a.image is not None:
                raise FormatError(f"{where} has image details but is a {a.kind}")
            for e in a.entries:
                if e.path is None or e.digest is not None:
                    raise FormatError(f"{where}: each file needs a path and no digest")
            check_tree((e.path for e in a.entries), where=where)  # type: ignore[misc]
        for e in a.entries:
            refs += len(e.chunks)
            if refs > limits.MAX_CHUNK_REFS:
                raise LimitError(f"more than {limits.MAX_CHUNK_REFS} chunk references in the bundle")
            total = 0
            for cid in e.chunks:
                size = sizes.get(cid)
                if size is None:
                    raise FormatError(f"{where}: {e.path or e.digest} uses chunk {cid}, which the manifest does not list")
                total += size
                referenced.add(cid)
            if total != e.size:
                raise FormatError(f"{where}: {e.path or e.digest} is {e.size} bytes but its chunks add up to {total}")
    if len(referenced) != len(m.chunks):
        orphan = next(c.id for c in m.chunks if c.id not in referenced)
        raise FormatError(f"chunk {orphan} is listed but no file or blob uses it")


def _validate_image(a: Artifact, where: str) -> None:
    if a.image is None:
        raise FormatError(f"{where} needs image details (repository, tag, manifest)")
    if a.image.repository != a.name:
        raise FormatError(f"{where}: image repository {a.image.repository!r} differs from the artifact name")
    digests: set[str] = set()
    for e in a.entries:
        if e.digest is None or e.media_type is None or e.path is not None:
            raise FormatError(f"{where}: each blob needs a digest and a media type, and no path")
        if e.digest in digests:
            raise FormatError(f"{where}: blob {e.digest} is listed twice")
        digests.add(e.digest)
    if a.image.manifest not in digests:
        raise FormatError(f"{where}: its manifest {a.image.manifest} is not among its blobs")
