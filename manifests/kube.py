"""The Kubernetes object model both sides read manifest sets with: parse, check, find images.

A manifest set is a YAML file or a folder of ``*.yaml``/``*.yml`` files (workloads plus
KubeStellar ``BindingPolicy`` objects). The hub (:mod:`bundler.sources.kube`) checks every
document with these functions so that a typo is caught before the air gap; the edge
(:mod:`importer.apply.kube`) parses the verified bytes again with the same functions, so both
sides read a set identically (as python-tuf's ``tuf/api/metadata.py`` serves both its client
and its repository).

Parsing follows what ``kubectl`` accepts (YAML 1.1 via sigs.k8s.io/yaml): timestamps stay
strings, anchors and aliases work. Values that have no JSON form (binary, non-string keys,
NaN) are refused, and the expanded size of a document is bounded
(:data:`manifests.limits.MAX_KUBE_NODES`, :data:`manifests.limits.MAX_KUBE_DEPTH`) so that
an alias bomb ("billion laughs") costs nothing. Pure: works on bytes it is given.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from manifests.errors import FerryError, FormatError, LimitError
from manifests.limits import MAX_KUBE_DEPTH, MAX_KUBE_FILE_BYTES, MAX_KUBE_NODES
from manifests.model import ImageInfo
from manifests.oci import parse_reference

YAML_SUFFIXES = (".yaml", ".yml")

_DNS_SUBDOMAIN = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
API_VERSION_RE = re.compile(rf"^(?:{_DNS_SUBDOMAIN}/)?[a-z0-9](?:[-a-z0-9]*[a-z0-9])?\Z")
KIND_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,62}\Z")
#: Object names: DNS subdomains, plus the ``:`` that RBAC names such as ``system:viewer`` use.
NAME_RE = re.compile(r"^[A-Za-z0-9](?:[-A-Za-z0-9_.:]{0,251}[A-Za-z0-9])?\Z")
NAMESPACE_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?\Z")

#: Workload kinds whose pod template names images: (API group, kind) -> path to the pod spec.
POD_SPEC_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): ("spec",),
    ("", "PodTemplate"): ("template", "spec"),
    ("", "ReplicationController"): ("spec", "template", "spec"),
    ("apps", "Deployment"): ("spec", "template", "spec"),
    ("apps", "StatefulSet"): ("spec", "template", "spec"),
    ("apps", "DaemonSet"): ("spec", "template", "spec"),
    ("apps", "ReplicaSet"): ("spec", "template", "spec"),
    ("batch", "Job"): ("spec", "template", "spec"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
}
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


# --------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader without timestamp resolution: Kubernetes reads ``2024-01-01`` as a string."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _json_shape(value: Any, where: str) -> None:
    """Refuse what has no JSON form, too deep a nesting, or too many values (alias bombs).

    Walks the tree as JSON would serialise it, so shared (aliased) subtrees are counted
    each time they appear and a self-referencing alias hits the bound instead of looping.
    """
    budget = MAX_KUBE_NODES
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise LimitError(f"{where}: more than {MAX_KUBE_NODES} values once aliases are expanded")
        if depth > MAX_KUBE_DEPTH:
            raise LimitError(f"{where}: nested deeper than {MAX_KUBE_DEPTH} levels")
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise FormatError(f"{where}: mapping key {key!r} is not a string")
                stack.append((sub, depth + 1))
        elif isinstance(item, list):
            stack.extend((sub, depth + 1) for sub in item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise FormatError(f"{where}: {item} has no JSON form")
        elif not (item is None or isinstance(item, (str, int, bool))):
            raise FormatError(f"{where}: a {type(item).__name__} value has no JSON form")


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"not valid YAML: {problem}{where}"


# --------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class KubeObject:
    """One Kubernetes object of a manifest set and where it was read."""

    body: dict[str, Any]
    file: str  # the file's path within the set
    index: int  # 1-based document number within the file
    item: int | None = None  # 0-based position in the ``items`` of the List it was read from

    @property
    def where(self) -> str:
        """Where the object was read: ``a.yaml document 2`` or ``a.yaml document 2 items[3]``."""
        return f"{self.file} document {self.index}" + (f" items[{self.item}]" if self.item is not None else "")

    @property
    def api_version(self) -> str:
        return self.body["apiVersion"]

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def kind(self) -> str:
        return self.body["kind"]

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def namespace(self) -> str | None:
        return self.body["metadata"].get("namespace")

    @property
    def id(self) -> str:
        """``Kind namespace/name`` (or ``Kind name``), with the group when there is one."""
        kind = f"{self.kind}.{self.group}" if self.group else self.kind
        return f"{kind} {self.namespace}/{self.name}" if self.namespace else f"{kind} {self.name}"


def check_object(doc: Any, where: str) -> dict[str, Any]:
    """Return ``doc`` if it is a Kubernetes object (apiVersion, kind, metadata.name), else raise."""
    if not isinstance(doc, dict):
        raise FormatError(f"{where}: not a Kubernetes object (a {type(doc).__name__}, not a mapping)")
    for key in ("apiVersion", "kind"):
        if key not in doc:
            raise FormatError(f"{where}: not a Kubernetes object (no {key})")
    api_version, kind, meta = doc["apiVersion"], doc["kind"], doc.get("metadata")
    if not isinstance(api_version, str) or not API_VERSION_RE.match(api_version):
        raise FormatError(f"{where}: apiVersion {api_version!r} is not like v1 or apps/v1")
    if not isinstance(kind, str) or not KIND_RE.match(kind):
        raise FormatError(f"{where}: kind {kind!r} is not a Kubernetes kind")
    if not isinstance(meta, dict) or "name" not in meta:
        raise FormatError(f"{where}: {kind} has no metadata.name")
    name, namespace = meta["name"], meta.get("namespace")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise FormatError(f"{where}: {kind} metadata.name {name!r} is not a valid object name")
    if namespace is not None and (not isinstance(namespace, str) or not NAMESPACE_RE.match(namespace)):
        raise FormatError(f"{where}: {kind} {name}: metadata.namespace {namespace!r} is not a valid namespace")
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is not None and (not isinstance(value, dict)
                                  or not all(isinstance(v, str) for v in value.values())):
            raise FormatError(f"{where}: {kind} {name}: metadata.{key} must map strings to strings")
    return doc


def is_list(doc: dict[str, Any]) -> bool:
    """Whether a document is a list of objects: ``kind: List`` (``v1``, as ``kubectl get -o yaml``
    writes), or any ``*List`` kind (``DeploymentList``, ``ConfigMapList``) that has ``items``.

    Rule: apimachinery ``meta.IsListType`` / kubectl's resource builder, which reads such a
    document as its items (``k8s.io/cli-runtime/pkg/resource``, ``FlattenListVisitor``).
    """
    kind = doc.get("kind")
    return isinstance(kind, str) and (kind == "List" or (kind.endswith("List") and "items" in doc))


def _read_objects(doc: Any, where: str, file: str, index: int) -> list[KubeObject]:
    """The objects one document holds: itself, or a list's items (each checked as an object).

    A list needs no ``metadata.name`` (it is not an object the API server stores). Refused,
    each in one line naming the document (and item): ``items`` that is not a sequence, an
    item that is not a Kubernetes object, and a list inside a list (kubectl flattens those,
    but no published manifest needs one and two levels of wrapping hide what a set holds).
    The number of items is bounded by :data:`manifests.limits.MAX_KUBE_NODES`, checked on
    the whole document before this runs.
    """
    if not (isinstance(doc, dict) and is_list(doc)):
        return [KubeObject(check_object(doc, where), file, index)]
    kind, api_version = doc["kind"], doc.get("apiVersion")
    if not isinstance(api_version, str) or not API_VERSION_RE.match(api_version):
        raise FormatError(f"{where}: {kind} apiVersion {api_version!r} is not like v1 or apps/v1")
    items = doc.get("items")
    if not isinstance(items, list):
        shown = "missing" if items is None else f"a {type(items).__name__}"
        raise FormatError(f"{where}: {kind} items must be a list of objects ({shown})")
    objects = []
    for i, item in enumerate(items):
        at = f"{where} items[{i}]"
        if isinstance(item, dict) and is_list(item):
            raise FormatError(f"{at}: a {item['kind']} inside a {kind}; list its items directly")
        objects.append(KubeObject(check_object(item, at), file, index, i))
    return objects


def parse_documents(data: bytes, file: str, label: str | None = None) -> list[KubeObject]:
    """Every Kubernetes object in one YAML file; empty documents are skipped, and a list
    document (:func:`is_list`) stands for its items, in order.

    ``file`` is the path within the set; ``label`` (default ``file``) names it in errors,
    which read like ``kubestellar/app.yaml document 2: not a Kubernetes object (no kind)``.
    """
    label = label or file
    if len(data) > MAX_KUBE_FILE_BYTES:
        raise LimitError(f"{label}: {len(data)} bytes, over the limit of {MAX_KUBE_FILE_BYTES} for one manifest file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise FormatError(f"{label}: not UTF-8 text (byte {err.start})") from None
    objects: list[KubeObject] = []
    index = 0
    try:
        for index, doc in enumerate(yaml.load_all(text, Loader=_Loader), start=1):  # noqa: S506 (safe loader)
            if doc is None:
                continue
            where = f"{label} document {index}"
            _json_shape(doc, where)
            objects.extend(_read_objects(doc, where, file, index))
    except yaml.YAMLError as err:
        raise FormatError(f"{label} document {index + 1}: {_yaml_problem(err)}") from None
    except RecursionError:
        raise FormatError(f"{label} document {index + 1}: nested too deeply") from None
    return objects


def check_unique(objects: list[KubeObject], where: str) -> None:
    """Refuse the same object twice in a set: one would silently override the other."""
    seen: dict[tuple[str, str, str | None, str], KubeObject] = {}
    for obj in objects:
        key = (obj.group, obj.kind, obj.namespace, obj.name)
        if key in seen:
            first = seen[key]
            raise FormatError(f"{where}: {obj.id} appears twice ({first.where} and {obj.where})")
        seen[key] = obj


# --------------------------------------------------------------------------- workloads and images


def pod_specs(obj: KubeObject) -> Iterator[dict[str, Any]]:
    """The pod spec of a workload (none for other kinds); raises on a malformed template."""
    path = POD_SPEC_PATHS.get((obj.group, obj.kind))
    if path is None:
        return
    node: Any = obj.body
    for i, key in enumerate(path):
        if node is None:
            return
        if not isinstance(node, dict):
            raise FormatError(f"{obj.where}: {obj.id}: "
                             f"{'.'.join(path[:i]) or 'object'} is not a mapping")
        node = node.get(key)
    if node is None:
        return
    if not isinstance(node, dict):
        raise FormatError(f"{obj.where}: {obj.id}: {'.'.join(path)} is not a mapping")
    yield node


def containers(obj: KubeObject) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every container of a workload as (``containers[0]``-style label, container mapping)."""
    for spec in pod_specs(obj):
        for field in CONTAINER_LISTS:
            items = spec.get(field)
            if items is None:
                continue
            if not isinstance(items, list) or not all(isinstance(c, dict) for c in items):
                raise FormatError(f"{obj.where}: {obj.id}: {field} must be a list of containers")
            for i, container in enumerate(items):
                yield f"{field}[{i}]", container


def workload_images(obj: KubeObject) -> list[str]:
    """Image references a workload's containers and image volumes name (the slots of
    :func:`reference_slots` other than KServe storage URIs), in order, each checked to parse."""
    refs = []
    for slot in reference_slots(obj):
        image = slot.holder.get(slot.key)
        if image is None or slot.scheme:
            continue
        where = f"{obj.where}: {obj.id}: {slot.label}"
        if not isinstance(image, str):
            raise FormatError(f"{where} is not a string")
        try:
            parse_reference(image)
        except FerryError as err:
            raise FormatError(f"{where} {image[:80]!r} is not an image reference ({err})") from None
        refs.append(image)
    return refs


def _same_repository(a: str, b: str) -> bool:
    """Equal repositories, reading Docker Hub's ``library/nginx`` and ``nginx`` as one."""
    return a.removeprefix("library/") == b.removeprefix("library/")


def names_image(ref: str, repository: str, tag: str | None, digest: str | None) -> bool:
    """Whether ``ref`` names the image ``repository`` (tag ``tag``, manifest ``digest``) at
    any registry: the same repository with the same digest when ``ref`` has one, else with the
    same tag (``ref`` without one means ``latest``). The one rule the hub warns by and the edge rewrites by."""
    try:
        parsed = parse_reference(ref)
    except FerryError:
        return False
    if not _same_repository(parsed.repository, repository):
        return False
    if parsed.digest is not None:
        return parsed.digest == digest
    return tag is not None and parsed.tag == tag


def carried_image(ref: str, carried: list[ImageInfo]) -> ImageInfo | None:
    """The carried image a workload's reference names, or None.

    Matches the reference the hub read (``ImageInfo.source``) exactly, or by
    :func:`names_image` (repository with digest, or with tag, the registry host ignored,
    since the edge pushes every image to its own registry).
    """
    for info in carried:
        if info.source is not None and info.source == ref:
            return info
    return next((info for info in carried if names_image(ref, info.repository, info.tag, info.manifest)), None)


def image_is_carried(ref: str, carried: list[ImageInfo]) -> bool:
    """Whether the bundle carries the image ``ref`` names (see :func:`carried_image`)."""
    return carried_image(ref, carried) is not None


# --------------------------------------------------------------------------- references to pin

#: The repository prefix of a model's hub-side name, ``models/<name>:<version>`` (issue #14).
MODEL_REPOSITORY_PREFIX = "models/"
#: KServe's scheme for OCI storage (modelcars): ``storageUri: oci://REFERENCE``.
OCI_URI_SCHEME = "oci://"
_INFERENCE_SERVICE = ("serving.kserve.io", "InferenceService")


@dataclass(frozen=True)
class ReferenceSlot:
    """One place in an object that names an image or a model by reference.

    ``holder[key]`` is the value; ``scheme`` is the prefix the value carries before the
    reference (``oci://`` for KServe, "" otherwise); ``label`` says where it is
    (``containers[0].image``, ``volumes[1].image.reference``, ``spec.predictor.model.storageUri``).
    """

    label: str
    holder: dict[str, Any]
    key: str
    scheme: str = ""

    def reference(self) -> str | None:
        """The reference held here, without the scheme; None when the slot holds none (absent,
        not a string, or a ``storageUri`` of another scheme such as ``s3://`` or ``pvc://``)."""
        value = self.holder.get(self.key)
        if not isinstance(value, str) or not value.startswith(self.scheme):
            return None
        return value[len(self.scheme):]

    def set(self, reference: str) -> None:
        """Replace the reference, keeping the scheme."""
        self.holder[self.key] = self.scheme + reference


def reference_slots(obj: KubeObject) -> Iterator[ReferenceSlot]:
    """Every place of ``obj`` that names an image or a model (issue #14, item 2), in order; the
    one list of reference fields the hub records and the edge rewrites and checks:

    - each container's ``image`` (:func:`containers`);
    - each pod-spec volume's ``image.reference`` (Kubernetes image volumes, ``volumes[].image``);
    - for a KServe ``InferenceService`` (``serving.kserve.io``), every ``storageUri`` directly
      under ``spec.predictor``: ``spec.predictor.model.storageUri`` (v1beta1) and the older
      ``spec.predictor.<framework>.storageUri`` (``sklearn``, ``pytorch``, ...), read only
      when it is ``oci://REFERENCE``.

    Raises:
        FormatError: a pod template, container list or ``volumes`` is not the shape Kubernetes requires.
    """
    for label, container in containers(obj):
        yield ReferenceSlot(f"{label}.image", container, "image")
    for spec in pod_specs(obj):
        volumes = spec.get("volumes")
        if volumes is None:
            continue
        if not isinstance(volumes, list) or not all(isinstance(v, dict) for v in volumes):
            raise FormatError(f"{obj.where}: {obj.id}: volumes must be a list of volumes")
        for i, volume in enumerate(volumes):
            image = volume.get("image")
            if image is None:
                continue
            if not isinstance(image, dict):
                raise FormatError(f"{obj.where}: {obj.id}: volumes[{i}].image is not a mapping")
            yield ReferenceSlot(f"volumes[{i}].image.reference", image, "reference")
    if (obj.group, obj.kind) == _INFERENCE_SERVICE:
        top = obj.body.get("spec")
        predictor = top.get("predictor") if isinstance(top, dict) else None
        if isinstance(predictor, dict):
            for name, part in predictor.items():
                if isinstance(part, dict) and "storageUri" in part:
                    yield ReferenceSlot(f"spec.predictor.{name}.storageUri", part, "storageUri", OCI_URI_SCHEME)


def model_name(ref: str) -> tuple[str, str | None, str | None] | None:
    """``(name, tag, digest)`` when ``ref`` is a model's hub-side name, ``models/<name>:<version>``
    (or ``@sha256:...``; no registry host written), else None. Such a reference must be pinned
    at the edge or refused: it never reaches a node as written (issue #14, item 2)."""
    try:
        parsed = parse_reference(ref)
    except FerryError:
        return None
    first = ref.partition("/")[0]
    if "." in first or ":" in first or first == "localhost" or not parsed.repository.startswith(MODEL_REPOSITORY_PREFIX):
        return None
    return parsed.repository[len(MODEL_REPOSITORY_PREFIX):], parsed.tag, parsed.digest
