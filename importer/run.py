"""``ferry import``: find bundles, verify, decide, read chunks, apply in order, record, report.

The order of work for each bundle (one manifest digest, however many volumes carry it):

1. signatures against the trust (before the manifest is parsed), then the manifest's limits;
   a bundle id seen before with other content is refused;
2. the ledger first: a bundle imported completely before is a no-op (no pack is opened);
3. per artifact, :func:`importer.policy.decide` (the one version rule) and
   :func:`importer.policy.bundle_freshness` (the channel sequence rule);
4. which chunks each applying artifact needs, which the site holds (:mod:`importer.store`),
   which the volumes at hand carry; artifacts waiting for a volume keep their chunks in the
   spill store and are applied by a later run;
5. free space against the bytes to write; then models, images, manifests in that order, each
   verified chunk by chunk and file by file while it is written, made visible only when whole;
6. the ledger, the journal (for steps outside a transaction) and one audit entry per decision.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from manifests.bundle import SignedManifest
from manifests.chunks import decompress_chunk
from manifests.errors import FerryError, VerificationError
from manifests.model import Artifact, Chunk, Entry, Manifest
from manifests.trust import load_trust

from .content import entry_label, stream_entry
from .medium import BundleOnMedium, PackReader, find_bundles
from .policy import Decision, bundle_age_problem, bundle_freshness, decide
from .state import MANIFESTS_DIR, OCI_DIR, EdgeState, set_installed
from .store import ChunkStore
from .apply import models as model_store

KIND_ORDER = {"model": 0, "image": 1, "manifests": 2}
#: Room kept free beyond the bytes to write (ledger, journal, audit trail).
SPACE_RESERVE = 16 * 1024 * 1024


@dataclass
class ImportOptions:
    paths: list[Path]
    trust: list[Path]
    state: Path
    registry: str | None = None
    insecure_registries: frozenset[str] = frozenset()
    manifests_dir: Path | None = None
    kubeconfig: Path | None = None
    context: str | None = None
    dry_run: bool = False
    allow_downgrade: bool = False
    reason: str | None = None
    keep: int | None = None
    note: str | None = None
    max_age: timedelta | None = None
    no_prune: bool = False


@dataclass
class ArtifactResult:
    """What became of one artifact. ``status``: applied, same, refused, failed (verification or
    apply error), waiting (a volume is missing), planned (dry run)."""

    kind: str
    name: str
    version: str
    installed: str | None
    action: str
    status: str
    reason: str
    bytes: int = 0
    ref: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "version": self.version, "installed": self.installed,
                "action": self.action, "status": self.status, "reason": self.reason, "bytes": self.bytes,
                "ref": self.ref}


@dataclass
class BundleResult:
    """What became of one bundle. ``status``: imported, repeat, partial, settled (some artifacts
    refused by the version rule), refused (the bundle as a whole), planned (dry run)."""

    digest: str
    volumes: list[str]
    status: str = "refused"
    reason: str = ""
    info: dict[str, Any] | None = None
    freshness: str | None = None
    signers: list[str] = field(default_factory=list)
    missing_volumes: list[int] = field(default_factory=list)
    artifacts: list[ArtifactResult] = field(default_factory=list)
    bytes_to_write: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"manifestDigest": self.digest, "volumes": self.volumes, "status": self.status,
                "reason": self.reason, "bundle": self.info, "freshness": self.freshness,
                "signers": self.signers, "missingVolumes": self.missing_volumes,
                "bytesToWrite": self.bytes_to_write, "artifacts": [a.to_json() for a in self.artifacts]}


@dataclass
class ImportReport:
    state: str
    dry_run: bool
    bundles: list[BundleResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when everything applied or was already there (or waits for a volume), 1 when
        anything was refused or failed verification."""
        for b in self.bundles:
            if b.status == "refused" or any(a.status in ("refused", "failed") for a in b.artifacts):
                return 1
        return 0

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "dryRun": self.dry_run, "exitCode": self.exit_code,
                "bundles": [b.to_json() for b in self.bundles]}


# --------------------------------------------------------------------------- entry point


def run_import(opts: ImportOptions, progress: Any) -> ImportReport:
    """Import every bundle found under ``opts.paths`` into the edge state ``opts.state``."""
    if opts.allow_downgrade and not (opts.reason and opts.reason.strip()):
        raise FerryError("--allow-downgrade needs --reason TEXT: say why, it goes into the audit trail")
    if opts.reason and not opts.allow_downgrade:
        raise FerryError("--reason is only for --allow-downgrade")
    if opts.keep is not None and opts.keep < 1:
        raise FerryError("--keep must be at least 1 (the current version is never removed)")
    if opts.context and not opts.kubeconfig:
        raise FerryError("--context needs --kubeconfig")
    trust = load_trust(list(opts.trust))
    found = find_bundles(opts.paths)
    report = ImportReport(state=str(opts.state), dry_run=opts.dry_run)

    if opts.dry_run:
        state = EdgeState.open_for_plan(opts.state)
        audit = None
    else:
        audit = _audit_trail(opts.state)
        state = EdgeState.open(opts.state)
    store = ChunkStore(state)
    try:
        if not opts.dry_run:
            check = audit.verify()
            if not check.ok:  # decisions cannot be recorded: refuse before changing anything
                raise VerificationError(f"audit trail under {opts.state} is not whole ({check.summary}); nothing was "
                                 "imported: run `ferry audit verify --state` and keep the evidence")
            recover(state, store, audit, progress)
        verified: list[tuple[SignedManifest, BundleOnMedium, BundleResult]] = []
        for medium in found:
            result = BundleResult(digest=medium.digest, volumes=[str(v) for v in medium.volume_dirs])
            report.bundles.append(result)
            try:
                signed = medium.open(trust)
            except FerryError as exc:
                result.reason = str(exc)
                _audit(audit, "refused", str(exc), None, medium.digest, [], None, None, None, opts.note)
                continue
            verified.append((signed, medium, result))
        verified.sort(key=lambda t: (t[0].manifest.bundle.channel, t[0].manifest.bundle.sequence))
        for signed, medium, result in verified:
            _Importer(opts, state, store, audit, progress, signed, medium, result).run()
        if not opts.dry_run:
            store.collect_spill()
    finally:
        store.close()
        state.close()
    return report


def _audit_trail(state_dir: Path) -> Any:
    from .audit import AuditTrail

    return AuditTrail(Path(state_dir))


def _audit(audit: Any, decision: str, reason: str, bundle: dict[str, Any] | None, digest: str | None,
           signers: list[str], artifact: dict[str, Any] | None, before: str | None, after: str | None,
           note: str | None) -> None:
    if audit is not None:
        audit.append(decision, reason, bundle=bundle, manifest_digest=digest, signers=signers,
                     artifact=artifact, version_before=before, version_after=after, note=note)


# --------------------------------------------------------------------------- crash recovery


def recover(state: EdgeState, store: ChunkStore, audit: Any, progress: Any) -> None:
    """Roll forward what an interrupted run decided but did not finish (see importer.state)."""
    for jid, payload in state.journal():
        if payload.get("op") == "model":
            progress.info(f"finishing model {payload['name']} {payload['version']} (an earlier import was interrupted)")
            finish_model(state, store, audit, jid, payload)


def finish_model(state: EdgeState, store: ChunkStore, audit: Any, jid: int, payload: dict[str, Any]) -> None:
    """Publish a staged model, record it, audit it, then drop the journal entry. Each step is
    idempotent, so a crash anywhere here is finished by :func:`recover`."""
    if not payload.get("committed"):
        store.forget_fds()
        model_store.publish_model(state, payload["name"], payload["version"], staged=payload["staged"])
        payload = {**payload, "committed": True}
        with state.transaction() as db:
            model_store.commit_model(db, name=payload["name"], version=payload["version"],
                                     content=payload["content"], bundle_id=payload["bundleId"],
                                     manifest=payload["manifest"], staged=payload["staged"])
            db.execute("UPDATE journal SET payload=? WHERE id=?", (json.dumps(payload, sort_keys=True), jid))
    if audit is not None and payload.get("audit"):
        a = payload["audit"]
        audit.append(a["decision"], a["reason"], bundle=a["bundle"], manifest_digest=a["manifestDigest"],
                     signers=a["signers"], artifact=a["artifact"], version_before=a["versionBefore"],
                     version_after=a["versionAfter"], note=a.get("note"))
    with state.transaction() as db:
        db.execute("DELETE FROM journal WHERE id=?", (jid,))


# --------------------------------------------------------------------------- one bundle


@dataclass
class _Plan:
    artifact: Artifact
    content: str
    decision: Decision
    result: ArtifactResult
    entries: list[Entry] = field(default_factory=list)  # what must be read to apply it
    edge_bytes: int = 0  # bytes written under EDGE
    waiting: set[int] = field(default_factory=set)


class _Source:
    """Chunks from the site's store first, else from the packs at hand (both verified).

    :meth:`entry_source` reads ahead: while the caller hashes and writes one chunk, the next
    few are decompressed and checked against their ids in worker threads (zstd and BLAKE3
    release the GIL). The window bounds memory: at most ``READ_AHEAD`` chunks in flight."""

    READ_AHEAD = 3

    def __init__(self, store: ChunkStore, reader: PackReader) -> None:
        self.store, self.reader = store, reader
        self._pool: ThreadPoolExecutor | None = None

    def read_chunk(self, chunk: Chunk) -> bytes:
        return self._start(chunk).result()

    def _start(self, chunk: Chunk) -> Future[bytes]:
        """Begin fetching ``chunk``: sqlite and file descriptors stay on this thread, the
        CPU work (decompress, hash) goes to the pool."""
        done: Future[bytes] = Future()
        try:
            data = self.store.read_chunk(chunk)
            if data is not None:
                done.set_result(data)
                return done
            if not chunk.carried:
                raise VerificationError(f"chunk {chunk.id} is not in this (delta) bundle and this site does not hold it")
            stored = self.reader.read_stored(chunk)
        except FerryError as exc:
            done.set_exception(exc)
            return done
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1)),
                                            thread_name_prefix="ferry-chunk")
        return self._pool.submit(decompress_chunk, stored, chunk_id=chunk.id, size=chunk.size)

    def entry_source(self, entry: Entry, manifest: Manifest) -> "_ReadAhead":
        return _ReadAhead(self, [manifest.chunk(c) for c in entry.chunks])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class _ReadAhead:
    """A ChunkSource for one entry whose chunks are requested in order (as stream_entry does)."""

    def __init__(self, source: _Source, chunks: list[Chunk]) -> None:
        self._source, self._todo = source, deque(chunks)
        self._inflight: deque[tuple[str, Future[bytes]]] = deque()
        self._fill()

    def _fill(self) -> None:
        while self._todo and len(self._inflight) < _Source.READ_AHEAD:
            c = self._todo.popleft()
            self._inflight.append((c.id, self._source._start(c)))

    def read_chunk(self, chunk: Chunk) -> bytes:
        if not self._inflight or self._inflight[0][0] != chunk.id:  # out of order: no read-ahead
            return self._source.read_chunk(chunk)
        _, fut = self._inflight.popleft()
        self._fill()
        return fut.result()


class _Importer:
    def __init__(self, opts: ImportOptions, state: EdgeState, store: ChunkStore, audit: Any, progress: Any,
                 signed: SignedManifest, medium: BundleOnMedium, result: BundleResult) -> None:
        self.opts, self.state, self.store, self.audit, self.progress = opts, state, store, audit, progress
        self.signed, self.m, self.medium, self.result = signed, signed.manifest, medium, result
        b = self.m.bundle
        self.info = {"name": b.name, "id": b.id, "channel": b.channel, "sequence": b.sequence}
        self.signers = [s.keyid for s in signed.verdict.signers if s.counted]
        result.info, result.signers = self.info, self.signers
        self._images_target: Any = None

    def _record(self, decision: str, reason: str, plan: _Plan | None, *, after: str | None = None) -> None:
        art = None
        before = None
        if plan is not None:
            a = plan.artifact
            art = {"kind": a.kind, "name": a.name, "version": a.version, "content": plan.content}
            before = plan.result.installed
        note = self.opts.note
        if decision == "downgrade-forced":
            note = f"reason: {self.opts.reason}" + (f"; note: {self.opts.note}" if self.opts.note else "")
        _audit(self.audit, decision, reason, self.info, self.signed.digest, self.signers, art, before, after, note)

    # ---- the steps

    def run(self) -> None:
        m, state, result = self.m, self.state, self.result
        b = m.bundle
        others = [d for d in state.digests_for_bundle_id(b.id) if d != self.signed.digest]
        if others:
            result.reason = (f"bundle id {b.id!r} was imported before with different content "
                             f"(manifest {others[0]}); two bundles may not share an id")
            self._record("refused", result.reason, None)
            return
        status = state.bundle_status(self.signed.digest)
        too_old = bundle_age_problem(b.created, datetime.now(timezone.utc), self.opts.max_age)
        if too_old and status != "imported":
            result.reason = too_old
            self._record("refused", result.reason, None)
            return
        last = state.last_sequence(b.channel)
        fresh = bundle_freshness(last, status == "imported", b.sequence, allow_downgrade=self.opts.allow_downgrade)
        result.freshness = fresh
        if fresh == "repeat":
            result.status, result.reason = "repeat", "already imported; nothing to do"
            if not self.opts.dry_run:
                self._record("skipped", "bundle already imported", None)
            return
        stale = (f" (stale bundle: sequence {b.sequence} is not after {last}, the last imported on "
                 f"channel {b.channel!r})") if fresh == "stale" else ""
        if stale:
            self.progress.warn(f"bundle {b.name} {b.id} is stale: sequence {b.sequence} is not after {last}, "
                               f"the last imported on channel {b.channel!r}; its artifacts apply only where newer")

        plans = self._decide(stale)
        with PackReader(m, self.medium.volume_dirs) as reader:
            result.missing_volumes = reader.missing_volumes()
            for plan in plans:
                if plan.decision.applies:
                    self._needs(plan, reader)
            to_spill = self._spill_list(plans, reader)
            spill_bytes = sum(c.stored or 0 for c in to_spill)
            result.bytes_to_write = sum(p.edge_bytes for p in plans if p.result.status == "ready") + spill_bytes
            waiting = sorted({v for p in plans for v in p.waiting if p.result.status == "waiting"})
            if waiting:
                result.reason = "insert volume " + ", ".join(map(str, waiting)) + " to finish"
            if self.opts.dry_run:
                for p in plans:
                    if p.result.status == "ready":
                        p.result.status = "planned"
                result.status = "planned"
                return
            if not self._space_ok(result.bytes_to_write):
                for p in plans:
                    if p.result.status == "ready":
                        p.result.status, p.result.reason = "refused", "not enough free space (see the bundle)"
                return
            source = _Source(self.store, reader)
            try:
                for plan in plans:
                    if plan.result.status == "ready":
                        self._apply(plan, source)
                    elif plan.result.status == "same":
                        self._record("skipped", plan.result.reason, plan, after=plan.artifact.version)
                    elif plan.result.status in ("refused", "failed"):
                        self._record("refused", plan.result.reason, plan)
            finally:
                source.close()
            self._spill(plans, to_spill, reader)
            if self.opts.keep:
                for plan in plans:
                    if plan.artifact.kind == "model" and plan.result.status == "applied":
                        model_store.prune_models(state, self.store, plan.artifact.name, self.opts.keep)
        statuses = {p.result.status for p in plans}
        if statuses & {"waiting", "failed"}:
            result.status = "partial"
        elif "refused" in statuses:
            result.status = "settled"
        else:
            result.status = "imported"
        state.record_bundle(digest=self.signed.digest, bundle_id=b.id, name=b.name, channel=b.channel,
                            sequence=b.sequence, status=result.status, created=b.created)

    def _decide(self, stale: str) -> list[_Plan]:
        installed = self.state.installed()
        plans = []
        for a in sorted(self.m.artifacts, key=lambda a: (KIND_ORDER[a.kind], a.name)):
            content = a.content_digest
            before = installed.get(a.key)
            d = decide(before, a.version, content, allow_downgrade=self.opts.allow_downgrade)
            status = "ready" if d.applies else ("same" if d.action == "same" else "refused")
            r = ArtifactResult(a.kind, a.name, a.version, before.version if before else None, d.action, status,
                               d.reason + (stale if status != "ready" else ""))
            self.result.artifacts.append(r)
            plans.append(_Plan(a, content, d, r))
        return plans

    def _needs(self, plan: _Plan, reader: PackReader) -> None:
        """Fill ``plan.entries`` (what to read) and find out whether its chunks are at hand."""
        a = plan.artifact
        try:
            if a.kind == "model":
                if model_store.on_disk(self.state, a, plan.content):
                    plan.entries = []
                else:
                    plan.entries = model_store.files_to_write(self.state, a)
                plan.edge_bytes = sum(e.size for e in plan.entries)
            elif a.kind == "image":
                images, target = self._images()
                missing = images.missing_blobs(a, target)
                plan.entries = [e for e in a.entries if e.digest in missing]
                plan.edge_bytes = 0 if self.opts.registry else sum(e.size for e in plan.entries)
            else:
                plan.entries = list(a.entries)
                under_edge = self.opts.kubeconfig is None and self.opts.manifests_dir is None
                plan.edge_bytes = sum(e.size for e in plan.entries) if under_edge else 0
        except FerryError as exc:
            self._fail(plan, str(exc))
            return
        ids = {cid for e in plan.entries for cid in e.chunks}
        held = self.store.held(ids)
        absent = []
        for cid in sorted(ids - held):
            c = self.m.chunk(cid)
            if not c.carried:
                absent.append(cid)
            elif not reader.has(c):
                plan.waiting.add(self.m.packs[c.pack].volume)  # type: ignore[index]
        if absent:
            self._fail(plan, f"chunk {absent[0]} (and {len(absent) - 1} more) is not in this delta bundle and "
                             "this site does not hold it: the bundle was made for another receipt"
                       if len(absent) > 1 else
                       f"chunk {absent[0]} is not in this delta bundle and this site does not hold it: "
                       "the bundle was made for another receipt")
        elif plan.waiting:
            plan.result.status = "waiting"
            plan.result.reason = "insert volume " + ", ".join(map(str, sorted(plan.waiting)))
        plan.result.bytes = sum(e.size for e in plan.entries)

    def _spill_list(self, plans: list[_Plan], reader: PackReader) -> list[Chunk]:
        """Chunks of waiting artifacts that the volumes at hand carry and the site lacks."""
        ids = {cid for p in plans if p.result.status == "waiting" for e in p.entries for cid in e.chunks}
        ids -= self.store.held(ids)
        return [c for c in (self.m.chunk(i) for i in sorted(ids)) if reader.has(c)]

    def _space_ok(self, needed: int) -> bool:
        free = shutil.disk_usage(self.state.root).free
        if needed + SPACE_RESERVE <= free:
            return True
        from ferry.ui import human_bytes

        self.result.status = "refused"
        self.result.reason = (f"not enough free space under {self.state.root}: this import writes "
                              f"{human_bytes(needed)} (+{human_bytes(SPACE_RESERVE)} reserve), "
                              f"{human_bytes(free)} is free; nothing was written")
        self._record("refused", self.result.reason, None)
        return False

    def _fail(self, plan: _Plan, reason: str) -> None:
        a = plan.artifact
        plan.result.status, plan.result.action = "failed", "failed"
        plan.result.reason = reason if reason.startswith(f"{a.kind} {a.name!r}") else f"{a.kind} {a.name!r}: {reason}"

    def read_entry(self, source: _Source, advance: Callable[[int], None]) -> Callable[[Entry], Iterator[bytes]]:
        m = self.m

        def read(entry: Entry) -> Iterator[bytes]:
            label = entry_label(entry)
            try:
                for data in stream_entry(entry, m, source.entry_source(entry, m)):
                    advance(len(data))
                    yield data
            except VerificationError as exc:
                msg = str(exc)
                raise VerificationError(msg if msg.startswith(label) else f"{label}: {msg}") from None

        return read

    def _apply(self, plan: _Plan, source: _Source) -> None:
        a, r = plan.artifact, plan.result
        forced = plan.decision.action == "downgrade"
        try:
            with self.progress.task(f"{a.kind} {a.name} {a.version}", r.bytes or None) as task:
                read_entry = self.read_entry(source, task.advance)
                if a.kind == "model":
                    self._apply_model(plan, read_entry, forced)
                    return
                if a.kind == "image":
                    images, target = self._images()
                    r.ref = images.apply_image(a, read_entry, target)
                    self._index_layout_blobs(a)
                else:
                    self._apply_manifests(plan, read_entry)
                with self.state.transaction() as db:
                    set_installed(db, kind=a.kind, name=a.name, version=a.version, content=plan.content,
                                  bundle_id=self.m.bundle.id, manifest=self.signed.digest, ref=r.ref)
        except VerificationError as exc:
            if a.kind == "model":
                model_store.discard_staging(self.state, self.store, a.name, a.version)
            self._fail(plan, str(exc))
            self._record("refused", plan.result.reason, plan)
            return
        except model_store.NoSpace:
            raise
        except FerryError as exc:
            self._fail(plan, str(exc))
            self._record("refused", plan.result.reason, plan)
            return
        r.status = "applied"
        self._record("downgrade-forced" if forced else "applied", r.reason, plan, after=a.version)

    def _apply_model(self, plan: _Plan, read_entry: Callable[[Entry], Iterator[bytes]], forced: bool) -> None:
        a, r = plan.artifact, plan.result
        staged = not model_store.on_disk(self.state, a, plan.content)
        if staged:
            model_store.stage_model(self.state, self.store, a, self.m, read_entry)
        art = {"kind": a.kind, "name": a.name, "version": a.version, "content": plan.content}
        note = self.opts.note
        if forced:
            note = f"reason: {self.opts.reason}" + (f"; note: {self.opts.note}" if self.opts.note else "")
        payload = {"op": "model", "name": a.name, "version": a.version, "content": plan.content, "staged": staged,
                   "bundleId": self.m.bundle.id, "manifest": self.signed.digest,
                   "audit": {"decision": "downgrade-forced" if forced else "applied", "reason": r.reason,
                             "bundle": self.info, "manifestDigest": self.signed.digest, "signers": self.signers,
                             "artifact": art, "versionBefore": r.installed, "versionAfter": a.version,
                             "note": note}}
        jid = self.state.add_journal(payload)
        finish_model(self.state, self.store, self.audit, jid, payload)
        r.status = "applied"

    def _images(self) -> tuple[Any, Any]:
        if self._images_target is None:
            from .apply import images

            layout = None if self.opts.registry else self.state.root / OCI_DIR
            self._images_target = (images, images.ImageTarget(self.opts.registry, layout,
                                                              insecure_registries=self.opts.insecure_registries))
        return self._images_target

    def _index_layout_blobs(self, a: Artifact) -> None:
        """OCI layout blobs are exact bytes: they serve as the chunk store like model files."""
        if self.opts.registry:
            return
        with self.state.transaction() as db:
            for e in a.entries:
                hexd = (e.digest or "").partition(":")[2]
                rel = f"{OCI_DIR}/blobs/sha256/{hexd}"
                try:
                    st = os.stat(rel, dir_fd=self.state.root_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if st.st_size == e.size:
                    self.store.index_file(f"{OCI_DIR}/blobs/sha256", hexd, e, self.m, db=db)

    def _apply_manifests(self, plan: _Plan, read_entry: Callable[[Entry], Iterator[bytes]]) -> None:
        from .apply import kube

        gitops = None
        if self.opts.kubeconfig is None:
            gitops = self.opts.manifests_dir or (self.state.root / MANIFESTS_DIR)
        target = kube.ManifestTarget(gitops_dir=gitops, kubeconfig=self.opts.kubeconfig, context=self.opts.context)
        from .site import read_site

        site = read_site(self.state)
        if site.wec:  # a KubeStellar WEC: placement, createOnly, pruning, status back (importer.wec)
            from .wec import apply_placed

            placed = apply_placed(plan.artifact, read_entry, target, state=self.state, site=site,
                                  image_refs=self._image_refs(), origin=kube.origin_of(self.m.bundle),
                                  allow_downgrade=self.opts.allow_downgrade, no_prune=self.opts.no_prune)
            for line in placed.plan_lines():
                self.progress.info(f"{plan.artifact.name}: {line}")
            plan.result.reason += placed.summary()
            return
        result = kube.apply_manifests(plan.artifact, read_entry, target, image_refs=self._image_refs(),
                                      origin=kube.origin_of(self.m.bundle),
                                      allow_downgrade=self.opts.allow_downgrade)
        if result.skipped:
            plan.result.reason += "; left alone (newer on the cluster): " + ", ".join(o for o, _ in result.skipped)

    def _image_refs(self) -> dict[str, str]:
        """Image reference as a workload writes it -> the pinned edge reference, for every
        image of this bundle that is now at the edge."""
        refs: dict[str, str] = {}
        images_at_edge = [r for r in self.result.artifacts if r.kind == "image" and r.status in ("applied", "same")]
        if not images_at_edge:
            return refs
        images, target = self._images()
        for r in images_at_edge:
            a = self.m.artifact("image", r.name)
            ref = r.ref or images.pinned_ref(a, target)
            assert a.image is not None
            refs[f"{a.image.repository}:{a.image.tag}"] = ref
            if a.image.source:
                refs[a.image.source] = ref
        return refs

    def _spill(self, plans: list[_Plan], chunks: list[Chunk], reader: PackReader) -> None:
        """Keep the chunks waiting artifacts need, verified, for the run that brings the rest."""
        bad: dict[str, str] = {}
        for c in chunks:
            try:
                self.store.spill(c, reader.read_stored(c))
            except VerificationError as exc:
                bad[c.id] = str(exc)
        for p in plans:
            if p.result.status != "waiting":
                continue
            for e in p.entries:
                hit = next((cid for cid in e.chunks if cid in bad), None)
                if hit is not None:
                    self._fail(p, f"{entry_label(e)}: {bad[hit]}")
                    self._record("refused", p.result.reason, p)
                    break
