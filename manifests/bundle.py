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
from .errors import Place, VerificationError
from .model import Manifest
from .signing import MANIFEST_PAYLOAD_TYPE, SignatureFile, Verdict, verify
from .trust import Trust

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
PACKS_DIR = "packs"
VOLUME_PREFIX = "vol-"


def volume_dir_name(number: int) -> str:
    """The folder name of volume ``number`` (1-based): ``vol-001`` ... (docs/bundle-format.md, Volumes)."""
    return f"{VOLUME_PREFIX}{number:03d}"


def pack_file(volumes: int, volume: int, name: str) -> str:
    """Where pack ``name`` of ``volume`` lies in a bundle of ``volumes`` volumes, relative to the
    bundle folder (``vol-002/packs/NAME``, or ``packs/NAME`` for one volume): how messages
    name a missing pack file."""
    return f"{volume_dir_name(volume)}/{PACKS_DIR}/{name}" if volumes > 1 else f"{PACKS_DIR}/{name}"


@dataclass(frozen=True)
class SignedManifest:
    """A manifest whose signatures met the trust threshold, with its digest and verdict."""

    manifest: Manifest
    digest: str
    verdict: Verdict


def open_manifest(manifest_bytes: bytes, signature_bytes: bytes, trust: Trust,
                  payload_type: str = MANIFEST_PAYLOAD_TYPE) -> SignedManifest:
    """Verify, then parse. Pure: the verification order of docs/bundle-format.md.

    1. the signature file is parsed (size limit, canonical JSON);
    2. signatures are checked over the exact manifest bytes, before the manifest is parsed,
       so that content from an untrusted source never reaches the parser;
    3. the manifest is parsed and checked (size limit, canonical form, limits, references);
    4. channel restrictions are applied and the threshold is counted;
    5. with a verification time (``trust.at``), a signed ``bundle.expires`` that has passed,
       or a creation time ahead of the clock, refuses it (manifests.freshness).

    Args:
        manifest_bytes: the exact bytes of ``manifest.json`` (at most MAX_MANIFEST_BYTES).
        signature_bytes: the exact bytes of ``manifest.json.sig``.
        trust: the site's trust policy (keys, their channels, the threshold).
        payload_type: the DSSE payload type the signatures must bind (section 5): a hub-bound
            manifest by default, ``RETURN_PAYLOAD_TYPE`` for a return bundle (section 13).
    Returns:
        the parsed manifest, its digest (``sha256:<64 hex>`` of ``manifest_bytes``) and the verdict.
    Raises:
        VerificationError (exit 1; PolicyError for 5) or FormatError / LimitError (exit 2) naming the first failure;
        a signature refusal also lists the trusted key ids (the caller names the bundle's folder).
    """
    sigfile = SignatureFile.from_bytes(signature_bytes)
    trusted = "trusted key id(s): " + ", ".join(sorted(trust.keys))
    first = verify(manifest_bytes, sigfile, trust, channel=None, payload_type=payload_type)
    if not first.ok:
        raise VerificationError(f"manifest signatures: {first.summary}; {trusted}")
    manifest = Manifest.from_bytes(manifest_bytes)
    verdict = verify(manifest_bytes, sigfile, trust, channel=manifest.bundle.channel, payload_type=payload_type)
    if not verdict.ok:
        raise VerificationError(f"manifest signatures of bundle {manifest.bundle.name} {manifest.bundle.id}: "
                                f"{verdict.summary}; {trusted}")
    if trust.at is not None:
        from .errors import PolicyError
        from .freshness import bundle_time_problem

        problem = bundle_time_problem(manifest.bundle.created, manifest.bundle.expires, trust.at, trust.last_seen)
        if problem:
            raise PolicyError(problem)
    return SignedManifest(manifest=manifest, digest=manifest_digest(manifest_bytes), verdict=verdict)


def not_found(what: str, path: os.PathLike[str] | str) -> str:
    """The one wording of a missing file or folder the user named: ``trust file /x: not found``.

    Args:
        what: what the file is, a noun without the path (``trust file``, ``spec file``, ``key file``).
        path: the path as given.
    Returns:
        The message (the caller raises the error its place calls for: PlaceError, KeyFileError).
    """
    return f"{what} {os.fspath(path)}: not found"


def read_bounded(path: os.PathLike[str] | str, limit: int, what: str, *, follow_links: bool = True,
                 place: Place = "medium") -> bytes:
    """Read a file of the medium, refusing it from its size before reading when over ``limit``.

    ``follow_links=False`` for the medium, whose format has no links (the open itself refuses
    one, so a link swapped in after a check is not followed either).

    A file that grows while read is cut at ``limit + 1`` bytes and refused too.

    Args:
        path: the file; limit: most bytes accepted; what: what the file is, a noun without the
            path (``spec file``): every message reads ``{what} {path}: ...`` (:func:`not_found`);
        place: where the file is (the ``medium`` by default, the operator's ``source``, the ``state``).
    Returns:
        the whole content (at most ``limit`` bytes).
    Raises:
        LimitError: over ``limit``. PlaceError: missing, not a regular file, a folder, unreadable.
    """
    from .errors import LimitError, PlaceError

    try:
        # O_NONBLOCK: a FIFO planted on the medium must not hang the open; only regular files
        # are read (a device such as /dev/zero would otherwise feed limit + 1 bytes).
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow_links else os.O_NOFOLLOW)
        fd = os.open(path, flags)
        with open(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise PlaceError(place, str(path), f"{what} {path}: not a regular file")
            if st.st_size > limit:
                raise LimitError(f"{what} {path}: {st.st_size} bytes, over the limit of {limit}")
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise PlaceError(place, str(path), not_found(what, path)) from None
    except IsADirectoryError:
        raise PlaceError(place, str(path), f"{what} {path}: is a folder, not a file") from None
    except OSError as exc:
        raise PlaceError(place, str(path), f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise LimitError(f"{what} {path}: over the limit of {limit} bytes")
    return data
