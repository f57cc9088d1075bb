"""``ferry watch``: pick bundles up by itself, one at a time, from a drop folder or a registry channel.

Two sources (docs/operator-guide.md, "With a link"):

- **a drop folder** (a data diode's inside, a share): each entry of the folder that is a
  bundle folder or a folder of volumes is a candidate. It is imported only when it is
  *settled* (no file under it changed size or time between two looks ``settle`` seconds
  apart) and *complete* (every volume of the manifest is there, every volume's own signature
  file verifies, every pack has its signed size): never a half-written bundle. A candidate
  that is not yet either is left for the next poll, and the reason is logged once.
- **a registry channel** ``oci://HOST/REPO``: the repository's tags that are sequence numbers
  (what ``ferry export --push oci://HOST/REPO`` writes) above the last one handled are
  imported in ascending order (:mod:`importer.link`: signatures first, only what the site
  lacks). An unreachable registry is polled again with exponential backoff.

Every bundle is imported exactly once: a manifest digest handled before (imported, refused
or already present) is never picked again, and the import's own ledger makes a repeat a
no-op anyway. Each decision (picked up, waiting, backing off) goes to the audit trail as a
``watch`` entry; the last result is kept in ``STATE/watch.json`` for ``ferry status``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from manifests.bundle import MANIFEST_NAME, PACKS_DIR, SIGNATURE_NAME, VOLUME_PREFIX, open_manifest
from manifests.durable import write_atomic
from manifests.errors import FerryError, RegistryError, VerificationError
from manifests.link import OciRef
from manifests.progress import Progress
from manifests.trust import Trust

from .medium import find_bundles
from .run import ImportOptions, ImportReport, run_import

#: Where the watcher keeps what it handled and its last result, under the edge state.
WATCH_FILE = "watch.json"
#: The longest wait between polls of a registry that keeps failing.
MAX_BACKOFF = 3600.0


def snapshot(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """(relative path, size, mtime in ns) of every file under ``folder``, links not followed."""
    out = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            p = Path(root) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            out.append((str(p.relative_to(folder)), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


def completeness(folder: Path, trust: Trust) -> tuple[str | None, str | None]:
    """Whether the bundle in ``folder`` can be imported whole: (manifest digest, None) when every
    volume is there with its own signature file verifying and every pack at its signed size;
    (digest or None, why not) otherwise. Reads only manifests, signature files and file sizes."""
    try:
        bundles = find_bundles([folder])
    except FerryError as exc:
        return None, str(exc)
    if len(bundles) != 1:
        return None, f"{len(bundles)} different bundles in one folder"
    b = bundles[0]
    for vol in b.volume_dirs:  # every volume's own signature file, not just the first that passes
        try:
            sig = (vol / SIGNATURE_NAME).read_bytes()
            signed = open_manifest((vol / MANIFEST_NAME).read_bytes(), sig, trust)
        except (OSError, FerryError) as exc:
            return b.digest, f"{vol.name}: signature does not verify yet ({exc})"
    m = signed.manifest
    names = {v.name for v in b.volume_dirs}
    for n in range(1, m.volumes + 1):
        if m.volumes > 1 and f"{VOLUME_PREFIX}{n:03d}" not in names:
            return b.digest, f"volume {n} of {m.volumes} has not arrived"
    by_number = {v.name: v for v in b.volume_dirs}
    for p in m.packs:
        vol = b.volume_dirs[0] if m.volumes == 1 else by_number[f"{VOLUME_PREFIX}{p.volume:03d}"]
        path = vol / PACKS_DIR / p.name
        size = path.stat().st_size if path.is_file() else -1
        if size != p.size:
            return b.digest, f"{path.relative_to(folder)} is {max(size, 0)} of {p.size} bytes"
    return b.digest, None


@dataclass
class WatchState:
    """``STATE/watch.json``: what was handled (digests), the last tag of a channel, the last result."""

    path: Path
    handled: dict[str, str] = field(default_factory=dict)  # manifest or artifact digest -> outcome
    last_tag: int = 0
    last: dict[str, Any] | None = None

    @classmethod
    def load(cls, state_dir: Path) -> WatchState:
        path = Path(state_dir) / WATCH_FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(path)
        if not isinstance(doc, dict):
            return cls(path)
        raw = doc.get("handled")
        handled: dict[Any, Any] = raw if isinstance(raw, dict) else {}
        tag = doc.get("lastTag")
        last_tag = tag if isinstance(tag, int) else 0
        return cls(path, {str(k): str(v) for k, v in handled.items()}, last_tag,
                   doc.get("last") if isinstance(doc.get("last"), dict) else None)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"handled": self.handled, "lastTag": self.last_tag, "last": self.last},
                          sort_keys=True, indent=1).encode()
        write_atomic(self.path, body)


def read_last(state_dir: Path) -> dict[str, Any] | None:
    """The watcher's last result for ``ferry status`` (None when it never ran here)."""
    return WatchState.load(state_dir).last


@dataclass
class Watcher:
    """One watcher: ``source`` a drop folder or a channel, imports with ``options`` (its
    ``paths``/``links`` are set per bundle). ``stop`` ends :meth:`run` between polls."""

    source: Path | OciRef
    options: ImportOptions
    progress: Progress
    trust: Callable[[], Trust]
    interval: float = 60.0
    settle: float = 5.0
    stop: threading.Event = field(default_factory=threading.Event)
    _seen: dict[str, tuple[tuple[str, int, int], ...]] = field(default_factory=dict)
    _said: dict[str, str] = field(default_factory=dict)

    def _log(self, key: str, reason: str, digest: str | None = None, *, always: bool = False,
             quiet: bool = False) -> None:
        """One ``watch`` audit entry, unless the same thing was said about ``key`` last time; also
        printed (through the progress), unless ``quiet`` (an error line will say it)."""
        if not always and self._said.get(key) == reason:
            return
        self._said[key] = reason
        if not quiet:
            self.progress.info(f"watch: {reason}")
        from .audit import AuditTrail

        AuditTrail(Path(self.options.state)).append("watch", reason, bundle=None, manifest_digest=digest,
                                                     signers=[], artifact=None, version_before=None,
                                                     version_after=None, note=self.options.note)

    def _record(self, ws: WatchState, source: str, outcome: str, report: ImportReport | None = None) -> None:
        ws.last = {"at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "source": source,
                   "outcome": outcome, "exitCode": report.exit_code if report else None}
        ws.save()

    def _import(self, ws: WatchState, key: str, label: str, opts: ImportOptions, digest: str | None) -> ImportReport:
        try:
            report = run_import(opts, self.progress)
        except FerryError as exc:
            if isinstance(exc, RegistryError):
                raise
            outcome = f"{label}: refused: {exc}"
            ws.handled[key] = "refused"
            self._log(key, outcome, digest, always=True)
            self._record(ws, label, outcome)
            return ImportReport(state=str(opts.state), dry_run=False)
        statuses = ", ".join(sorted({b.status.value for b in report.bundles})) or "nothing found"
        outcome = f"{label}: {statuses} (exit {report.exit_code})"
        if report.exit_code != 3:  # incomplete stays a candidate
            ws.handled[key] = statuses
        self._log(key, outcome, digest, always=True)
        self._record(ws, label, outcome, report)
        return report

    # ---- one poll

    def poll_folder(self, folder: Path) -> int:
        """Look at the drop folder once; import each settled, complete, new bundle. Returns how many were imported."""
        ws = WatchState.load(self.options.state)
        if not folder.is_dir():
            self._log(str(folder), f"drop folder {folder} is not there")
            return 0
        done = 0
        state = Path(os.path.realpath(self.options.state))
        for entry in sorted(folder.iterdir()):
            if self.stop.is_set():
                break
            if not entry.is_dir() or entry.is_symlink() or entry.name.startswith("."):
                continue
            if Path(os.path.realpath(entry)) in (state, *state.parents):  # the edge state itself, kept in the
                continue  # drop folder: never a candidate (each look would log it as still changing)
            key = str(entry)
            snap = snapshot(entry)
            mark = "folder:" + hashlib.sha256(repr((key, snap)).encode()).hexdigest()
            if mark in ws.handled:  # imported before and unchanged since: nothing to say
                continue
            before = self._seen.get(key)
            self._seen[key] = snap
            if before is None:
                self._log(key, f"{entry}: seen; waiting {self.settle:g}s for it to settle")
                continue
            if before != snap:
                self._log(key, f"{entry}: waiting: files are still changing")
                continue
            digest, why = completeness(entry, self.trust())
            if digest is not None and digest in ws.handled:
                continue
            if why is not None:  # the reader's words may name the entry already: once is enough
                self._log(key, f"{entry}: waiting: {why.removeprefix(f'{entry}: ')}", digest)
                continue
            assert digest is not None
            opts = _with(self.options, paths=[entry], links=[])
            report = self._import(ws, digest, str(entry), opts, digest)
            if report.exit_code != 3:
                ws.handled[mark] = digest
                ws.save()
            done += 1
        return done

    def poll_channel(self, ref: OciRef) -> int:
        """Look at the channel once; import each new sequence tag in order. Returns how many were imported."""
        from transport.registry import RegistryClient

        ws = WatchState.load(self.options.state)
        client = RegistryClient(ref.host, insecure_registries=self.options.insecure_registries)
        try:
            tags = sorted(int(t) for t in client.tags(ref.repository) if t.isdigit() and len(t) < 16)
        finally:
            client.close()
        done = 0
        for tag in (t for t in tags if t > ws.last_tag):
            if self.stop.is_set():
                break
            one = OciRef(ref.host, ref.repository, str(tag))
            opts = _with(self.options, paths=[], links=[one])
            report = self._import(ws, f"{one}", str(one), opts, None)
            ws = WatchState.load(self.options.state)
            if report.exit_code != 3:
                ws.last_tag = tag
                ws.save()
            done += 1
        return done

    def run(self, once: bool = False) -> None:
        """Poll until :attr:`stop` is set (SIGTERM), or once (``--once``: a drop folder is looked
        at twice, ``settle`` seconds apart, so that a file still growing is seen growing)."""
        failures = 0
        first = True
        while not self.stop.is_set():
            try:
                if isinstance(self.source, OciRef):
                    self.poll_channel(self.source)
                else:
                    self.poll_folder(self.source)
                    if first and once:
                        first = False
                        if not self.stop.wait(self.settle):
                            continue
                failures = 0
            except (RegistryError, VerificationError) as exc:
                failures += 1
                wait = min(self.interval * (2 ** failures), MAX_BACKOFF)
                ws = WatchState.load(self.options.state)
                self._record(ws, str(self.source), f"error: {exc}")
                if once:  # the error line says it; nothing polls again
                    self._log(str(self.source), f"{self.source}: {exc}", quiet=True)
                    raise
                self._log(str(self.source), f"{self.source}: {exc}; polling again in {wait:g}s")
                self.stop.wait(wait)
                continue
            if once:
                return
            self.stop.wait(self.interval)


def _with(opts: ImportOptions, **changes: Any) -> ImportOptions:
    from dataclasses import replace

    return replace(opts, **changes)
