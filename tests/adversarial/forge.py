"""Test-only: forge bundles with ANY manifest content, signed by a trusted key.

The exporter can only write manifests that ``manifests.model`` accepts. An attacker who holds
(or stole) a hub key is not so polite: this module builds the manifest as a raw ``dict`` that
tests edit freely (``..`` paths, overlapping frames, 10 GiB bombs, unknown versions ...), then
encodes it canonically (or deliberately not), writes arbitrary pack bytes and signs the
result with ``manifests.signing.sign``. Every importer check is therefore attacked from
*inside* a valid signature: the signature check passes and the next line of defence must hold.

    d = draft({"weights.bin": b"..."})          # a valid bundle, as a dict + pack bytes
    d.manifest["artifacts"][0]["files"][0]["path"] = "../../etc/passwd"
    write(d, out, [hub_key])                     # canonical, signed, on the "medium"

It also forges zstd frames by hand (:func:`rle_bomb_frame`): a frame whose header declares
1 KiB but whose RLE blocks inflate to 10 GiB costs 320 KiB to build and no CPU.
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manifests import canonical
from manifests.bundle import MANIFEST_NAME, PACKS_DIR, SIGNATURE_NAME, volume_dir_name
from manifests.chunks import compress_chunk
from manifests.signing import MANIFEST_PAYLOAD_TYPE, sign
from tests.support import bundles
from tests.support.bundles import Spec

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: Largest zstd block: 128 KiB.
BLOCK_MAX = 128 * 1024

# --------------------------------------------------------------------------- zstd frames


def frame(raw: bytes) -> bytes:
    """An honest stored chunk: one zstd frame declaring ``len(raw)``."""
    return compress_chunk(raw)


def _fcs_header(declared: int | None) -> bytes:
    """Frame header: magic, descriptor, a 128 KiB window, and a content size field if given."""
    window = bytes([(17 - 10) << 3])  # Window_Descriptor: 2**17 bytes, the block maximum
    if declared is None:
        return ZSTD_MAGIC + bytes([0x00]) + window
    if 256 <= declared < 256 + 65536:
        return ZSTD_MAGIC + bytes([0x40]) + window + struct.pack("<H", declared - 256)
    if declared < 1 << 32:
        return ZSTD_MAGIC + bytes([0x80]) + window + struct.pack("<I", declared)
    return ZSTD_MAGIC + bytes([0xC0]) + window + struct.pack("<Q", declared)


def rle_bomb_frame(declared: int, inflated: int, byte: int = 0) -> bytes:
    """A valid zstd frame whose header claims ``declared`` bytes (None: no size field) but whose
    RLE blocks regenerate ``inflated`` bytes: 4 bytes per 128 KiB, so 10 GiB costs 320 KiB."""
    out = bytearray(_fcs_header(declared))
    left = inflated
    while left > 0:
        n = min(left, BLOCK_MAX)
        left -= n
        header = (n << 3) | (1 << 1) | (1 if left == 0 else 0)  # Block_Size | RLE | Last_Block
        out += struct.pack("<I", header)[:3] + bytes([byte])
    return bytes(out)


def frame_without_size(raw: bytes) -> bytes:
    """An honest zstd frame that does not declare its content size (the format forbids it)."""
    import zstandard

    return zstandard.ZstdCompressor(write_content_size=False).compress(raw)


# --------------------------------------------------------------------------- drafts


@dataclass
class Draft:
    """A bundle before it is written: a raw manifest dict and the pack bytes, both editable.

    ``files`` keeps the honest content per artifact name, so tests can compare what landed.
    """

    manifest: dict[str, Any]
    packs: dict[str, bytearray]
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def copy(self) -> Draft:
        return Draft(copy.deepcopy(self.manifest), {k: bytearray(v) for k, v in self.packs.items()},
                     dict(self.files))

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        return self.manifest["artifacts"]

    def first_file(self) -> dict[str, Any]:
        a = self.artifacts[0]
        return (a.get("files") or a.get("blobs"))[0]

    def chunk(self, chunk_id: str) -> dict[str, Any]:
        return next(c for c in self.manifest["chunks"] if c["id"] == chunk_id)

    def frame_of(self, chunk_id: str) -> bytes:
        c = self.chunk(chunk_id)
        pack = self.manifest["packs"][c["pack"]]["name"]
        return bytes(self.packs[pack][c["offset"]:c["offset"] + c["stored"]])

    def replace_frame(self, chunk_id: str, stored: bytes) -> None:
        """Put ``stored`` in place of a chunk's frame (appended to its pack), fixing the
        manifest's offset, stored size and pack size so that only the frame itself is hostile."""
        c = self.chunk(chunk_id)
        pack = self.manifest["packs"][c["pack"]]
        buf = self.packs[pack["name"]]
        c["offset"], c["stored"] = len(buf), len(stored)
        buf += stored
        pack["size"] = len(buf)


_THROWAWAY: dict[str, Path] = {}


def _throwaway_key() -> Path:
    """A key only to satisfy tests.support.bundles.write_bundle; forged drafts are re-signed."""
    if "key" not in _THROWAWAY:
        from manifests.keys import generate

        folder = tempfile.mkdtemp(prefix="ferry-forge-")
        atexit.register(shutil.rmtree, folder, True)  # tests leave nothing behind in /tmp
        _THROWAWAY["key"] = generate("throwaway", Path(folder))[0]
    return _THROWAWAY["key"]


def from_disk(bundle: Path) -> Draft:
    """The draft of a bundle already on disk (one volume, or a folder of ``vol-NNN``)."""
    vols = sorted(p for p in bundle.iterdir() if p.name.startswith("vol-")) or [bundle]
    manifest = json.loads((vols[0] / MANIFEST_NAME).read_bytes())
    packs = {p.name: bytearray(p.read_bytes()) for v in vols for p in sorted((v / PACKS_DIR).iterdir())}
    return Draft(manifest, packs)


def draft(files: dict[str, bytes] | None = None, *, specs: list[Spec] | None = None, chunk_size: int = 64 * 1024,
          volumes: int = 1, **bundle: Any) -> Draft:
    """A *valid* bundle as an editable raw dict plus pack bytes, written first by
    tests.support.bundles.write_bundle (the import tests' valid-bundle writer): ``files`` make
    one model ``model-a`` 1.0.0, or ``specs`` (bundles.model / bundles.image) say exactly what.
    ``bundle`` passes name, channel, sequence, bundle_id, held_by_base through."""
    if specs is None:
        files = files if files is not None else {"config.json": b'{"hidden": 8}', "weights.bin": os.urandom(3000)}
        specs = [bundles.model("model-a", "1.0.0", files)]
    with tempfile.TemporaryDirectory(prefix="ferry-forge-") as tmp:
        bundles.write_bundle(Path(tmp) / "b", [_throwaway_key()], specs, chunk_size=chunk_size,
                             volumes=volumes, **bundle)
        d = from_disk(Path(tmp) / "b")
    d.files = {s.name: dict(s.files) for s in specs}
    return d


# --------------------------------------------------------------------------- writing


def encode(manifest: dict[str, Any], *, canonical_form: bool = True) -> bytes:
    """Canonical bytes (as a hub writes them) or, when asked, deliberately non-canonical ones."""
    if canonical_form:
        return canonical.encode(manifest)
    return json.dumps(manifest, indent=1, sort_keys=False).encode("utf-8")


def signature_bytes(body: bytes, keys: list[Any], payload_type: str = MANIFEST_PAYLOAD_TYPE) -> bytes:
    return sign(body, list(keys), payload_type=payload_type).to_bytes()


def write(d: Draft, out: Path, keys: list[Any], *, canonical_form: bool = True, body: bytes | None = None,
          sig: bytes | None = None, only_volumes: list[int] | None = None) -> Path:
    """Write ``d`` to ``out`` as it would lie on the medium and return ``out``.

    ``body`` replaces the encoded manifest (raw bytes, e.g. a 2 GiB file or garbage), ``sig``
    the signature file; otherwise the body is signed with ``keys``. A bundle of one volume is
    written flat; of several, as ``out/vol-NNN`` folders (``only_volumes`` writes a subset).
    """
    body = encode(d.manifest, canonical_form=canonical_form) if body is None else body
    sig = signature_bytes(body, keys) if sig is None else sig
    count = d.manifest.get("volumes", 1) if isinstance(d.manifest.get("volumes"), int) else 1
    packs_by_volume: dict[int, list[str]] = {}
    for p in d.manifest.get("packs", []):
        if isinstance(p, dict) and p.get("name") in d.packs:
            packs_by_volume.setdefault(p.get("volume", 1), []).append(p["name"])
    for v in range(1, max(count, 1) + 1):
        if only_volumes is not None and v not in only_volumes:
            continue
        vol = out if count <= 1 else out / volume_dir_name(v)
        (vol / PACKS_DIR).mkdir(parents=True, exist_ok=True)
        for pname in packs_by_volume.get(v, []):
            (vol / PACKS_DIR / pname).write_bytes(bytes(d.packs[pname]))
        (vol / SIGNATURE_NAME).write_bytes(sig)
        (vol / MANIFEST_NAME).write_bytes(body)
    return out


def resign(bundle: Path, keys: list[Any]) -> None:
    """Sign whatever ``manifest.json`` now holds (after a test edited the bytes on disk)."""
    body = (bundle / MANIFEST_NAME).read_bytes()
    (bundle / SIGNATURE_NAME).write_bytes(signature_bytes(body, keys))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
