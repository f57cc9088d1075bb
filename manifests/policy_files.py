"""The on-disk layout of a trust policy history: ``STATE/trust/<N>.root.json`` and its ``.sig``.

Both sides read it (the hub carries its history in every volume, the edge pins its policy), so
it lives in the contract; it only reads given files, bounded (:func:`manifests.bundle.read_bounded`).
Writing is the edge's and the hub's own business (:mod:`importer.trust_store`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from manifests import limits
from manifests.bundle import read_bounded
from manifests.root import Root, parse_root

TRUST_DIR = "trust"
_NAME_RE = re.compile(r"^([1-9][0-9]{0,15})\.root\.json\Z")


def root_file_names(version: int) -> tuple[str, str]:
    """The document's and the signature's file names for ``version``."""
    return f"{version}.root.json", f"{version}.root.json.sig"


@dataclass(frozen=True)
class StoredRoot:
    root: Root
    signature: bytes


def versions_in(folder: Path) -> list[int]:
    if not folder.is_dir() or folder.is_symlink():
        return []
    out = []
    for p in folder.iterdir():
        m = _NAME_RE.match(p.name)
        if m and (folder / (p.name + ".sig")).is_file():
            out.append(int(m.group(1)))
    return sorted(out)


def read_pair(folder: Path, version: int, where: str) -> tuple[bytes, bytes]:
    doc, sig = root_file_names(version)
    return (read_bounded(folder / doc, limits.MAX_TRUST_FILE_BYTES, where, follow_links=False),
            read_bounded(folder / sig, limits.MAX_SIGNATURE_FILE_BYTES, where, follow_links=False))


class PolicyHistory:
    """The signed trust policies a state folder holds under ``trust/`` (read-only; no lock is
    needed to read): the edge's pinned policy and its history, or the hub's, which every
    export carries (docs/bundle-format.md §11). :class:`importer.trust_store.TrustStore`
    adds the writes."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.dir = self.state_dir / TRUST_DIR

    def versions(self) -> list[int]:
        return versions_in(self.dir)

    def get(self, version: int) -> StoredRoot:
        data, sig = read_pair(self.dir, version, "pinned trust policy")
        return StoredRoot(parse_root(data, f"{self.dir}/{version}.root.json"), sig)

    def current(self) -> StoredRoot | None:
        """The policy in force, or None when the site pins none (it uses ``--trust`` files)."""
        versions = self.versions()
        return self.get(versions[-1]) if versions else None

    def history(self) -> list[StoredRoot]:
        return [self.get(v) for v in self.versions()]
