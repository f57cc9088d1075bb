"""Build manifests (and signed manifest bytes) from plain parameters, for contract tests.

Test-only: it goes through the same data classes the exporter uses, so anything it builds
is a manifest a real reader must accept; tests then break it on purpose.
"""

from __future__ import annotations

from manifests.digest import blake3_hex
from manifests.model import Artifact, BundleInfo, Chunk, Entry, Manifest, Pack


def small_manifest(files: dict[str, bytes] | None = None, *, channel: str = "stable",
                   sequence: int = 1, version: str = "1.0.0", name: str = "model-a") -> Manifest:
    """A valid one-artifact model manifest whose files are one chunk each in one pack."""
    files = files if files is not None else {"weights.safetensors": b"w" * 100, "config.json": b"{}"}
    chunks: dict[str, Chunk] = {}
    entries = []
    offset = 0
    for path, data in sorted(files.items()):
        cid = blake3_hex(data)
        if cid not in chunks:
            stored = len(data) // 2 + 9
            chunks[cid] = Chunk(id=cid, size=len(data), stored=stored, pack=0, offset=offset)
            offset += stored
        entries.append(Entry(size=len(data), blake3=cid, chunks=(cid,) if data else (), path=path))
    used = {c for e in entries for c in e.chunks}
    return Manifest(
        bundle=BundleInfo(name="edge-ai", id="b-0001", channel=channel, sequence=sequence,
                          created="2026-11-23T12:00:00Z", producer="ferry 0.1.0"),
        artifacts=(Artifact(kind="model", name=name, version=version, entries=tuple(entries)),),
        chunks=tuple(sorted((c for c in chunks.values() if c.id in used), key=lambda c: c.id)),
        packs=(Pack(name="pack-000001", volume=1, size=max(offset, 1)),),
    )
