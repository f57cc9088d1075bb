"""The trust policy a site pins, its history, and policy updates carried in bundles.

Layout under a state folder (the edge's, or the hub's ``--state``)::

    trust/<N>.root.json        every policy version the site accepted (manifests.root)
    trust/<N>.root.json.sig    its signatures

The current policy is the highest N whose two files are both present; the signature file is
written before the document (as a bundle's manifest is written last), so a crash leaves the
previous version current. On the medium a bundle carries the same files under ``trust/`` in
every volume (docs/bundle-format.md §1, §10); the hub's export copies its whole history.

:func:`trust_for_import` is the import's one hook: it applies the policy updates that the
bundles at hand carry (before any bundle is judged), records each change in the audit trail,
and returns the Trust the bundles are verified against.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from manifests.errors import FerryError, PlaceError, PolicyError, UsageError
from manifests.policy_files import TRUST_DIR, PolicyHistory, read_pair, root_file_names, versions_in
from manifests.root import Root, check_first, check_update, parse_time
from manifests.trust import Trust, load_trust

class TrustStore(PolicyHistory):
    """The pinned policy and its history under ``state/trust``, with the writes."""

    def _write(self, root: Root, signature: bytes) -> None:
        from manifests.durable import write_atomic_at

        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise PlaceError("state", str(self.dir), f"--state {self.state_dir}: cannot write the trust policy "
                             f"({exc.strerror or exc})") from None
        try:
            doc, sig = root_file_names(root.version)
            write_atomic_at(fd, sig, signature)
            write_atomic_at(fd, doc, root.raw)  # last: the pair is current only once both exist
        finally:
            os.close(fd)

    def _locked(self) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        fcntl.flock(lock, fcntl.LOCK_EX)
        return lock

    def pin(self, data: bytes, signature: bytes, now: datetime, where: str) -> Root:
        """Pin the first policy (trust on first install). Raises UsageError when one is pinned
        already (use update), PolicyError/FormatError when the policy is not acceptable."""
        root = check_first(data, signature, now, where)
        lock = self._locked()
        try:
            have = self.current()
            if have is not None:
                raise UsageError(f"--state {self.state_dir} already pins {have.root.label}; nothing changed "
                                 "(a newer policy goes in with `ferry trust update`)")
            self._write(root, signature)
        finally:
            os.close(lock)
        return root

    def update(self, data: bytes, signature: bytes, now: datetime, where: str) -> tuple[Root, Root]:
        """Replace the pinned policy with a newer one (manifests.root.check_update).
        Returns (old, new). Raises UsageError when nothing is pinned, PolicyError otherwise."""
        lock = self._locked()
        try:
            have = self.current()
            if have is None:
                raise UsageError(f"--state {self.state_dir} pins no trust policy yet: pin the first with "
                                 "`ferry trust init`")
            new = check_update(have.root, data, signature, now, where)
            self._write(new, signature)
        finally:
            os.close(lock)
        return have.root, new


def carried_roots(volume_dirs: Iterable[Path]) -> dict[int, tuple[bytes, bytes, str]]:
    """The policy versions a bundle's volumes carry under ``trust/``: {version: (document,
    signature, where)}; the first volume carrying a version wins (readers never follow links)."""
    out: dict[int, tuple[bytes, bytes, str]] = {}
    for vol in volume_dirs:
        folder = Path(vol) / TRUST_DIR
        for v in versions_in(folder):
            if v not in out:
                data, sig = read_pair(folder, v, "trust policy")
                out[v] = (data, sig, f"{folder}/{v}.root.json")
    return out


def _record(state_dir: Path, decision: str, reason: str, old: Root | None, new: Root | None,
            signers: list[str], digest: str | None, note: str | None) -> None:
    from .audit import AuditTrail

    trail = AuditTrail(state_dir)
    policy = new or old
    check = trail.verify()
    if not check.ok:
        raise FerryError(f"audit trail under {state_dir} is not whole ({check.summary}); the trust policy was not "
                         "changed: run `ferry audit verify --state` and keep the evidence")
    trail.append(decision, reason, bundle=None, manifest_digest=digest, signers=signers,
                 artifact={"kind": "trust-policy", "name": policy.policy_id} if policy is not None else None,
                 version_before=str(old.version) if old else None, version_after=str(new.version) if new else None,
                 note=note)


def signer_ids(signature: bytes) -> list[str]:
    from manifests.signing import SignatureFile

    return sorted({s.keyid for s in SignatureFile.from_bytes(signature).signatures})


def trust_for_import(trust_files: list[Path], state_dir: Path, bundles: Iterable[object], *,
                     dry_run: bool = False, note: str | None = None, now: datetime | None = None) -> Trust:
    """The Trust an import verifies its bundles against: the hook run_import calls once.

    Without a pinned policy under ``state_dir`` this is ``load_trust(trust_files)`` (the
    ``--trust`` files, unchanged behaviour). With one, ``--trust`` is refused (two sources of
    trust would be ambiguous), every newer policy version the bundles carry is checked against
    the one in force and pinned in turn (unless ``dry_run``), each change recorded in the audit
    trail, and the resulting policy's Trust at ``now`` is returned. A carried version at or
    below the current one must equal the site's copy of it, byte for byte.

    Args:
        trust_files: the ``--trust`` paths.
        state_dir: the edge state folder.
        bundles: importer.medium.BundleOnMedium items (their ``volume_dirs`` and ``digest``).
    Raises: KeyFileError/FormatError (``--trust`` files), UsageError (both sources), PolicyError
    (a carried policy update is refused: nothing is imported and nothing changed).
    """
    now = now or datetime.now(timezone.utc)
    store = TrustStore(state_dir)
    pinned = store.current()
    last_seen = _last_seen(state_dir)
    if pinned is None:
        base = load_trust(list(trust_files))
        return Trust(keys=base.keys, threshold=base.threshold, channel_thresholds=base.channel_thresholds,
                     revoked=base.revoked, policy=base.policy, at=now, last_seen=last_seen)
    if trust_files:
        raise UsageError(f"--state {state_dir} pins {pinned.root.label} (see `ferry trust show --state`); "
                         "drop --trust: trust changes only by signed policy updates")
    current = pinned.root
    offered: dict[int, tuple[bytes, bytes, str, str]] = {}
    for b in bundles:
        for v, (data, sig, where) in carried_roots(getattr(b, "volume_dirs")).items():
            offered.setdefault(v, (data, sig, where, getattr(b, "digest")))
    held = set(store.versions())
    for v in sorted(offered):
        data, sig, where, digest = offered[v]
        if v <= current.version:
            if v in held and store.get(v).root.raw != data:
                raise PolicyError(f"{where}: version {v} differs from the {store.get(v).root.label} this site holds "
                                  "(a lower or equal version is never accepted); nothing was imported")
            continue
        try:
            new = check_update(current, data, sig, now, where)
        except FerryError as exc:
            if not dry_run:
                _record(state_dir, "refused", f"trust policy update refused: {exc}", current, None,
                        [], digest, note)
            raise PolicyError(f"bundle {digest[:19]}… carries a policy update that was refused: {exc}; "
                              "nothing was imported") from None
        if not dry_run:
            store._write(new, sig)
            _record(state_dir, "trust-updated", f"{current.label} -> v{new.version} (carried in a bundle)",
                    current, new, signer_ids(sig), digest, note)
        current = new
    trust = current.trust(now)
    return Trust(keys=trust.keys, threshold=trust.threshold, channel_thresholds=trust.channel_thresholds,
                 revoked=trust.revoked, policy=trust.policy, at=now, last_seen=last_seen)


def _last_seen(state_dir: Path) -> datetime | None:
    """The newest signed creation time of a bundle this site imported (a witness for clocks)."""
    from .state import EdgeState

    try:
        state = EdgeState.open_readonly(Path(state_dir))
    except FerryError:
        return None
    if state is None:
        return None
    try:
        times = list(state.newest_created().values())
    except sqlite3.OperationalError:
        return None  # an empty database: an import was killed before it initialised the ledger
    finally:
        state.close()
    return max((parse_time(t) for t in times), default=None)
