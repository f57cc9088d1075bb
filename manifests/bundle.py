"""Layout of a bundle on the medium, and opening its signed manifest.

A single-volume bundle is a folder::

    manifest.json          canonical JSON (the signed bytes)
    manifest.json.sig      detached signatures (see manifests.signing)
    packs/<pack name>      chunk frames back to back

A bundle written with a volume size limit is a folder of ``vol-001``, ``vol-002``, ... each
laid out as above, each with the same manifest and signature, and its share of the packs.
"""

from __future__ import annotations

import os
import stat

from dataclasses import dataclass

from .digest import manifest_digest
from .errors import VerificationError
from .model import Manifest
from .signing import MANIFEST_PAYLOAD_TYPE, SignatureFile, Verdict, verify
from .trust import Trust

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
PACKS_DIR = "packs"
VOLUME_PREFIX = "vol-"


def volume_dir_name(number: int) -> str:
    return f"{VOLUME_PREFIX}{number:03d}"


@dataclass(frozen=True)
class SignedManifest:
    """A manifest whose signatures met the trust threshold, with its digest and verdict."""

    manifest: Manifest
    digest: str
    verdict: Verdict


def open_manifest(manifest_bytes: bytes, signature_bytes: bytes, trust: Trust) -> SignedManifest:
    """Verify, then parse. Pure: the verification order of docs/bundle-format.md.

    1. the signature file is parsed (size limit, canonical JSON);
    2. signatures are checked over the exact manifest bytes, before the manifest is parsed,
       so that content from an untrusted source never reaches the parser;
    3. the manifest is parsed and checked (size limit, canonical form, limits, references);
    4. channel restrictions are applied and the threshold is counted;
    5. with a verification time (``trust.at``), a signed ``bundle.expires`` that has passed,
       or a creation time ahead of the clock, refuses it (manifests.freshness).
    Raises VerificationError (exit 1; PolicyError for 5) or FormatError (exit 2) naming the
    first failure.
    """
    sigfile = SignatureFile.from_bytes(signature_bytes)
    first = verify(manifest_bytes, sigfile, trust, channel=None, payload_type=MANIFEST_PAYLOAD_TYPE)
    if not first.ok:
        raise VerificationError(f"manifest signatures: {first.summary}")
    manifest = Manifest.from_bytes(manifest_bytes)
    verdict = verify(manifest_bytes, sigfile, trust, channel=manifest.bundle.channel)
    if not verdict.ok:
        raise VerificationError(f"manifest signatures: {verdict.summary}")
    if trust.at is not None:
        from .errors import PolicyError
        from .freshness import bundle_time_problem

        problem = bundle_time_problem(manifest.bundle.created, manifest.bundle.expires, trust.at, trust.last_seen)
        if problem:
            raise PolicyError(problem)
    return SignedManifest(manifest=manifest, digest=manifest_digest(manifest_bytes), verdict=verdict)


def read_bounded(path: os.PathLike[str] | str, limit: int, what: str, *, follow_links: bool = True) -> bytes:
    """Read a file of the medium, refusing it from its size before reading when over ``limit``.

    ``follow_links=False`` for the medium, whose format has no links (the open itself refuses
    one, so a link swapped in after a check is not followed either).

    A file that grows while read is cut at ``limit + 1`` bytes and refused too.
    """
    from .errors import FerryError, LimitError

    try:
        # O_NONBLOCK: a FIFO planted on the medium must not hang the open; only regular files
        # are read (a device such as /dev/zero would otherwise feed limit + 1 bytes).
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow_links else os.O_NOFOLLOW)
        fd = os.open(path, flags)
        with open(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise FerryError(f"{what} is not a regular file: {path}")
            if st.st_size > limit:
                raise LimitError(f"{what} is {st.st_size} bytes, over the limit of {limit}")
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise FerryError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise FerryError(f"{what} is a folder: {path}") from None
    except OSError as exc:
        raise FerryError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise LimitError(f"{what} is over the limit of {limit} bytes")
    return data
