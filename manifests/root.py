"""Signed, versioned trust policies (a *root*, in TUF's words) and the rules for rotating them.

A root is canonical JSON (docs/bundle-format.md §2, §10), signed in ``root.json.sig`` beside it
like a manifest, with the DSSE payload type ``application/vnd.ferry.trust.v1+json``::

    {"format": "ferry-trust", "formatVersion": "1.0", "policyId": "acme-edge", "version": 2,
     "expires": "2027-12-01T00:00:00Z",
     "keys": [{"keyid": "<hex>", "name": "hub-a", "publicKey": "<PEM>",
               "channels": ["stable"], "expires": "2027-06-01T00:00:00Z"}],   # last two optional
     "revoked": ["<keyid>"],
     "thresholds": {"root": 2, "bundles": 1, "channels": {"stable": 2}}}

``thresholds.root`` signatures sign the next root; ``bundles`` is the default for bundles and
``channels`` overrides it per channel. Rules (TUF specification v1.0, §5.3 "Update the root
role", applied offline):

- a root is accepted first only when a threshold of its own keys signed it (trust on first
  install, from the operator's own medium: :func:`check_first`);
- a newer root is accepted (:func:`check_update`) only with the same ``policyId``, a higher
  ``version`` (never lower or equal: rollback, §5.3.5), every revocation of the current one
  kept, signed by ``thresholds.root`` of the *current* root's usable keys (§5.3.4) *and* by
  its own ``thresholds.root`` of its own usable keys, and not expired (§5.3.10, freeze);
- a key is usable when it is neither revoked nor expired; thresholds count distinct usable
  key ids only, and a key id is the sha256 of the key, so one key under two names or ids is
  refused when the root is parsed;
- a root whose thresholds ask for more usable keys than it has would lock the site out and
  is refused.

Everything here is pure: bytes and a time in, a verdict out. The edge's copy lives in the
state folder (importer.trust_store).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from . import canonical, limits
from .errors import FormatError, KeyFileError, PolicyError
from .keys import key_id, parse_public, public_pem
from .model import NAME_RE, TIME_RE
from .signing import TRUST_PAYLOAD_TYPE, SignatureFile, Verdict, verify
from .trust import Trust, TrustedKey

ROOT_FORMAT = "ferry-trust"
ROOT_FORMAT_VERSION = "1.0"
ROOT_NAME = "root.json"
ROOT_SIGNATURE_NAME = "root.json.sig"


def parse_time(text: str) -> datetime:
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC) -> an aware datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def format_time(when: datetime) -> str:
    """An aware datetime -> ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds)."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RootKey:
    keyid: str
    name: str
    public_pem: str
    channels: tuple[str, ...] | None = None
    expires: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"keyid": self.keyid, "name": self.name, "publicKey": self.public_pem}
        if self.channels is not None:
            d["channels"] = list(self.channels)
        if self.expires is not None:
            d["expires"] = self.expires
        return d


@dataclass(frozen=True)
class Root:
    """A parsed trust policy document; ``raw`` is its exact bytes (what was signed)."""

    policy_id: str
    version: int
    expires: str
    keys: tuple[RootKey, ...]
    revoked: tuple[str, ...]
    root_threshold: int
    bundle_threshold: int
    channel_thresholds: dict[str, int] = field(default_factory=dict)
    raw: bytes = b""

    @property
    def label(self) -> str:
        return f"trust policy {self.policy_id!r} v{self.version}"

    def to_dict(self) -> dict[str, Any]:
        thresholds: dict[str, Any] = {"root": self.root_threshold, "bundles": self.bundle_threshold}
        if self.channel_thresholds:
            thresholds["channels"] = dict(self.channel_thresholds)
        return {"format": ROOT_FORMAT, "formatVersion": ROOT_FORMAT_VERSION, "policyId": self.policy_id,
                "version": self.version, "expires": self.expires, "keys": [k.to_dict() for k in self.keys],
                "revoked": list(self.revoked), "thresholds": thresholds}

    def to_bytes(self) -> bytes:
        return canonical.encode(self.to_dict())

    def key_problem(self, key: RootKey, now: datetime) -> str | None:
        """Why ``key`` does not count at ``now`` (revoked or expired), or None."""
        if key.keyid in self.revoked:
            return f"key revoked by {self.label}"
        if key.expires is not None and parse_time(key.expires) <= now:
            return f"key expired at {key.expires}"
        return None

    def trust(self, now: datetime, *, root_role: bool = False) -> Trust:
        """The Trust this root gives at ``now``: every key listed, revoked and expired ones
        refused; the bundle thresholds, or with ``root_role`` the threshold for signing roots."""
        keys = {k.keyid: TrustedKey(name=k.name, public=parse_public(k.public_pem.encode(), f"{self.label} key {k.name}"),
                                    channels=None if root_role or k.channels is None else frozenset(k.channels),
                                    refused=self.key_problem(k, now)) for k in self.keys}
        revoked = {kid: f"key revoked by {self.label}" for kid in self.revoked}
        if root_role:
            return Trust(keys=keys, threshold=self.root_threshold, revoked=revoked, policy=self.summary(), at=now)
        return Trust(keys=keys, threshold=self.bundle_threshold, channel_thresholds=dict(self.channel_thresholds),
                     revoked=revoked, policy=self.summary(), at=now)

    def summary(self) -> dict[str, Any]:
        """Id, version and expiry, for reports and the audit trail."""
        return {"policyId": self.policy_id, "version": self.version, "expires": self.expires}

    def lockout(self, now: datetime) -> str | None:
        """Why this root would lock the site out at ``now`` (a threshold above the usable keys
        that may meet it), or None."""
        usable = [k for k in self.keys if self.key_problem(k, now) is None]
        if self.root_threshold > len(usable):
            return (f"{self.label} would lock the site out: its root threshold {self.root_threshold} is more than "
                    f"its {len(usable)} usable key(s)")
        for channel, t in [("", self.bundle_threshold), *sorted(self.channel_thresholds.items())]:
            able = [k for k in usable if k.channels is None or not channel or channel in k.channels]
            if t > len(able):
                what = f"channel {channel!r}" if channel else "bundles"
                return (f"{self.label} would lock the site out: its threshold for {what} is {t}, "
                        f"more than the {len(able)} usable key(s) that may sign them")
        return None


def _str(d: dict[str, Any], key: str, where: str, *, pattern: Any = None, optional: bool = False) -> Any:
    value = d.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > limits.MAX_NAME_LEN * 8:
        raise FormatError(f"{where}: {key} must be a non-empty string")
    if pattern is not None and not pattern.match(value):
        raise FormatError(f"{where}: {key} {value[:40]!r} is malformed")
    return value


def _int(value: Any, where: str, low: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 2**53 - 1:
        raise FormatError(f"{where} must be a whole number of at least {low}")
    return value


def parse_root(data: bytes, where: str = ROOT_NAME) -> Root:
    """Canonical JSON bytes -> Root. Checks shape, key ids against keys, duplicates, limits.

    Raises FormatError (exit 2) for a malformed document, LimitError when over the trust file
    limit, PolicyError when the same key is listed twice (it would count twice).
    """
    if len(data) > limits.MAX_TRUST_FILE_BYTES:
        raise FormatError(f"{where}: over {limits.MAX_TRUST_FILE_BYTES} bytes")
    d = canonical.decode(data, what=where)
    if not isinstance(d, dict) or d.get("format") != ROOT_FORMAT:
        raise FormatError(f"{where}: not a signed trust policy (format {ROOT_FORMAT!r})")
    fv = d.get("formatVersion")
    if not isinstance(fv, str) or not fv.startswith("1."):
        raise FormatError(f"{where}: trust policy format version {str(fv)[:16]} is not supported: this ferry reads 1.x")
    policy_id = _str(d, "policyId", where, pattern=NAME_RE)
    version = _int(d.get("version"), f"{where}: version")
    expires = _str(d, "expires", where, pattern=TIME_RE)
    raw_keys = d.get("keys")
    if not isinstance(raw_keys, list) or not raw_keys or len(raw_keys) > limits.MAX_SIGNATURES:
        raise FormatError(f"{where}: keys must be a list of 1 to {limits.MAX_SIGNATURES} keys")
    keys: list[RootKey] = []
    seen: dict[str, str] = {}
    for i, k in enumerate(raw_keys):
        w = f"{where}: keys[{i}]"
        if not isinstance(k, dict):
            raise FormatError(f"{w} must be an object")
        name = _str(k, "name", w, pattern=NAME_RE)
        pem = _str(k, "publicKey", w)
        public = parse_public(pem.encode("utf-8"), f"{w} ({name})")
        kid = key_id(public)
        if k.get("keyid") != kid:
            raise FormatError(f"{w} ({name}): keyid does not match its public key (the key's id is {kid[:16]}…)")
        if kid in seen:
            raise PolicyError(f"{where}: key {name!r} is the same key as {seen[kid]!r}; one key counts once")
        seen[kid] = name
        channels = k.get("channels")
        if channels is not None:
            if not isinstance(channels, list) or not all(isinstance(c, str) and NAME_RE.match(c) for c in channels):
                raise FormatError(f"{w} ({name}): channels must be a list of channel names")
            channels = tuple(channels)
        keys.append(RootKey(kid, name, pem, channels, _str(k, "expires", w, pattern=TIME_RE, optional=True)))
    revoked = d.get("revoked", [])
    if not isinstance(revoked, list) or not all(isinstance(r, str) and len(r) == 64 for r in revoked):
        raise FormatError(f"{where}: revoked must be a list of key ids (64 hex)")
    t = d.get("thresholds")
    if not isinstance(t, dict):
        raise FormatError(f"{where}: thresholds must be an object with root and bundles")
    channel_t = t.get("channels", {})
    if not isinstance(channel_t, dict):
        raise FormatError(f"{where}: thresholds.channels must map channel names to numbers")
    return Root(policy_id=policy_id, version=version, expires=expires, keys=tuple(keys), revoked=tuple(revoked),
                root_threshold=_int(t.get("root"), f"{where}: thresholds.root"),
                bundle_threshold=_int(t.get("bundles"), f"{where}: thresholds.bundles"),
                channel_thresholds={c: _int(v, f"{where}: thresholds.channels.{c}") for c, v in channel_t.items()},
                raw=data)


def _signed_by(root_bytes: bytes, sigfile: SignatureFile, signer: Root, now: datetime) -> Verdict:
    return verify(root_bytes, sigfile, signer.trust(now, root_role=True), channel=None,
                  payload_type=TRUST_PAYLOAD_TYPE)


def check_first(data: bytes, signature: bytes, now: datetime, where: str = ROOT_NAME) -> Root:
    """The first root a site pins: well formed, not expired, not locking the site out, and
    signed by a threshold of its own usable keys. Raises FormatError or PolicyError."""
    root = parse_root(data, where)
    sigfile = SignatureFile.from_bytes(signature, what=f"{where}.sig")
    _usable(root, now)
    own = _signed_by(data, sigfile, root, now)
    if not own.ok:
        raise PolicyError(f"{root.label} is not signed by its own root threshold: {own.summary}; nothing changed")
    return root


def _usable(root: Root, now: datetime) -> None:
    if parse_time(root.expires) <= now:
        raise PolicyError(f"{root.label} expired at {root.expires} (this machine's clock says {format_time(now)}); "
                          "nothing changed")
    problem = root.lockout(now)
    if problem:
        raise PolicyError(f"{problem}; nothing changed")


def check_update(current: Root, data: bytes, signature: bytes, now: datetime, where: str = ROOT_NAME) -> Root:
    """A newer root that may replace ``current`` (TUF §5.3.4–5.3.10).

    Args:
        current: the root the site trusts now (it may itself have expired: a site whose
            policy lapsed can still be rotated forward, as TUF allows).
        data, signature: the candidate's exact bytes and its signature file.
        now: the time of the check (UTC).
    Returns the new Root. Raises PolicyError naming the first rule broken, FormatError for a
    malformed document; nothing is changed by this function either way.
    """
    new = parse_root(data, where)
    sigfile = SignatureFile.from_bytes(signature, what=f"{where}.sig")
    if new.policy_id != current.policy_id:
        raise PolicyError(f"{where}: policy id {new.policy_id!r} is not this site's {current.policy_id!r}; nothing changed")
    if new.version <= current.version:
        raise PolicyError(f"{where}: {new.label} is not newer than the {current.label} in use "
                          "(a lower or equal version is never accepted); nothing changed")
    dropped = sorted(set(current.revoked) - set(new.revoked))
    if dropped:
        raise PolicyError(f"{new.label} drops the revocation of key {dropped[0][:16]}… (revocations are permanent); "
                          "nothing changed")
    _usable(new, now)
    old = _signed_by(data, sigfile, current, now)
    if not old.ok:
        raise PolicyError(f"{new.label} is not signed by a threshold of the current {current.label}'s keys: "
                          f"{old.summary}; nothing changed")
    own = _signed_by(data, sigfile, new, now)
    if not own.ok:
        raise PolicyError(f"{new.label} is not signed by a threshold of its own keys: {own.summary}; nothing changed")
    return new


def load_root_file(path: Path) -> Root:
    """``--trust root.json``: a signed policy read from a file (its ``.sig`` beside it), checked
    against its own keys as a first policy would be (an auditor's view: no pinned history)."""
    from .bundle import read_bounded

    data = read_bounded(path, limits.MAX_TRUST_FILE_BYTES, "trust file", place="source")
    sig_path = path.with_name(path.name + ".sig")
    if not sig_path.is_file():
        raise KeyFileError(f"--trust {path}: a signed trust policy needs its signature file {sig_path.name} beside it")
    sig = read_bounded(sig_path, limits.MAX_SIGNATURE_FILE_BYTES, "trust file", place="source")
    return check_first(data, sig, datetime.now(timezone.utc), where=f"--trust {path}")


def build_root(spec: dict[str, Any], base_dir: Path, where: str, now: datetime,
               parse_duration: Callable[[str], timedelta]) -> Root:
    """A root from an operator's YAML (``kind: TrustRoot``, see docs/operator-guide.md §2.4):
    keys by ``file`` or ``publicKey`` as in a TrustPolicy, ``expires`` absolute or a duration
    from ``now`` (``365d``), ``revoked`` as key ids or key files. Raises FormatError, KeyFileError."""
    from .trust import _policy_keys

    parse_max_age = parse_duration

    if spec.get("kind") != "TrustRoot" or spec.get("apiVersion") != "ferry/v1":
        raise FormatError(f"{where}: needs apiVersion: ferry/v1 and kind: TrustRoot")
    keys = []
    expiries = {}
    for i, item in enumerate(spec.get("keys") or []):
        if isinstance(item, dict) and item.get("expires") is not None:
            expiries[i] = _when(str(item["expires"]), now, f"{where}: keys[{i}].expires", parse_max_age)
    for i, k in enumerate(_policy_keys(spec, where, base_dir)):
        keys.append(RootKey(k.keyid, k.name, public_pem(k.public).decode("ascii"),
                            tuple(sorted(k.channels)) if k.channels is not None else None, expiries.get(i)))
    revoked = []
    for r in spec.get("revoked") or []:
        if isinstance(r, str) and len(r) == 64 and all(c in "0123456789abcdef" for c in r):
            revoked.append(r)
        elif isinstance(r, str):
            from .keys import load_public

            p = Path(r) if Path(r).is_absolute() else base_dir / r
            revoked.append(key_id(load_public(p)))
        else:
            raise FormatError(f"{where}: revoked must list key ids or public key files")
    t = spec.get("thresholds") or {}
    doc = {"format": ROOT_FORMAT, "formatVersion": ROOT_FORMAT_VERSION, "policyId": spec.get("policyId"),
           "version": spec.get("version"), "expires": _when(str(spec.get("expires", "")), now, f"{where}: expires",
                                                            parse_max_age),
           "keys": [k.to_dict() for k in keys], "revoked": sorted(set(revoked)),
           "thresholds": {"root": t.get("root", 1), "bundles": t.get("bundles", 1),
                          **({"channels": t["channels"]} if t.get("channels") else {})}}
    try:
        data = canonical.encode(doc)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{where}: {exc}") from None
    root = parse_root(data, where)
    problem = root.lockout(now)
    if problem:
        raise PolicyError(problem)
    return root


def _when(text: str, now: datetime, where: str, parse_duration: Any) -> str:
    if TIME_RE.match(text):
        return text
    try:
        return format_time(now + parse_duration(text))
    except Exception:  # noqa: BLE001 - one message for both spellings
        raise FormatError(f"{where}: give a UTC time (2027-12-01T00:00:00Z) or a duration (365d)") from None
