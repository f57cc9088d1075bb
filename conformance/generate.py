"""Write the conformance suite of the ferry bundle format 1.0: valid and invalid bundles.

A second implementation, written from ``docs/bundle-format.md`` alone: it imports nothing of
ferry (only ``cryptography`` for Ed25519, ``blake3``, ``rfc8785`` for canonical JSON and, for
the cases that need a real compressor, ``zstandard``). Most zstd frames are built by hand
from RFC 8878 (raw blocks), so the bytes do not depend on a compressor's version.

Everything is fixed: the keys come from fixed seeds, the content from a seeded generator,
every ``created`` is a constant, Ed25519 signatures are deterministic. Writing the suite twice
gives byte-identical trees (``tests/test_conformance.py`` checks it).

Usage::

    python -m conformance.generate OUT

writes ``OUT/index.json`` (one entry per case: id, the rule of the format document it tests,
the expected verdict, the bundle path and the trust to verify it with), ``OUT/keys/*.pub``
(SubjectPublicKeyInfo PEM) and ``OUT/cases/<id>/`` (``bundle/`` and ``trust.json``, a ferry
trust policy naming the keys). Verdicts: ``accept`` (a verifier exits 0), ``reject`` (it exits
1 or 2), ``incomplete`` (every volume given verified, others are missing: exit 3).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import random
import struct
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

#: The format version this suite tests; the suite is versioned with it (section 8).
SUITE_FORMAT_VERSION = "1.0"
SUITE_VERSION = "1.1.0"  # 1.1.0: the format 1.3 cases (section 3.2.3)

MANIFEST_TYPE = "application/vnd.ferry.manifest.v1+json"
RECEIPT_TYPE = "application/vnd.ferry.receipt.v1+json"
RETURN_TYPE = "application/vnd.ferry.return.v1+json"
SITE = "site-01"  # the site of the return-bundle cases (section 13); its key is keys/site-01.pub
CREATED = "2026-11-23T12:00:00Z"
MiB = 1024 * 1024
MAX_CHUNK = 16 * MiB

KEY_NAMES = ("hub-a", "hub-b", "hub-c", "stranger", SITE)


# --------------------------------------------------------------------------- keys and signatures (section 5)


def private_key(name: str) -> Ed25519PrivateKey:
    """A fixed key: its 32-byte seed is SHA-256 of a constant text."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"ferry conformance 1 {name}".encode()).digest())


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key: Ed25519PrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def pae(payload_type: str, body: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 " + str(len(t)).encode() + b" " + t + b" " + str(len(body)).encode() + b" " + body


def signature_file(body: bytes, keys: list[Ed25519PrivateKey], payload_type: str = MANIFEST_TYPE,
                   extra: dict[str, Any] | None = None) -> bytes:
    sigs = sorted(({"keyid": key_id(k), "sig": base64.b64encode(k.sign(pae(payload_type, body))).decode()}
                   for k in keys), key=lambda s: s["keyid"])
    return rfc8785.dumps({"payloadType": payload_type, "signatures": sigs, **(extra or {})})


# --------------------------------------------------------------------------- zstd frames (section 4, RFC 8878)


def raw_frame(raw: bytes, *, declared: int | None = None, checksum: bool = False) -> bytes:
    """One zstd frame of raw blocks: single segment, a 4-byte Frame_Content_Size."""
    size = len(raw) if declared is None else declared
    descriptor = (2 << 6) | (1 << 5) | (4 if checksum else 0)  # FCS 4 bytes, single segment
    out = bytearray(struct.pack("<IB", 0xFD2FB528, descriptor) + struct.pack("<I", size))
    pieces = [raw[i:i + 128 * 1024] for i in range(0, len(raw), 128 * 1024)] or [b""]
    for i, piece in enumerate(pieces):
        header = (len(piece) << 3) | (0 << 1) | (1 if i == len(pieces) - 1 else 0)
        out += header.to_bytes(3, "little") + piece
    if checksum:
        out += b"\0\0\0\0"  # never checked: the flag alone is the fault
    return bytes(out)


def zstd_frame(raw: bytes, *, checksum: bool = False) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=checksum).compress(raw)


# --------------------------------------------------------------------------- a bundle being written


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


@dataclass
class Bundle:
    """A bundle as the raw manifest dict, the pack bytes, and how it is signed and laid out."""

    manifest: dict[str, Any]
    packs: dict[str, bytearray]
    raw: dict[str, bytes]  # chunk id -> raw bytes
    signers: list[str] = field(default_factory=lambda: ["hub-a"])
    payload_type: str = MANIFEST_TYPE
    body: bytes | None = None  # exact manifest bytes instead of the canonical encoding
    sig: bytes | None = None  # exact signature file instead of signing
    drop_packs: set[str] = field(default_factory=set)  # pack files left off the medium
    only_volumes: list[int] | None = None  # volume folders written (None: all)
    sparse_manifest: int | None = None  # a zero-filled manifest.json of this many bytes

    def chunk(self, cid: str) -> dict[str, Any]:
        return next(c for c in self.manifest["chunks"] if c["id"] == cid)

    def first_file(self) -> dict[str, Any]:
        a = self.manifest["artifacts"][0]
        return (a.get("files") or a["blobs"])[0]

    def set_frame(self, cid: str, frame: bytes) -> None:
        """Append ``frame`` to the chunk's pack and point the chunk at it."""
        c = self.chunk(cid)
        pack = self.manifest["packs"][c["pack"]]
        buf = self.packs[pack["name"]]
        c["offset"], c["stored"] = len(buf), len(frame)
        buf += frame
        pack["size"] = len(buf)

    def encode(self) -> bytes:
        if self.sparse_manifest is not None:
            return b"\0" * self.sparse_manifest
        return self.body if self.body is not None else rfc8785.dumps(self.manifest)

    def write(self, out: Path) -> None:
        body = self.encode()
        sig = self.sig if self.sig is not None else signature_file(
            body, [private_key(n) for n in self.signers], self.payload_type)
        count = self.manifest["volumes"] if isinstance(self.manifest.get("volumes"), int) else 1
        count = count if 1 <= count <= 999 else 1
        for v in range(1, count + 1):
            if self.only_volumes is not None and v not in self.only_volumes:
                continue
            vol = out if count == 1 else out / f"vol-{v:03d}"
            vol.mkdir(parents=True, exist_ok=True)
            names = [p["name"] for p in self.manifest.get("packs", [])
                     if isinstance(p, dict) and p.get("volume") == v and p.get("name") in self.packs]
            for name in names:
                if name in self.drop_packs:
                    continue
                (vol / "packs").mkdir(exist_ok=True)
                (vol / "packs" / name).write_bytes(bytes(self.packs[name]))
            (vol / "manifest.json.sig").write_bytes(sig)
            if self.sparse_manifest is not None:
                with open(vol / "manifest.json", "wb") as f:
                    f.truncate(self.sparse_manifest)
            else:
                (vol / "manifest.json").write_bytes(body)  # written last (section 1)


class Builder:
    """Artifacts from fixed content, then the chunk table and packs laid out per section 3-4."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.artifacts: list[dict[str, Any]] = []
        self.raw: dict[str, bytes] = {}
        self.order: list[str] = []  # chunk ids in first-use order

    def data(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def _entry(self, data: bytes, chunk_size: int, **fields: Any) -> dict[str, Any]:
        ids = []
        for i in range(0, len(data), chunk_size):
            piece = data[i:i + chunk_size]
            cid = b3(piece)
            if cid not in self.raw:
                self.raw[cid] = piece
                self.order.append(cid)
            ids.append(cid)
        return {**fields, "size": len(data), "blake3": b3(data), "chunks": ids}

    def model(self, name: str, version: str, files: dict[str, bytes], *, chunk_size: int = 4096,
              kind: str = "model") -> Builder:
        entries = [self._entry(data, chunk_size, path=path) for path, data in files.items()]
        self.artifacts.append({"kind": kind, "name": name, "version": version, "files": entries})
        return self

    def image(self, name: str, version: str, tag: str, layers: list[bytes], *, chunk_size: int = 4096) -> Builder:
        config = rfc8785.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
            "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]}})
        layer_type = "application/vnd.oci.image.layer.v1.tar"
        descriptors = [{"mediaType": layer_type, "digest": "sha256:" + hashlib.sha256(layer).hexdigest(),
                        "size": len(layer)} for layer in layers]
        top = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                     "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
                          "layers": descriptors}, separators=(",", ":")).encode()
        blobs = [(top, "application/vnd.oci.image.manifest.v1+json"),
                 (config, "application/vnd.oci.image.config.v1+json")] + [(layer, layer_type) for layer in layers]
        entries = [self._entry(data, chunk_size, digest="sha256:" + hashlib.sha256(data).hexdigest(), mediaType=mt)
                   for data, mt in blobs]
        self.artifacts.append({"kind": "image", "name": name, "version": version, "blobs": entries,
                               "image": {"repository": name, "tag": tag, "manifest": entries[0]["digest"],
                                         "mediaType": "application/vnd.oci.image.manifest.v1+json"}})
        return self

    def bundle(self, *, volumes: int = 1, not_carried: frozenset[str] = frozenset(),
               frame: Callable[[bytes], bytes] = raw_frame, base: dict[str, Any] | None = None,
               **info: Any) -> Bundle:
        """Lay the chunks out: chunk i (first-use order) on volume i % volumes + 1, one pack per
        volume holding a share, frames back to back; chunks in ``not_carried`` left out."""
        packs: dict[str, bytearray] = {}
        pack_list: list[dict[str, Any]] = []
        chunks = []
        carried = [cid for cid in self.order if cid not in not_carried]
        for v in range(1, volumes + 1):
            if any(i % volumes + 1 == v for i in range(len(carried))):
                name = f"pack-{v:03d}.zst"
                packs[name] = bytearray()
                pack_list.append({"name": name, "volume": v, "size": 0})
        index = {p["volume"]: i for i, p in enumerate(pack_list)}
        for i, cid in enumerate(carried):
            p = index[i % volumes + 1]
            buf = packs[pack_list[p]["name"]]
            stored = frame(self.raw[cid])
            chunks.append({"id": cid, "size": len(self.raw[cid]), "stored": len(stored), "pack": p,
                           "offset": len(buf)})
            buf += stored
            pack_list[p]["size"] = len(buf)
        chunks += [{"id": cid, "size": len(self.raw[cid])} for cid in self.order if cid in not_carried]
        manifest: dict[str, Any] = {
            "format": "ferry-bundle", "formatVersion": SUITE_FORMAT_VERSION,
            "bundle": {"name": "conformance", "id": "conf-0001", "channel": "stable", "sequence": 1,
                       "created": CREATED, "producer": "ferry-conformance " + SUITE_VERSION, **info},
            "artifacts": self.artifacts, "chunks": sorted(chunks, key=lambda c: c["id"]),
            "packs": pack_list, "volumes": volumes}
        if base is not None:
            manifest["base"] = base
        return Bundle(manifest, packs, dict(self.raw))


def standard(seed: int = 1) -> Bundle:
    """The plain valid bundle most invalid cases start from: one model, three files."""
    b = Builder(seed)
    return b.model("model-a", "1.0.0", {"config.json": b'{"layers": 2}', "weights.bin": b.data(10000),
                                        "tokenizer/vocab.txt": b.data(3000)}).bundle()


# --------------------------------------------------------------------------- the cases


@dataclass
class Case:
    id: str
    rule: str  # section of docs/bundle-format.md
    title: str
    verdict: str  # accept | reject | incomplete
    make: Callable[[], Bundle]
    trust: list[tuple[str, list[str] | None]] = field(default_factory=lambda: [("hub-a", None)])
    threshold: int = 1
    given: str = ""  # a sub-path of the bundle handed to the reader (e.g. "vol-001")
    reader: str = "hub-bound"  # which reader it is handed to: "hub-bound" (--reader) or "return" (--return-reader)


def _edit(fn: Callable[[Bundle], object], seed: int = 1) -> Callable[[], Bundle]:
    def make() -> Bundle:
        b = standard(seed)
        fn(b)
        return b
    return make


def _set(path: str, value: Any) -> Callable[[Bundle], None]:
    """Set a field by a dotted path (list indexes as numbers)."""
    def fn(b: Bundle) -> None:
        *parents, last = path.split(".")
        node: Any = b.manifest
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return fn


def _canonical_body_replace(old: bytes, new: bytes) -> Callable[[Bundle], None]:
    def fn(b: Bundle) -> None:
        body = rfc8785.dumps(b.manifest)
        assert old in body, old
        b.body = body.replace(old, new, 1)
    return fn


def _rename_file(path: str) -> Callable[[Bundle], None]:
    return _set("artifacts.0.files.0.path", path)


def _first_chunk(b: Bundle) -> str:
    return b.first_file()["chunks"][0]


def v_volumes() -> Bundle:
    b = Builder(2)
    return b.model("model-a", "1.0.0", {"weights.bin": b.data(40000), "config.json": b"{}"},
                   chunk_size=4096).bundle(volumes=3)


def v_everything() -> Bundle:
    """Model, image and manifest set; empty files; a chunk used twice; compressed frames."""
    b = Builder(3)
    same = b.data(4096)
    b.model("model-a", "2.1.0-rc.1+build.5", {"empty.txt": b"", "a.bin": same + same + b.data(100),
                                             "b.bin": same, "nested/deeper/c.json": b'{"x": 1}'})
    b.image("team/app", "1.0.0", "v1", [b.data(5000), b.data(9000)])
    b.model("sites", "0.3.0", {"deploy.yaml": b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"},
            kind="manifests")
    b.artifacts[-1]["images"] = ["team/app:v1"]
    return b.bundle(frame=zstd_frame)


def v_no_chunks() -> Bundle:
    return Builder(4).model("empty-model", "1.0.0", {"a.txt": b"", "b/c.txt": b""}).bundle()


def v_delta() -> Bundle:
    b = Builder(5)
    held = b.data(4096)
    b.model("model-a", "1.1.0", {"weights.bin": held + b.data(4096)})
    return b.bundle(not_carried=frozenset({b3(held)}),
                    base={"receipt": "sha256:" + hashlib.sha256(b"a receipt").hexdigest(), "site": "edge-1",
                          "created": "2026-11-22T08:00:00Z"})


def v_limits() -> Bundle:
    """Each limit at its maximum: a 16 MiB chunk, 4096-byte paths of 255-byte components,
    128-character names and tags, 255-character versions, producer, media types, repository."""
    b = Builder(6)
    folders = ["a" * 255] + ["d" * 254] * 15  # 16 folders, one of 255 bytes
    long_path = "/".join(folders) + "/" + "f" * (4096 - len("/".join(folders)) - 1)
    assert len(long_path.encode()) == 4096 and max(len(p) for p in long_path.split("/")) <= 255
    version = "1.0.0-" + "v" * 249
    b.model("m" * 128, version, {long_path: b.data(64), "big.bin": b.data(MAX_CHUNK)}, chunk_size=MAX_CHUNK)
    b.image("r" * 255, "1.0.0", "t" * 128, [b.data(100)])
    blob = b.artifacts[-1]["blobs"][1]
    blob["mediaType"] = "x" * 127 + "/" + "y" * 127  # RFC 6838: type and subtype at most 127 each
    return b.bundle(name="n" * 128, id="i" * 128, channel="c" * 128, sequence=2 ** 53 - 1,
                    producer="p" * 255)


def v_minor() -> Bundle:
    b = standard()
    b.manifest["formatVersion"] = "1.9"
    b.manifest["futureField"] = {"added": "in 1.9", "deep": [[[1]]]}
    b.manifest["artifacts"][0]["futureNote"] = "ignored by a 1.0 reader"
    return b


def _with_sha256(b: Bundle, modelcar: bool = False) -> Bundle:
    """Format 1.3 (3.2.3): every file of the model gains its ``sha256``; with ``modelcar``,
    the model its modelcar layer's digest (:func:`modelcar_layer`)."""
    b.manifest["formatVersion"] = "1.3"
    model = b.manifest["artifacts"][0]
    for entry in model["files"]:
        data = b"".join(b.raw[cid] for cid in entry["chunks"])
        entry["sha256"] = "sha256:" + hashlib.sha256(data).hexdigest()
    if modelcar:
        model["modelcar"] = _modelcar_of(b)
    return b


MODELCAR_MTIME = 1767225600  # 2026-01-01T00:00:00Z (docs/models-oci.md, Modelcar details)


def _pax_record(key: str, value: str) -> bytes:
    """``"<length> <key>=<value>\n"``, the length counting the whole record, its digits too (POSIX pax)."""
    body = f" {key}={value}\n".encode()
    length = 0
    while len(body) + len(str(length)) != length:
        length = len(body) + len(str(length))
    return str(length).encode() + body


def _comment(length: int) -> bytes | None:
    """A pax ``comment`` record of ASCII zeros exactly ``length`` bytes long, or None."""
    value = "0" * max(length - len(" comment=\n") - len(str(length)), 0)
    record = _pax_record("comment", value)
    return record if len(record) == length else None


def _info(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, MODELCAR_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def modelcar_layer(files: dict[str, bytes]) -> bytes:
    """The modelcar layer of docs/models-oci.md, *Modelcar details* (part of the format from
    1.3, docs/bundle-format.md 3.2.3), written from that description: the folders ``models/``
    and ``models/<sub>/`` (sorted, PAX headers, mode 0755), then each file ``models/<path>``
    sorted by path: a pax extended header (``path``, ``size``, and a ``comment`` of zeros that
    puts the file's data on a 4 KiB boundary), the ustar header (mode 0644), the data, zeros to
    512 bytes; two zero blocks at the end. Owner 0:0, mtime 2026-01-01T00:00:00Z everywhere."""
    folders = {"models"}
    for path in files:
        parts = path.split("/")[:-1]
        folders.update("/".join(["models", *parts[:i]]) for i in range(1, len(parts) + 1))
    out = bytearray()
    for d in sorted(folders):
        out += _info(d + "/", tarfile.DIRTYPE, 0, 0o755).tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")
    for path in sorted(files):
        name, data = "models/" + path, files[path]
        records = _pax_record("path", name) + _pax_record("size", str(len(data)))
        padded = -(len(out) + 1024) % 4096  # the extended data's length: headers end on 4 KiB
        while True:
            comment = None
            if padded - len(records) >= len(_pax_record("comment", "")):
                comment = _comment(padded - len(records)) or _comment(padded - len(records) - 1)
            if comment is not None and padded > 0:
                break
            padded += 4096
        ext = records + comment
        out += _info("././@PaxHeader", tarfile.XHDTYPE, len(ext), 0o644).tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
        out += ext + bytes(-len(ext) % 512)
        short = name.encode()[:100].decode("utf-8", errors="ignore")
        out += _info(short, tarfile.REGTYPE, len(data) if len(data) < 8 ** 11 else 0,
                     0o644).tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
        assert len(out) % 4096 == 0
        out += data + bytes(-len(data) % 512)
    return bytes(out + bytes(1024))


def _modelcar_of(b: Bundle) -> str:
    files = {e["path"]: b"".join(b.raw[cid] for cid in e["chunks"]) for e in b.manifest["artifacts"][0]["files"]}
    return "sha256:" + hashlib.sha256(modelcar_layer(files)).hexdigest()


def _edit_sha(fn: Callable[[dict[str, Any]], object]) -> Bundle:
    b = _with_sha256(standard(), modelcar=True)
    fn(b.manifest["artifacts"][0])
    return b


def v_signatures() -> Bundle:
    b = standard()
    b.signers = ["hub-a", "hub-b", "hub-c", "stranger"]
    return b


def i_sparse_manifest() -> Bundle:
    b = standard()
    b.sparse_manifest = 128 * MiB + 1
    return b


def i_big_sigfile() -> Bundle:
    b = standard()
    body = rfc8785.dumps(b.manifest)
    b.sig = signature_file(body, [private_key("hub-a")], extra={"padding": "x" * MiB})
    return b


def i_other_body(b: Bundle) -> None:
    other = copy.deepcopy(b.manifest)
    other["bundle"]["sequence"] = 2
    b.sig = signature_file(rfc8785.dumps(other), [private_key("hub-a")])


def i_sig_text(transform: Callable[[str], str]) -> Callable[[Bundle], None]:
    def fn(b: Bundle) -> None:
        sig = json.loads(signature_file(rfc8785.dumps(b.manifest), [private_key("hub-a")]))
        sig["signatures"][0]["sig"] = transform(sig["signatures"][0]["sig"])
        b.sig = rfc8785.dumps(sig)
    return fn


def i_sig_keyid_upper(b: Bundle) -> None:
    sig = json.loads(signature_file(rfc8785.dumps(b.manifest), [private_key("hub-a")]))
    sig["signatures"][0]["keyid"] = sig["signatures"][0]["keyid"].upper()
    b.sig = rfc8785.dumps(sig)


def i_33_signatures(b: Bundle) -> None:
    body = rfc8785.dumps(b.manifest)
    one = json.loads(signature_file(body, [private_key("hub-a")]))["signatures"][0]
    b.sig = rfc8785.dumps({"payloadType": MANIFEST_TYPE, "signatures": [one] * 33})


def i_nesting(b: Bundle) -> None:
    deep: Any = 1
    for _ in range(31):  # the document is level 1, "futureField" level 2: the scalar lands at level 33
        deep = [deep]
    b.manifest["futureField"] = deep


def i_unsorted_chunks(b: Bundle) -> None:
    b.manifest["chunks"].reverse()


def i_unlisted_chunk(b: Bundle) -> None:
    cid = _first_chunk(b)
    b.manifest["chunks"] = [c for c in b.manifest["chunks"] if c["id"] != cid]


def i_orphan_chunk(b: Bundle) -> None:
    extra = b"orphan"
    b.raw[b3(extra)] = extra
    b.manifest["chunks"].append({"id": b3(extra), "size": len(extra)})
    b.manifest["chunks"].sort(key=lambda c: c["id"])
    b.manifest["base"] = {"receipt": "sha256:" + "0" * 64, "site": "edge-1", "created": CREATED}


def i_overlap(b: Bundle) -> None:
    chunks = sorted((c for c in b.manifest["chunks"]), key=lambda c: c["offset"])
    chunks[1]["offset"] -= 1


def i_outside_pack(b: Bundle) -> None:
    b.manifest["packs"][0]["size"] -= 1


def i_uppercase_chunk_id(b: Bundle) -> None:
    cid = _first_chunk(b)
    for c in b.manifest["chunks"]:
        if c["id"] == cid:
            c["id"] = cid.upper()
    for a in b.manifest["artifacts"]:
        for e in a["files"]:
            e["chunks"] = [x.upper() if x == cid else x for x in e["chunks"]]
    b.manifest["chunks"].sort(key=lambda c: c["id"])


def i_zero_chunk(b: Bundle) -> None:
    empty = b3(b"")
    f = b.manifest["artifacts"][0]["files"]
    f.append({"path": "empty.txt", "size": 0, "blake3": empty, "chunks": [empty]})
    pack = b.manifest["packs"][0]
    frame = raw_frame(b"")
    b.manifest["chunks"].append({"id": empty, "size": 0, "stored": len(frame), "pack": 0, "offset": pack["size"]})
    b.packs[pack["name"]] += frame
    pack["size"] += len(frame)
    b.manifest["chunks"].sort(key=lambda c: c["id"])


def i_tamper(b: Bundle) -> None:
    c = b.chunk(_first_chunk(b))
    buf = b.packs[b.manifest["packs"][c["pack"]]["name"]]
    buf[c["offset"] + c["stored"] - 1] ^= 0xFF


def i_frame(make: Callable[[bytes], bytes]) -> Callable[[Bundle], None]:
    def fn(b: Bundle) -> None:
        cid = _first_chunk(b)
        b.set_frame(cid, make(b.raw[cid]))
    return fn


def i_no_content_size(raw: bytes) -> bytes:
    descriptor = 0  # not single segment, FCS flag 0: no Frame_Content_Size field at all
    out = bytearray(struct.pack("<IB", 0xFD2FB528, descriptor)) + bytes([0x58])  # window 2^(10+11) bytes
    pieces = [raw[i:i + 128 * 1024] for i in range(0, len(raw), 128 * 1024)]
    for i, piece in enumerate(pieces):
        out += ((len(piece) << 3) | (1 if i == len(pieces) - 1 else 0)).to_bytes(3, "little") + piece
    return bytes(out)


def i_entry_blake3(b: Bundle) -> None:
    b.first_file()["blake3"] = b3(b"something else")


def i_blob_digest() -> Bundle:
    b = Builder(7)
    b.image("team/app", "1.0.0", "v1", [b.data(3000)])
    bundle = b.bundle()
    layer = bundle.manifest["artifacts"][0]["blobs"][2]
    layer["digest"] = "sha256:" + hashlib.sha256(b"another layer").hexdigest()
    return bundle


def i_image_manifest_not_blob() -> Bundle:
    b = Builder(8)
    b.image("team/app", "1.0.0", "v1", [b.data(3000)])
    bundle = b.bundle()
    bundle.manifest["artifacts"][0]["image"]["manifest"] = "sha256:" + "1" * 64
    return bundle


def i_channel() -> Bundle:
    return standard()


def i_missing_pack() -> Bundle:
    b = standard()
    b.drop_packs = {b.manifest["packs"][0]["name"]}
    return b


def i_file_and_folder(b: Bundle) -> None:
    files = b.manifest["artifacts"][0]["files"]
    files[0]["path"] = "Tokenizer"  # "tokenizer/vocab.txt" is another file: a folder ignoring case


def i_case_duplicate(b: Bundle) -> None:
    files = b.manifest["artifacts"][0]["files"]
    files[0]["path"] = "WEIGHTS.BIN"


def i_fold_duplicate(b: Bundle) -> None:
    files = b.manifest["artifacts"][0]["files"]
    files[0]["path"] = "straße.bin"
    files[1]["path"] = "STRASSE.bin"  # equal under full case folding (ß -> ss)


def _long(n: int) -> str:
    return "x" * n


def one_volume_of_three() -> Bundle:
    b = v_volumes()
    b.only_volumes = [1]
    return b


# --------------------------------------------------------------------------- return bundles (section 13)


def safetensors(tensors: dict[str, list[float]]) -> bytes:
    """A safetensors file of 1-D F32 tensors: 8-byte little-endian header length, JSON header
    (padded with spaces to a multiple of 8), then the tensors' bytes back to back."""
    header: dict[str, Any] = {}
    data = bytearray()
    for name, values in tensors.items():
        raw = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": [len(values)], "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(data)


def return_doc(**changes: Any) -> dict[str, Any]:
    """``return.json`` of the site's first return bundle (13.1): one update, one metrics file, one drift summary."""
    doc: dict[str, Any] = {
        "format": "ferry-return", "formatVersion": "1.0", "site": SITE, "created": CREATED,
        "audit": {"from": 0, "count": 0},
        "updates": [{"model": "model-a", "base": "1.0.0", "examples": 1200, "metrics": {"loss": 0.31}}],
        "metrics": ["metrics/serving.prom"], "drift": ["drift/model-a.json"]}
    doc.update(changes)
    return doc


def drift_doc(**features: Any) -> dict[str, Any]:
    """A drift summary (13.2) of model-a 1.0.0: two features."""
    return {"format": "ferry-drift", "formatVersion": "1.0", "model": "model-a", "version": "1.0.0",
            "features": features or {"length": {"edges": [0, 10, 50, 200, 1000], "counts": [120, 800, 300, 12]},
                                     "score": {"edges": [-1.5, 0, 1.5], "counts": [7, 0]}}}


def return_bundle(doc: dict[str, Any] | None = None, drift: dict[str, Any] | None = None, *,
                  payload_type: str = RETURN_TYPE) -> Bundle:
    """A return bundle of site-01, sequence 1 (section 13): the ``ferry-return`` report artifact
    (return.json, receipt.json, status.json, an empty audit.jsonl, a metrics file, a drift
    summary) and one model update ``model-a`` ``1.0.0+site.site-01``; signed by the site's key."""
    b = Builder(20)
    receipt = rfc8785.dumps({"format": "ferry-receipt", "formatVersion": "1.1", "site": SITE, "created": CREATED,
                             "chunks": [], "blobs": [], "artifacts": [], "channels": {"stable": 1}})
    status = {"site": SITE, "installed": [{"kind": "model", "name": "model-a", "version": "1.0.0"}],
              "channels": {"stable": 1}}
    b.model("ferry-return", "1.0.0", {
        "return.json": json.dumps(doc if doc is not None else return_doc(), indent=1).encode(),
        "receipt.json": receipt,
        "status.json": json.dumps(status, indent=1).encode(),
        "audit.jsonl": b"",
        "metrics/serving.prom": b"# TYPE requests counter\nrequests_total 1027\n# EOF\n",
        "drift/model-a.json": json.dumps(drift if drift is not None else drift_doc()).encode()})
    b.model("model-a", f"1.0.0+site.{SITE}", {"model.safetensors": safetensors(
        {"dense.weight": [0.25, -0.5, 1.0, 2.0], "dense.bias": [0.125]})})
    bundle = b.bundle(name=f"return-{SITE}", id=f"return-{SITE}-0001", channel=SITE)
    bundle.signers = [SITE]
    bundle.payload_type = payload_type
    return bundle


#: The trust of the return cases: the site's key, allowed on the site's channel only (13.1).
SITE_TRUST: list[tuple[str, list[str] | None]] = [(SITE, [SITE])]


CASES: list[Case] = [
    # ---- valid bundles
    Case("valid-single", "1", "one volume, one model of three files", "accept", lambda: standard()),
    Case("valid-volumes", "1", "three volumes, the folder of volumes given", "accept", v_volumes),
    Case("valid-one-volume-given", "1", "volume 1 of 3 alone: it verifies on its own, the others are missing",
         "incomplete", one_volume_of_three, given="vol-001"),
    Case("valid-second-volume-given", "1", "volume 2 of 3 alone", "incomplete", v_volumes, given="vol-002"),
    Case("valid-everything", "3", "model, image, manifest set; an empty file; a chunk used three times; "
         "zstd-compressed frames; a prerelease version", "accept", v_everything),
    Case("valid-no-chunks", "3.3", "only empty files: chunks [], packs [] and no packs/ folder", "accept",
         v_no_chunks),
    Case("valid-delta", "3.6", "a delta: one chunk held by the base, not carried", "accept", v_delta),
    Case("valid-limits", "7", "every limit at its maximum (16 MiB chunk, 4096-byte path, 255-character "
         "version, producer, repository and media type, 128-character names and tag, sequence 2^53-1)",
         "accept", v_limits),
    Case("valid-sha256", "3.2.3", "format 1.3: model files with their sha256, no modelcar", "accept",
         lambda: _with_sha256(standard())),
    Case("valid-sha256-modelcar", "3.2.3", "format 1.3: model files with their sha256 and a modelcar digest",
         "accept", lambda: _with_sha256(standard(), modelcar=True)),
    Case("3.2.3-sha256-uppercase", "3.2.3", "a file's sha256 in uppercase hex", "reject",
         lambda: _edit_sha(lambda m: m["files"][0].__setitem__("sha256", m["files"][0]["sha256"].upper()
                                                               .replace("SHA256:", "sha256:")))),
    Case("3.2.3-sha256-short", "3.2.3", "a file's sha256 of 63 hex digits", "reject",
         lambda: _edit_sha(lambda m: m["files"][0].__setitem__("sha256", m["files"][0]["sha256"][:-1]))),
    Case("3.2.3-sha256-wrong", "3.2.3", "a file's sha256 that is not its content's", "reject",
         lambda: _edit_sha(lambda m: m["files"][1].__setitem__("sha256", "sha256:" + "0" * 64))),
    Case("3.2.3-modelcar-malformed", "3.2.3", "a modelcar digest without the sha256: prefix", "reject",
         lambda: _edit_sha(lambda m: m.__setitem__("modelcar", "ab" * 32))),
    Case("3.2.3-modelcar-without-sha256", "3.2.3", "a modelcar digest while a file lacks its sha256", "reject",
         lambda: _edit_sha(lambda m: m["files"][0].pop("sha256"))),
    Case("valid-minor-version", "8", "format 1.9 with fields a 1.0 reader does not know", "accept", v_minor),
    Case("valid-signatures", "5.1", "four signatures (one by an untrusted key), threshold 2 of 3", "accept",
         v_signatures, trust=[("hub-a", None), ("hub-b", None), ("hub-c", None)], threshold=2),
    Case("valid-channel-key", "5.1", "a key restricted to the bundle's channel", "accept", lambda: standard(),
         trust=[("hub-a", ["stable"])]),
    # ---- 6.1 sizes
    Case("6.1-manifest-size", "6.1", "manifest.json of 128 MiB + 1 byte (sparse)", "reject", i_sparse_manifest),
    Case("6.1-signature-file-size", "6.1", "manifest.json.sig over 1 MiB", "reject", i_big_sigfile),
    # ---- 5, 6.2 signatures
    Case("6.2-untrusted-key", "6.2", "signed only by a key that is not trusted", "reject",
         lambda: _with(standard(), signers=["stranger"])),
    Case("6.2-other-bytes", "6.2", "a signature over other manifest bytes", "reject", _edit(i_other_body)),
    Case("6.2-payload-type", "6.2", "signed as a receipt (payload type bound by DSSE)", "reject",
         lambda: _with(standard(), payload_type=RECEIPT_TYPE)),
    Case("6.2-no-signatures", "6.2", "a signature file with no signatures", "reject",
         lambda: _with(standard(), signers=[])),
    Case("6.2-threshold", "5.1", "one signature where the trust asks for two", "reject", lambda: standard(),
         trust=[("hub-a", None), ("hub-b", None)], threshold=2),
    Case("5-base64-unpadded", "5", "signature in base64 without padding", "reject",
         _edit(i_sig_text(lambda s: s.rstrip("=")))),
    Case("5-base64-urlsafe", "5", "signature in the URL-safe base64 alphabet", "reject",
         _edit(i_sig_text(lambda s: s.replace("+", "-").replace("/", "_") if ("+" in s or "/" in s)
                          else "-" + s[1:]))),
    Case("5-base64-trailing-bits", "5", "signature base64 with non-zero trailing bits", "reject",
         _edit(i_sig_text(lambda s: s[:85] + {"A": "B", "Q": "R", "g": "h", "w": "x"}[s[85]] + "=="))),
    Case("5-keyid-uppercase", "5", "key id in uppercase hex", "reject", _edit(i_sig_keyid_upper)),
    Case("7-signatures-count", "7", "33 signatures", "reject", _edit(i_33_signatures)),
    # ---- 2, 6.3 the manifest
    Case("2-not-canonical", "2", "valid JSON with whitespace, signed", "reject",
         _edit(lambda b: setattr(b, "body", json.dumps(b.manifest, indent=1).encode()))),
    Case("2-float", "2", "a float where an integer goes", "reject",
         _edit(_canonical_body_replace(b'"sequence":1', b'"sequence":1.0'))),
    Case("2-duplicate-key", "2", "a duplicate object key", "reject",
         _edit(_canonical_body_replace(b'"channel":"stable"', b'"channel":"stable","channel":"stable"'))),
    Case("2-integer-range", "2", "an integer beyond 2^53-1", "reject",
         _edit(_canonical_body_replace(b'"sequence":1', b'"sequence":9007199254740992'))),
    Case("2-lone-surrogate", "2", "a lone surrogate in a string", "reject",
         _edit(_canonical_body_replace(b'"producer":"ferry', b'"producer":"\\ud800ferry'))),
    Case("2-nesting", "2", "a value at level 33", "reject", _edit(i_nesting)),
    Case("2-bom", "2", "a byte-order mark before the document", "reject",
         _edit(lambda b: setattr(b, "body", b"\xef\xbb\xbf" + rfc8785.dumps(b.manifest)))),
    Case("2-control-producer", "2", "an escape character in producer", "reject",
         _edit(_set("bundle.producer", "ferry \x1b[2Jfake"))),
    Case("2-c1-producer", "2", "a C1 control (CSI) in producer", "reject", _edit(_set("bundle.producer", "ferry \x9b"))),
    Case("2-bidi-producer", "2", "U+202E in producer", "reject", _edit(_set("bundle.producer", "ferry \u202e1.0"))),
    Case("2-bidi-path", "2", "U+202E in a path", "reject", _edit(_rename_file("evil\u202etxt.bin"))),
    Case("2-isolate-path", "2", "U+2066 in a path", "reject", _edit(_rename_file("a\u2066b.bin"))),
    Case("2-zero-width-path", "2", "U+200B in a path", "reject", _edit(_rename_file("a\u200bb.bin"))),
    Case("2-bom-in-path", "2", "U+FEFF in a path", "reject", _edit(_rename_file("\ufeffa.bin"))),
    Case("3-format-name", "3", "format is not ferry-bundle", "reject", _edit(_set("format", "other-bundle"))),
    Case("8-major-version", "8", "format version 2.0", "reject", _edit(_set("formatVersion", "2.0"))),
    Case("3.1-created-month-13", "3.1", "created 2099-13-45T99:99:99Z", "reject",
         _edit(_set("bundle.created", "2099-13-45T99:99:99Z"))),
    Case("3.1-created-leap-second", "3.1", "created at a leap second 23:59:60", "reject",
         _edit(_set("bundle.created", "2016-12-31T23:59:60Z"))),
    Case("3.1-created-february-30", "3.1", "created 2026-02-30", "reject",
         _edit(_set("bundle.created", "2026-02-30T12:00:00Z"))),
    Case("3.1-created-fraction", "3.1", "created with fractional seconds", "reject",
         _edit(_set("bundle.created", "2026-11-23T12:00:00.5Z"))),
    Case("3.1-created-offset", "3.1", "created with an offset instead of Z", "reject",
         _edit(_set("bundle.created", "2026-11-23T12:00:00+00:00"))),
    Case("3.1-name", "3.1", "a bundle name with a space", "reject", _edit(_set("bundle.name", "edge ai"))),
    Case("3.1-sequence-zero", "3.1", "sequence 0", "reject", _edit(_set("bundle.sequence", 0))),
    Case("3.2-version", "3.2", "a version that is not SemVer", "reject", _edit(_set("artifacts.0.version", "1.0"))),
    Case("3.2-kind", "3.2", "an unknown artifact kind", "reject", _edit(_set("artifacts.0.kind", "dataset"))),
    Case("3.2-image-manifest", "3.2.1", "the image manifest digest is not one of its blobs", "reject",
         i_image_manifest_not_blob),
    Case("3.3-path-dotdot", "3.3", "a path with ..", "reject", _edit(_rename_file("../escape.bin"))),
    Case("3.3-path-absolute", "3.3", "an absolute path", "reject", _edit(_rename_file("/etc/passwd"))),
    Case("3.3-path-backslash", "3.3", "a path with a backslash", "reject", _edit(_rename_file("a\\b.bin"))),
    Case("3.3-path-drive", "3.3", "a path with a drive letter", "reject", _edit(_rename_file("C:x.bin"))),
    Case("3.3-path-empty-component", "3.3", "a path with //", "reject", _edit(_rename_file("a//b.bin"))),
    Case("3.3-path-nfc", "3.3", "a path not in NFC", "reject", _edit(_rename_file("cafe\u0301.bin"))),
    Case("3.3-path-case-duplicate", "3.3", "two paths equal ignoring case", "reject", _edit(i_case_duplicate)),
    Case("3.3-path-fold-duplicate", "3.3", "two paths equal under full case folding (ß, SS)", "reject",
         _edit(i_fold_duplicate)),
    Case("3.3-file-and-folder", "3.3", "a file that is a folder of another path, ignoring case", "reject",
         _edit(i_file_and_folder)),
    Case("3.3-size-mismatch", "3.3", "an entry whose chunk sizes do not add up to its size", "reject",
         _edit(lambda b: b.first_file().__setitem__("size", b.first_file()["size"] + 1))),
    Case("3.3-uppercase-hex", "3.3", "a chunk id in uppercase hex", "reject", _edit(i_uppercase_chunk_id)),
    Case("3.3-uppercase-blake3", "3.3", "an entry's blake3 in uppercase hex", "reject",
         _edit(lambda b: b.first_file().__setitem__("blake3", b.first_file()["blake3"].upper()))),
    Case("3.3-zero-length-chunk", "3.3", "an empty file written as one zero-length chunk", "reject",
         _edit(i_zero_chunk)),
    Case("3.4-unsorted", "3.4", "chunks not sorted by id", "reject", _edit(i_unsorted_chunks)),
    Case("3.4-unlisted", "3.4", "an entry uses a chunk the manifest does not list", "reject",
         _edit(i_unlisted_chunk)),
    Case("3.4-orphan", "3.4", "a listed chunk no entry uses", "reject", _edit(i_orphan_chunk)),
    Case("3.4-overlap", "3.4", "two frames overlap", "reject", _edit(i_overlap)),
    Case("3.4-outside-pack", "3.4", "a frame runs past its pack's end", "reject", _edit(i_outside_pack)),
    Case("3.4-partly-placed", "3.4", "a chunk with pack and offset but no stored", "reject",
         _edit(lambda b: b.manifest["chunks"][0].pop("stored"))),
    Case("3.4-not-carried-without-base", "3.4", "a chunk not carried in a bundle without base", "reject",
         _edit(lambda b: [b.manifest["chunks"][0].pop(k) for k in ("stored", "pack", "offset")])),
    Case("3.5-pack-name", "3.5", "a pack name with a slash", "reject", _edit(_set("packs.0.name", "../x"))),
    Case("3.5-pack-volume", "3.5", "a pack on volume 2 of a one-volume bundle", "reject",
         _edit(_set("packs.0.volume", 2))),
    Case("3.6-base-receipt", "3.6", "a base whose receipt is not a sha256 digest", "reject",
         lambda: _base_edit("receipt", "md5:abc")),
    Case("3.6-base-created", "3.6", "a base created 2026-13-01", "reject",
         lambda: _base_edit("created", "2026-13-01T00:00:00Z")),
    # ---- 6.4 channel
    Case("6.4-channel", "6.4", "the only trusted key may not sign this channel", "reject", i_channel,
         trust=[("hub-a", ["beta"])]),
    # ---- 4, 6.5 chunks
    Case("6.5-tampered-chunk", "6.5", "one byte of a frame flipped", "reject", _edit(i_tamper)),
    Case("4-declared-size", "4", "a frame whose header declares another size", "reject",
         _edit(i_frame(lambda raw: raw_frame(raw, declared=len(raw) + 1)))),
    Case("4-no-content-size", "4", "a frame without Frame_Content_Size", "reject", _edit(i_frame(i_no_content_size))),
    Case("4-checksum-flag", "4", "a frame that sets the content checksum flag", "reject",
         _edit(i_frame(lambda raw: zstd_frame(raw, checksum=True)))),
    Case("4-not-zstd", "4", "a frame that is not zstd", "reject", _edit(i_frame(lambda raw: b"PK\x03\x04" + raw))),
    Case("4-pack-missing", "4", "a pack file missing from a volume that is present", "reject", i_missing_pack),
    # ---- 6.6 entries
    Case("6.6-entry-blake3", "6.6", "chunks verify but the file's BLAKE3 does not", "reject", _edit(i_entry_blake3)),
    Case("6.6-blob-sha256", "6.6", "a blob whose bytes do not give its sha256 digest", "reject", i_blob_digest),
    # ---- 7 limits
    Case("7-chunk-size", "7", "a chunk claiming 16 MiB + 1 byte", "reject",
         _edit(lambda b: b.manifest["chunks"][0].__setitem__("size", MAX_CHUNK + 1))),
    Case("7-stored-size", "7", "a frame of 17 MiB + 1 byte", "reject",
         _edit(lambda b: b.manifest["chunks"][0].__setitem__("stored", 17 * MiB + 1))),
    Case("7-path-bytes", "7", "a path of 4097 bytes", "reject",
         _edit(_rename_file("/".join(["d" * 255] * 16) + "/" + "x" * 4))),
    Case("7-path-component", "7", "a path component of 256 bytes", "reject", _edit(_rename_file("x" * 256))),
    Case("7-name", "7", "a bundle name of 129 characters", "reject", _edit(_set("bundle.name", _long(129)))),
    Case("7-channel", "7", "a channel of 129 characters", "reject", _edit(_set("bundle.channel", _long(129)))),
    Case("7-version", "7", "a version of 256 characters", "reject",
         _edit(_set("artifacts.0.version", "1.0.0-" + "v" * 250))),
    Case("7-producer", "7", "a producer of 256 characters", "reject", _edit(_set("bundle.producer", _long(256)))),
    Case("7-volumes", "7", "1000 volumes", "reject", _edit(_set("volumes", 1000))),
    Case("7-pack-size", "7", "a pack of 4 GiB", "reject", _edit(_set("packs.0.size", 4 * 1024 ** 3))),
    Case("7-artifacts", "7", "10,001 artifacts", "reject", lambda: _many_artifacts(10_001)),
    # ---- 13 return bundles (site -> hub), handed to the return reader unless said otherwise
    Case("valid-return", "13", "a site's first return bundle: report, receipt, status, metrics, drift, one "
         "model update", "accept", return_bundle, trust=SITE_TRUST, reader="return"),
    Case("13-return-as-hub-bound", "13", "a valid return bundle handed to a hub-bound reader (payload type "
         "bound by DSSE)", "reject", return_bundle, trust=SITE_TRUST),
    Case("13-hub-bound-as-return", "13", "a return bundle signed with the hub-bound payload type", "reject",
         lambda: return_bundle(payload_type=MANIFEST_TYPE), trust=SITE_TRUST, reader="return"),
    Case("13-return-unknown-key", "13.1", "a return bundle signed by a key that is not the site's", "reject",
         lambda: _with(return_bundle(), signers=["stranger"]), trust=SITE_TRUST, reader="return"),
    Case("13.1-return-site", "13.1", "return.json names another site than bundle.channel", "reject",
         lambda: return_bundle(return_doc(site="site-02")), trust=SITE_TRUST, reader="return"),
    Case("13.1-return-examples", "13.1", "an update with examples 0", "reject",
         lambda: return_bundle(return_doc(updates=[{"model": "model-a", "base": "1.0.0", "examples": 0}])),
         trust=SITE_TRUST, reader="return"),
    Case("13.1-return-format", "13.1", "return.json whose format is not ferry-return", "reject",
         lambda: return_bundle(return_doc(format="ferry-receipt")), trust=SITE_TRUST, reader="return"),
    Case("13.2-drift-edges", "13.2", "a drift summary whose edges do not increase", "reject",
         lambda: return_bundle(drift=drift_doc(length={"edges": [0, 50, 10], "counts": [3, 4]})),
         trust=SITE_TRUST, reader="return"),
    Case("13.2-drift-bins", "13.2", "a drift summary with 3 counts for 3 edges", "reject",
         lambda: return_bundle(drift=drift_doc(length={"edges": [0, 10, 50], "counts": [1, 2, 3]})),
         trust=SITE_TRUST, reader="return"),
    Case("13.2-drift-empty", "13.2", "a drift summary whose counts are all zero", "reject",
         lambda: return_bundle(drift=drift_doc(length={"edges": [0, 10], "counts": [0]})),
         trust=SITE_TRUST, reader="return"),
]


def _with(b: Bundle, **changes: Any) -> Bundle:
    for k, v in changes.items():
        setattr(b, k, v)
    return b


def _base_edit(key: str, value: str) -> Bundle:
    b = v_delta()
    b.manifest["base"][key] = value
    return b


def _many_artifacts(n: int) -> Bundle:
    b = Builder(9)
    for i in range(n):
        b.artifacts.append({"kind": "model", "name": f"m{i}", "version": "1.0.0", "files": []})
    return b.bundle()


# --------------------------------------------------------------------------- writing the suite


def trust_policy(case: Case) -> dict[str, Any]:
    keys = []
    for name, channels in case.trust:
        k: dict[str, Any] = {"name": name, "file": f"../../keys/{name}.pub"}
        if channels is not None:
            k["channels"] = channels
        keys.append(k)
    return {"apiVersion": "ferry/v1", "kind": "TrustPolicy", "threshold": case.threshold, "keys": keys}


def generate(out: Path, only: set[str] | None = None) -> dict[str, Any]:
    """Write the suite under ``out`` (which must not exist or be empty); return the index."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise SystemExit(f"{out}: not empty; the suite is written into a fresh folder")
    (out / "keys").mkdir()
    keys = {}
    for name in KEY_NAMES:
        k = private_key(name)
        (out / "keys" / f"{name}.pub").write_bytes(public_pem(k))
        keys[name] = key_id(k)
    cases = []
    for case in CASES:
        if only is not None and case.id not in only:
            continue
        folder = out / "cases" / case.id
        case.make().write(folder / "bundle")
        policy = trust_policy(case)
        (folder / "trust.json").write_bytes(json.dumps(policy, indent=2, sort_keys=True).encode() + b"\n")
        bundle = f"cases/{case.id}/bundle" + (f"/{case.given}" if case.given else "")
        cases.append({"id": case.id, "rule": case.rule, "title": case.title, "verdict": case.verdict,
                      "reader": case.reader, "bundle": bundle, "trust": f"cases/{case.id}/trust.json",
                      "trustKeys": [{"name": n, "keyid": keys[n], "channels": c} for n, c in case.trust],
                      "threshold": case.threshold})
    index = {"suite": "ferry-bundle-conformance", "suiteVersion": SUITE_VERSION, "formatVersion": SUITE_FORMAT_VERSION,
             "verdicts": {"accept": [0], "reject": [1, 2], "incomplete": [3]},
             "keys": {n: {"file": f"keys/{n}.pub", "keyid": keys[n]} for n in KEY_NAMES},
             "returnSite": {"site": SITE, "key": f"keys/{SITE}.pub"},
             "cases": cases}
    (out / "index.json").write_bytes(json.dumps(index, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return index


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m conformance.generate OUT", file=sys.stderr)
        return 2
    index = generate(Path(args[0]))
    print(f"{len(index['cases'])} cases written to {args[0]}")
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    raise SystemExit(main())
