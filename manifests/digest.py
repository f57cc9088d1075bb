"""Content addressing: BLAKE3 names chunks and files, sha256 names OCI blobs and manifests.

A chunk id and a file's identity are the lowercase hex BLAKE3-256 of the *uncompressed*
bytes. OCI blobs keep their registry digest (``sha256:<hex>``), which the importer must
reproduce exactly. A manifest's own digest is ``sha256:<hex>`` of its bytes, so an auditor
can check it with ``sha256sum``.
"""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

import blake3

HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
OCI_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")

#: Hash a buffer this large or larger with BLAKE3's multi-threaded mode.
_THREADED_FROM = 1 << 20


def blake3_hex(data: bytes | memoryview) -> str:
    """Chunk id / file identity of ``data``."""
    threads = blake3.blake3.AUTO if len(data) >= _THREADED_FROM else 1
    return blake3.blake3(data, max_threads=threads).hexdigest()


def sha256_digest(data: bytes | memoryview) -> str:
    """OCI-style digest of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_digest(manifest_bytes: bytes) -> str:
    """The digest by which a manifest (and so a bundle) is known: sha256 of its exact bytes."""
    return sha256_digest(manifest_bytes)


def is_chunk_id(value: object) -> bool:
    """Whether ``value`` is a chunk id: 64 lowercase hex digits of BLAKE3 (docs/bundle-format.md, Chunks)."""
    return isinstance(value, str) and HEX64.match(value) is not None


def is_oci_digest(value: object) -> bool:
    """Whether ``value`` is an OCI digest ferry accepts: ``sha256:<64 lowercase hex>`` (OCI image spec, Digests)."""
    return isinstance(value, str) and OCI_DIGEST.match(value) is not None


class Hasher:
    """Incremental BLAKE3 (always) and sha256 (when asked), fed as bytes stream past.

    ``threaded=False`` keeps BLAKE3 on the calling thread: for callers that already keep
    every core busy with their own threads (the exporter), BLAKE3's worker threads only
    spin (sched_yield) and steal CPU from them.
    """

    def __init__(self, *, sha256: bool = False, threaded: bool = True) -> None:
        self._b3 = blake3.blake3(max_threads=blake3.blake3.AUTO if threaded else 1)
        self._sha = hashlib.sha256() if sha256 else None
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._b3.update(data)
        if self._sha is not None:
            self._sha.update(data)
        self.size += len(data)

    @property
    def blake3(self) -> str:
        return self._b3.hexdigest()

    @property
    def sha256(self) -> str:
        if self._sha is None:
            raise ValueError("sha256 was not requested")
        return "sha256:" + self._sha.hexdigest()


def hash_stream(stream: BinaryIO, *, sha256: bool = False, block: int = 1 << 22) -> Hasher:
    """Hash a stream without holding it in memory."""
    hasher = Hasher(sha256=sha256)
    while True:
        data = stream.read(block)
        if not data:
            return hasher
        hasher.update(data)


def artifact_content_digest(entries: "list[tuple[str, str]]") -> str:
    """Identity of an artifact's content: BLAKE3 over the sorted (path or blob digest, blake3)
    pairs, canonical-JSON encoded. Same version + different digest = a conflict."""
    from . import canonical

    return "blake3:" + blake3_hex(canonical.encode(sorted([list(p) for p in entries])))
