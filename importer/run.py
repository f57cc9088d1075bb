"""``ferry import``: find bundles, verify, plan, carry the plan out, record, report.

Orchestration only: the decisions are :mod:`importer.plan`'s (a pure function), the writing
is the apply targets' (:mod:`importer.apply`, one per artifact kind). For each bundle (one
manifest digest, however many volumes carry it):

1. signatures against the trust (before the manifest is parsed), then the manifest's limits;
   a bundle id seen before with other content is refused;
2. the ledger first: a bundle imported completely before is a no-op (no pack is opened);
   :func:`importer.policy.gate`: a reused bundle id, the age limit, the channel sequence rule
   (the gate ``verify --state`` runs too);
3. each target says what it lacks; with the chunks the site holds and the packs and volumes
   at hand, :func:`importer.plan.make_plan` makes the plan (printed as is by ``--dry-run``);
4. free space against the plan's bytes to write; then each ready step in apply order,
   verified chunk by chunk and file by file while it is written, made visible only when
   whole; a manifest set whose image or model failed meanwhile is held back; chunks of
   waiting artifacts go to the spill store for the run that brings the rest;
5. the ledger, the journal (for steps outside a transaction) and one audit entry per decision.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from manifests.budget import MEMORY_BUDGET, check as check_budget, import_sizes, usable_cpus
from manifests.bundle import SignedManifest
from manifests.errors import FerryError, UsageError, VerificationError
from manifests.link import OciRef
from manifests.model import Manifest
from manifests.progress import Progress

from .apply import Applied, ApplyTarget, Context, Job, targets_for
from .trust_store import trust_for_import
from .apply import models as model_store
from .apply.kube import origin_of
from .content import CarriedChunks, StoreThenPacks, stored_frame
from .fsroot import FsRoot
from .medium import BundleOnMedium, PackReader, find_bundles
from .plan import (LIFTABLE, REFUSING, BundlePlan, BundleStatus, Needs, Present, Status, Step, decisions, holding,
                   make_plan, still_needed)
from .policy import REPEAT_REASON, gate
from .state import EdgeState, set_installed
from .store import ChunkStore

#: Room kept free beyond the bytes to write (ledger, journal, audit trail).
SPACE_RESERVE = 16 * 1024 * 1024


@dataclass
class ImportOptions:
    """The options of ``ferry import`` (see ``ferry import --help``); ``atomic``: apply the
    whole bundle or nothing of it (docs/operator-guide.md, "All or nothing")."""

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
    allow_variant: bool = False
    reason: str | None = None
    keep: int | None = None
    note: str | None = None
    max_age: timedelta | None = None
    atomic: bool = False
    no_prune: bool = False
    #: bundles to read from a registry (``oci://HOST/REPO:TAG``), and ``--limit-rate`` in bytes/s
    links: list[OciRef] = field(default_factory=list)
    limit_rate: int | None = None
    memory_budget: int = MEMORY_BUDGET  # bytes; read-ahead and threads are sized from it (manifests.budget)


@dataclass
class ArtifactResult:
    """What became of one artifact (:class:`importer.plan.Status`)."""

    kind: str
    name: str
    version: str
    installed: str | None
    action: str
    status: Status
    reason: str
    bytes: int = 0
    ref: str | None = None
    waiting_volumes: list[int] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    #: the unit (:attr:`manifests.model.Artifact.key`) this result is for; not in the JSON
    unit: tuple[str, str] = ("", "")
    #: a manifest set at a KubeStellar WEC: the plan's lines, per object (importer.wec), and its JSON
    placement: list[str] = field(default_factory=list)
    placement_json: dict[str, Any] | None = None

    @classmethod
    def of(cls, step: Step) -> ArtifactResult:
        a = step.artifact
        action = "failed" if step.status is Status.FAILED else step.decision.action
        return cls(a.kind, a.name, a.version, step.installed, action, step.status, step.reason, step.bytes,
                   waiting_volumes=list(step.waiting_volumes), missing_files=list(step.missing_files), unit=a.key)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "version": self.version, "installed": self.installed,
                "action": self.action, "status": self.status.value, "reason": self.reason, "bytes": self.bytes,
                "ref": self.ref, "waitingVolumes": self.waiting_volumes, "missingFiles": self.missing_files,
                "placement": self.placement_json}


@dataclass
class BundleResult:
    """What became of one bundle (:class:`importer.plan.BundleStatus`)."""

    digest: str
    volumes: list[str]
    status: BundleStatus = BundleStatus.REFUSED
    reason: str = ""
    info: dict[str, Any] | None = None
    freshness: str | None = None
    signers: list[str] = field(default_factory=list)
    missing_volumes: list[int] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    artifacts: list[ArtifactResult] = field(default_factory=list)
    bytes_to_write: int = 0
    #: for a bundle read from a registry: what fetching it cost (:class:`importer.link.FetchStats`)
    fetched: dict[str, Any] | None = None

    @property
    def still_needed(self) -> str:
        """What this bundle waits for, in one phrase ("" when nothing)."""
        if not any(a.status in (Status.WAITING, Status.HELD) for a in self.artifacts):
            return ""
        volumes = sorted({v for a in self.artifacts for v in a.waiting_volumes})
        files = sorted({f for a in self.artifacts for f in a.missing_files})
        return still_needed(volumes, files)

    def to_json(self) -> dict[str, Any]:
        return {"manifestDigest": self.digest, "volumes": self.volumes, "status": self.status.value,
                "reason": self.reason, "bundle": self.info, "freshness": self.freshness,
                "signers": self.signers, "missingVolumes": self.missing_volumes,
                "missingFiles": self.missing_files, "bytesToWrite": self.bytes_to_write,
                "artifacts": [a.to_json() for a in self.artifacts], "fetched": self.fetched}


@dataclass
class ImportReport:
    state: str
    dry_run: bool
    bundles: list[BundleResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # folders on the medium that are not part of a bundle

    @property
    def exit_code(self) -> int:
        """1 when anything was refused or failed; else 3 (incomplete) when an artifact waits
        for a volume or file, or is held back by one that waits; else 0
        (docs/operator-guide.md, "Exit codes")."""
        from manifests.errors import EXIT_INCOMPLETE, EXIT_OK, EXIT_REFUSED

        artifacts = [a for b in self.bundles for a in b.artifacts]
        if any(b.status is BundleStatus.REFUSED for b in self.bundles) or any(a.status in REFUSING for a in artifacts):
            return EXIT_REFUSED
        if any(a.status in (Status.WAITING, Status.HELD) for a in artifacts):
            return EXIT_INCOMPLETE
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "dryRun": self.dry_run, "exitCode": self.exit_code,
                "bundles": [b.to_json() for b in self.bundles], "warnings": list(self.warnings)}


# --------------------------------------------------------------------------- entry point


def run_import(opts: ImportOptions, progress: Progress) -> ImportReport:
    """Import every bundle found under ``opts.paths`` into the edge state ``opts.state``.

    Args:
        opts: bundle or volume folders, trust policy files, the edge state folder and the
            apply targets (registry, kubeconfig or GitOps folder); ``dry_run`` plans only.
        progress: where long work and events are reported (:class:`manifests.progress.Progress`).
    Returns:
        per bundle and artifact what was applied, skipped, refused, held or is waiting for
        volumes; its ``exit_code`` is the command's (0 done, 1 refused or failed, 3 incomplete).
    Raises:
        VerificationError (exit 1): signatures, trust or content. PolicyError (exit 1): the
        site's policy refused. IncompleteError (exit 3): volumes are missing. UsageError,
        PlaceError, RegistryError, ClusterError (exit 2): options, I/O, targets (a missing or
        unreadable ``--kubeconfig``, an unknown ``--context``, a ``--manifests-dir`` that is not a
        folder: before anything is read, dry run included).
    """
    check_budget(opts.memory_budget)
    if opts.allow_downgrade and not (opts.reason and opts.reason.strip()):
        raise UsageError("--allow-downgrade needs --reason TEXT: say why, it goes into the audit trail")
    if opts.reason and not opts.allow_downgrade:
        raise UsageError("--reason is only for --allow-downgrade")
    if opts.keep is not None and opts.keep < 1:
        raise UsageError("--keep must be at least 1 (the current version is never removed)")
    if opts.context and not opts.kubeconfig:
        raise UsageError("--context needs --kubeconfig")
    from .apply.kube import check_target

    check_target(opts.kubeconfig, opts.context, opts.manifests_dir)  # a dry run too; no cluster is contacted
    report = ImportReport(state=str(opts.state), dry_run=opts.dry_run)
    linked: list[Any] = []
    try:
        for ref in opts.links:  # signatures verified first; chunks only as the import reads them
            linked.append(_from_registry(opts, ref, progress))
        _import_found(opts, progress, report, linked)
    finally:
        for link in linked:
            link.close()
    for link in linked:
        for result in report.bundles:
            if result.digest == link.signed.digest:
                result.fetched = link.stats.to_json()
                result.volumes = [link.stats.reference]
    return report


def _import_found(opts: ImportOptions, progress: Progress, report: ImportReport, linked: list[Any]) -> None:
    """The bundles under ``opts.paths`` and in ``linked`` (:class:`importer.link.Linked`), into ``report``."""
    paths = list(opts.paths) + [link.folder for link in linked]
    found = find_bundles(paths, skipped=report.warnings) if paths else []  # junk beside a bundle never stops it
    for warning in report.warnings:
        progress.warn(warning)
    # the trust hook: pinned policy + updates the bundles carry, or the --trust files
    trust = trust_for_import(list(opts.trust), opts.state, found, dry_run=opts.dry_run, note=opts.note)

    if opts.dry_run:
        state = EdgeState.open_for_plan(opts.state)
        audit = None
    else:
        audit = _audit_trail(opts.state)
        state = EdgeState.open(opts.state)
    store = ChunkStore(state)
    edge = FsRoot.open(state.root) if state.root.is_dir() else None
    try:
        if audit is not None:  # None only for a dry run
            check = audit.verify()
            if not check.ok:  # decisions cannot be recorded: refuse before changing anything
                raise VerificationError(f"audit trail under {opts.state} is not whole ({check.summary}); nothing was "
                                        "imported: run `ferry audit verify --state` and keep the evidence")
            recover(state, store, audit, progress)
        ctx = Context(state=state, store=store, edge=edge, registry=opts.registry,
                      insecure_registries=opts.insecure_registries, manifests_dir=opts.manifests_dir,
                      kubeconfig=opts.kubeconfig, context=opts.context, allow_downgrade=opts.allow_downgrade,
                      no_prune=opts.no_prune, audit=audit, allow_variant=opts.allow_variant)
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
        links = {link.signed.digest: link for link in linked}
        verified.sort(key=lambda t: (t[0].manifest.bundle.channel, t[0].manifest.bundle.sequence))
        for signed, medium, result in verified:
            run = _BundleRun(opts, ctx, progress, signed, medium, result, links.get(medium.digest))
            try:
                run.run()
            except model_store.NoSpace:
                raise
            except FerryError as exc:  # one bundle's failure never stops the others
                if run.fetch_failure is not None:  # the registry failed: one line, as before anything was applied
                    raise run.fetch_failure from None
                result.status, result.reason = BundleStatus.REFUSED, str(exc)
                try:
                    _audit(audit, "refused", str(exc), None, medium.digest, [], None, None, None, opts.note)
                except FerryError as audit_exc:
                    result.reason += f" (not audited: {audit_exc})"
        if not opts.dry_run:
            store.collect_spill()
    finally:
        if edge is not None:
            edge.close()
        store.close()
        state.close()


def _from_registry(opts: ImportOptions, ref: OciRef, progress: Progress) -> Any:
    """The bundle ``ref`` with its signatures verified against the import's trust before any
    pack byte is fetched (:func:`importer.link.open_link`); its chunks are fetched only as the
    import reads them, those the site holds never (:class:`importer.link.RegistryPacks`)."""
    from .link import open_link

    def trust(volume_dirs: list[Path]) -> Any:
        holder = BundleOnMedium(b"", b"", "", volume_dirs=volume_dirs)
        return trust_for_import(list(opts.trust), opts.state, [holder], dry_run=True, note=opts.note)

    return open_link(ref, trust, progress, insecure=opts.insecure_registries, rate=opts.limit_rate)


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


def recover(state: EdgeState, store: ChunkStore, audit: Any, progress: Progress) -> None:
    """Roll forward what an interrupted run decided but did not finish (see importer.state)."""
    for jid, payload in state.journal():
        if payload.get("op") == "model":
            progress.info(f"finishing model {payload['name']} {payload['version']} (an earlier import was interrupted)")
            model_store.finish_model(state, store, audit, jid, payload)


# --------------------------------------------------------------------------- planning


def _place(ctx: Context, kind: str) -> str:
    """Where the apply target of ``kind`` keeps what it holds, as messages name it."""
    if kind == "image":
        return f"the site registry {ctx.registry}" if ctx.registry else "the edge's OCI layout (EDGE/oci)"
    return ""


def plan_bundle(ctx: Context, targets: dict[str, ApplyTarget], manifest: Manifest, reader: CarriedChunks, *,
                stale: str = "", atomic: bool = False) -> BundlePlan:
    """Ask each target what it lacks (only for artifacts the version rule applies), read what the
    site holds and what the volumes at hand carry, then :func:`importer.plan.make_plan`.

    The one way a plan is made: ``import``, ``import --dry-run`` and ``verify --state``
    (:func:`importer.verify.verify_paths`) all call it. Asks only; changes nothing.

    Args:
        ctx: the import's context (state may be read-only). targets: :func:`importer.apply.targets_for`.
        manifest: the verified manifest. reader: where the carried chunks are read (the packs of
            the volumes given).
        stale, atomic: as :func:`importer.plan.make_plan`.
    """
    from .site import read_site

    installed = ctx.state.installed()
    site = read_site(ctx.state).resources  # what `ferry site set` recorded: a variant must fit it
    verdicts = decisions(manifest, installed, allow_downgrade=ctx.allow_downgrade, site=site,
                         allow_variant=ctx.allow_variant)
    needs: dict[tuple[str, str], Needs] = {}
    for a in manifest.artifacts:
        if not verdicts[a.key].applies:
            continue
        target = targets[a.kind]
        try:
            entries = target.needs(a)
            needs[a.key] = Needs(tuple(entries), target.bytes_to_write(a, entries), place=_place(ctx, a.kind))
        except FerryError as exc:
            needs[a.key] = Needs(problem=str(exc))
    ids = {cid for n in needs.values() for e in n.entries for cid in e.chunks}
    present = Present(held=frozenset(ctx.store.held(ids)), packs=reader.packs_at_hand(),
                      volumes=reader.volumes_at_hand(), needs=needs)
    return make_plan(manifest, installed, present, allow_downgrade=ctx.allow_downgrade, stale=stale, atomic=atomic,
                     site=site, allow_variant=ctx.allow_variant)


def edge_image_refs(state: EdgeState, manifest: Manifest, targets: dict[str, Any],
                    placed: dict[tuple[str, str], str | None], registry: str | None,
                    pending_models: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
    """Image reference as a workload writes it -> the pinned edge reference, for every image
    at the edge: each image tag the ledger holds (``repository:tag`` -> the reference recorded
    when it was applied, so a set that names an image an earlier bundle brought is pinned too),
    then this bundle's images in ``placed`` (artifact key -> the reference its apply returned,
    or None for the one :func:`importer.apply.images.pinned_ref` gives), and every model version
    the site has published where this import puts images (``models/<name>:<tag>``,
    :func:`importer.apply.modelpack.model_refs`). The one rule the import and its dry run
    (:func:`preview_sets`) pin workloads by. A dry run passes ``pending_models`` ((name, version)
    the bundle would install and publish): their digests are known only once published, so they
    map to a reference that says so (never written anywhere: a dry run writes nothing)."""
    refs: dict[str, str] = {row.name: row.ref for row in state.installed_rows()
                            if row.kind == "image" and row.ref}
    for a in manifest.artifacts:
        if a.kind != "image" or a.key not in placed:
            continue
        assert a.image is not None
        ref = placed[a.key] or targets["image"].pinned_ref(a)
        refs[f"{a.image.repository}:{a.image.tag}"] = ref
        if a.image.source:
            refs[a.image.source] = ref
    from .apply.modelpack import MODELCAR_TAG_SUFFIX, model_refs, repository_for, tag_for

    refs.update(model_refs(state.published(registry or "")))
    for name, version in pending_models:
        try:
            repo, tag = repository_for(name), tag_for(version)
        except FerryError:
            continue  # the import itself will say why this model cannot be published
        pending = f"{repo}@(published by this import)"
        refs.setdefault(f"{repo}:{tag}", pending)
        refs.setdefault(f"{repo}:{tag}{MODELCAR_TAG_SUFFIX}", pending)
    return refs


def preview_sets(ctx: Context, targets: dict[str, ApplyTarget], manifest: Manifest, reader: CarriedChunks,
                 plan: BundlePlan) -> dict[tuple[str, str], Applied | FerryError]:
    """What applying each ready manifest set of ``plan`` would do at a KubeStellar WEC, per object.

    The one way ``import --dry-run`` and ``verify --state`` list placement: the set's files are
    read (verified) from the site's store and the packs at hand, and the manifest target makes
    its plan with the import's own call in dry-run mode (:meth:`importer.apply.kube.ManifestSets.preview`,
    :func:`importer.wec.apply_placed`). Changes nothing.

    Returns:
        per artifact key, the plan (:class:`importer.apply.Applied` with ``plan``, ``plan_json``,
        ``warnings``) or the FerryError the import would stop that set with (a malformed policy,
        an object ferry does not own to prune); sets at a site without a WEC identity, and steps
        that are not ready, are left out.
    """
    target = targets.get("manifests")
    preview = getattr(target, "preview", None)
    out: dict[tuple[str, str], Applied | FerryError] = {}
    ready = [s for s in plan.steps if s.artifact.kind == "manifests" and s.status is Status.READY]
    if preview is None or not ready:
        return out
    # the images this bundle would place (or already has) pin the workloads, as in the import
    placed: dict[tuple[str, str], str | None] = {
        s.key: None for s in plan.steps
        if s.artifact.kind == "image" and s.status in (Status.READY, Status.PLANNED, Status.SAME)}
    pending = tuple((s.artifact.name, s.artifact.version) for s in plan.steps
                    if s.artifact.kind == "model" and s.status in (Status.READY, Status.PLANNED))
    refs = edge_image_refs(ctx.state, manifest, targets, placed, ctx.registry, pending)
    source = StoreThenPacks(ctx.store, reader)
    try:
        for step in ready:
            try:
                done = preview(step.artifact, source.reader_for(manifest, lambda n: None), refs,
                               origin_of(manifest.bundle))
            except FerryError as exc:
                out[step.key] = exc
                continue
            if done is not None:
                out[step.key] = done
    finally:
        source.close()
    return out


# --------------------------------------------------------------------------- one bundle


class _BundleRun:
    """Gate one verified bundle, plan it, and carry the plan out."""

    def __init__(self, opts: ImportOptions, ctx: Context, progress: Progress, signed: SignedManifest,
                 medium: BundleOnMedium, result: BundleResult, link: Any = None) -> None:
        self.opts, self.ctx, self.state, self.progress = opts, ctx, ctx.state, progress
        self.signed, self.m, self.medium, self.result = signed, signed.manifest, medium, result
        #: for a bundle in a registry, its :class:`importer.link.Linked`: chunks are read from there
        self.link = link
        #: the registry's failure that ended reading it (raised out of the import as one line)
        self.fetch_failure: FerryError | None = None
        b = self.m.bundle
        self.info = {"name": b.name, "id": b.id, "channel": b.channel, "sequence": b.sequence}
        self.signers = [s.keyid for s in signed.verdict.signers if s.counted]
        result.info, result.signers = self.info, self.signers

    def _note(self, decision: str) -> str | None:
        if decision == "downgrade-forced":
            return f"reason: {self.opts.reason}" + (f"; note: {self.opts.note}" if self.opts.note else "")
        return self.opts.note

    def _entry(self, decision: str, reason: str, r: ArtifactResult | None, *, after: str | None = None) -> dict[str, Any]:
        """The audit entry for a decision (the shape the model journal stores, too)."""
        art = None
        if r is not None:
            a = next(x for x in self.m.artifacts if x.key == r.unit)
            art = {"kind": a.kind, "name": a.name, "version": a.version, "content": a.content_digest,
                   **({"variant": a.variant.name} if a.variant else {})}  # which variant a model runs
        return {"decision": decision, "reason": reason, "bundle": self.info, "manifestDigest": self.signed.digest,
                "signers": self.signers, "artifact": art, "versionBefore": r.installed if r else None,
                "versionAfter": after, "note": self._note(decision)}

    def _record(self, decision: str, reason: str, r: ArtifactResult | None, *, after: str | None = None) -> None:
        e = self._entry(decision, reason, r, after=after)
        _audit(self.ctx.audit, e["decision"], e["reason"], e["bundle"], e["manifestDigest"], e["signers"],
               e["artifact"], e["versionBefore"], e["versionAfter"], e["note"])

    # ---- gating: may this bundle be imported at all?

    def _gate(self) -> str | None:
        """The stale phrase of the bundle on its channel ("" when new), or None when it stops
        here (the result says why): :func:`importer.policy.gate`, the one ``verify --state`` runs."""
        b = self.m.bundle
        verdict = gate(self.state, self.signed.digest, b.id, b.channel, b.sequence, b.created,
                       now=datetime.now(timezone.utc), max_age=self.opts.max_age,
                       allow_downgrade=self.opts.allow_downgrade)
        self.result.freshness = verdict.freshness
        if verdict.freshness is None:
            self.result.reason = verdict.refusal
            self._record("refused", verdict.refusal, None)
            return None
        if verdict.freshness == "repeat":
            self.result.status, self.result.reason = BundleStatus.REPEAT, REPEAT_REASON
            if not self.opts.dry_run:
                self._record("skipped", "bundle already imported", None)
            return None
        if verdict.stale:
            self.progress.warn(f"bundle {b.name} {b.id} is stale: sequence {b.sequence} is not after {verdict.last}, "
                               f"the last imported on channel {b.channel!r}; its artifacts apply only where newer")
        return verdict.stale

    # ---- the run

    def run(self) -> None:
        stale = self._gate()
        if stale is None:
            return
        result = self.result
        targets = targets_for(self.ctx)
        with self._reader() as reader:
            plan = plan_bundle(self.ctx, targets, self.m, reader, stale=stale, atomic=self.opts.atomic)
            result.artifacts = [ArtifactResult.of(s) for s in plan.steps]
            result.missing_volumes = reader.missing_volumes()
            result.missing_files = list(plan.missing_files)
            result.bytes_to_write = plan.bytes_to_write
            result.reason = plan.still_needed()
            if self.opts.dry_run:
                previews = preview_sets(self.ctx, targets, self.m, reader, plan)
                for r in result.artifacts:
                    if r.status is not Status.READY:
                        continue
                    r.status = Status.PLANNED
                    done = previews.get(r.unit)
                    if isinstance(done, FerryError):
                        r.status, r.action = Status.FAILED, "failed"
                        r.reason = f"manifests {r.name!r}: {done}"
                    elif done is not None:
                        r.placement, r.placement_json = done.plan, done.plan_json
                        for warning in done.warnings:
                            self.progress.warn(f"manifests {r.name!r}: {warning}")
                result.status = BundleStatus.PLANNED
                return
            if not self._space_ok(plan.bytes_to_write):
                for r in result.artifacts:
                    if r.status is Status.READY:
                        r.status, r.reason = Status.REFUSED, "not enough free space (see the bundle)"
                return
            if self.link is not None:
                self._want(plan, reader)
            self._carry_out(plan, reader, targets)
            self.fetch_failure = getattr(reader, "failure", None)
            if self.fetch_failure is not None:
                raise self.fetch_failure
            self._spill(plan, reader)
            if self.opts.keep:
                for r in result.artifacts:
                    if r.kind == "model" and r.status is Status.APPLIED:
                        doomed = model_store.prune_models(self.state, self.ctx.store, r.name, self.opts.keep)
                        self._unpublish(r, doomed)
        statuses = {r.status for r in result.artifacts}
        if statuses & {Status.WAITING, Status.FAILED, Status.HELD}:
            result.status = BundleStatus.PARTIAL
        elif Status.REFUSED in statuses:
            result.status = BundleStatus.SETTLED
        else:
            result.status = BundleStatus.IMPORTED
        b = self.m.bundle
        lifted = any(r.status is Status.REFUSED and r.action in LIFTABLE for r in result.artifacts)
        self.state.record_bundle(digest=self.signed.digest, bundle_id=b.id, name=b.name, channel=b.channel,
                                 sequence=b.sequence, status=result.status.value, created=b.created,
                                 advance=not lifted)

    def _reader(self) -> Any:
        """Where this bundle's chunks are read: the medium's packs, or the registry (read ahead
        by coalesced Range requests sized from the memory budget, :mod:`importer.link`)."""
        if self.link is None:
            return PackReader(self.m, self.medium.volume_dirs)
        return self.link.reader(self.progress, import_sizes(self.opts.memory_budget, usable_cpus()).fetch_ahead)

    def _want(self, plan: BundlePlan, reader: Any) -> None:
        """Tell the registry reader which chunks this run reads (ready steps and the spill) and
        the site lacks: only those are fetched. Chunks an interrupted run recorded (its
        checkpoints) are held, so they count as already there."""
        ids = {cid for s in plan.steps if s.status is Status.READY for e in s.entries for cid in e.chunks}
        carried = {cid for cid in ids | set(plan.spill) if self.m.chunk(cid).carried}
        held = self.ctx.store.held(carried)
        stats = self.link.stats
        stats.chunks_needed, stats.chunks_already = len(carried), len(held)
        reader.want(carried - held)

    def _carry_out(self, plan: BundlePlan, reader: CarriedChunks, targets: dict[str, ApplyTarget]) -> None:
        """Each step of the plan, in its order; a manifest set is checked once more against
        what became of the images and models before it (one may have failed meanwhile)."""
        results = {r.unit: r for r in self.result.artifacts}
        source = StoreThenPacks(self.ctx.store, reader, import_sizes(self.opts.memory_budget, usable_cpus()))
        try:
            for step in plan.steps:
                r = results[step.key]
                if r.status is Status.READY:
                    why = holding(self.m, step.artifact, {k: v.status for k, v in results.items()})
                    if why:  # an image or model it needs failed meanwhile: like a waiting one, not recorded
                        r.status, r.reason = Status.HELD, why
                    else:
                        self._apply(step, r, targets, source, results)
                elif r.status is Status.SAME:
                    self._record("skipped", r.reason, r, after=r.version)
                    if step.artifact.kind == "model":
                        self._publish_held(step, r, targets)
                elif r.status in (Status.REFUSED, Status.FAILED):
                    self._record("refused", r.reason, r)
        finally:
            source.close()

    def _apply(self, step: Step, r: ArtifactResult, targets: dict[str, Any], source: StoreThenPacks,
               results: dict[tuple[str, str], ArtifactResult]) -> None:
        a = step.artifact
        forced = step.decision.action == "downgrade"
        decision = "downgrade-forced" if forced else "applied"
        job = Job(manifest=self.m, content=step.content, bundle_id=self.m.bundle.id,
                  manifest_digest=self.signed.digest, origin=origin_of(self.m.bundle),
                  audit=self._entry(decision, r.reason, r, after=a.version),
                  image_refs=self._image_refs(targets, results) if a.kind == "manifests" else {})
        try:
            with self.progress.task(f"{a.kind} {a.name} {a.version}", r.bytes or None) as task:
                done: Applied = targets[a.kind].apply(a, source.reader_for(self.m, task.advance), job)
                if not done.recorded:
                    with self.state.transaction() as db:
                        set_installed(db, kind=a.kind, name=a.key[1], version=a.version, content=step.content,
                                      bundle_id=self.m.bundle.id, manifest=self.signed.digest, ref=done.ref)
        except model_store.NoSpace:
            raise
        except FerryError as exc:
            r.status, r.action = Status.FAILED, "failed"
            prefix = f"{a.kind} {a.name!r}"
            r.reason = str(exc) if str(exc).startswith(prefix) else f"{prefix}: {exc}"
            self._record("refused", r.reason, r)
            return
        r.status, r.ref = Status.APPLIED, done.ref
        r.reason += done.note
        r.placement, r.placement_json = done.plan, done.plan_json
        for warning in done.warnings:
            self.progress.warn(f"{a.kind} {a.name!r}: {warning}")
        if not done.recorded:
            self._record(decision, r.reason, r, after=a.version)

    def _publish_held(self, step: Step, r: ArtifactResult, targets: dict[str, Any]) -> None:
        """A model version the site already holds but has not published where this import puts
        images (installed before publishing existed, left unpublished by a crash or a failed
        publish, or imported without ``--registry`` before): publish it now, before the
        manifest sets that may name it (issue #14)."""
        a = step.artifact
        place = self.ctx.registry or ""
        if any(p.name == a.name and p.version == a.version for p in self.state.published(place)):
            return
        job = Job(manifest=self.m, content=step.content, bundle_id=self.m.bundle.id,
                  manifest_digest=self.signed.digest, origin=origin_of(self.m.bundle),
                  audit=self._entry("published", "", r, after=a.version))
        ref, note = targets["model"].publish(a, job)
        r.ref = ref or r.ref
        r.reason += note

    def _unpublish(self, r: ArtifactResult, doomed: list[str]) -> None:
        """Remove the published artifacts of the versions ``--keep N`` just pruned
        (:func:`importer.apply.modelpack.unpublish`), drop their ledger rows, audit each as
        ``unpublished``; what stays published is added to the model's reason."""
        from .apply.modelpack import unpublish, where_published
        from .state import forget_published

        rows = self.state.published()
        mine = [p for p in rows if p.name == r.name and p.version in doomed]
        if not mine:
            return
        gone, notes = unpublish(self.state.root, mine, [p for p in rows if p not in mine],
                                registry=self.ctx.registry, insecure_registries=self.ctx.insecure_registries)
        with self.state.transaction() as db:
            for p in gone:
                forget_published(db, p)
        for p in gone:
            _audit(self.ctx.audit, "unpublished", f"version {p.version} pruned (--keep {self.opts.keep}): removed "
                   f"{where_published(p)}", self.info, self.signed.digest, self.signers,
                   {"kind": "model", "name": p.name, "version": p.version}, p.version, None, None)
        if notes:
            r.reason += "; " + "; ".join(notes)

    def _image_refs(self, targets: dict[str, Any], results: dict[tuple[str, str], ArtifactResult]) -> dict[str, str]:
        placed = {key: r.ref for key, r in results.items()
                  if r.kind == "image" and r.status in (Status.APPLIED, Status.SAME)}
        return edge_image_refs(self.state, self.m, targets, placed, self.ctx.registry)

    def _space_ok(self, needed: int) -> bool:
        free = shutil.disk_usage(self.state.root).free
        if needed + SPACE_RESERVE <= free:
            return True
        from manifests.progress import human_bytes

        self.result.status = BundleStatus.REFUSED
        self.result.reason = (f"not enough free space under {self.state.root}: this import writes "
                              f"{human_bytes(needed)} (+{human_bytes(SPACE_RESERVE)} reserve), "
                              f"{human_bytes(free)} is free; nothing was written")
        self._record("refused", self.result.reason, None)
        return False

    def _spill(self, plan: BundlePlan, reader: CarriedChunks) -> None:
        """Keep the chunks waiting (and held) artifacts need, verified, for the run that brings the rest."""
        bad: dict[str, str] = {}
        for cid in plan.spill:
            c = self.m.chunk(cid)
            try:
                self.ctx.store.spill(c, stored_frame(c, reader.read_stored(c)))
            except VerificationError as exc:
                bad[c.id] = str(exc)
        if not bad:
            return
        for step in plan.steps:
            r = next(x for x in self.result.artifacts if x.unit == step.key)
            if r.status not in (Status.WAITING, Status.HELD):
                continue
            hit = next(((e, cid) for e in step.entries for cid in e.chunks if cid in bad), None)
            if hit is not None:
                from .content import entry_label

                r.status, r.action = Status.FAILED, "failed"
                r.reason = f"{r.kind} {r.name!r}: {entry_label(hit[0])}: {bad[hit[1]]}"
                self._record("refused", r.reason, r)

