"""Verifying bundles without importing them: everything an import checks, for auditors.

Reuses the import path's own pieces, so the auditor's verdict is the importer's:
:func:`importer.medium.find_bundles` to gather volumes, :func:`manifests.bundle.open_manifest`
to check signatures and the manifest, :meth:`importer.medium.PackReader.read_chunk` for every
chunk and :func:`importer.content.stream_entry` to rebuild every file and blob against its
digests, and :func:`importer.policy.decide` for what an import would do (``--state``).

Unlike an import it never stops at the first problem: every bad chunk is recorded and the
check goes on, a missing volume is reported as missing (not as corruption), and a bundle
whose signatures or manifest fail still gets a report saying so.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from importer.content import CarriedChunks, stream_entry
from importer.medium import BundleOnMedium, PackReader, find_bundles
from importer.plan import REFUSING, BundlePlan, Status, Step
from importer.policy import REPEAT_REASON, Gate, Installed
from importer.report import (ArtifactReport, BundleReport, Check, ChunkCounts, EntryReport, Plan,
                             Report, SignerReport)
from manifests import __version__
from manifests.errors import ChunkError, FerryError, FormatError, PlaceError, UsageError, VerificationError
from manifests.model import Artifact, Chunk, Entry, Manifest
from manifests.progress import Progress, Task
from manifests.signing import MANIFEST_PAYLOAD_TYPE, SignatureFile, Verdict, verify
from manifests.trust import Trust

OK, BAD, MISSING, BASE = "ok", "bad", "missing", "held-by-base"


def _chunk_error(chunk_id: str, status: str, message: str) -> ChunkError:
    """The ChunkError for a chunk found ``status`` (missing, held by the base, or bad)."""
    return ChunkError(chunk_id, "corrupt" if status == BAD else "missing", message)


class CheckedChunks(CarriedChunks, Protocol):
    """Where ``ferry verify`` reads a bundle's chunks: the medium's :class:`importer.medium.PackReader`
    or a registry's :class:`importer.link.RegistryPacks` (``verify oci://``, no copy of the packs)."""

    manifest: Manifest

    def has(self, chunk: Chunk) -> bool:
        """Whether the pack holding carried ``chunk`` is at hand."""
        ...

    def pack_file(self, index: int) -> str:
        """The pack file ``manifest.packs[index]`` is read from, for messages."""
        ...

    def damaged_files(self) -> list[str]:
        """Pack files missing from volumes that were given."""
        ...

    def read_chunk(self, chunk: Chunk) -> bytes:
        """The raw bytes of carried ``chunk``, checked against its id; FerryError when bad."""
        ...


#: Given the verified manifest, the reader of its chunks for one bundle (opened by ``with``).
ChunkReaders = Callable[[Manifest], AbstractContextManager[CheckedChunks]]


@dataclass(frozen=True)
class Streamed:
    """A bundle whose signed files lie in a folder but whose chunks are read elsewhere (a
    registry, ``verify oci://``): the name the report gives it (the reference, as inputs and
    locations) and how its chunks are read."""

    name: str
    chunks: ChunkReaders


class _CheckingSource:
    """A ChunkSource over the packs that records every chunk's fate instead of stopping."""

    def __init__(self, reader: CheckedChunks, progress: Task | None = None) -> None:
        self.reader = reader
        self.status: dict[str, str] = {}
        self.problem: dict[str, str] = {}
        self.task = progress

    def _fail(self, chunk: Chunk, status: str, why: str) -> ChunkError:
        self.status[chunk.id], self.problem[chunk.id] = status, why
        return _chunk_error(chunk.id, status, why)

    def read_chunk(self, chunk: Chunk) -> bytes:
        known = self.status.get(chunk.id)
        if known is not None and known != OK:
            raise _chunk_error(chunk.id, known, self.problem[chunk.id])
        if not chunk.carried:
            raise self._fail(chunk, BASE, f"chunk {chunk.id} is held by the base (not carried)")
        if not self.reader.has(chunk):
            assert chunk.pack is not None
            pack = self.reader.manifest.packs[chunk.pack]
            if pack.volume in self.reader.volumes_at_hand():  # a damaged copy, not a missing volume
                raise self._fail(chunk, BAD, f"chunk {chunk.id}: pack file {self.reader.pack_file(chunk.pack)} is "
                                             f"missing from volume {pack.volume}, which was given: a damaged copy")
            raise self._fail(chunk, MISSING, f"chunk {chunk.id}: volume {pack.volume} (pack {pack.name}) not given")
        try:
            data = self.reader.read_chunk(chunk)
        except FerryError as exc:  # tampered, truncated, not a regular file, ...
            raise self._fail(chunk, BAD, str(exc)) from None
        except OSError as exc:
            raise self._fail(chunk, BAD, f"chunk {chunk.id}: read error: {exc.strerror or exc}") from None
        self.status[chunk.id] = OK
        if self.task is not None:
            self.task.advance(chunk.size)
        return data

    def classify(self, manifest: Manifest, chunk_id: str) -> str:
        if chunk_id not in self.status:
            try:
                self.read_chunk(manifest.chunk(chunk_id))
            except VerificationError:
                pass
        return self.status[chunk_id]


def _check_entry(entry: Entry, manifest: Manifest, source: _CheckingSource) -> EntryReport:
    sha = hashlib.sha256()

    def report(status: str, reason: str) -> EntryReport:
        return EntryReport(size=entry.size, blake3=entry.blake3, status=status, reason=reason,  # type: ignore[arg-type]
                           path=entry.path, digest=entry.digest, media_type=entry.media_type,
                           sha256=f"sha256:{sha.hexdigest()}" if status == OK and entry.path is not None else None)

    try:
        for piece in stream_entry(entry, manifest, source):
            sha.update(piece)
        # a model file's signed sha256 (format 1.3, docs/bundle-format.md 3.2.3), which the edge
        # publishes without hashing, is checked here in full
        if entry.sha256 is not None and f"sha256:{sha.hexdigest()}" != entry.sha256:
            raise VerificationError(f"{entry.path}: rebuilt file does not match its signed sha256 {entry.sha256}")
        return report(OK, "rebuilt; BLAKE3" + (" and sha256 match" if entry.digest or entry.sha256 else " matches"))
    except VerificationError as exc:
        failure = str(exc)
    statuses = [source.classify(manifest, cid) for cid in entry.chunks]  # every chunk, never stop
    if BAD in statuses:
        first = next(cid for cid, s in zip(entry.chunks, statuses) if s == BAD)
        return report(BAD, f"{statuses.count(BAD)} bad chunk(s); first: {source.problem[first]}")
    if MISSING in statuses:
        return report(MISSING, f"{statuses.count(MISSING)} chunk(s) on a volume not given")
    if BASE in statuses:
        return report(BASE, f"{statuses.count(BASE)} chunk(s) held by the delta's base; carried ones verified")
    return report(BAD, failure)  # every chunk fine, yet the whole does not match its digest


def _check_artifact(a: Artifact, manifest: Manifest, source: _CheckingSource, step: Step | None,
                    preview: Any = None) -> ArtifactReport:
    entries = tuple(_check_entry(e, manifest, source) for e in a.entries)
    ids = list(dict.fromkeys(cid for e in a.entries for cid in e.chunks))
    counts = {OK: 0, BAD: 0, MISSING: 0, BASE: 0}
    for cid in ids:
        counts[source.status[cid]] += 1
    bad = tuple((cid, source.problem[cid]) for cid in ids if source.status[cid] == BAD)
    statuses = {e.status for e in entries}
    status: Literal["ok", "bad", "incomplete"] = "bad" if BAD in statuses else "incomplete" if MISSING in statuses else "ok"
    digest = a.content_digest
    plan = None
    if step is not None:  # the import's own plan (importer.run.plan_bundle)
        would, reason, lines, detail = step.status, step.reason, (), None
        if isinstance(preview, FerryError):  # the import would stop this set (importer.run.preview_sets)
            would, reason = Status.FAILED, f"manifests {a.name!r}: {preview}"
        elif preview is not None:  # a manifest set at a KubeStellar WEC: per object (importer.wec)
            lines, detail = tuple(preview.plan), preview.plan_json
        refused = would in REFUSING
        plan = Plan(step.decision.action, reason, step.installed, refused, would.value, lines, detail)
    return ArtifactReport(
        kind=a.kind, name=a.name, version=a.version, size=a.size, content_digest=digest, status=status,
        chunks=ChunkCounts(total=len(ids), ok=counts[OK], bad=counts[BAD], missing=counts[MISSING],
                           held_by_base=counts[BASE]),
        entries=entries, bad_chunks=bad, image=a.image.to_dict() if a.image else None, plan=plan)


def _signers(verdict: Verdict) -> tuple[SignerReport, ...]:
    return tuple(SignerReport(s.keyid, s.name, s.valid, s.counted, s.reason) for s in verdict.signers)


def _open(found: BundleOnMedium, trust: Trust) -> tuple[list[Check], Manifest | None, Verdict | None]:
    """open_manifest decides; when it refuses, the pure steps are repeated only to say which
    failed and to still show every signer. Following docs/bundle-format.md section 6, a
    manifest whose signatures do not verify is never parsed (``ferry inspect`` shows its
    unverified claims), and nothing of a refused bundle is read further."""
    try:
        signed = found.open(trust)
        return ([Check("signature-file", True, "parsed"),
                 Check("signatures", True, signed.verdict.summary),
                 Check("manifest", True, f"format {signed.manifest.format_version}, limits and references checked")],
                signed.manifest, signed.verdict)
    except FerryError as exc:
        refusal = str(exc)
    try:
        sigfile = SignatureFile.from_bytes(found.signature_bytes)
    except FormatError as exc:
        return [Check("signature-file", False, str(exc)), Check("signatures", False, "no readable signature file"),
                Check("manifest", False, _NOT_PARSED)], None, None
    checks = [Check("signature-file", True, "parsed")]
    verdict = verify(found.manifest_bytes, sigfile, trust, channel=None, payload_type=MANIFEST_PAYLOAD_TYPE)
    if not verdict.ok:
        return checks + [Check("signatures", False, verdict.summary), Check("manifest", False, _NOT_PARSED)], None, verdict
    try:
        manifest = Manifest.from_bytes(found.manifest_bytes)
    except FormatError as exc:
        return checks + [Check("signatures", True, verdict.summary), Check("manifest", False, str(exc))], None, verdict
    verdict = verify(found.manifest_bytes, sigfile, trust, channel=manifest.bundle.channel,
                     payload_type=MANIFEST_PAYLOAD_TYPE)
    checks += [Check("signatures", verdict.ok, verdict.summary or refusal),
               Check("manifest", True, f"format {manifest.format_version}, limits and references checked")]
    if verdict.ok:  # open_manifest refused for a reason the steps did not repeat
        checks.append(Check("signatures", False, refusal))
    return checks, None, verdict


_NOT_PARSED = ("not parsed: a manifest is read only after its signatures verify "
               "(ferry inspect shows its unverified claims)")


#: ``verify --state``'s: given the bundle's manifest digest, its verified manifest and the reader of
#: its chunks, the import's gate (:func:`importer.policy.gate`), and, when the gate lets the bundle
#: through to be planned, the import's plan with its per-object placement (else None, {}).
Planner = Callable[[str, Manifest, CarriedChunks],
                   tuple[Gate, BundlePlan | None, Mapping[tuple[str, str], Any]]]


def verify_bundle(found: BundleOnMedium, trust: Trust, *,
                  planner: Planner | None = None,
                  progress: Progress | None = None, streamed: Streamed | None = None) -> BundleReport:
    """Every check on one bundle; never raises for what the medium holds. With ``planner``
    (``verify --state``), the bundle first goes through the import's gate (a reused bundle id,
    a replay of an imported bundle, a stale sequence: :func:`importer.policy.gate`), whose
    refusal is the failed check ``plan`` in the import's words; a bundle let through has each
    artifact carry what an import would do: the import's own plan for the volumes given.

    Args:
        found: the bundle's signed files (and, on a medium, its packs). trust: what to verify against.
        planner: ``verify --state``'s. progress: where the work is reported (None: nowhere).
        streamed: where the chunks are read (:class:`importer.link.RegistryPacks` for ``oci://``)
            and the bundle's name in the report; None: the packs beside the signed files
            (:class:`importer.medium.PackReader`).
    Returns:
        the bundle's report.
    Raises:
        RegistryError (exit 2) / ChunkError (exit 1): a registry failed a range, or kept serving
        bytes that do not match a chunk id, after its retries (as an import: no report).
    """
    checks, manifest, verdict = _open(found, trust)
    locations = (streamed.name,) if streamed is not None else tuple(str(v) for v in found.volume_dirs)
    signers = _signers(verdict) if verdict else ()
    threshold = verdict.threshold if verdict else trust.threshold
    if manifest is None:
        return BundleReport(manifest_digest=found.digest, locations=locations, checks=tuple(checks),
                            signers=signers, threshold=threshold)
    total = sum(a.size for a in manifest.artifacts)
    task_cm = progress.task(f"verifying {manifest.bundle.name}", total) if progress else nullcontext()
    opened = streamed.chunks(manifest) if streamed is not None else PackReader(manifest, found.volume_dirs)
    with opened as reader, task_cm as task:
        missing = reader.missing_volumes()
        damaged = reader.damaged_files()
        source = _CheckingSource(reader, task)
        steps: dict[tuple[str, str], Step] = {}
        previews: Mapping[tuple[str, str], Any] = {}
        gated: Gate | None = None
        if planner is not None:
            gated, bundle_plan, previews = planner(found.digest, manifest, reader)
            steps = {s.key: s for s in bundle_plan.steps} if bundle_plan is not None else {}
        artifacts = [_check_artifact(a, manifest, source, steps.get(a.key), previews.get(a.key))
                     for a in manifest.artifacts]
        failure = getattr(reader, "failure", None)  # a registry that gave up: not a finding about the bundle
        if failure is not None:
            raise failure
    held = sum(1 for c in manifest.chunks if not c.carried)
    if damaged:  # a pack missing from a volume that is present: damage, not a volume to come
        checks.append(Check("packs", False, "; ".join(f"pack file {f} is missing from a volume that was given "
                                                        "(a damaged copy)" for f in damaged)))
    if missing:
        also = f"; damaged: pack file(s) {', '.join(damaged)} missing" if damaged else ""
        n_missing = sum(1 for s in source.status.values() if s == MISSING)
        checks.append(Check("volumes", False, f"volume(s) {', '.join(map(str, missing))} of {manifest.volumes} "
                                              f"not given: {n_missing} chunk(s) missing (not corrupt){also}"))
    elif damaged:
        checks.append(Check("volumes", False, f"all {manifest.volumes} volume(s) given, but damaged: pack file(s) "
                                              f"{', '.join(damaged)} missing"))
    else:
        checks.append(Check("volumes", True, f"all {manifest.volumes} volume(s) given"))
    refused = [a for a in artifacts if a.plan is not None and a.plan.refused]
    if gated is not None and gated.freshness is None:  # the import refuses the bundle, as these words
        checks.append(Check("plan", False, f"an import into the edge state would refuse the bundle: {gated.refusal}"))
    elif gated is not None and gated.freshness == "repeat":  # the import would skip it (exit 0)
        checks.append(Check("plan", True, f"{REPEAT_REASON} (ferry import would skip this bundle)"))
    elif refused:  # the import (and its dry run) would exit 1: so does verify --state (one rule, importer.plan.REFUSING)
        a = refused[0]
        checks.append(Check("plan", False, f"an import into the edge state would refuse {len(refused)} artifact(s) "
                                           f"(as ferry import --dry-run); first: {a.kind} {a.name} {a.version}: "
                                           f"{a.plan.status} [{a.plan.action}] {a.plan.reason}"))  # type: ignore[union-attr]
    bad = [(cid, why) for a in artifacts for cid, why in a.bad_chunks]
    bad_ids = {cid for cid, _ in bad}
    carried = sum(1 for c in manifest.chunks if c.carried)
    if bad_ids:
        checks.append(Check("chunks", False, f"{len(bad_ids)} of {carried} carried chunk(s) bad; first: {bad[0][1]}"))
    else:
        checks.append(Check("chunks", True, f"{carried - sum(1 for s in source.status.values() if s == MISSING)} "
                                            f"carried chunk(s) verified" + (f", {held} held by base" if held else "")))
    bad_entries = [(a, e) for a in artifacts for e in a.entries if e.status == BAD]
    if bad_entries:
        a, e = bad_entries[0]
        checks.append(Check("content", False, f"{len(bad_entries)} file(s)/blob(s) do not match their digests; "
                                              f"first: {a.kind} {a.name}: {e.label}: {e.reason}"))
    else:
        n = sum(1 for a in artifacts for e in a.entries if e.status == OK)
        checks.append(Check("content", True, f"{n} file(s)/blob(s) rebuilt and matched their digests"))
    return BundleReport(
        manifest_digest=found.digest, locations=locations, checks=tuple(checks), signers=signers,
        threshold=threshold, info=manifest.bundle.to_dict(), format_version=manifest.format_version,
        volumes_expected=manifest.volumes, volumes_missing=tuple(missing),
        base=manifest.base.to_dict() if manifest.base else None, artifacts=tuple(artifacts))


def read_installed_for(state_dir: Path) -> dict[tuple[str, str], Installed]:
    """What the edge holds, via the import side's reader (the one place that knows the state)."""
    if not Path(state_dir).exists():  # a site with nothing imported yet: as ``import --dry-run`` plans it
        return {}
    if not Path(state_dir).is_dir():
        raise PlaceError("state", str(state_dir), f"--state {state_dir}: not a folder")
    from importer.state import read_installed

    return read_installed(Path(state_dir))


def verify_paths(paths: Iterable[Path], trust: Trust, *, state_dir: Path | None = None,
                 progress: Progress | None = None, streamed: Mapping[Path, Streamed] | None = None) -> Report:
    """Verify every bundle found under ``paths``; a path or volume folder that holds no readable
    bundle (junk beside a bundle, docs/bundle-format.md section 1) becomes a failed ``medium``
    check in the report rather than an exception, and every bundle beside it is still verified.

    Args:
        paths: bundle folders or volume folders (volumes of one bundle are merged).
        trust: the trust policy (:func:`manifests.trust.load_trust`).
        state_dir: an edge state folder; when given, each artifact also says what
            ``ferry import`` into that edge state would do: the import's own plan
            (:func:`importer.run.plan_bundle`), read-only.
        progress: where long work is reported (None: nowhere).
        streamed: for a bundle whose signed files lie in one of these folders (a registry's,
            :func:`importer.link.open_link`), how its chunks are read and what the report
            calls it, in inputs and locations (:func:`verify_bundle`).
    Returns:
        the report (schema ``manifests/schema/verify-report.schema.json``): findings, never
        exceptions, for what the media hold.
    Raises:
        PlaceError: ``state_dir`` is not an edge state folder. RegistryError / ChunkError: as
        :func:`verify_bundle`, for a bundle read from a registry.
    """
    paths = [Path(p) for p in paths]
    others = dict(streamed or {})
    if state_dir is not None:
        read_installed_for(state_dir)  # refuses a state folder that is not there
        with _Planner(Path(state_dir)) as planner:
            return _verify_paths(paths, trust, planner, state_dir, progress, others)
    return _verify_paths(paths, trust, None, None, progress, others)


class _Planner:
    """``verify --state``: gates and plans as ``import --dry-run`` with default options would (read-only)."""

    def __init__(self, state_dir: Path) -> None:
        from importer.apply import Context, targets_for
        from importer.fsroot import FsRoot
        from importer.state import EdgeState
        from importer.store import ChunkStore

        self.state = EdgeState.open_for_plan(state_dir)
        self.store = ChunkStore(self.state)
        self.edge = FsRoot.open(self.state.root) if self.state.root.is_dir() else None
        self.ctx = Context(state=self.state, store=self.store, edge=self.edge)
        self.targets = targets_for(self.ctx)

    def __call__(self, digest: str, manifest: Manifest,
                 reader: CarriedChunks) -> tuple[Gate, BundlePlan | None, Mapping[tuple[str, str], Any]]:
        """The import's gate (:func:`importer.policy.gate`, with the import's default options);
        for a bundle it lets through, the import's plan, and for each ready manifest set at a
        KubeStellar WEC its per-object plan (:func:`importer.run.preview_sets`, the call
        ``import --dry-run`` makes); else (gate, None, {})."""
        from datetime import datetime, timezone

        from importer.policy import gate
        from importer.run import plan_bundle, preview_sets

        b = manifest.bundle
        verdict = gate(self.state, digest, b.id, b.channel, b.sequence, b.created, now=datetime.now(timezone.utc))
        if verdict.freshness in (None, "repeat"):  # the import stops here: nothing is planned
            return verdict, None, {}
        plan = plan_bundle(self.ctx, self.targets, manifest, reader, stale=verdict.stale)
        return verdict, plan, preview_sets(self.ctx, self.targets, manifest, reader, plan)

    def __enter__(self) -> _Planner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.edge is not None:
            self.edge.close()
        self.store.close()
        self.state.close()


def _streamed(found: BundleOnMedium, streamed: dict[Path, Streamed]) -> Streamed | None:
    """The entry of ``streamed`` whose folder holds ``found`` (itself or its ``vol-NNN`` folders)."""
    for folder, entry in streamed.items():
        if any(d == folder or folder in d.parents for d in found.volume_dirs):
            return entry
    return None


def _verify_paths(paths: list[Path], trust: Trust, planner: _Planner | None, state_dir: Path | None,
                  progress: Progress | None, streamed: dict[Path, Streamed]) -> Report:
    from manifests.model import utc_now

    skipped: list[str] = []
    try:
        found = find_bundles(paths, skipped=skipped)  # volumes of one bundle merged
    except FerryError:  # nothing readable at all: every problem is in ``skipped``
        found = []
    checks = [Check("medium", False, why) for why in skipped]
    reports = tuple(verify_bundle(b, trust, planner=planner, progress=progress,
                                  streamed=_streamed(b, streamed))
                    for b in found)
    trust_doc = {"threshold": trust.threshold, "channelThresholds": dict(trust.channel_thresholds),
                 "policy": trust.policy, "revoked": sorted(trust.revoked),
                 "keys": [{"keyid": kid, "name": k.name,
                           "channels": sorted(k.channels) if k.channels is not None else None,
                           "refused": k.refused}
                          for kid, k in sorted(trust.keys.items())]}
    return Report(ferry_version=__version__, verified_at=utc_now(),
                  inputs=tuple(streamed[p].name if p in streamed else str(p) for p in paths),
                  trust=trust_doc, bundles=reports, checks=tuple(checks),
                  state=str(state_dir) if state_dir is not None else None, host=socket.gethostname())


__all__ = ["verify_paths", "verify_bundle"]
