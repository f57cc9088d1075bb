"""Detached signatures over a document's exact bytes (DSSE v1 pre-authentication encoding).

The signature file beside ``manifest.json`` is ``manifest.json.sig``, canonical JSON::

    {"payloadType": "application/vnd.ferry.manifest.v1+json",
     "signatures": [{"keyid": "<hex sha256 of SPKI>", "sig": "<base64 Ed25519 signature>"}]}

Each signature is Ed25519 over ``PAE(payloadType, document bytes)`` as defined by DSSE:
``b"DSSEv1 " + len(type) + b" " + type + b" " + len(body) + b" " + body``. The payload is
not embedded (detached); binding the type stops a receipt's signature being replayed as a
manifest's. Verification here is pure: bytes in, verdict out.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import canonical, limits
from .errors import FormatError, LimitError
from .digest import HEX64
from .keys import key_id
from .trust import Trust

MANIFEST_PAYLOAD_TYPE = "application/vnd.ferry.manifest.v1+json"
RECEIPT_PAYLOAD_TYPE = "application/vnd.ferry.receipt.v1+json"
AUDIT_PAYLOAD_TYPE = "application/vnd.ferry.audit.v1+json"
TRUST_PAYLOAD_TYPE = "application/vnd.ferry.trust.v1+json"
REPORT_PAYLOAD_TYPE = "application/vnd.ferry.verify-report.v1+json"
#: A return bundle, site -> hub (docs/bundle-format.md §13): never verifies as a hub-bound manifest.
RETURN_PAYLOAD_TYPE = "application/vnd.ferry.return.v1+json"

SIGNATURE_SUFFIX = ".sig"


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class SignatureFile:
    payload_type: str
    signatures: tuple[Signature, ...]

    def to_bytes(self) -> bytes:
        return canonical.encode({
            "payloadType": self.payload_type,
            "signatures": [{"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                           for s in self.signatures],
        })

    @classmethod
    def from_bytes(cls, data: bytes, *, what: str = "signature file") -> SignatureFile:
        if len(data) > limits.MAX_SIGNATURE_FILE_BYTES:
            raise LimitError(f"{what} is {len(data)} bytes, over the limit of {limits.MAX_SIGNATURE_FILE_BYTES}")
        d = canonical.decode(data, what=what)
        if not isinstance(d, dict) or not isinstance(d.get("payloadType"), str):
            raise FormatError(f"{what} must be an object with payloadType and signatures")
        raw = d.get("signatures")
        if not isinstance(raw, list):
            raise FormatError(f"{what}: signatures must be a list")
        if len(raw) > limits.MAX_SIGNATURES:
            raise LimitError(f"{what} has {len(raw)} signatures, over the limit of {limits.MAX_SIGNATURES}")
        sigs = []
        for i, s in enumerate(raw):
            if not isinstance(s, dict) or not isinstance(s.get("keyid"), str) or not isinstance(s.get("sig"), str):
                raise FormatError(f"{what}: signatures[{i}] must have string keyid and sig")
            if not HEX64.match(s["keyid"]):
                raise FormatError(f"{what}: signatures[{i}].keyid is not a key id (64 lowercase hex)")
            sig = decode_sig(s["sig"], where=f"{what}: signatures[{i}].sig")
            sigs.append(Signature(keyid=s["keyid"], sig=sig))
        return cls(payload_type=d["payloadType"], signatures=tuple(sigs))


#: An Ed25519 signature (64 bytes) in standard base64 with padding: 85 symbols, one of A Q g w, and "==".
SIG_B64_RE = re.compile(r"^[A-Za-z0-9+/]{85}[AQgw]==\Z")


def decode_sig(text: str, *, where: str = "sig") -> bytes:
    """The 64 signature bytes of ``sig``, or FormatError.

    Args:
        text: the ``sig`` member: standard base64 (RFC 4648 section 4, alphabet ``A-Z a-z 0-9 + /``)
            with ``=`` padding, 88 characters; no URL-safe alphabet, no line breaks, no missing
            padding, no non-zero trailing bits (exactly one text per signature).
        where: what to name in the message.
    Returns:
        64 bytes.
    Rule: docs/bundle-format.md section 5.
    """
    if not SIG_B64_RE.match(text):
        raise FormatError(f"{where} is not an Ed25519 signature in standard padded base64 (88 characters)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # pragma: no cover - the pattern admits only valid text
        raise FormatError(f"{where} is not base64") from None


def sign(body: bytes, keys: list[Ed25519PrivateKey], payload_type: str = MANIFEST_PAYLOAD_TYPE) -> SignatureFile:
    """Sign ``body`` with each key (one signature per distinct key)."""
    message = pae(payload_type, body)
    sigs: dict[str, Signature] = {}
    for key in keys:
        kid = key_id(key.public_key())
        sigs.setdefault(kid, Signature(keyid=kid, sig=key.sign(message)))
    return SignatureFile(payload_type=payload_type, signatures=tuple(sigs[k] for k in sorted(sigs)))


@dataclass(frozen=True)
class SignerResult:
    """What became of one signature."""

    keyid: str
    name: str | None  # the key's name in the trust policy; None when untrusted
    valid: bool  # the signature verifies under a trusted key
    counted: bool  # it counts toward the threshold (valid and allowed on this channel)
    reason: str


@dataclass(frozen=True)
class Verdict:
    """Outcome of signature verification: ``ok`` when a threshold of trusted keys signed."""

    ok: bool
    threshold: int
    signers: tuple[SignerResult, ...]
    reasons: tuple[str, ...] = field(default=())

    @property
    def summary(self) -> str:
        counted = sum(1 for s in self.signers if s.counted)
        head = f"{counted} of {self.threshold} required signature(s)"
        return head if self.ok else f"{head}: " + "; ".join(self.reasons)


def verify(body: bytes, sigfile: SignatureFile, trust: Trust, *, channel: str | None,
           payload_type: str = MANIFEST_PAYLOAD_TYPE) -> Verdict:
    """Check ``sigfile`` over ``body`` against ``trust``; pure, no I/O.

    A signature counts when its key is trusted, the signature verifies over the exact bytes,
    and (for a key limited to channels) ``channel`` is one of its channels, and the key is
    neither revoked nor expired (``TrustedKey.refused``). Each key id counts once however often
    it appears, and a key id is the sha256 of the key itself, so one key never counts twice.
    ``ok`` needs ``trust.threshold_for(channel)`` counted keys (docs/bundle-format.md §5.1).
    """
    reasons: list[str] = []
    threshold = trust.threshold_for(channel)
    if sigfile.payload_type != payload_type:
        reasons.append(f"signature file is for {sigfile.payload_type!r}, expected {payload_type!r}")
        return Verdict(ok=False, threshold=threshold, signers=(), reasons=tuple(reasons))
    message = pae(payload_type, body)
    results: list[SignerResult] = []
    counted: set[str] = set()
    for s in sigfile.signatures:
        key = trust.keys.get(s.keyid)
        if key is None:
            why = trust.revoked.get(s.keyid, "key is not trusted")
            results.append(SignerResult(s.keyid, None, False, False, why))
            continue
        try:
            key.public.verify(s.sig, message)
        except InvalidSignature:
            results.append(SignerResult(s.keyid, key.name, False, False, "signature does not match the bytes"))
            continue
        if key.refused is not None:  # revoked or expired: listed, never counted
            results.append(SignerResult(s.keyid, key.name, True, False, key.refused))
            continue
        if key.channels is not None and channel is not None and channel not in key.channels:
            results.append(SignerResult(s.keyid, key.name, True, False,
                                        f"key may not sign channel {channel!r}"))
            continue
        if s.keyid in counted:
            results.append(SignerResult(s.keyid, key.name, True, False, "same key signed twice; counted once"))
            continue
        counted.add(s.keyid)
        results.append(SignerResult(s.keyid, key.name, True, True, "ok"))
    ok = len(counted) >= threshold
    if not ok:
        if not sigfile.signatures:
            reasons.append("no signatures")
        for r in results:
            if not r.counted:
                reasons.append(f"{r.name or r.keyid[:16]}: {r.reason}")
        reasons.append(f"{len(counted)} valid trusted signature(s), threshold is {threshold}")
    return Verdict(ok=ok, threshold=threshold, signers=tuple(results), reasons=tuple(reasons))


def signature_to_json(result: SignerResult) -> dict[str, Any]:
    """One signer's result as the verify report writes it (keyid, name, valid, counted, reason)."""
    return {"keyid": result.keyid, "name": result.name, "valid": result.valid,
            "counted": result.counted, "reason": result.reason}


def cosign(body: bytes, existing: list[SignatureFile], keys: list[Ed25519PrivateKey],
           known: dict[str, tuple[str, Ed25519PublicKey]], *,
           payload_type: str = MANIFEST_PAYLOAD_TYPE) -> tuple[SignatureFile, list[str]]:
    """Add signatures to a document already signed; pure, no I/O.

    Args:
        body: the signed document's exact bytes (they never change).
        existing: its signature files (one per volume; usually all equal). Their signatures
            are pooled, and each must verify over ``body`` under a key in ``known``.
        keys: the keys that sign now.
        known: public keys by key id, with a name for messages (the ``--trust`` keys and the
            signers' own keys).
        payload_type: the DSSE payload type every file must carry (docs/bundle-format.md §5).
    Returns the new signature file (existing signatures and the new ones, one per distinct
    key, sorted by key id) and the key ids that were added (empty when every key had signed).
    Raises:
        FormatError: a file is for another payload type.
        VerificationError: an existing signature is by a key not in ``known`` or does not
            verify over ``body`` (a co-signature over different bytes): co-signing a bundle
            whose signatures do not verify would lend them a second name.
    """
    from cryptography.exceptions import InvalidSignature as _Invalid

    from .errors import VerificationError

    message = pae(payload_type, body)
    pooled: dict[str, Signature] = {}
    for f in existing:
        if f.payload_type != payload_type:
            raise FormatError(f"signature file is for {f.payload_type!r}, expected {payload_type!r}")
        for s in f.signatures:
            entry = known.get(s.keyid)
            if entry is None:
                raise VerificationError(f"an existing signature is by key {s.keyid[:16]}…, which is not known here: "
                                        "give its public key or the trust policy with --trust so it can be checked")
            try:
                entry[1].verify(s.sig, message)
            except _Invalid:
                raise VerificationError(f"the existing signature by {entry[0]} ({s.keyid[:16]}…) does not verify over "
                                        "these bytes (signed something else); refusing to co-sign") from None
            pooled.setdefault(s.keyid, s)
    added = []
    for key in keys:
        kid = key_id(key.public_key())
        if kid not in pooled:
            pooled[kid] = Signature(keyid=kid, sig=key.sign(message))
            added.append(kid)
    if len(pooled) > limits.MAX_SIGNATURES:
        raise LimitError(f"{len(pooled)} signatures, over the limit of {limits.MAX_SIGNATURES}")
    return SignatureFile(payload_type, tuple(pooled[k] for k in sorted(pooled))), added
