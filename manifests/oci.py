"""Container images as OCI sees them: references, media types, manifests, platforms.

Pure functions and data (no network, no files), shared by the hub (which reads images from a
registry or an OCI layout) and the edge (which writes them to a registry or a layout):

- :func:`parse_reference` follows Docker's rules, so that ``team/app:1.2`` means the same here
  as in ``docker pull`` and in a Kubernetes Pod spec: the first path component is a registry
  host only if it contains ``.`` or ``:`` or is ``localhost``; otherwise the registry is
  Docker Hub, where a one-component name gets the ``library/`` prefix; the tag defaults to
  ``latest`` when neither tag nor digest is given.
- :func:`parse_manifest` reads an image manifest or index (OCI or Docker schema 2) just far
  enough to list the blobs and child manifests it references, refusing anything else.
- :func:`select_platform` picks one manifest of an index by ``os/arch[/variant]``.
- :class:`DigestReader` wraps a byte stream and checks size and sha256 as it is read.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .digest import is_oci_digest
from .errors import FormatError, UsageError, VerificationError
from .model import MEDIA_TYPE_RE, PLATFORM_RE, REPOSITORY_RE, TAG_RE

# --------------------------------------------------------------------------- media types

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST_V1 = ("application/vnd.docker.distribution.manifest.v1+json",
                      "application/vnd.docker.distribution.manifest.v1+prettyjws")
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

#: Layer types whose bytes live at their descriptor's ``urls`` (docs/images.md: refused).
NON_DISTRIBUTABLE = frozenset({
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
})

IMAGE_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = IMAGE_MANIFESTS | INDEXES
#: The Accept header for manifest requests: every type we can carry, best first.
ACCEPT_MANIFESTS = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

#: Registries may refuse manifests over 4 MiB (distribution spec); we never read more.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

#: The annotation an OCI layout's index.json uses to name an image.
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

# --------------------------------------------------------------------------- references

DOCKER_HUB = "docker.io"
#: Where Docker Hub's API actually answers.
DOCKER_HUB_API = "registry-1.docker.io"
_HUB_ALIASES = frozenset({DOCKER_HUB, "index.docker.io", DOCKER_HUB_API})

_HOST_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?\Z")
_DIGEST_ANY_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[A-Za-z0-9=_-]{32,}\Z")


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference. ``registry`` is ``HOST[:PORT]`` as written (Docker Hub
    aliases normalised to ``docker.io``); ``repository`` is the path without the host."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """The host to speak the distribution API to (Docker Hub answers elsewhere)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(ref: str) -> ImageRef:
    """Parse ``[HOST[:PORT]/]PATH[:TAG][@DIGEST]`` by Docker's rules (see module docstring).

    Raises FormatError naming the reference and what is wrong with it.
    """
    if not isinstance(ref, str) or not ref or len(ref) > 4096:
        shown = ref[:80] + "..." if isinstance(ref, str) and len(ref) > 80 else ref
        raise FormatError(f"image reference {shown!r} is empty or too long")
    if ref != ref.strip() or any(c.isspace() for c in ref):
        raise FormatError(f"image reference {ref!r} contains white space")
    rest, digest = ref, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST_ANY_RE.match(digest):
            raise FormatError(f"image reference {ref!r}: {digest!r} is not a digest")
        if not is_oci_digest(digest):
            raise FormatError(f"image reference {ref!r}: only sha256 digests are supported")
    registry = DOCKER_HUB
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        if not _HOST_RE.match(first):
            raise FormatError(f"image reference {ref!r}: {first!r} is not a registry host[:port]")
        registry, rest = first, remainder
    tag = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not TAG_RE.match(tag):
            raise FormatError(f"image reference {ref!r}: {tag!r} is not a valid tag")
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if rest and "/" not in rest:
            rest = f"library/{rest}"
    if not rest or len(rest) > 255 or not REPOSITORY_RE.match(rest):
        raise FormatError(f"image reference {ref!r}: {rest!r} is not a repository path "
                         "(lowercase letters, digits, '.', '_', '-' separated by '/')")
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry=registry, repository=rest, tag=tag, digest=digest)


def check_registry_host(host: str) -> str:
    """``HOST[:PORT]`` as given to ``--registry`` / ``--insecure-registry``, or a clear error."""
    if not isinstance(host, str) or not _HOST_RE.match(host):
        raise UsageError(f"registry {host!r} is not HOST[:PORT] (no scheme, no path; e.g. registry.local:5000)")
    return host


def is_loopback_host(host: str) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ::1, with or without a port.

    Docker speaks plain HTTP to these; so does ferry.
    """
    name = host
    if name.startswith("["):
        name = name[1:name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- platforms


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def parse_platform(text: str) -> Platform:
    """``os/arch[/variant]``, e.g. ``linux/amd64`` or ``linux/arm64/v8``."""
    if not isinstance(text, str) or not PLATFORM_RE.match(text):
        raise UsageError(f"platform {text!r} is not os/arch[/variant] (like linux/amd64)")
    parts = text.split("/")
    return Platform(parts[0], parts[1], parts[2] if len(parts) > 2 else None)


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class Descriptor:
    """What a manifest says about a blob or a child manifest."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    urls: tuple[str, ...] = field(default=(), hash=False, compare=False)

    @property
    def is_manifest(self) -> bool:
        return self.media_type in MANIFEST_TYPES

    @property
    def non_distributable(self) -> bool:
        """A foreign layer: its bytes are fetched from ``urls``, not served with the image
        (OCI image-spec v1.1 layer.md "Non-distributable layers", deprecated; Docker's
        ``foreign.diff`` types)."""
        return bool(self.urls) or self.media_type in NON_DISTRIBUTABLE or ".nondistributable." in self.media_type

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d


@dataclass(frozen=True)
class ParsedManifest:
    """An image manifest (config + layers) or an index (child manifests)."""

    media_type: str
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEXES

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """The non-manifest blobs this manifest references directly (config first)."""
        return ((self.config,) if self.config else ()) + self.layers


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise FormatError(f"{where} is not a JSON object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not MEDIA_TYPE_RE.match(media_type):
        raise FormatError(f"{where}: mediaType {media_type!r} is missing or invalid")
    if not isinstance(digest, str) or not is_oci_digest(digest):
        raise FormatError(f"{where}: digest {digest!r} is not a sha256 digest (others are not supported)")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 1 << 53:
        raise FormatError(f"{where}: size {size!r} is not a byte count")
    platform = None
    raw = value.get("platform")
    if isinstance(raw, dict) and isinstance(raw.get("os"), str) and isinstance(raw.get("architecture"), str):
        variant = raw.get("variant")
        platform = Platform(raw["os"], raw["architecture"], variant if isinstance(variant, str) and variant else None)
    ann = value.get("annotations")
    annotations = {k: v for k, v in ann.items() if isinstance(k, str) and isinstance(v, str)} \
        if isinstance(ann, dict) else {}
    raw_urls = value.get("urls")
    urls = tuple(u for u in raw_urls if isinstance(u, str))[:16] if isinstance(raw_urls, list) else ()
    return Descriptor(media_type, digest, size, platform, annotations, urls)


def parse_manifest(data: bytes, media_type: str | None = None, *, where: str = "manifest") -> ParsedManifest:
    """Parse manifest bytes. ``media_type`` is the one the registry or parent descriptor
    gave; the document's own ``mediaType`` field wins when present. Schema 1 and unknown
    types are refused (they cannot be carried byte-identically to a modern registry)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise FormatError(f"{where} is {len(data)} bytes, over the limit of {MAX_MANIFEST_BYTES}")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deeply
        raise FormatError(f"{where} is not JSON") from None
    if not isinstance(doc, dict):
        raise FormatError(f"{where} is not a JSON object")
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        kind = declared
    elif media_type in MANIFEST_TYPES or media_type in DOCKER_MANIFEST_V1:
        kind = media_type
    else:  # OCI allows omitting mediaType, and some registries serve application/json: go by shape
        kind = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if kind in DOCKER_MANIFEST_V1 or doc.get("schemaVersion") == 1:
        raise FormatError(f"{where} is a Docker schema 1 manifest, which is not supported (re-push the image with a current tool)")
    if kind not in MANIFEST_TYPES:
        raise FormatError(f"{where} has media type {kind!r}, not an image manifest or index")
    if kind in INDEXES:
        raw = doc.get("manifests")
        if not isinstance(raw, list):
            raise FormatError(f"{where}: an index needs a manifests list")
        children = tuple(_descriptor(d, f"{where} manifests[{i}]") for i, d in enumerate(raw))
        for child in children:
            if not child.is_manifest:
                raise FormatError(f"{where}: entry {child.digest} has media type {child.media_type!r}, not a manifest")
        return ParsedManifest(kind, None, (), children)
    config = _descriptor(doc.get("config"), f"{where} config")
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list):
        raise FormatError(f"{where}: an image manifest needs a layers list")
    layers = tuple(_descriptor(d, f"{where} layers[{i}]") for i, d in enumerate(raw_layers))
    return ParsedManifest(kind, config, layers, ())


def select_platform(index: ParsedManifest, platform: str, *, where: str = "image") -> Descriptor:
    """The index entry for ``platform``; a missing variant matches any (preferring none),
    as ``docker pull --platform`` does. Raises UsageError listing what the index offers."""
    want = parse_platform(platform)
    candidates = [d for d in index.manifests if d.platform is not None
                  and d.platform.os == want.os and d.platform.architecture == want.architecture
                  and (want.variant is None or d.platform.variant == want.variant)]
    if not candidates:
        offered = sorted({str(d.platform) for d in index.manifests if d.platform is not None})
        raise UsageError(f"{where} has no manifest for platform {platform} (it offers: {', '.join(offered) or 'none'})")
    candidates.sort(key=lambda d: d.platform.variant is not None)  # type: ignore[union-attr]
    return candidates[0]


# --------------------------------------------------------------------------- verified reading


class DigestReader:
    """A read-only binary stream over ``read(n)`` that checks the size and sha256 of
    what passes through, raising VerificationError naming ``label`` at the end (or as
    soon as more than ``size`` bytes arrive). Lets sources stream blobs of any size while
    every byte handed on is accounted for."""

    def __init__(self, read: Callable[[int], bytes], digest: str, size: int, label: str,
                 close: Callable[[], None] | None = None) -> None:
        self._read, self._close = read, close
        self.digest, self.size, self.label = digest, size, label
        self._sha = hashlib.sha256()
        self._seen = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._done:
            return b""
        if n is None or n < 0:
            parts = []
            while chunk := self.read(1 << 20):
                parts.append(chunk)
            return b"".join(parts)
        want = min(n, self.size - self._seen) or 1  # at the end, one byte more reveals excess
        data = self._read(want)
        if data:
            self._seen += len(data)
            if self._seen > self.size:
                self._done = True
                raise VerificationError(f"{self.label}: more than the {self.size} bytes its descriptor gives")
            self._sha.update(data)
            if self._seen == self.size:  # checked here, so a reader that stops at size still sees it
                got = "sha256:" + self._sha.hexdigest()
                if got != self.digest:
                    self._done = True
                    raise VerificationError(f"{self.label}: content does not match its digest (got {got})")
            return data
        self._done = True
        if self._seen != self.size:
            raise VerificationError(f"{self.label}: got {self._seen} bytes, its descriptor gives {self.size}")
        got = "sha256:" + self._sha.hexdigest()
        if got != self.digest:  # reached only for an empty blob; others were checked above
            raise VerificationError(f"{self.label}: content does not match its digest (got {got})")
        return b""

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> DigestReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
