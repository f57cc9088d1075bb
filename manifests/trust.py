"""Whom the edge (or an auditor) trusts to sign bundles.

``--trust FILE`` is repeatable. FILE is either an Ed25519 public key (PEM; trusted for
every channel) or a trust policy, YAML or JSON::

    apiVersion: ferry/v1
    kind: TrustPolicy
    threshold: 2               # k of the n keys below must sign; default 1
    keys:
      - name: hub-release-a
        publicKey: |           # PEM inline, or
          -----BEGIN PUBLIC KEY-----
          ...
      - name: hub-release-b
        file: hub-b.pub        # a PEM file, relative to the policy
        channels: [stable]     # optional: the channels this key may sign

Several files combine: their keys are pooled (a key listed twice is refused) and the
threshold is the highest any policy asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import limits
from .errors import FormatError, KeyFileError
from .keys import key_id, parse_public


@dataclass(frozen=True)
class TrustedKey:
    """A key the verifier knows. ``refused`` says why it no longer counts (revoked by a policy
    update, or expired at the time of verification); such a key is listed, never counted."""

    name: str
    public: Ed25519PublicKey
    channels: frozenset[str] | None = None  # None: any channel
    refused: str | None = None

    @property
    def keyid(self) -> str:
        return key_id(self.public)


@dataclass(frozen=True)
class Trust:
    """Trusted keys by key id, and how many of them must sign.

    ``channel_thresholds`` overrides ``threshold`` for the channels it names (a signed trust
    policy, manifests.root); ``revoked`` maps revoked key ids to the reason; ``policy`` is the
    signed policy's id, version and expiry when the trust came from one (for reports); ``at``
    is the time of verification (bundle and key expiry are judged against it) and
    ``last_seen`` the newest signed time this site already accepted, which tells whose clock
    looks wrong when times disagree (manifests.freshness).
    """

    keys: dict[str, TrustedKey]
    threshold: int = 1
    channel_thresholds: dict[str, int] = field(default_factory=dict)
    revoked: dict[str, str] = field(default_factory=dict)
    policy: dict[str, Any] | None = None
    at: datetime | None = None  # the verification time expiries are judged at (None: not judged)
    last_seen: datetime | None = None  # the latest signed time this verifier recorded (clock-skew hints)

    def threshold_for(self, channel: str | None) -> int:
        """The threshold on ``channel``; with None (before the manifest is parsed) the lowest
        any channel may ask for, so the first check never refuses what the second accepts."""
        if channel is None:
            return min([self.threshold, *self.channel_thresholds.values()])
        return self.channel_thresholds.get(channel, self.threshold)

    def describe(self) -> str:
        return f"{self.threshold} of {len(self.keys)} key(s): " + ", ".join(k.name for k in self.keys.values())


def _policy_keys(doc: dict[str, Any], where: str, base_dir: Path) -> list[TrustedKey]:
    raw = doc.get("keys")
    if not isinstance(raw, list) or not raw:
        raise FormatError(f"{where}: keys must be a non-empty list")
    if len(raw) > limits.MAX_SIGNATURES:
        raise FormatError(f"{where}: more than {limits.MAX_SIGNATURES} keys")
    out = []
    for i, item in enumerate(raw):
        w = f"{where}: keys[{i}]"
        if not isinstance(item, dict):
            raise FormatError(f"{w} must be a mapping")
        name = item.get("name")
        if not isinstance(name, str) or not name or len(name) > limits.MAX_NAME_LEN:
            raise FormatError(f"{w} needs a name")
        if isinstance(item.get("publicKey"), str):
            # "replace": YAML turns a JSON surrogate-pair escape into lone surrogates
            public = parse_public(item["publicKey"].encode("utf-8", "replace"), f"{w} ({name})")
        elif isinstance(item.get("file"), str):
            path = (base_dir / item["file"]) if not Path(item["file"]).is_absolute() else Path(item["file"])
            try:  # bounded: a policy naming /dev/zero or a huge file must not eat memory
                with open(path, "rb") as f:
                    data = f.read(64 * 1024)
            except (OSError, ValueError) as exc:  # ValueError: a NUL in the file name
                raise KeyFileError(f"{w} ({name}): cannot read {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") from None
            public = parse_public(data, str(path))
        else:
            raise FormatError(f"{w} ({name}) needs publicKey (PEM) or file")
        if item.get("keyid") is not None and item["keyid"] != key_id(public):
            raise FormatError(f"{w} ({name}): keyid does not match its public key")
        channels = item.get("channels")
        if channels is not None:
            if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
                raise FormatError(f"{w} ({name}): channels must be a list of names")
            channels = frozenset(channels)
        out.append(TrustedKey(name=name, public=public, channels=channels))
    return out


def parse_policy(data: bytes, where: str, base_dir: Path) -> Trust:
    """A trust policy document (YAML or JSON) -> Trust."""
    if len(data) > limits.MAX_TRUST_FILE_BYTES:
        raise FormatError(f"{where}: trust policy over {limits.MAX_TRUST_FILE_BYTES} bytes")
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise FormatError(f"{where}: not valid YAML/JSON{at}") from None
    except RecursionError:
        raise FormatError(f"{where}: nested too deeply") from None
    from .yamldoc import check_expanded

    check_expanded(doc, where)
    if not isinstance(doc, dict) or doc.get("kind") != "TrustPolicy":
        raise FormatError(f"{where}: neither a PEM public key nor a trust policy (kind: TrustPolicy)")
    if doc.get("apiVersion") != "ferry/v1":
        raise FormatError(f"{where}: apiVersion must be ferry/v1")
    keys = _policy_keys(doc, where, base_dir)
    threshold = doc.get("threshold", 1)
    if not isinstance(threshold, int) or isinstance(threshold, bool) or not 1 <= threshold <= len(keys):
        raise FormatError(f"{where}: threshold must be a whole number from 1 to {len(keys)}")
    by_id: dict[str, TrustedKey] = {}
    for k in keys:
        if k.keyid in by_id:
            raise FormatError(f"{where}: key {k.name!r} is the same key as {by_id[k.keyid].name!r}")
        by_id[k.keyid] = k
    return Trust(keys=by_id, threshold=threshold)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def load_trust(paths: list[Path]) -> Trust:
    """Combine ``--trust`` files: keys pooled, highest threshold wins.

    A signed trust policy (``root.json`` with ``root.json.sig`` beside it, manifests.root) is
    checked against its own keys and stands alone: revoked and expired keys are kept as
    refused, the policy's channel thresholds apply. Raises PlaceError (a file missing or
    unreadable: ``trust file PATH: not found``, manifests.bundle.not_found), KeyFileError, FormatError,
    PolicyError (a signed policy that is expired or not signed by its own threshold).
    """
    if not paths:
        raise KeyFileError("no --trust given: name the hub's public key or a trust policy "
                           "(or pin a signed one with `ferry trust init --state`)")
    from .bundle import read_bounded

    keys: dict[str, TrustedKey] = {}
    threshold = 1
    for path in paths:
        data = read_bounded(path, limits.MAX_TRUST_FILE_BYTES, "trust file", place="source")
        if data.lstrip().startswith(b"-----BEGIN"):
            public = parse_public(data, f"--trust {path}")
            part = Trust(keys={key_id(public): TrustedKey(name=path.stem, public=public)})
        elif data.lstrip().startswith(b"{") and b'"format":"ferry-trust"' in data:
            if len(paths) > 1:
                raise FormatError(f"--trust {path}: a signed trust policy stands alone; give it as the only --trust")
            from .root import load_root_file

            return load_root_file(path).trust(_now())
        else:
            part = parse_policy(data, f"--trust {path}", path.parent)
        for kid, k in part.keys.items():
            if kid in keys:
                raise FormatError(f"--trust {path}: key {k.name!r} is already trusted as {keys[kid].name!r}")
            keys[kid] = k
        threshold = max(threshold, part.threshold)
    if threshold > len(keys):
        raise FormatError(f"trust threshold {threshold} is more than the {len(keys)} key(s) given")
    return Trust(keys=keys, threshold=threshold, at=_now())
