"""The import plan: what ``ferry import`` will do with one verified bundle, decided without I/O.

As python-tuf's ``TrustedMetadataSet`` sits under its ``Updater``, :func:`make_plan` sits
under :mod:`importer.run`: it takes the verified manifest, a read-only view of the ledger
(what is installed) and what is present (chunks the site's store holds, packs and volumes
at hand, and what each apply target lacks) and returns a :class:`BundlePlan`. It opens no
file and asks no registry, so ``import``, ``import --dry-run`` and ``verify --state`` print
the same plan, and the run carries out exactly that plan (:mod:`importer.run`).

The rules, each in one place:

- per artifact, the version rule is :func:`importer.policy.decide`;
- artifacts are taken in :data:`manifests.model.APPLY_ORDER` (images, models, manifest sets);
- a chunk neither held by the site nor carried (a delta made for another receipt) fails its
  artifact; a chunk whose pack is on a volume not given makes it *wait* for that volume; a
  chunk whose pack file is missing from a volume that *was* given is a damaged copy, named
  by its file (docs/operator-guide.md, "Exit codes"; issue #12 item 2);
- a manifest set is *held* while an image it names, or any model, that this bundle carries
  is refused, failed, waiting or held (:func:`holding`): no workload YAML for an image the
  site does not hold;
- with ``atomic`` (``ferry import --atomic``), nothing is applied unless every artifact can
  be: one that cannot holds all the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from manifests.bundle import pack_file
from manifests.model import Artifact, Entry, Manifest, apply_rank

from manifests.variants import Resources, fit_problem

from .policy import Decision, Installed, decide


class Status(str, Enum):
    """What becomes of one artifact. The values are the words the report and ``--json`` use."""

    READY = "ready"        #: will be applied (all its chunks are at hand)
    PLANNED = "planned"    #: would be applied (a dry run)
    APPLIED = "applied"    #: applied by this run
    SAME = "same"          #: already installed with this content: nothing to do
    REFUSED = "refused"    #: the version rule (or free space) said no
    FAILED = "failed"      #: verification or apply error
    WAITING = "waiting"    #: a volume (or a pack file of a damaged copy) is missing
    HELD = "held"          #: not applied because another artifact it needs is not in place

    def __str__(self) -> str:
        return self.value


#: Statuses that make ``ferry import`` (and its dry run) exit 1, and ``verify --state`` fail its
#: ``plan`` check: the one rule (docs/operator-guide.md, "Exit codes"; docs/auditor-guide.md).
REFUSING = frozenset({Status.REFUSED, Status.FAILED})

#: Refusals a rerun of the same bundle may lift with an option (``unfit``: ``--allow-variant``):
#: a bundle refused so does not advance its channel's sequence, or the rerun would be stale
#: (importer.run; docs/edge-state.md).
LIFTABLE = frozenset({"unfit"})

#: Statuses that keep a manifest set (or, with ``--atomic``, everything) from being applied.
NOT_IN_PLACE = frozenset({Status.REFUSED, Status.FAILED, Status.WAITING, Status.HELD})


class BundleStatus(str, Enum):
    """What becomes of one bundle (the ledger stores the value)."""

    PLANNED = "planned"    #: dry run
    IMPORTED = "imported"  #: every artifact applied or already there
    REPEAT = "repeat"      #: imported completely before: nothing to do
    PARTIAL = "partial"    #: incomplete: waiting for volumes or files, or an artifact failed
    SETTLED = "settled"    #: imported, with artifacts refused by the version rule
    REFUSED = "refused"    #: the bundle as a whole was refused

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Needs:
    """What an apply target lacks for one artifact (asked of the target, see
    :class:`importer.apply.ApplyTarget`).

    Attributes:
        entries: the files or blobs that must be read from chunks and written.
        edge_bytes: bytes those entries take under EDGE (0 when they go to a registry or cluster).
        problem: why the target could not be asked (the artifact then fails), or None.
        place: where the target keeps what it holds, for messages (``the site registry
            HOST``, ``the edge's OCI layout``); "" when it has no such place.
    """

    entries: tuple[Entry, ...] = ()
    edge_bytes: int = 0
    problem: str | None = None
    place: str = ""


@dataclass(frozen=True)
class Present:
    """What is at hand, read before planning.

    Attributes:
        held: chunk ids the site's chunk store holds (reads still verify them).
        packs: indexes (into ``manifest.packs``) of the pack files found on the volumes given.
        volumes: numbers of the volumes given (1-based, as ``Pack.volume``).
        needs: per artifact key ``(kind, name)``, what its target lacks; artifacts the version
            rule does not apply need no entry.
    """

    held: frozenset[str] = frozenset()
    packs: frozenset[int] = frozenset()
    volumes: frozenset[int] = frozenset()
    needs: Mapping[tuple[str, str], Needs] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """The plan for one artifact.

    Attributes:
        artifact: the artifact, as the manifest describes it.
        decision: the version rule's verdict (:func:`importer.policy.decide`).
        installed: the version installed before, or None.
        status: what will become of it (:class:`Status`).
        reason: one line saying why.
        entries: what must be read and written (empty unless it applies).
        chunks: distinct chunk ids the entries need that the site does not hold.
        bytes: bytes of the entries (what the progress bar counts).
        edge_bytes: bytes written under EDGE for it.
        waiting_volumes: volumes it waits for.
        missing_files: pack files (``vol-NNN/packs/NAME`` or ``packs/NAME``) missing from a
            volume that was given: a damaged copy.
    """

    artifact: Artifact
    decision: Decision
    installed: str | None
    status: Status
    reason: str
    entries: tuple[Entry, ...] = ()
    chunks: tuple[str, ...] = ()
    bytes: int = 0
    edge_bytes: int = 0
    waiting_volumes: tuple[int, ...] = ()
    missing_files: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return self.artifact.key

    @property
    def content(self) -> str:
        return self.artifact.content_digest

    def to_json(self) -> dict[str, Any]:
        a = self.artifact
        return {"kind": a.kind, "name": a.name, "version": a.version, "installed": self.installed,
                "action": self.decision.action, "status": self.status.value, "reason": self.reason,
                "bytes": self.bytes, "chunksNeeded": len(self.chunks), "bytesToWrite": self.edge_bytes,
                "waitingVolumes": list(self.waiting_volumes), "missingFiles": list(self.missing_files)}


@dataclass(frozen=True)
class BundlePlan:
    """The plan for one bundle.

    Attributes:
        steps: one per artifact, in apply order (:data:`manifests.model.APPLY_ORDER`, then name).
        spill: chunk ids at hand that waiting or held artifacts need and the site lacks: kept in
            the spill store so a later run can finish without this medium.
        spill_bytes: their stored (compressed) size.
        bytes_to_write: everything this import writes under EDGE (files of ready artifacts and
            the spill), checked against the free space before anything is written.
    """

    steps: tuple[Step, ...]
    spill: tuple[str, ...] = ()
    spill_bytes: int = 0

    @property
    def bytes_to_write(self) -> int:
        return sum(s.edge_bytes for s in self.steps if s.status is Status.READY) + self.spill_bytes

    @property
    def waiting_volumes(self) -> tuple[int, ...]:
        return tuple(sorted({v for s in self.steps for v in s.waiting_volumes}))

    @property
    def missing_files(self) -> tuple[str, ...]:
        return tuple(sorted({f for s in self.steps for f in s.missing_files}))

    def still_needed(self) -> str:
        """One line saying what the bundle still waits for ("" when nothing)."""
        return still_needed(self.waiting_volumes, self.missing_files)


def still_needed(volumes: tuple[int, ...] | list[int], files: tuple[str, ...] | list[str]) -> str:
    """``insert volume 2, 3 and copy again packs/p-001.pack (missing from the copy given)``."""
    parts = []
    if volumes:
        parts.append("insert volume " + ", ".join(map(str, volumes)))
    if files:
        parts.append("copy again " + ", ".join(files)
                     + " (missing from the volume given: a damaged copy)")
    return " and ".join(parts) + (" to finish" if parts else "")


def artifact_line(kind: str, name: str, version: str, installed: str | None, status: Status, action: str,
                  size: int, reason: str, ref: str | None, human_bytes: Callable[[int], str]) -> str:
    """One artifact of a plan or its outcome, as ``import``, ``import --dry-run`` and
    ``verify --state`` print it: ``model m 1.1.0 (installed 1.0.0): planned [newer, 1.2 MiB] reason``."""
    was = f" (installed {installed})" if installed else ""
    if action == "new" and reason == "not installed":  # the policy's reason, read as the outcome
        reason = "(none installed before)"
    shown = (Status.APPLIED, Status.PLANNED, Status.READY, Status.WAITING, Status.HELD)
    amount = f", {human_bytes(size)}" if size and status in shown else ""
    return (f"{kind} {name} {version}{was}: {status.value} [{action}{amount}] {reason}"
            + (f" -> {ref}" if ref else ""))


# --------------------------------------------------------------------------- the rules


def order(artifacts: tuple[Artifact, ...] | list[Artifact]) -> list[Artifact]:
    """Artifacts in apply order (:data:`manifests.model.APPLY_ORDER`), by name within a kind."""
    return sorted(artifacts, key=lambda a: (apply_rank(a.kind), a.name))


def decisions(manifest: Manifest, installed: Mapping[tuple[str, str], Installed], *,
              allow_downgrade: bool = False, site: Resources | None = None,
              allow_variant: bool = False) -> dict[tuple[str, str], Decision]:
    """The version rule's verdict for every artifact: which ones a target must be asked about.

    A model variant that the version rule would apply but the site cannot run
    (:func:`manifests.variants.fit_problem` against the resources ``ferry site set`` recorded)
    is ``unfit`` (refused) unless ``allow_variant`` (``--allow-variant``)."""
    out: dict[tuple[str, str], Decision] = {}
    for a in manifest.artifacts:
        d = decide(installed.get(a.key), a.version, a.content_digest, allow_downgrade=allow_downgrade,
                   variant=a.variant.name if a.variant else None)
        problem = fit_problem(a.variant, site) if d.applies and a.variant and site else None
        if problem and not allow_variant:
            d = Decision("unfit", f"variant {a.variant.name} {problem} (resources from `ferry site set`); "  # type: ignore[union-attr]
                                  "import it anyway with --allow-variant")
        elif problem:
            d = Decision(d.action, f"{d.reason}; variant {a.variant.name} {problem}, "  # type: ignore[union-attr]
                                   "installed anyway (--allow-variant)")
        out[a.key] = d
    return out


def needed_by(manifest: Manifest, artifact: Artifact) -> list[tuple[str, str]]:
    """Artifacts of this bundle that manifest set ``artifact`` needs in place before it is applied:
    every image its workloads name (``artifact.images``, matched as the edge rewrites them,
    :func:`importer.apply.kube.resolve_image`) and every model (a workload names a model by a
    path, which the bundle does not record, so all of them)."""
    if artifact.kind != "manifests":
        return []
    from .apply.kube import resolve_image

    out: list[tuple[str, str]] = []
    for image in (a for a in manifest.artifacts if a.kind == "image" and a.image is not None):
        assert image.image is not None
        refs = {f"{image.image.repository}:{image.image.tag}": image.name}
        if image.image.source:
            refs[image.image.source] = image.name
        if any(resolve_image(ref, refs) is not None for ref in artifact.images):
            out.append(image.key)
    out.extend(a.key for a in manifest.artifacts if a.kind == "model")
    return out


def holding(manifest: Manifest, artifact: Artifact, statuses: Mapping[tuple[str, str], Status]) -> str | None:
    """Why manifest set ``artifact`` must not be applied now, given the other artifacts'
    statuses, or None. Used by the plan and again by the run after each apply."""
    for key in needed_by(manifest, artifact):
        status = statuses.get(key)
        if status in NOT_IN_PLACE:
            return f"held back: {key[0]} {key[1]!r}, which its workloads need, is {status}"
    return None


def make_plan(manifest: Manifest, installed: Mapping[tuple[str, str], Installed], present: Present, *,
              allow_downgrade: bool = False, stale: str = "", atomic: bool = False,
              site: Resources | None = None, allow_variant: bool = False) -> BundlePlan:
    """The plan for one verified bundle (see the module docstring for the rules).

    Args:
        manifest: the verified manifest (signatures met the trust; limits checked).
        installed: what the ledger says is installed, per ``(kind, name)``.
        present: chunks held, packs and volumes at hand, and what each target lacks.
        allow_downgrade: the operator's ``--allow-downgrade``.
        stale: text appended to the reasons of artifacts that do not apply, when the bundle is
            stale on its channel (:func:`importer.policy.bundle_freshness`); "" otherwise. A
            stale bundle applies only what is newer: its variant ``switch`` is refused unless
            ``allow_downgrade``.
        atomic: ``--atomic``: apply all of the bundle or nothing.

    Returns:
        A :class:`BundlePlan`. Raises nothing: every problem becomes a step's status.
    """
    verdicts = decisions(manifest, installed, allow_downgrade=allow_downgrade, site=site,
                         allow_variant=allow_variant)
    steps: list[Step] = []
    for a in order(manifest.artifacts):
        d = verdicts[a.key]
        if stale and d.action == "switch" and not allow_downgrade:  # a replayed old bundle never flips the variant
            d = Decision("conflict", f"{d.reason}: refused from a stale bundle; switch back on purpose with "
                                     "--allow-downgrade --reason, or export a new bundle")
        before = installed.get(a.key)
        was = before.version if before else None
        if not d.applies:
            status = Status.SAME if d.action == "same" else Status.REFUSED
            steps.append(Step(a, d, was, status, d.reason + stale))
            continue
        steps.append(_chunk_step(manifest, a, d, was, present))
    statuses = {s.key: s.status for s in steps}
    for i, s in enumerate(steps):  # manifest sets come last: every artifact they need is settled
        if s.status is Status.READY and s.artifact.kind == "manifests":
            why = holding(manifest, s.artifact, statuses)
            if why:
                steps[i] = _replace(s, Status.HELD, why)
                statuses[s.key] = Status.HELD
    if atomic:
        blocker = next((s for s in steps if s.status in NOT_IN_PLACE), None)
        if blocker is not None:
            why = (f"--atomic: nothing of this bundle is applied while {blocker.artifact.kind} "
                   f"{blocker.artifact.name!r} is {blocker.status}")
            steps = [_replace(s, Status.HELD, why) if s.status is Status.READY else s for s in steps]
    spill = sorted({cid for s in steps if s.status in (Status.WAITING, Status.HELD) for cid in s.chunks
                    if _at_hand(manifest, cid, present)})
    return BundlePlan(tuple(steps), tuple(spill), sum(manifest.chunk(c).stored or 0 for c in spill))


def _at_hand(manifest: Manifest, cid: str, present: Present) -> bool:
    c = manifest.chunk(cid)
    return c.pack is not None and c.pack in present.packs


def _replace(step: Step, status: Status, reason: str) -> Step:
    from dataclasses import replace

    return replace(step, status=status, reason=reason)


def _label(a: Artifact, reason: str) -> str:
    prefix = f"{a.kind} {a.name!r}"
    return reason if reason.startswith(prefix) else f"{prefix}: {reason}"


def _chunk_step(manifest: Manifest, a: Artifact, d: Decision, was: str | None, present: Present) -> Step:
    """A step for an artifact the version rule applies: where each chunk it needs comes from."""
    needs = present.needs.get(a.key, Needs(problem="its target was not asked what it lacks"))
    if needs.problem is not None:
        return Step(a, d, was, Status.FAILED, _label(a, needs.problem))
    entries = needs.entries
    size = sum(e.size for e in entries)
    ids = sorted({cid for e in entries for cid in e.chunks} - present.held)
    absent: list[str] = []
    volumes: set[int] = set()
    files: set[str] = set()
    for cid in ids:
        c = manifest.chunk(cid)
        if not c.carried or c.pack is None:
            absent.append(cid)
        elif c.pack not in present.packs:
            pack = manifest.packs[c.pack]
            if pack.volume in present.volumes:
                files.add(pack_file(manifest.volumes, pack.volume, pack.name))
            else:
                volumes.add(pack.volume)
    common = dict(entries=entries, chunks=tuple(ids), bytes=size, edge_bytes=needs.edge_bytes)
    blob = next((e for e in entries if e.digest is not None and set(e.chunks) & set(absent)), None)
    if blob is not None:
        others = {e.digest for e in entries if e.digest is not None and set(e.chunks) & set(absent)} - {blob.digest}
        more = f" (and {len(others)} more blob(s))" if others else ""
        return Step(a, d, was, Status.FAILED,
                    _label(a, f"blob {blob.digest}{more} is missing: {needs.place or 'the site'} does not hold it "
                              "(HEAD) and this delta bundle left it out, as the receipt it was made against said "
                              "the site held it; restore the blob or export without --since"),
                    **common)  # type: ignore[arg-type]
    if absent:
        more = f" (and {len(absent) - 1} more) is" if len(absent) > 1 else " is"
        return Step(a, d, was, Status.FAILED,
                    _label(a, f"chunk {absent[0]}{more} not in this delta bundle and this site does not hold "
                              "it: the bundle was made for another receipt"), **common)  # type: ignore[arg-type]
    if volumes or files:
        return Step(a, d, was, Status.WAITING, still_needed(sorted(volumes), sorted(files)),
                    waiting_volumes=tuple(sorted(volumes)), missing_files=tuple(sorted(files)),
                    **common)  # type: ignore[arg-type]
    return Step(a, d, was, Status.READY, d.reason, **common)  # type: ignore[arg-type]
