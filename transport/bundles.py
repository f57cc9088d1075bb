"""Pushing a bundle folder to a registry as an OCI artifact (docs/bundle-format.md, section 12).

Used by ``ferry push`` and ``ferry export --push``. Every file of the bundle becomes a blob
(:mod:`manifests.link`); a blob the repository already holds is not sent again (a HEAD
first), so pushing the next version or a delta uploads only its new packs. The OCI manifest
goes last, under the tag: a reader never sees a tag whose blobs are not all there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from manifests import limits
from manifests.bundle import MANIFEST_NAME, PACKS_DIR, SIGNATURE_NAME, VOLUME_PREFIX, read_bounded, volume_dir_name
from manifests.errors import PlaceError
from manifests.link import (PACK_MEDIA_TYPE, SIGNATURE_MEDIA_TYPE, TRUST_MEDIA_TYPE, Layer, OciRef,
                            artifact_manifest)
from manifests.model import Manifest
from manifests.oci import OCI_MANIFEST

from .registry import RegistryClient

_PIECE = 1 << 20


@dataclass
class PushResult:
    """What a push sent: ``uploaded``/``skipped`` blob counts, ``bytes_uploaded``, the manifest digest."""

    reference: str
    digest: str = ""
    uploaded: int = 0
    skipped: int = 0
    bytes_uploaded: int = 0
    bytes_skipped: int = 0
    blobs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"reference": self.reference, "digest": self.digest, "uploaded": self.uploaded,
                "skipped": self.skipped, "bytesUploaded": self.bytes_uploaded, "bytesSkipped": self.bytes_skipped}


def _volumes(folder: Path) -> list[Path]:
    if (folder / MANIFEST_NAME).is_file():
        return [folder]
    vols = sorted(p for p in folder.iterdir() if p.name.startswith(VOLUME_PREFIX) and (p / MANIFEST_NAME).is_file()) \
        if folder.is_dir() else []
    if not vols:
        raise PlaceError("medium", str(folder), f"{folder}: no {MANIFEST_NAME} here nor in {VOLUME_PREFIX}* folders; "
                         "not a ferry bundle")
    return vols


def _file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as f:
            while piece := f.read(_PIECE):
                h.update(piece)
                size += len(piece)
    except OSError as exc:
        raise PlaceError("medium", str(path), f"cannot read {path}: {exc.strerror or exc}") from None
    return "sha256:" + h.hexdigest(), size


def _pieces(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while piece := f.read(_PIECE):
            yield piece


def push_bundle(folder: Path, client: RegistryClient, ref: OciRef) -> PushResult:
    """Push the bundle in ``folder`` (one bundle folder, or a folder of ``vol-NNN`` volumes, all
    of them) to ``ref`` (``oci://HOST/REPO:TAG``).

    The bundle is not verified here (no key is needed to carry it; every reader verifies);
    its manifest is parsed to find the packs, and every pack must be present.

    Args:
        folder: the bundle as ``ferry export`` wrote it. client: the registry of ``ref.host``.
        ref: where to put it (a tag).
    Returns:
        what was uploaded and what the registry already held.
    Raises:
        PlaceError: a file of the bundle is missing or unreadable. FormatError / LimitError: the
        manifest is not a ferry manifest. RegistryError: the registry refused or is unreachable.
    """
    vols = _volumes(Path(folder))
    first = vols[0]
    mbytes = read_bounded(first / MANIFEST_NAME, limits.MAX_MANIFEST_BYTES, "manifest",
                          follow_links=False)
    sbytes = read_bounded(first / SIGNATURE_NAME, limits.MAX_SIGNATURE_FILE_BYTES, "signature file",
                          follow_links=False)
    m = Manifest.from_bytes(mbytes)
    by_number = {int(v.name[len(VOLUME_PREFIX):]): v for v in vols
                 if v.name.startswith(VOLUME_PREFIX) and v.name[len(VOLUME_PREFIX):].isdigit()}
    files: list[tuple[Layer, Path | bytes]] = [
        (Layer(SIGNATURE_NAME, SIGNATURE_MEDIA_TYPE, "sha256:" + hashlib.sha256(sbytes).hexdigest(), len(sbytes)),
         sbytes)]
    trust_dir = first / "trust"
    if trust_dir.is_dir() and not trust_dir.is_symlink():
        for f in sorted(trust_dir.iterdir()):
            if f.is_file() and not f.is_symlink() and f.name.endswith((".root.json", ".root.json.sig")):
                data = read_bounded(f, limits.MAX_MANIFEST_BYTES, "trust policy file", follow_links=False)
                files.append((Layer(f"trust/{f.name}", TRUST_MEDIA_TYPE,
                                    "sha256:" + hashlib.sha256(data).hexdigest(), len(data)), data))
    for pack in m.packs:
        vol = first if m.volumes == 1 else by_number.get(pack.volume)
        path = (vol / PACKS_DIR / pack.name) if vol is not None else None
        if path is None or not path.is_file() or path.is_symlink():
            where = volume_dir_name(pack.volume) if m.volumes > 1 else str(first)
            raise PlaceError("medium", str(folder), f"{folder}: pack {pack.name} of volume {pack.volume} is missing "
                             f"(give every volume: {where} not found or incomplete); nothing was pushed")
        digest, size = _file_digest(path)
        if size != pack.size:
            raise PlaceError("medium", str(path), f"{path} is {size} bytes, the manifest says {pack.size}; a damaged "
                             "copy: nothing was pushed")
        files.append((Layer(f"{PACKS_DIR}/{pack.name}", PACK_MEDIA_TYPE, digest, size, pack.volume), path))

    result = PushResult(reference=str(ref))
    repo = ref.repository
    config_digest = "sha256:" + hashlib.sha256(mbytes).hexdigest()
    blobs: list[tuple[str, int, Path | bytes]] = [(config_digest, len(mbytes), mbytes)]
    blobs += [(layer.digest, layer.size, source) for layer, source in files]
    seen: set[str] = set()
    for digest, size, source in blobs:
        if digest in seen:
            continue
        seen.add(digest)
        if client.has_blob(repo, digest):
            result.skipped += 1
            result.bytes_skipped += size
            continue
        chunks = iter([source]) if isinstance(source, bytes) else _pieces(source)
        client.upload_blob(repo, digest, size, chunks)
        result.uploaded += 1
        result.bytes_uploaded += size
        result.blobs.append(digest)
    body = artifact_manifest(config_digest, len(mbytes), [layer for layer, _ in files],
                             channel=m.bundle.channel, sequence=m.bundle.sequence)
    result.digest = client.put_manifest(repo, ref.reference, body, OCI_MANIFEST)
    return result


def open_client(ref: OciRef, insecure: frozenset[str] = frozenset()) -> RegistryClient:
    """The registry client for ``ref`` (Docker credentials; TLS verified except on loopback or
    for a host in ``insecure``)."""
    return RegistryClient(ref.host, insecure_registries=insecure)
