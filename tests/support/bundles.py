"""Write real bundles on disk from plain bytes, for tests that need a bundle but not the exporter.

It goes through the contract's own pieces (manifests.model, manifests.chunks, manifests.signing)
so what it writes is a bundle any reader must accept: packs of zstd frames, canonical
manifest, detached signatures, optionally split into volumes or made a delta (some chunks not
carried, with a base). Tests then break it on purpose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from manifests.bundle import MANIFEST_NAME, PACKS_DIR, SIGNATURE_NAME, volume_dir_name
from manifests.chunks import compress_chunk
from manifests.digest import blake3_hex, sha256_digest
from manifests.keys import load_private
from manifests.model import Artifact, Base, BundleInfo, Chunk, Entry, ImageInfo, Manifest, Pack
from manifests.signing import sign


@dataclass
class Spec:
    """One artifact to put in a test bundle."""

    kind: str
    name: str
    version: str
    files: dict[str, bytes] = field(default_factory=dict)  # model / manifests: path -> bytes
    image_layers: list[bytes] = field(default_factory=list)  # image: layer blobs
    tag: str = "v1"
    images: tuple[str, ...] = ()  # manifests: image references its workloads name


def model(name: str, version: str, files: dict[str, bytes]) -> Spec:
    return Spec("model", name, version, files=files)


def image(name: str, version: str, layers: list[bytes], tag: str = "v1") -> Spec:
    return Spec("image", name, version, image_layers=layers, tag=tag)


def _image_blobs(spec: Spec) -> tuple[list[tuple[str, str, bytes]], str]:
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [sha256_digest(x) for x in spec.image_layers]}}).encode()
    layers = [(sha256_digest(x), "application/vnd.oci.image.layer.v1.tar", x) for x in spec.image_layers]
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": mt, "digest": d, "size": len(x)} for d, mt, x in layers],
    }).encode()
    blobs = [(sha256_digest(manifest), "application/vnd.oci.image.manifest.v1+json", manifest),
             (sha256_digest(config), "application/vnd.oci.image.config.v1+json", config), *layers]
    return blobs, sha256_digest(manifest)


def write_bundle(out: Path, keys: list[Path], specs: list[Spec], *, name: str = "edge-ai",
                 channel: str = "stable", sequence: int = 1, volumes: int = 1,
                 chunk_size: int = 64 * 1024, held_by_base: set[str] = frozenset(),  # type: ignore[assignment]
                 bundle_id: str | None = None, created: str = "2026-11-23T12:00:00Z") -> Manifest:
    """Write a signed bundle into ``out`` (``out/vol-00N`` when ``volumes`` > 1).

    Chunks are fixed ``chunk_size`` cuts; with ``volumes`` > 1 chunk i goes to pack/volume
    ``i % volumes + 1``. Files or blob digests named in ``held_by_base`` are not carried:
    the bundle becomes a delta with a base.
    """
    raw: dict[str, bytes] = {}
    artifacts = []
    for spec in specs:
        entries = []
        if spec.kind == "image":
            blobs, top = _image_blobs(spec)
            items = [(None, digest, mt, data) for digest, mt, data in blobs]
        else:
            items = [(path, None, None, data) for path, data in sorted(spec.files.items())]
        for path, digest, mt, data in items:
            ids = []
            for i in range(0, len(data), chunk_size):
                piece = data[i:i + chunk_size]
                cid = blake3_hex(piece)
                raw.setdefault(cid, piece)
                ids.append(cid)
                if (path or digest) in held_by_base:
                    raw[cid + ":base"] = b""
            entries.append(Entry(size=len(data), blake3=blake3_hex(data), chunks=tuple(ids),
                                 path=path, digest=digest, media_type=mt))
        info = ImageInfo(repository=spec.name, tag=spec.tag, manifest=top,
                         media_type="application/vnd.oci.image.manifest.v1+json") if spec.kind == "image" else None
        artifacts.append(Artifact(kind=spec.kind, name=spec.name, version=spec.version,  # type: ignore[arg-type]
                                  entries=tuple(entries), image=info, images=spec.images))
    ids = sorted(k for k in raw if ":" not in k)
    base_ids = {k.split(":")[0] for k in raw if k.endswith(":base")}
    frames: list[list[bytes]] = [[] for _ in range(volumes)]
    offsets = [0] * volumes
    chunks = []
    for n, cid in enumerate(ids):
        if cid in base_ids:
            chunks.append(Chunk(id=cid, size=len(raw[cid])))
            continue
        v = n % volumes
        frame = compress_chunk(raw[cid])
        chunks.append(Chunk(id=cid, size=len(raw[cid]), stored=len(frame), pack=v, offset=offsets[v]))
        frames[v].append(frame)
        offsets[v] += len(frame)
    packs = tuple(Pack(name=f"pack-{v + 1:06d}", volume=v + 1, size=offsets[v]) for v in range(volumes))
    manifest = Manifest(
        bundle=BundleInfo(name=name, id=bundle_id or f"{name}-{sequence:04d}", channel=channel,
                          sequence=sequence, created=created, producer="ferry 0.1.0 (test)"),
        artifacts=tuple(artifacts), chunks=tuple(chunks), packs=packs, volumes=volumes,
        base=Base(receipt="sha256:" + "5" * 64, site="edge-1", created="2026-11-22T12:00:00Z") if base_ids else None,
    )
    body = manifest.to_bytes()
    sig = sign(body, [load_private(k) for k in keys]).to_bytes()
    for v in range(volumes):
        vol = out / volume_dir_name(v + 1) if volumes > 1 else out
        (vol / PACKS_DIR).mkdir(parents=True, exist_ok=True)
        (vol / PACKS_DIR / packs[v].name).write_bytes(b"".join(frames[v]))
        (vol / SIGNATURE_NAME).write_bytes(sig)
        (vol / MANIFEST_NAME).write_bytes(body)
    return manifest


def pack_path(out: Path, manifest: Manifest, chunk_id: str) -> Path:
    """Where ``write_bundle`` put the pack holding a carried chunk."""
    chunk = manifest.chunk(chunk_id)
    pack = manifest.packs[chunk.pack]  # type: ignore[index]
    vol = out / volume_dir_name(pack.volume) if manifest.volumes > 1 else out
    return vol / PACKS_DIR / pack.name


def tamper(out: Path, manifest: Manifest, chunk_id: str) -> None:
    """Flip one byte in the middle of a carried chunk's stored frame."""
    chunk = manifest.chunk(chunk_id)
    assert chunk.offset is not None and chunk.stored is not None
    with open(pack_path(out, manifest, chunk_id), "r+b") as f:
        f.seek(chunk.offset + chunk.stored // 2)
        b = f.read(1)
        f.seek(chunk.offset + chunk.stored // 2)
        f.write(bytes([b[0] ^ 0xFF]))
