"""Apply targets at the edge: models (model store), images (registry or OCI layout),
manifests (cluster via server-side apply, or a GitOps folder), behind one interface.

As desync's ``Store`` interfaces, each kind implements :class:`ApplyTarget` (what it lacks,
the bytes it will write under EDGE, apply) and is found in :data:`TARGETS`, keyed by artifact
kind: the importer has no ``if kind`` ladder.

Every apply gets the verified artifact and ``read_entry(entry) -> Iterator[bytes]`` (see
:func:`importer.content.stream_entry`): the entry's bytes chunk by chunk, each chunk already
checked against its id, raising VerificationError at the end if the whole does not match. An
apply must not make anything visible (rename into place, tag a manifest) before the iterator
is exhausted without error. It never reads the medium itself, and it writes under EDGE only
through the :class:`importer.fsroot.FsRoot` in its context (no link is ever followed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from manifests.model import Artifact, Entry, Manifest

if TYPE_CHECKING:
    from ..fsroot import FsRoot
    from ..state import EdgeState
    from ..store import ChunkStore

ReadEntry = Callable[[Entry], Iterator[bytes]]


@dataclass
class Context:
    """What every target of one import shares.

    Attributes:
        state: the open edge state (ledger, chunk index); read-only in a dry run.
        store: the site's chunk store.
        edge: the writer for everything under EDGE, or None in a dry run without a state.
        registry: ``--registry HOST[:PORT]`` or None (images go to the layout ``EDGE/oci``).
        insecure_registries: ``--insecure-registry`` hosts.
        manifests_dir: ``--manifests-dir`` or None (``EDGE/manifests`` unless ``kubeconfig``).
        kubeconfig, context: ``--kubeconfig`` and ``--context`` for a cluster.
        allow_downgrade: ``--allow-downgrade``.
        allow_variant: ``--allow-variant`` (install a model variant the site's recorded resources cannot run).
        no_prune: ``--no-prune`` (a KubeStellar WEC keeps objects a newer set no longer selects).
        audit: the audit trail (:class:`importer.audit.AuditTrail`), or None in a dry run.
    """

    state: EdgeState
    store: ChunkStore
    edge: FsRoot | None
    registry: str | None = None
    insecure_registries: frozenset[str] = frozenset()
    manifests_dir: Path | None = None
    kubeconfig: Path | None = None
    context: str | None = None
    allow_downgrade: bool = False
    no_prune: bool = False
    allow_variant: bool = False
    audit: Any = None


@dataclass
class Job:
    """One artifact to apply, and what the ledger and audit trail record for it.

    Attributes:
        manifest: the verified manifest the artifact comes from.
        content: the artifact's content digest (``blake3:<hex>``).
        bundle_id, manifest_digest: the bundle it came from.
        origin: ``ferry.io/*`` annotation values for manifest sets (:func:`kube.origin_of`).
        audit: the audit entry to append once applied (keys as :meth:`AuditTrail.append`'s).
        image_refs: workload image reference -> pinned edge reference, for manifest sets.
    """

    manifest: Manifest
    content: str
    bundle_id: str
    manifest_digest: str
    origin: dict[str, str]
    audit: dict[str, Any]
    image_refs: dict[str, str] = field(default_factory=dict)


@dataclass
class Applied:
    """What an apply did. ``recorded``: the target wrote the ledger row and audit entry itself
    (models, journaled for crash recovery); otherwise the importer records them."""

    ref: str | None = None
    note: str = ""
    recorded: bool = False
    #: a manifest set at a KubeStellar WEC: the plan's lines (importer.wec.WecResult.plan_lines),
    #: its JSON form, and warnings to show (a policy selecting nothing); empty for other targets
    plan: list[str] = field(default_factory=list)
    plan_json: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


class ApplyTarget(Protocol):
    """One kind of artifact at the edge."""

    def needs(self, artifact: Artifact) -> list[Entry]:
        """The entries the target lacks, i.e. the ones :meth:`apply` will read. Asks only;
        changes nothing. Raises FerryError when the target cannot be asked."""
        ...

    def bytes_to_write(self, artifact: Artifact, entries: list[Entry]) -> int:
        """Bytes applying ``entries`` writes under EDGE (0 for a registry or a cluster)."""
        ...

    def apply(self, artifact: Artifact, read_entry: ReadEntry, job: Job) -> Applied:
        """Apply the artifact. Raises VerificationError when its bytes do not verify (nothing
        of it is visible then) and FerryError for any other failure."""
        ...


def _model(ctx: Context) -> ApplyTarget:
    from .models import ModelTarget

    return ModelTarget(ctx)


def _image(ctx: Context) -> ApplyTarget:
    from .images import EdgeImages

    return EdgeImages(ctx)


def _manifests(ctx: Context) -> ApplyTarget:
    from .kube import ManifestSets

    return ManifestSets(ctx)


#: The targets, keyed by artifact kind (:data:`manifests.model.ARTIFACT_KINDS`).
TARGETS: dict[str, Callable[[Context], ApplyTarget]] = {"model": _model, "image": _image, "manifests": _manifests}


def targets_for(ctx: Context) -> dict[str, ApplyTarget]:
    """One target of each kind for this import."""
    return {kind: make(ctx) for kind, make in TARGETS.items()}
