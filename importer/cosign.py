"""``ferry sign``: add a signature to a bundle already on the medium (a second key holder).

The manifest bytes never change; every volume's ``manifest.json.sig`` is replaced atomically
(temporary file, fsync, rename) by one file holding the signatures already there (pooled over
the volumes, each checked first) and the new ones. A reader takes any volume's file that
verifies (docs/bundle-format.md §5), so a crash between two volumes leaves a bundle that
verifies as before on the volumes not yet rewritten.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .medium import find_bundles
from manifests.durable import write_atomic_at
from manifests.bundle import SIGNATURE_NAME
from manifests.errors import PlaceError, UsageError
from manifests.keys import KeyRef, key_id, load_signing_keys
from manifests.signing import MANIFEST_PAYLOAD_TYPE, SignatureFile, cosign
from manifests.trust import Trust


@dataclass(frozen=True)
class CosignResult:
    """What ``ferry sign`` did: the bundle's manifest digest, the volumes rewritten, the key
    ids added (empty when every key had signed already) and every signer now, by key id."""

    digest: str
    volumes: list[Path]
    added: list[str]
    signers: list[str]


def sign_bundle(path: Path, refs: Sequence[KeyRef | Path], trust: Trust | None, *,
                ask: Callable[[str], bytes | None] | None = None) -> CosignResult:
    """Add the signatures of ``refs`` to the one bundle under ``path``.

    Args:
        path: a bundle folder, a volume, or a folder of volumes (all volumes found are signed).
        refs: the signing keys with their passphrase sources (manifests.keys.load_signing_keys).
        trust: public keys for checking the signatures already there; None when none is given
            (then only the signers' own earlier signatures can be checked).
    Returns a CosignResult.
    Raises: UsageError (not exactly one bundle), KeyFileError, VerificationError (an existing
    signature does not verify or is by an unknown key), PlaceError (a volume cannot be written).
    """
    found = find_bundles([path])
    if len(found) != 1:
        raise UsageError(f"{path}: holds {len(found)} different bundles; sign one at a time")
    bundle = found[0]
    keys = load_signing_keys(refs, ask=ask)
    known = {kid: (k.name, k.public) for kid, k in (trust.keys.items() if trust else [])}
    for key in keys:
        known.setdefault(key_id(key.public_key()), (f"--key {key_id(key.public_key())[:16]}…", key.public_key()))
    existing = [SignatureFile.from_bytes(b, what=f"{path}/{SIGNATURE_NAME}") for b in bundle.signature_files]
    new, added = cosign(bundle.manifest_bytes, existing, keys, known, payload_type=MANIFEST_PAYLOAD_TYPE)
    if added:
        data = new.to_bytes()
        for vol in bundle.volume_dirs:
            try:
                fd = os.open(vol, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    write_atomic_at(fd, SIGNATURE_NAME, data, "medium")
                finally:
                    os.close(fd)
            except OSError as exc:
                raise PlaceError("medium", str(vol), f"{vol}/{SIGNATURE_NAME}: cannot write "
                                 f"({exc.strerror or exc})") from None
    return CosignResult(digest=bundle.digest, volumes=list(bundle.volume_dirs), added=added,
                        signers=[s.keyid for s in new.signatures])
