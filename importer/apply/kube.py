"""Applying a manifest set at the edge: to a cluster (server-side apply) or a GitOps folder.

The set's files are re-read from the bundle (verified bytes) and parsed with the hub's
functions (:mod:`manifests.kube`), so both sides agree on what an object and a workload image are. Before anything
is applied, every workload image the bundle carries is rewritten to the edge registry and
pinned by digest, and every object is annotated with where it came from:

- ``ferry.io/set``: the manifest set's name; ``ferry.io/version``: its version;
- ``ferry.io/bundle``, ``ferry.io/bundle-id``, ``ferry.io/channel``, ``ferry.io/sequence``:
  the bundle (from ``origin``; see :func:`origin_of`).

In a cluster, an object whose ``ferry.io/version`` (for the same set) is newer than the
incoming one is left alone and reported: an older bundle never overwrites what a newer one
applied. A GitOps folder is replaced as a whole, atomically.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from manifests.kube import KubeObject, check_unique, model_name, names_image, parse_documents, reference_slots
from manifests.limits import MAX_KUBE_FILE_BYTES as MAX_FILE_BYTES
from manifests.limits import MAX_KUBE_SET_BYTES as MAX_SET_BYTES
from manifests.errors import ClusterError, FerryError, PlaceError, PolicyError, VerificationError
from manifests.model import NAME_RE, Artifact, BundleInfo, Entry
from manifests.modelpack import MODELCAR_TAG_SUFFIX
from manifests.oci import parse_reference
from manifests.version import compare_versions

from ..fsroot import FsRoot
from ..state import MANIFESTS_DIR
from . import Applied, Context, Job, ReadEntry

ANNOTATION_PREFIX = "ferry.io/"
SET_ANNOTATION = ANNOTATION_PREFIX + "set"
VERSION_ANNOTATION = ANNOTATION_PREFIX + "version"
FIELD_MANAGER = "ferry"
#: Seconds to wait for a newly applied CustomResourceDefinition to be served.
CRD_ESTABLISH_TIMEOUT = 60.0
#: (connect, read) seconds for each request to the API server.
REQUEST_TIMEOUT = (15, 120)

_ORIGIN_KEY_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9.]{0,61}[a-z0-9])?\Z")
_CRD = ("apiextensions.k8s.io", "CustomResourceDefinition")


@dataclass
class ManifestTarget:
    """Where a set goes: a GitOps folder, a cluster (kubeconfig and context), or both.
    ``gitops_dir`` is a path; with ``root`` (the edge's :class:`importer.fsroot.FsRoot`) it
    is relative to that root and written only through it."""

    gitops_dir: Path | None
    kubeconfig: Path | None
    context: str | None
    root: FsRoot | None = None


@dataclass
class ManifestResult:
    """What applying one set did. Object ids read like ``Deployment.apps nginx/web``."""

    set_name: str
    applied: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (object id, why)
    written: Path | None = None  # the GitOps folder, when one was written


# --------------------------------------------------------------------------- pure helpers


def origin_of(bundle: BundleInfo) -> dict[str, str]:
    """The ``origin`` annotations for objects applied from ``bundle``."""
    return {"bundle": bundle.name, "bundle-id": bundle.id, "channel": bundle.channel,
            "sequence": str(bundle.sequence)}


def resolve_image(ref: str, image_refs: dict[str, str]) -> str | None:
    """The pinned reference for a workload's ``ref``: its own entry in ``image_refs``, else the
    entry for a reference that names the same image (:func:`names_image`, host ignored), so
    that the edge rewrites exactly the images the hub found carried."""
    if ref in image_refs:
        return image_refs[ref]
    for key, pinned in image_refs.items():
        try:
            parsed = parse_reference(key)
        except FerryError:
            continue
        if names_image(ref, parsed.repository, parsed.tag, parsed.digest):
            return pinned
    return None


def with_written_host(written: str, pinned: str) -> str:
    """A model pinned in the embedded layout has no registry host (``models/<name>@sha256:...``);
    when the workload wrote one (``ferry.site:5000/models/<name>:<version>``: the address its
    nodes reach ``ferry serve`` at), keep it. Any other pinned reference is returned as is."""
    if model_name(pinned) is None:
        return pinned
    first, sep, _ = written.partition("/")
    has_host = sep and ("." in first or ":" in first or first == "localhost")
    return f"{first}/{pinned}" if has_host else pinned


def annotations_for(artifact: Artifact, origin: dict[str, str]) -> dict[str, str]:
    """The ``ferry.io/*`` annotations for every object of ``artifact``."""
    out = {}
    for key, value in origin.items():
        if not _ORIGIN_KEY_RE.match(key) or not isinstance(value, str):
            raise FerryError(f"origin annotation {key!r} is not a valid annotation name and string value")
        out[ANNOTATION_PREFIX + key] = value
    out[SET_ANNOTATION] = artifact.name
    out[VERSION_ANNOTATION] = artifact.version
    return out


def prepare(objects: list[KubeObject], image_refs: dict[str, str], annotations: dict[str, str], *,
            registry: str | None = None) -> list[KubeObject]:
    """Pin every reference the edge holds, prove every one pinned (:func:`check_pinned`), and
    add ``annotations``, in apply order: Namespaces, then CustomResourceDefinitions, then the
    rest as written.

    Args:
        objects: the set's objects (list items already expanded by :mod:`manifests.kube`;
            changed in place).
        image_refs: a reference as a workload writes it -> the pinned edge reference (the
            images at the edge and, under ``models/<name>:<tag>`` keys, the site's published
            models: :func:`importer.apply.modelpack.model_refs`).
        annotations: the ``ferry.io/*`` annotations (:func:`annotations_for`).
        registry: the site registry (``host[:port][/prefix]``, ``import --registry``), or None
            when images wait in the edge's OCI layout.

    Every slot of :func:`manifests.kube.reference_slots` (container images, image volumes,
    KServe ``oci://`` storage URIs) is rewritten by the one rule :func:`resolve_image`.

    Raises:
        PolicyError: a slot names a model by its hub-side name (:func:`manifests.kube.model_name`)
            that the site has not published (issue #14, item 2).
        VerificationError: any other reference is left that is not pinned at the edge.
        Both are raised before anything is applied or written.
    """
    pinned_here = set(image_refs.values())
    for obj in objects:
        for slot in reference_slots(obj):
            ref = slot.reference()
            if ref is None:
                continue
            pinned = resolve_image(ref, image_refs)
            if pinned is not None:
                written = with_written_host(ref, pinned)
                slot.set(written)
                pinned_here.add(written)
            elif model_name(ref) is not None:
                held = sorted({k for k in image_refs if model_name(k) is not None and "@" not in k
                               and not k.endswith(MODELCAR_TAG_SUFFIX)})
                raise PolicyError(f"{obj.where}: {obj.id}: {slot.label} names model {ref!r}, "
                                  f"which this site has not published (it holds "
                                  f"{', '.join(held[:5]) + (' ...' if len(held) > 5 else '') if held else 'no model'}); "
                                  f"nothing of the set was applied")
        meta = obj.body["metadata"]
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
    check_pinned(objects, pinned_here, registry)
    return sorted(objects, key=_apply_rank)


def is_pinned(ref: str, pinned: set[str], registry: str | None) -> bool:
    """Whether a workload image reference is pinned at this edge: one the edge pinned itself
    (a value of the import's image map), or, with a site registry, any reference to that
    registry by digest (``REGISTRY/repo@sha256:...``). Without a registry the layout holds
    the images, so only the edge's own pinned references qualify."""
    if ref in pinned:
        return True
    if registry is None:
        return False
    try:
        parsed = parse_reference(ref)
    except FerryError:
        return False
    return parsed.digest is not None and ref.startswith(registry.rstrip("/") + "/")


def check_pinned(objects: list[KubeObject], pinned: set[str], registry: str | None) -> None:
    """Refuse the set unless every reference of every object (:func:`manifests.kube.reference_slots`:
    containers, initContainers, ephemeralContainers, image volumes, KServe ``oci://`` storage) is pinned at the edge
    (:func:`is_pinned`): a pod must never pull from a registry the air gap cannot reach, nor
    by a tag that could move. Raises :class:`manifests.errors.VerificationError` naming the
    first such image, its object and where it was read."""
    for obj in objects:
        for slot in reference_slots(obj):
            image = slot.holder.get(slot.key)
            if image is None or (isinstance(image, str) and slot.scheme and not image.startswith(slot.scheme)):
                continue  # absent, or a storageUri of another scheme (s3://, pvc://)
            ref = slot.reference()
            if ref is None or not is_pinned(ref, pinned, registry):
                where = f"the site registry {registry}" if registry else "the edge's OCI layout"
                raise VerificationError(
                    f"{obj.where}: {obj.id}: {slot.label} {str(image)[:120]!r} is not pinned at this edge "
                    f"(no image of that name is in {where}); bring the image in this bundle or an earlier one; "
                    f"nothing of the set was applied")


def _apply_rank(obj: KubeObject) -> int:
    if (obj.group, obj.kind) == ("", "Namespace"):
        return 0
    return 1 if (obj.group, obj.kind) == _CRD else 2


def render(obj: KubeObject) -> bytes:
    """One object as YAML, as written to a GitOps folder."""
    return yaml.safe_dump(obj.body, sort_keys=False, allow_unicode=True, default_flow_style=False).encode()


def gitops_file_name(position: int, obj: KubeObject) -> str:
    """``0001-deployment-web.yaml``: apply order first, so ``kubectl apply -f DIR`` works too."""
    name = re.sub(r"[^a-z0-9.-]+", "-", obj.name.lower())[:180]
    return f"{position:04d}-{obj.kind.lower()}-{name}.yaml"


# --------------------------------------------------------------------------- reading the set


def load_objects(artifact: Artifact, read_entry: Callable[[Entry], Iterator[bytes]]) -> list[KubeObject]:
    """Every object of the set, parsed only after each file's bytes verified in full."""
    total = sum(e.size for e in artifact.entries)
    if total > MAX_SET_BYTES:
        raise FerryError(f"manifest set {artifact.name!r}: {total} bytes of YAML, over the limit of {MAX_SET_BYTES}")
    objects: list[KubeObject] = []
    for entry in sorted(artifact.entries, key=lambda e: e.path or ""):
        if entry.size > MAX_FILE_BYTES:
            raise FerryError(f"manifest set {artifact.name!r}: {entry.path} is over the limit of {MAX_FILE_BYTES} bytes")
        data = b"".join(read_entry(entry))  # the iterator raises if the bytes do not verify
        label = f"manifest set {artifact.name!r}: {entry.path}"
        objects.extend(parse_documents(data, entry.path or "", label))
    check_unique(objects, f"manifest set {artifact.name!r}")
    return objects


# --------------------------------------------------------------------------- GitOps folder


def write_gitops(root: Path | FsRoot, set_name: str, objects: list[KubeObject], *, folder: str = "") -> Path:
    """Write the set to ``root/<set>/``, one file per object, replacing what was there at once.

    ``root`` is the GitOps folder, a path opened as a root; or an :class:`importer.fsroot.FsRoot`
    (the edge state) with the GitOps folder ``folder`` below it (created here, when the set is
    written). Every write goes through the root, never following a link: a link planted at
    ``manifests``, ``<set>`` or inside the temporary folder is refused
    (:class:`manifests.errors.PlaceError`).

    The new folder is built under a hidden temporary name beside it and fsynced, then
    swapped in with one atomic exchange, so a GitOps agent sees the old set or the new one,
    never a mix and never none. Where the exchange is unsupported, two renames are used and
    a crash between them is repaired on the next run (the old set is put back first).

    Returns the path of the set's folder.
    """
    if isinstance(root, FsRoot):
        fs = root.sub(folder, create=True) if folder else root.sub("")
    else:
        fs = FsRoot.open(Path(root) / folder if folder else Path(root), create=True)
    try:
        return _write_gitops(fs, set_name, objects)
    finally:
        fs.close()


def _write_gitops(fs: FsRoot, set_name: str, objects: list[KubeObject]) -> Path:
    final, old = set_name, f".{set_name}.ferry-old"
    st = fs.lstat(final)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise PlaceError(fs.place, fs.where(final),
                         f"{fs.where(final)} exists and is not a folder; ferry replaces only folders it wrote")
    if fs.lstat(old) is not None and st is None:
        fs.rename(old, final)  # repair an interrupted two-rename swap
    for stale in fs.listdir():
        if stale.startswith(f".{set_name}.ferry-"):
            fs.rmtree(stale)
    tmp = fs.mkdtemp("", f".{set_name}.ferry-new-")
    try:
        for position, obj in enumerate(objects, start=1):
            with fs.create(f"{tmp}/{gitops_file_name(position, obj)}") as f:
                f.write(render(obj))
                f.flush()
                os.fsync(f.fileno())
        fs.chmod(tmp, 0o755)
        fs.fsync(tmp)
        if fs.lstat(final) is None:
            fs.rename(tmp, final)
        elif fs.exchange(tmp, final):
            fs.rmtree(tmp)
        else:
            fs.rename(final, old)
            fs.rename(tmp, final)
            fs.rmtree(old)
        fs.fsync()
    finally:
        if fs.lstat(tmp) is not None:
            fs.rmtree(tmp)
    return fs.path / set_name


# --------------------------------------------------------------------------- cluster


def _api_message(err: Any) -> str:
    """The API server's own one-line message from an error response."""
    import json

    body = getattr(err, "body", None)
    try:
        message = json.loads(body).get("message") if body else None
    except (ValueError, AttributeError):
        message = None
    status = getattr(err, "status", "?")
    reason = getattr(err, "reason", "") or ""
    return f"HTTP {status} {reason}".strip() + (f": {message}" if message else "")


def _connection_problem(err: BaseException) -> str:
    """urllib3's reason without its ``HTTPConnection(host=..., port=...): `` prefix."""
    reason = str(getattr(err, "reason", None) or err).splitlines()[0]
    return re.sub(r"^[\w.<> ]*Connection(?:Pool)?\([^)]*\)>?: ", "", reason)[:300]


@dataclass(frozen=True)
class Kubeconfig:
    """What ferry reads of a kubeconfig file itself: its contexts and the current one.

    ``contexts`` maps each context's name to its ``namespace`` (None when it names none), in
    file order; ``current`` is ``current-context`` (None when absent or empty: kubectl and the
    kubernetes client then need an explicit context)."""

    path: Path
    contexts: dict[str, str | None]
    current: str | None

    def choose(self, context: str | None) -> tuple[str, str]:
        """The context to use and its default namespace.

        Args:
            context: ``--context`` (None: not given; the file's ``current-context`` is used).
        Returns:
            (context name, namespace; ``default`` when the context names none).
        Raises:
            UsageError (exit 2): ``context`` is not one of the file's contexts (the line names
            those there are), or no ``context`` is given and the file has no
            ``current-context`` (the line says to pass ``--context``).
        """
        from manifests.errors import UsageError

        names = ", ".join(self.contexts) or "none"
        if context is None:
            if self.current is None:
                raise UsageError(f"--kubeconfig {self.path}: has no current-context; pass --context NAME "
                                 f"(one of: {names})")
            context = self.current
            if context not in self.contexts:
                raise UsageError(f"--kubeconfig {self.path}: its current-context {context!r} is not one of its "
                                 f"contexts (it has: {names}); pass --context NAME")
        elif context not in self.contexts:
            raise UsageError(f"--context {context}: the kubeconfig {self.path} has no such context "
                             f"(it has: {names})")
        return context, self.contexts[context] or "default"


def read_kubeconfig(kubeconfig: Path) -> Kubeconfig:
    """Read the contexts of the kubeconfig file ``kubeconfig`` without contacting any cluster:
    the one place ferry parses a kubeconfig itself (the kubernetes client's own reader refuses a
    file without ``current-context`` even when a context is named; kubectl does not).

    Args:
        kubeconfig: the file ``--kubeconfig`` names (``import``, ``watch``, ``site set``); at most
            :data:`manifests.limits.MAX_KUBECONFIG_BYTES` bytes of YAML.
    Returns:
        a :class:`Kubeconfig`.
    Raises:
        PlaceError (exit 2, place ``source``): the file is not there, not a regular file, or
        unreadable. LimitError (exit 2): over the size limit, or a YAML alias bomb
        (:func:`manifests.yamldoc.check_expanded`). UsageError (exit 2): not YAML, or not a
        kubeconfig (``contexts`` not a list of ``{name, context}`` mappings; the Kubernetes
        client's ``clientcmd/api/v1`` Config schema).
    """
    from manifests.bundle import not_found, read_bounded
    from manifests.errors import UsageError
    from manifests.limits import MAX_KUBECONFIG_BYTES
    from manifests.yamldoc import check_expanded

    if not kubeconfig.exists():
        raise PlaceError("source", str(kubeconfig), not_found("kubeconfig", kubeconfig))
    data = read_bounded(kubeconfig, MAX_KUBECONFIG_BYTES, "kubeconfig", place="source")
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as err:
        raise UsageError(f"--kubeconfig {kubeconfig}: cannot be used (not valid YAML: "
                         f"{str(err).splitlines()[0][:200]})") from None
    check_expanded(doc, f"kubeconfig {kubeconfig}")

    def bad(why: str) -> UsageError:
        return UsageError(f"--kubeconfig {kubeconfig}: cannot be used (not a kubeconfig: {why})")

    if not isinstance(doc, dict):
        raise bad("not a mapping")
    entries = doc.get("contexts") or []
    if not isinstance(entries, list):
        raise bad("contexts is not a list")
    contexts: dict[str, str | None] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise bad("a context without a name")
        body = entry.get("context") or {}
        if not isinstance(body, dict):
            raise bad(f"context {entry['name']!r} is not a mapping")
        namespace = body.get("namespace")
        contexts[entry["name"]] = namespace if isinstance(namespace, str) and namespace else None
    current = doc.get("current-context")
    if current is not None and not isinstance(current, str):
        raise bad("current-context is not a string")
    return Kubeconfig(kubeconfig, contexts, current or None)


def check_target(kubeconfig: Path | None, context: str | None, manifests_dir: Path | None) -> None:
    """Check the manifest target the options name before anything is read, planned or applied,
    for an import and its dry run alike; contacts no cluster (whether the API server answers is
    for the import to find).

    Args:
        kubeconfig, context: ``import --kubeconfig`` / ``--context`` (None: not given).
        manifests_dir: ``import --manifests-dir`` (None: not given); made when missing.
    Raises:
        PlaceError (exit 2): the kubeconfig is not there, or ``manifests_dir`` is there but is
        not a folder. UsageError (exit 2): the kubeconfig cannot be used, has no ``context``,
        or has no current-context and no ``context`` is given (:meth:`Kubeconfig.choose`).
    """
    if kubeconfig is not None:
        read_kubeconfig(kubeconfig).choose(context)
    if manifests_dir is not None and manifests_dir.exists() and not manifests_dir.is_dir():
        raise PlaceError("source", str(manifests_dir), f"--manifests-dir {manifests_dir}: not a folder")


class _Cluster:
    """The dynamic client, with every failure turned into one FerryError line."""

    def __init__(self, target: ManifestTarget) -> None:
        from kubernetes import config, dynamic
        from kubernetes.config.config_exception import ConfigException

        assert target.kubeconfig is not None
        self.where = f"cluster ({target.kubeconfig}" + (f", context {target.context})" if target.context else ")")
        # ferry reads the contexts itself and always names one: the client's own reader would
        # refuse a file without current-context even when --context is given.
        context, self.default_namespace = read_kubeconfig(target.kubeconfig).choose(target.context)
        try:
            api = config.new_client_from_config(config_file=str(target.kubeconfig), context=context,
                                                persist_config=False)
        except (ConfigException, OSError, yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError) as err:
            raise FerryError(f"kubeconfig {target.kubeconfig}: cannot be used ({str(err).splitlines()[0][:200]})") from None
        self.host = api.configuration.host
        self._tmp = tempfile.TemporaryDirectory(prefix="ferry-discovery-")
        # A fresh discovery cache per import: a shared one in /tmp could be stale or planted.
        self.client = self._call(lambda: dynamic.DynamicClient(api, cache_file=os.path.join(self._tmp.name, "d.json")),
                                 "discovery")

    def close(self) -> None:
        self._tmp.cleanup()

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        from kubernetes.client.exceptions import ApiException
        from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError, ResourceNotUniqueError
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except (DynamicApiError, ApiException) as err:
            raise ClusterError(f"{self.where} at {self.host}: {what}: {_api_message(err)}") from None
        except (ResourceNotFoundError, ResourceNotUniqueError) as err:
            raise ClusterError(f"{self.where} at {self.host}: {what}: the server does not serve this kind ({err})") from None
        except (HTTPError, OSError) as err:
            raise ClusterError(f"{self.where}: cannot reach {self.host}: {_connection_problem(err)}") from None

    def resource(self, obj: KubeObject) -> Any:
        return self._call(lambda: self.client.resources.get(api_version=obj.api_version, kind=obj.kind), obj.id)

    def namespace(self, resource: Any, obj: KubeObject) -> str | None:
        return (obj.namespace or self.default_namespace) if resource.namespaced else None

    def get(self, obj: KubeObject) -> dict[str, Any] | None:
        """The object as the server holds it, or None when it does not exist."""
        from kubernetes.dynamic.exceptions import NotFoundError

        resource = self.resource(obj)

        def fetch() -> dict[str, Any] | None:
            try:
                found = resource.get(name=obj.name, namespace=self.namespace(resource, obj),
                                     _request_timeout=REQUEST_TIMEOUT)
            except NotFoundError:
                return None
            return found.to_dict()

        return self._call(fetch, f"reading {obj.id}")

    def apply(self, obj: KubeObject) -> dict[str, Any]:
        """Server-side apply one object. A manifest that names ``metadata.resourceVersion`` (one
        saved with ``kubectl get -o yaml``) applies only to that version of the object: the
        server answers 409, and the line says to remove it at the hub (force does not override
        it; Kubernetes API conventions, "Concurrency Control and Consistency")."""
        resource = self.resource(obj)
        try:
            return self._call(lambda: resource.server_side_apply(
                body=obj.body, name=obj.name, namespace=self.namespace(resource, obj),
                field_manager=FIELD_MANAGER, force_conflicts=True, _request_timeout=REQUEST_TIMEOUT,
            ).to_dict(), f"applying {obj.id}")
        except ClusterError as err:
            version = (obj.body.get("metadata") or {}).get("resourceVersion")
            if version is None or ": HTTP 409 " not in str(err):
                raise
            raise ClusterError(f"{err} (the manifest names metadata.resourceVersion {version}, so it applies only "
                               "to that version of the object: remove resourceVersion from the manifest at the "
                               "hub and export a new version)") from None

    def wait_established(self, crd: KubeObject) -> None:
        """Wait until the API server reports a just-applied CRD Established (served)."""
        deadline = time.monotonic() + CRD_ESTABLISH_TIMEOUT
        while True:
            current = self.get(crd) or {}
            conditions = (current.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                break
            if time.monotonic() > deadline:
                raise FerryError(f"{self.where}: {crd.id} was applied but not established "
                                 f"within {CRD_ESTABLISH_TIMEOUT:.0f} s")
            time.sleep(0.5)

    def refresh_discovery(self) -> None:
        self._call(self.client.resources.invalidate_cache, "discovery")


def newer_on_cluster(current: dict[str, Any] | None, set_name: str, version: str) -> str | None:
    """Why an object must not be overwritten (a newer version of the same set applied it), or None."""
    if not current:
        return None
    annotations = (current.get("metadata") or {}).get("annotations") or {}
    theirs = annotations.get(VERSION_ANNOTATION)
    if theirs is None or annotations.get(SET_ANNOTATION, set_name) != set_name:
        return None
    try:
        newer = compare_versions(theirs, version) > 0
    except FerryError:
        return None  # not a version ferry wrote; the object is ours to manage again
    return f"the cluster holds version {theirs} of set {set_name!r}, newer than {version}" if newer else None


def apply_to_cluster(target: ManifestTarget, set_name: str, version: str, objects: list[KubeObject], *,
                     allow_downgrade: bool = False) -> tuple[list[str], list[tuple[str, str]]]:
    """Server-side apply ``objects`` (already in apply order) with field manager ``ferry``."""
    applied: list[str] = []
    skipped: list[tuple[str, str]] = []
    cluster = _Cluster(target)
    try:
        crds_pending = False
        for obj in objects:
            is_crd = (obj.group, obj.kind) == _CRD
            if crds_pending and not is_crd:
                cluster.refresh_discovery()
                crds_pending = False
            why = None if allow_downgrade else newer_on_cluster(cluster.get(obj), set_name, version)
            if why:
                skipped.append((obj.id, why))
                continue
            cluster.apply(obj)
            applied.append(obj.id)
            if is_crd:
                cluster.wait_established(obj)
                crds_pending = True
    finally:
        cluster.close()
    return applied, skipped


# --------------------------------------------------------------------------- entry point


def apply_manifests(artifact: Artifact, read_entry: Callable[[Entry], Iterator[bytes]], target: ManifestTarget, *,
                    image_refs: dict[str, str], origin: dict[str, str],
                    allow_downgrade: bool = False, registry: str | None = None) -> ManifestResult:
    """Apply one manifest set to ``target`` (see the module docstring).

    ``image_refs`` maps a workload's image reference to its pinned edge reference
    (``importer.run`` builds it from ``importer.apply.images.pinned_ref``); ``origin`` names the bundle (:func:`origin_of`). Raises
    FerryError on the first failure; objects applied to a cluster before it stay applied.
    """
    if not NAME_RE.match(artifact.name):  # it names a folder: never a path
        raise FerryError(f"manifest set name {artifact.name!r} is not allowed")
    if target.gitops_dir is None and target.kubeconfig is None:
        raise FerryError(f"manifest set {artifact.name!r}: no target (give a kubeconfig or a manifests folder)")
    objects = prepare(load_objects(artifact, read_entry), image_refs, annotations_for(artifact, origin),
                      registry=registry)
    result = ManifestResult(artifact.name)
    if target.kubeconfig is not None:
        result.applied, result.skipped = apply_to_cluster(target, artifact.name, artifact.version, objects,
                                                          allow_downgrade=allow_downgrade)
    if target.gitops_dir is not None:
        try:
            if target.root is not None:
                result.written = write_gitops(target.root, artifact.name, objects, folder=str(target.gitops_dir))
            else:
                result.written = write_gitops(target.gitops_dir, artifact.name, objects)
        except OSError as err:
            raise FerryError(f"manifest set {artifact.name!r}: cannot write to {target.gitops_dir}: "
                             f"{err.strerror or err}") from None
        if target.kubeconfig is None:
            result.applied = [obj.id for obj in objects]
    return result


# --------------------------------------------------------------------------- the apply target


class ManifestSets:
    """Manifest sets into a cluster or a GitOps folder (:class:`importer.apply.ApplyTarget`).

    Without ``--kubeconfig`` the folder is ``--manifests-dir`` or ``EDGE/manifests``; either
    is written through an :class:`importer.fsroot.FsRoot` (no link followed below it)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def under_edge(self) -> bool:
        return self.ctx.kubeconfig is None and self.ctx.manifests_dir is None

    def needs(self, artifact: Artifact) -> list[Entry]:
        return list(artifact.entries)

    def bytes_to_write(self, artifact: Artifact, entries: list[Entry]) -> int:
        return sum(e.size for e in entries) if self.under_edge else 0

    def _target(self) -> ManifestTarget:
        ctx = self.ctx
        if ctx.kubeconfig is not None:
            target = ManifestTarget(None, ctx.kubeconfig, ctx.context)
        elif ctx.manifests_dir is not None:
            target = ManifestTarget(ctx.manifests_dir, None, None)
        elif ctx.edge is not None:
            target = ManifestTarget(Path(MANIFESTS_DIR), None, None, root=ctx.edge)
        else:
            raise FerryError("no edge state to write manifest sets under")
        return target

    def preview(self, artifact: Artifact, read_entry: ReadEntry, image_refs: dict[str, str],
                origin: dict[str, str]) -> Applied | None:
        """The plan :meth:`apply` would carry out at a KubeStellar WEC, made by the same call with
        ``dry_run=True`` (:func:`importer.wec.apply_placed`: reads only, GETs against a cluster);
        None when the site has no WEC identity (the set is applied whole). For ``import
        --dry-run`` and ``verify --state``. Raises FerryError as :meth:`apply` does."""
        from ..site import read_site

        site = read_site(self.ctx.state)
        if not site.wec:
            return None
        from ..wec import apply_placed

        placed = apply_placed(artifact, read_entry, self._target(), state=self.ctx.state, site=site,
                              image_refs=image_refs, origin=origin, allow_downgrade=self.ctx.allow_downgrade,
                              no_prune=self.ctx.no_prune, dry_run=True)
        return Applied(plan=placed.plan_lines(), plan_json=placed.to_json(), warnings=placed.warnings)

    def apply(self, artifact: Artifact, read_entry: ReadEntry, job: Job) -> Applied:
        ctx = self.ctx
        target = self._target()
        from ..site import read_site

        site = read_site(ctx.state)
        if site.wec:  # a KubeStellar WEC: placement, createOnly, pruning, status back (importer.wec)
            from ..wec import apply_placed

            placed = apply_placed(artifact, read_entry, target, state=ctx.state, site=site,
                                  image_refs=job.image_refs, origin=job.origin, registry=ctx.registry,
                                  allow_downgrade=ctx.allow_downgrade, no_prune=ctx.no_prune)
            return Applied(note=placed.summary(), plan=placed.plan_lines(), plan_json=placed.to_json(),
                           warnings=placed.warnings)
        result = apply_manifests(artifact, read_entry, target, image_refs=job.image_refs, origin=job.origin,
                                 allow_downgrade=ctx.allow_downgrade, registry=ctx.registry)
        note = ("; left alone (newer on the cluster): " + ", ".join(o for o, _ in result.skipped)
                if result.skipped else "")
        return Applied(note=note)
