"""The second layout of a bundle: an OCI artifact in a registry (docs/bundle-format.md, section 12).

Pure: the ``oci://`` reference grammar, and the mapping between a bundle's files and one OCI
image manifest (``artifactType`` :data:`ARTIFACT_TYPE`): the signed ``manifest.json`` is the
config blob, the signature file and every pack are layers, each layer named by its
``org.opencontainers.image.title`` annotation. Nothing here is trusted: the OCI manifest only
says where the bytes are; the signed manifest says what they must be.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .bundle import MANIFEST_NAME, SIGNATURE_NAME
from .errors import FormatError, LimitError, UsageError
from .limits import MAX_MANIFEST_BYTES, MAX_SIGNATURE_FILE_BYTES
from .oci import OCI_MANIFEST, Descriptor, check_registry_host, parse_manifest
from .model import REPOSITORY_RE, TAG_RE

#: The scheme of a registry reference on the command line.
SCHEME = "oci://"
#: ``artifactType`` of a ferry bundle (layout version 1).
ARTIFACT_TYPE = "application/vnd.ferry.bundle.v1"
#: The config blob: the exact bytes of ``manifest.json``.
MANIFEST_MEDIA_TYPE = "application/vnd.ferry.manifest.v1+json"
#: The layer holding the exact bytes of ``manifest.json.sig``.
SIGNATURE_MEDIA_TYPE = "application/vnd.ferry.signature.v1+json"
#: A pack file (zstd frames back to back, bundle format section 4).
PACK_MEDIA_TYPE = "application/vnd.ferry.pack.v1"
#: A carried trust policy version or its signature file (bundle format section 11).
TRUST_MEDIA_TYPE = "application/vnd.ferry.trust.v1+json"
TITLE = "org.opencontainers.image.title"
#: Layout version, an annotation on the OCI manifest; a reader refuses a major it does not know.
LAYOUT_ANNOTATION = "dev.ferry.layout"
LAYOUT_VERSION = "1.0"
#: The volume a pack layer belongs to (informational: the signed manifest is what counts).
VOLUME_ANNOTATION = "dev.ferry.volume"
CHANNEL_ANNOTATION = "dev.ferry.channel"
SEQUENCE_ANNOTATION = "dev.ferry.sequence"

_TRUST_NAME = re.compile(r"^trust/[1-9][0-9]{0,8}\.root\.json(\.sig)?\Z")
_PACK_NAME = re.compile(r"^packs/[a-z0-9][a-z0-9._-]{0,63}\Z")
_MAX_LAYERS = 65536 + 1 + 64


@dataclass(frozen=True)
class OciRef:
    """``oci://HOST[:PORT]/REPO[:TAG|@DIGEST]``; ``tag`` and ``digest`` both None for a channel."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        assert self.digest or self.tag
        return self.digest or self.tag or ""

    def __str__(self) -> str:
        return f"{SCHEME}{self.host}/{self.repository}" + (f":{self.tag}" if self.tag else "") + (
            f"@{self.digest}" if self.digest else "")


def is_oci_ref(text: str) -> bool:
    """Whether a command-line argument names a registry (``oci://...``) rather than a folder."""
    return str(text).startswith(SCHEME)


def parse_oci_ref(text: str, *, need_tag: bool = True) -> OciRef:
    """Parse ``oci://HOST[:PORT]/REPO[:TAG][@sha256:HEX]``.

    Args:
        text: the argument as given. need_tag: a tag or digest is required (``push``,
            ``import``); without it, ``REPO`` alone names a channel (``watch``).
    Returns:
        the reference. Raises:
        UsageError (exit 2) naming what is wrong: no scheme, a host that is not HOST[:PORT],
        a repository or tag outside the OCI distribution grammar.
    """
    if not is_oci_ref(text):
        raise UsageError(f"{text!r} is not a registry reference (oci://HOST/REPO:TAG)")
    rest = text[len(SCHEME):]
    host, sep, path = rest.partition("/")
    if not sep or not path:
        raise UsageError(f"{text!r}: give oci://HOST[:PORT]/REPO:TAG")
    check_registry_host(host)
    digest = None
    if "@" in path:
        path, digest = path.split("@", 1)
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise UsageError(f"{text!r}: {digest!r} is not a sha256 digest")
    tag = None
    colon = path.rfind(":")
    if colon > path.rfind("/"):
        path, tag = path[:colon], path[colon + 1:]
        if not TAG_RE.match(tag):
            raise UsageError(f"{text!r}: {tag!r} is not a valid tag")
    if not path or len(path) > 255 or not REPOSITORY_RE.match(path):
        raise UsageError(f"{text!r}: {path!r} is not a repository path (lowercase letters, digits, "
                         "'.', '_', '-' separated by '/')")
    if need_tag and tag is None and digest is None:
        raise UsageError(f"{text!r}: give a tag (oci://HOST/REPO:TAG)")
    return OciRef(host, path, tag, digest)


@dataclass(frozen=True)
class Layer:
    """One file of the bundle as a blob: its name in the bundle folder (``manifest.json.sig``,
    ``packs/NAME``, ``trust/N.root.json[.sig]``), media type, digest, size, volume."""

    name: str
    media_type: str
    digest: str
    size: int
    volume: int = 1

    def descriptor(self) -> dict[str, object]:
        ann = {TITLE: self.name}
        if self.media_type == PACK_MEDIA_TYPE:
            ann[VOLUME_ANNOTATION] = str(self.volume)
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, "annotations": ann}


def artifact_manifest(config_digest: str, config_size: int, layers: list[Layer], *, channel: str,
                      sequence: int) -> bytes:
    """The OCI image manifest (bytes, compact JSON with sorted keys) of a bundle.

    Args:
        config_digest, config_size: ``sha256:`` digest and byte count of ``manifest.json``.
        layers: the signature file first, then trust files, then packs (:class:`Layer`).
        channel, sequence: from the signed manifest, as annotations for people and ``watch``.
    Returns:
        the manifest bytes to PUT with media type :data:`manifests.oci.OCI_MANIFEST`.
    """
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
           "config": {"mediaType": MANIFEST_MEDIA_TYPE, "digest": config_digest, "size": config_size},
           "layers": [layer.descriptor() for layer in layers],
           "annotations": {LAYOUT_ANNOTATION: LAYOUT_VERSION, CHANNEL_ANNOTATION: channel,
                           SEQUENCE_ANNOTATION: str(sequence)}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class BundleArtifact:
    """What an OCI manifest says about a bundle: where each of its files is."""

    manifest: Descriptor
    signature: Descriptor
    packs: dict[str, Descriptor]  # pack name (without ``packs/``) -> its blob
    trust: dict[str, Descriptor]  # ``trust/N.root.json[.sig]`` -> its blob
    channel: str | None
    sequence: int | None


def read_artifact(data: bytes, media_type: str | None, where: str) -> BundleArtifact:
    """Parse and check the OCI manifest of a bundle (docs/bundle-format.md section 12).

    Args:
        data: the manifest bytes as served; media_type: the Content-Type; where: names it in errors.
    Returns:
        the blobs of the bundle by name. Raises:
        FormatError: not a ferry bundle (artifact type, config type), a layout major version
        this ferry does not read, a layer name outside the layout, a name twice.
        LimitError: a manifest or signature blob over the format's limits (section 7).
    """
    parsed = parse_manifest(data, media_type, where=where)
    doc = json.loads(data)
    if parsed.config is None:
        raise FormatError(f"{where} is an index, not a ferry bundle")
    if doc.get("artifactType") != ARTIFACT_TYPE and parsed.config.media_type != MANIFEST_MEDIA_TYPE:
        raise FormatError(f"{where} is not a ferry bundle (artifactType {doc.get('artifactType')!r}, "
                          f"config {parsed.config.media_type!r})")
    ann = doc.get("annotations") if isinstance(doc.get("annotations"), dict) else {}
    layout = ann.get(LAYOUT_ANNOTATION, LAYOUT_VERSION)
    if not isinstance(layout, str) or layout.split(".")[0] != LAYOUT_VERSION.split(".")[0]:
        raise FormatError(f"{where}: bundle layout {layout!r} is not supported: this ferry reads 1.x")
    if parsed.config.media_type != MANIFEST_MEDIA_TYPE:
        raise FormatError(f"{where}: config media type {parsed.config.media_type!r} is not {MANIFEST_MEDIA_TYPE}")
    if parsed.config.size > MAX_MANIFEST_BYTES:
        raise LimitError(f"{where}: {MANIFEST_NAME} is {parsed.config.size} bytes, over the limit of {MAX_MANIFEST_BYTES}")
    if len(parsed.layers) > _MAX_LAYERS:
        raise LimitError(f"{where}: {len(parsed.layers)} layers, more than a bundle can have")
    signature: Descriptor | None = None
    packs: dict[str, Descriptor] = {}
    trust: dict[str, Descriptor] = {}
    for i, layer in enumerate(parsed.layers):
        title = layer.annotations.get(TITLE, "")
        if layer.media_type == SIGNATURE_MEDIA_TYPE and title == SIGNATURE_NAME:
            if signature is not None:
                raise FormatError(f"{where}: two {SIGNATURE_NAME} layers")
            if layer.size > MAX_SIGNATURE_FILE_BYTES:
                raise LimitError(f"{where}: {SIGNATURE_NAME} is {layer.size} bytes, over the limit of "
                                 f"{MAX_SIGNATURE_FILE_BYTES}")
            signature = layer
        elif layer.media_type == PACK_MEDIA_TYPE and _PACK_NAME.match(title):
            name = title[len("packs/"):]
            if name in packs:
                raise FormatError(f"{where}: pack {name} twice")
            packs[name] = layer
        elif layer.media_type == TRUST_MEDIA_TYPE and _TRUST_NAME.match(title):
            if layer.size > MAX_MANIFEST_BYTES:
                raise LimitError(f"{where}: {title} is over the limit of {MAX_MANIFEST_BYTES} bytes")
            trust[title] = layer
        else:
            raise FormatError(f"{where}: layers[{i}] ({layer.media_type}, {title!r}) is not part of a ferry bundle")
    if signature is None:
        raise FormatError(f"{where}: no {SIGNATURE_NAME} layer; an unsigned bundle is never accepted")
    seq = ann.get(SEQUENCE_ANNOTATION)
    channel = ann.get(CHANNEL_ANNOTATION)
    return BundleArtifact(parsed.config, signature, packs, trust, channel if isinstance(channel, str) else None,
                          int(seq) if isinstance(seq, str) and seq.isdigit() and len(seq) < 16 else None)
