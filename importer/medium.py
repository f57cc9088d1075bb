"""Reading bundles from the medium: find volumes, group them by manifest, read chunks.

Nothing here trusts the medium: files are opened without following links, must be regular
files, are read with bounded sizes, and every chunk is checked against its signed id
(:func:`manifests.chunks.decompress_chunk`) before its bytes are returned.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from manifests import limits
from manifests.bundle import (MANIFEST_NAME, PACKS_DIR, SIGNATURE_NAME, VOLUME_PREFIX, SignedManifest, open_manifest,
                              pack_file, read_bounded)
from manifests.chunks import decompress_chunk
from manifests.digest import manifest_digest
from manifests.errors import ChunkError, FerryError, PlaceError, VerificationError
from manifests.model import Chunk, Manifest
from manifests.signing import MANIFEST_PAYLOAD_TYPE
from manifests.trust import Trust


@dataclass
class BundleOnMedium:
    """One bundle (one manifest digest) and the volume folders found carrying it."""

    manifest_bytes: bytes
    signature_bytes: bytes  # the signature file in use: the first volume's, or the one that verified
    digest: str
    volume_dirs: list[Path] = field(default_factory=list)
    signature_files: list[bytes] = field(default_factory=list)  # every distinct one the volumes carry

    def open(self, trust: Trust, payload_type: str = MANIFEST_PAYLOAD_TYPE) -> SignedManifest:
        """Verify and parse the manifest with the first signature file that passes.

        Volumes of one bundle normally carry the same signature file; if they differ (a volume
        re-signed later, or one tampered with), any that meets the trust threshold opens the
        bundle, so junk added to one volume's file cannot veto a validly signed bundle.
        """
        first: FerryError | None = None
        for candidate in self.signature_files or [self.signature_bytes]:
            try:
                signed = open_manifest(self.manifest_bytes, candidate, trust, payload_type)
            except FerryError as exc:
                first = first or exc
                continue
            self.signature_bytes = candidate
            return signed
        assert first is not None
        if type(first) in (VerificationError, FerryError):  # name the bundle: the folder it was found in
            raise type(first)(f"bundle {self.volume_dirs[0] if self.volume_dirs else self.digest}: {first}") from None
        raise first


def _volume_dirs(path: Path) -> list[Path]:
    """``path`` itself if it holds a manifest, else its ``vol-*`` subfolders that do."""
    if not path.exists():
        raise PlaceError("medium", str(path), f"{path}: no such bundle folder")
    if not path.is_dir():
        raise PlaceError("medium", str(path), f"{path}: not a folder (give the bundle or volume folder)")
    if (path / MANIFEST_NAME).exists():
        return [path]
    found = sorted(p for p in path.iterdir()
                   if p.name.startswith(VOLUME_PREFIX) and p.is_dir() and not p.is_symlink()
                   and (p / MANIFEST_NAME).exists())
    if not found:
        raise PlaceError("medium", str(path), f"{path}: no {MANIFEST_NAME} here nor in {VOLUME_PREFIX}* folders; not a ferry bundle")
    return found


def find_bundles(paths: Iterable[Path], skipped: list[str] | None = None) -> list[BundleOnMedium]:
    """Every bundle found under ``paths``, one entry per distinct manifest, volumes merged.

    Args:
        paths: bundle folders, volume folders or folders of volumes.
        skipped: when given, a path or volume folder that cannot be read as a bundle (an
            oversized or missing file, a link, no signature file) is not an error: one line
            ``"<folder>: <why>"`` is appended here and the others are still read, so junk a
            courier put beside a good bundle cannot stop it (docs/bundle-format.md section 1).
            Without it the first such problem is raised.
    Returns:
        the bundles, in the order first found.
    Raises:
        FerryError (or VerificationError, LimitError): the first problem, when ``skipped`` is
            None or when nothing readable was found at all.
    """
    by_digest: dict[str, BundleOnMedium] = {}
    first: FerryError | None = None
    for path in paths:
        try:
            vols = _volume_dirs(Path(path))
        except FerryError as exc:
            if skipped is None:
                raise
            first = first or exc
            skipped.append(str(exc))
            continue
        for vol in vols:
            try:
                _read_volume(vol, by_digest)
            except FerryError as exc:
                if skipped is None:
                    raise
                first = first or exc
                skipped.append(f"{vol}: not read as part of a bundle: {exc}")
    if not by_digest and first is not None:
        raise first
    return list(by_digest.values())


def _read_volume(vol: Path, by_digest: dict[str, BundleOnMedium]) -> None:
    """Read one volume folder's manifest and signature file into ``by_digest``."""
    for name in (MANIFEST_NAME, SIGNATURE_NAME):
        if (vol / name).is_symlink():  # the format: readers never follow links on the medium
            raise VerificationError(f"{vol}/{name} is a symbolic link; refused (a medium holds regular files only)")
    mbytes = read_bounded(vol / MANIFEST_NAME, limits.MAX_MANIFEST_BYTES, "manifest",
                          follow_links=False)
    sig_path = vol / SIGNATURE_NAME
    if not sig_path.exists():
        raise VerificationError(f"{vol}: no {SIGNATURE_NAME}; an unsigned bundle is never accepted")
    sbytes = read_bounded(sig_path, limits.MAX_SIGNATURE_FILE_BYTES, "signature file",
                          follow_links=False)
    digest = manifest_digest(mbytes)
    entry = by_digest.setdefault(digest, BundleOnMedium(mbytes, sbytes, digest))
    if sbytes not in entry.signature_files:
        entry.signature_files.append(sbytes)
    if vol.resolve() not in {v.resolve() for v in entry.volume_dirs}:
        entry.volume_dirs.append(vol)


def open_regular(path: Path) -> int:
    """Open a medium file for reading: no links followed, regular files only."""
    try:  # O_NONBLOCK: a FIFO swapped in after the listing must not hang the read
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:  # ELOOP: a link swapped in after the listing
        raise VerificationError(f"{path}: cannot open ({exc.strerror or exc})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise VerificationError(f"{path}: not a regular file")
    return fd


class PackReader:
    """Reads and verifies chunks from the packs found in a bundle's volume folders."""

    def __init__(self, manifest: Manifest, volume_dirs: list[Path]) -> None:
        self.manifest = manifest
        self._dirs = list(volume_dirs)
        self._paths: dict[int, Path] = {}
        for index, pack in enumerate(manifest.packs):
            for vol in volume_dirs:
                if (vol / PACKS_DIR).is_symlink():  # never follow links on the medium, folders included
                    continue
                candidate = vol / PACKS_DIR / pack.name
                if candidate.is_file() and not candidate.is_symlink():
                    self._paths[index] = candidate
                    break
        self._fds: dict[int, int] = {}

    def packs_at_hand(self) -> frozenset[int]:
        """Indexes (into ``manifest.packs``) of the pack files found on the volumes given."""
        return frozenset(self._paths)

    def volumes_at_hand(self) -> frozenset[int]:
        """Numbers of the volumes given: a ``vol-NNN`` folder is volume NNN, the folder of a
        single-volume bundle is volume 1, and a volume any of whose packs was found is given.
        A pack missing from a volume given is a damaged copy, not a missing volume."""
        found = {self.manifest.packs[i].volume for i in self._paths}
        for vol in self._dirs:
            name = vol.name
            if name.startswith(VOLUME_PREFIX) and name[len(VOLUME_PREFIX):].isdigit():
                found.add(int(name[len(VOLUME_PREFIX):]))
            elif self.manifest.volumes == 1:
                found.add(1)
        return frozenset(found)

    def pack_file(self, index: int) -> str:
        """How to name pack ``index`` to an operator: ``vol-NNN/packs/NAME`` (or ``packs/NAME``)."""
        pack = self.manifest.packs[index]
        return pack_file(self.manifest.volumes, pack.volume, pack.name)

    def has(self, chunk: Chunk) -> bool:
        """Whether the pack holding ``chunk`` is present (the chunk itself is checked on read)."""
        return chunk.pack is not None and chunk.pack in self._paths

    def missing_volumes(self) -> list[int]:
        """Volumes not given whose packs were not found, for 'insert volume N' messages."""
        at_hand = self.volumes_at_hand()
        return sorted({p.volume for i, p in enumerate(self.manifest.packs) if i not in self._paths} - at_hand)

    def damaged_files(self) -> list[str]:
        """Pack files missing from volumes that were given (:meth:`pack_file` names)."""
        at_hand = self.volumes_at_hand()
        return [self.pack_file(i) for i, p in enumerate(self.manifest.packs)
                if i not in self._paths and p.volume in at_hand]

    def read_stored(self, chunk: Chunk) -> bytes:
        """The stored (compressed) bytes of a carried chunk, exactly ``chunk.stored`` of them."""
        if chunk.pack is None or chunk.offset is None or chunk.stored is None:
            raise ChunkError(chunk.id, "missing", f"chunk {chunk.id} is not carried in this bundle")
        if chunk.pack not in self._paths:
            pack = self.manifest.packs[chunk.pack]
            if pack.volume in self.volumes_at_hand():
                raise ChunkError(chunk.id, "missing", f"chunk {chunk.id}: pack file {self.pack_file(chunk.pack)} is missing from "
                                        f"volume {pack.volume}, which was given: a damaged copy")
            raise ChunkError(chunk.id, "missing", f"chunk {chunk.id}: pack {pack.name} (volume {pack.volume}) is missing")
        fd = self._fds.get(chunk.pack)
        if fd is None:
            fd = self._fds[chunk.pack] = open_regular(self._paths[chunk.pack])
        data = os.pread(fd, chunk.stored, chunk.offset)
        if len(data) != chunk.stored:
            raise ChunkError(chunk.id, "missing", f"chunk {chunk.id}: pack {self._paths[chunk.pack].name} is truncated")
        return data

    def read_chunk(self, chunk: Chunk) -> bytes:
        """The raw bytes of ``chunk``, verified against its id."""
        return decompress_chunk(self.read_stored(chunk), chunk_id=chunk.id, size=chunk.size)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> PackReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
