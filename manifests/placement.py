"""Placement: which objects of a manifest set KubeStellar would send to *this* WEC. Pure.

A manifest set may hold KubeStellar control objects (API group ``control.kubestellar.io``):
``BindingPolicy`` and ``Binding`` (what goes where), ``CustomTransform`` (what to strip on the
way), ``StatusCollector`` (what status to return; parsed here, CEL compiled, by
:mod:`manifests.statuscollect`, and evaluated after apply). On a site that has a WEC identity
(``ferry site set``), the import evaluates them here as KubeStellar's controllers would, and
applies only the selected workload objects; control objects never go to a WEC.

The rules follow KubeStellar **v0.30.0** (checked against ``main`` at 1c28a8a1, 2026-08-06, the
commit whose CRDs the tests use; the files named below did not change in between):

- A label selector (``metav1.LabelSelector``; ``LabelSelectorAsSelector`` in
  k8s.io/apimachinery): ``matchLabels`` and ``matchExpressions`` are ANDed; operators ``In``,
  ``NotIn`` (also true when the key is absent), ``Exists``, ``DoesNotExist``; ``In``/``NotIn``
  need values, ``Exists``/``DoesNotExist`` must have none; keys are qualified names and values
  label values. An empty selector matches everything.
- ``spec.clusterSelectors`` (pkg/ocm/ocm.go ``FindClustersBySelectors``): a WEC is selected
  when ANY selector matches its labels; an empty list selects no WEC.
- ``spec.downsync`` (pkg/binding/selectors.go ``testObject``): an object is selected when it
  passes ALL the tests of ANY clause: ``apiGroup`` (absent: any group) equals its group;
  ``resources`` (lowercase plurals), ``namespaces`` and ``objectNames`` contain its value or
  ``"*"`` (an empty list passes; a cluster-scoped object's namespace is ``""``, so only ``"*"``
  passes it); some ``objectSelectors`` selector matches its labels; some ``namespaceSelectors``
  selector matches the labels of its Namespace (passes at once when one selector is empty; a
  Namespace the set does not hold matches nothing). ``createOnly`` of the matching clauses is
  ORed, their ``statusCollectors`` are united (CRD text of ``spec.downsync``).
- Workload objects exclude (pkg/binding/binding-controller.go ``excludedGroups``,
  ``excludedGroupResources``): every object of ``control.kubestellar.io`` (control objects),
  and kinds KubeStellar never propagates (events, nodes, endpoints, leases, ...).
- A ``Binding`` (api/control/v1alpha1/types.go) names its WECs in ``spec.destinations[].clusterId``
  and its objects one by one in ``spec.workload.clusterScope`` / ``namespaceScope``.
- ``CustomTransform`` (pkg/transport/generic/custom_transform_collection.go, pkg/jsonpath): for
  objects of ``spec.apiGroup`` + ``spec.resource``, each ``spec.remove`` entry is a query in
  KubeStellar's JSONPath subset, ``$`` followed by ``.name`` or ``["name"]`` segments, and the
  member it names is removed *if present* (a path that matches nothing is not an error). ``$``
  alone ("identifies the whole object") is refused, as KubeStellar does. Before custom
  transforms, the removals KubeStellar makes on every workload object are made
  (``TransformObject``): ``metadata.managedFields``, ``finalizers``, ``generation``,
  ``ownerReferences``, ``selfLink``, ``resourceVersion``, ``uid``, ``generateName``, the
  ``kubectl.kubernetes.io/last-applied-configuration`` annotation, and ``status``.

Where ferry is stricter than KubeStellar (it cannot write status or conditions back to a hub
it cannot reach, so a problem must stop the import with one line instead): a malformed selector,
an unparsable ``remove`` path, a path that would remove ``apiVersion``, ``kind``,
``metadata`` or ``metadata.name``, a BindingPolicy with no ``clusterSelectors``, a Binding
naming an object the set does not hold, and a policy that selects this WEC and an object of a
kind KubeStellar never propagates: each raises :class:`~manifests.errors.PlacementError`. A
BindingPolicy whose clauses select no object of the set is a warning line
(:attr:`Placement.warnings`), not an error: the other policies of the set still apply.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from manifests.errors import PlacementError

CONTROL_GROUP = "control.kubestellar.io"
#: API groups whose objects KubeStellar never treats as workload (binding-controller.go).
EXCLUDED_GROUPS = frozenset({"flowcontrol.apiserver.k8s.io", "discovery.k8s.io", "apiregistration.k8s.io",
                             "coordination.k8s.io", CONTROL_GROUP})
#: (group, resource) pairs KubeStellar never propagates to a WEC (binding-controller.go).
EXCLUDED_RESOURCES = frozenset({("", "events"), ("events.k8s.io", "events"), ("", "nodes"),
                                ("storage.k8s.io", "csistoragecapacities"), ("storage.k8s.io", "csinodes"),
                                ("", "endpoints"), (CONTROL_GROUP, "workstatuses")})
#: Metadata fields KubeStellar removes from every workload object (TransformObject).
SYSTEM_METADATA = ("managedFields", "finalizers", "generation", "ownerReferences", "selfLink",
                   "resourceVersion", "uid", "generateName")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: Paths a CustomTransform may not remove: without them the object cannot be applied.
PROTECTED_PATHS = (("apiVersion",), ("kind",), ("metadata",), ("metadata", "name"))

#: (group, kind) -> (resource, namespaced) for the kinds a Kubernetes server serves itself;
#: other kinds take their plural and scope from a CustomResourceDefinition in the set, or else
#: apimachinery's ``UnsafeGuessKindToResource`` and "namespaced when it names a namespace".
BUILTIN_KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("", "Namespace"): ("namespaces", False), ("", "Node"): ("nodes", False),
    ("", "PersistentVolume"): ("persistentvolumes", False), ("", "ConfigMap"): ("configmaps", True),
    ("", "Secret"): ("secrets", True), ("", "Service"): ("services", True),
    ("", "ServiceAccount"): ("serviceaccounts", True), ("", "Pod"): ("pods", True),
    ("", "PodTemplate"): ("podtemplates", True), ("", "ReplicationController"): ("replicationcontrollers", True),
    ("", "PersistentVolumeClaim"): ("persistentvolumeclaims", True), ("", "Endpoints"): ("endpoints", True),
    ("", "Event"): ("events", True), ("", "LimitRange"): ("limitranges", True),
    ("", "ResourceQuota"): ("resourcequotas", True),
    ("apps", "Deployment"): ("deployments", True), ("apps", "StatefulSet"): ("statefulsets", True),
    ("apps", "DaemonSet"): ("daemonsets", True), ("apps", "ReplicaSet"): ("replicasets", True),
    ("batch", "Job"): ("jobs", True), ("batch", "CronJob"): ("cronjobs", True),
    ("networking.k8s.io", "Ingress"): ("ingresses", True),
    ("networking.k8s.io", "NetworkPolicy"): ("networkpolicies", True),
    ("networking.k8s.io", "IngressClass"): ("ingressclasses", False),
    ("rbac.authorization.k8s.io", "Role"): ("roles", True),
    ("rbac.authorization.k8s.io", "RoleBinding"): ("rolebindings", True),
    ("rbac.authorization.k8s.io", "ClusterRole"): ("clusterroles", False),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): ("clusterrolebindings", False),
    ("storage.k8s.io", "StorageClass"): ("storageclasses", False),
    ("scheduling.k8s.io", "PriorityClass"): ("priorityclasses", False),
    ("policy", "PodDisruptionBudget"): ("poddisruptionbudgets", True),
    ("autoscaling", "HorizontalPodAutoscaler"): ("horizontalpodautoscalers", True),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): ("customresourcedefinitions", False),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): ("mutatingwebhookconfigurations", False),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): ("validatingwebhookconfigurations", False),
    ("coordination.k8s.io", "Lease"): ("leases", True),
    ("events.k8s.io", "Event"): ("events", True),
    (CONTROL_GROUP, "BindingPolicy"): ("bindingpolicies", False), (CONTROL_GROUP, "Binding"): ("bindings", False),
    (CONTROL_GROUP, "CustomTransform"): ("customtransforms", False),
    (CONTROL_GROUP, "StatusCollector"): ("statuscollectors", False),
    (CONTROL_GROUP, "CombinedStatus"): ("combinedstatuses", True),
}

_NAME_PART = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z")
_LABEL_NAME = re.compile(rf"^{_NAME_PART}\Z")
_LABEL_VALUE = re.compile(rf"^{_NAME_PART}?\Z")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


# --------------------------------------------------------------------------- labels and selectors


def label_key_problem(key: object) -> str | None:
    """Why ``key`` is not a Kubernetes label key (apimachinery ``IsQualifiedName``), or None.

    A key is ``[prefix/]name``: the prefix a DNS subdomain of at most 253 characters, the name
    at most 63 characters of letters, digits, ``-``, ``_``, ``.``, starting and ending with a
    letter or digit."""
    if not isinstance(key, str):
        return "is not a string"
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "has a prefix that is not a DNS subdomain"
    if not _LABEL_NAME.match(name):
        return "is not a label name (at most 63 letters, digits, '-', '_', '.'; alphanumeric at both ends)"
    return None


def label_value_problem(value: object) -> str | None:
    """Why ``value`` is not a Kubernetes label value (empty, or like a label name), or None."""
    if not isinstance(value, str):
        return "is not a string"
    if not _LABEL_VALUE.match(value):
        return "is not a label value (at most 63 letters, digits, '-', '_', '.'; alphanumeric at both ends)"
    return None


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` entry (or one ``matchLabels`` pair, as ``In [value]``)."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """apimachinery ``labels.Requirement.Matches``."""
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


@dataclass(frozen=True)
class Selector:
    """A parsed ``metav1.LabelSelector``: every requirement must hold (an empty one matches all)."""

    requirements: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        parts = []
        for r in self.requirements:
            if r.operator == "In" and len(r.values) == 1:
                parts.append(f"{r.key}={next(iter(r.values))}")
            elif r.operator in ("In", "NotIn"):
                parts.append(f"{r.key} {r.operator.lower()} ({','.join(sorted(r.values))})")
            else:
                parts.append(r.key if r.operator == "Exists" else f"!{r.key}")
        return "{" + ", ".join(parts) + "}"


def parse_selector(raw: object, where: str) -> Selector:
    """A label selector from its YAML form; :class:`PlacementError` naming ``where`` when malformed.

    Args:
        raw: the ``metav1.LabelSelector`` mapping (``matchLabels``: label key -> value,
            ``matchExpressions``: list of ``{key, operator, values}``).
        where: what holds it, for the error (``BindingPolicy edge: clusterSelectors[1]``).
    Returns:
        The selector, requirements in the order written (matchLabels first, sorted by key).
    Raises:
        PlacementError: not a mapping, unknown fields, a bad key or value, an unknown operator,
            values given to Exists/DoesNotExist or missing for In/NotIn (apimachinery
            ``LabelSelectorAsSelector`` / ``labels.NewRequirement``).
    """
    if not isinstance(raw, dict):
        raise PlacementError(f"{where}: a label selector must be a mapping")
    unknown = set(raw) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise PlacementError(f"{where}: unknown selector field {sorted(unknown)[0]!r}")
    reqs: list[Requirement] = []
    match_labels = raw.get("matchLabels") or {}
    if not isinstance(match_labels, dict):
        raise PlacementError(f"{where}: matchLabels must map label keys to values")
    for key in sorted(match_labels, key=str):
        value = match_labels[key]
        problem = label_key_problem(key)
        if problem:
            raise PlacementError(f"{where}: matchLabels key {key!r} {problem}")
        problem = label_value_problem(value)
        if problem:
            raise PlacementError(f"{where}: matchLabels value {value!r} of {key} {problem}")
        reqs.append(Requirement(key, "In", frozenset({value})))
    expressions = raw.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise PlacementError(f"{where}: matchExpressions must be a list")
    for i, expr in enumerate(expressions, start=1):
        at = f"{where}: matchExpressions[{i}]"
        if not isinstance(expr, dict) or set(expr) - {"key", "operator", "values"}:
            raise PlacementError(f"{at} must be a mapping of key, operator and values")
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        problem = label_key_problem(key)
        if problem:
            raise PlacementError(f"{at}: key {key!r} {problem}")
        if op not in OPERATORS:
            raise PlacementError(f"{at}: operator {op!r} is not one of {', '.join(OPERATORS)}")
        if not isinstance(values, list):
            raise PlacementError(f"{at}: values must be a list")
        if op in ("In", "NotIn") and not values:
            raise PlacementError(f"{at}: operator {op} needs at least one value")
        if op in ("Exists", "DoesNotExist") and values:
            raise PlacementError(f"{at}: operator {op} takes no values")
        for value in values:
            problem = label_value_problem(value)
            if problem:
                raise PlacementError(f"{at}: value {value!r} {problem}")
        reqs.append(Requirement(str(key), op, frozenset(values)))
    return Selector(tuple(reqs))


def parse_selectors(raw: object, where: str) -> tuple[Selector, ...]:
    """A list of label selectors (``clusterSelectors``, ``objectSelectors``, ...); absent is ()."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PlacementError(f"{where} must be a list of label selectors")
    return tuple(parse_selector(s, f"{where}[{i}]") for i, s in enumerate(raw, start=1))


def matches_any(selectors: Sequence[Selector], labels: Mapping[str, str]) -> bool:
    """KubeStellar's ``labelsMatchAny``: some selector of the list matches ``labels``."""
    return any(s.matches(labels) for s in selectors)


# --------------------------------------------------------------------------- the objects


class SetObject(Protocol):
    """What placement reads of one object of a set (``manifests.kube.KubeObject``)."""

    @property
    def body(self) -> dict[str, Any]: ...

    @property
    def file(self) -> str: ...

    @property
    def index(self) -> int: ...

    @property
    def where(self) -> str: ...


def guess_resource(kind: str) -> str:
    """apimachinery ``UnsafeGuessKindToResource``: ``NetworkPolicy`` -> ``networkpolicies``."""
    lower = kind.lower()
    if lower.endswith("s"):
        return lower + "es"
    if lower.endswith("y") and len(lower) > 1 and lower[-2] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + "s"


@dataclass(frozen=True)
class ObjectRef:
    """One object as KubeStellar's selectors see it. ``namespace`` is ``""`` when cluster-scoped."""

    group: str
    version: str
    kind: str
    resource: str
    namespace: str
    name: str

    @property
    def id(self) -> str:
        """``Deployment.apps nginx/web``, ``Namespace nginx``: how ferry names objects."""
        kind = f"{self.kind}.{self.group}" if self.group else self.kind
        return f"{kind} {self.namespace}/{self.name}" if self.namespace else f"{kind} {self.name}"

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(group, kind, namespace, name): equal for every version of the same object."""
        return (self.group, self.kind, self.namespace, self.name)


def _crd_kinds(bodies: Iterable[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, bool]]:
    out: dict[tuple[str, str], tuple[str, bool]] = {}
    for body in bodies:
        if body.get("kind") != "CustomResourceDefinition" or not str(body.get("apiVersion", "")).startswith(
                "apiextensions.k8s.io/"):
            continue
        spec = body.get("spec") or {}
        names = spec.get("names") or {}
        if isinstance(spec, dict) and isinstance(names, dict) and isinstance(names.get("kind"), str) \
                and isinstance(names.get("plural"), str) and isinstance(spec.get("group"), str):
            out[(spec["group"], names["kind"])] = (names["plural"], spec.get("scope") != "Cluster")
    return out


def object_refs(objects: Sequence[SetObject], default_namespace: str = "default") -> list[ObjectRef]:
    """Each object's :class:`ObjectRef`, in set order.

    Args:
        objects: the set's objects (checked by the hub's parser: apiVersion, kind, metadata.name).
        default_namespace: where a namespaced object that names no namespace lands (the
            context's namespace, as ``kubectl apply`` does).
    """
    kinds = {**BUILTIN_KINDS, **_crd_kinds(o.body for o in objects)}
    refs = []
    for obj in objects:
        body = obj.body
        group, _, version = str(body["apiVersion"]).rpartition("/")
        kind = body["kind"]
        meta = body.get("metadata") or {}
        resource, namespaced = kinds.get((group, kind), (guess_resource(kind), bool(meta.get("namespace"))))
        namespace = (meta.get("namespace") or default_namespace) if namespaced else ""
        refs.append(ObjectRef(group, version, kind, resource, namespace, meta["name"]))
    return refs


def _labels(body: dict[str, Any]) -> dict[str, str]:
    labels = (body.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _where(obj: SetObject) -> str:
    return obj.where


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True)
class Clause:
    """One ``downsync`` clause: its object tests and its modulation."""

    index: int  # 1-based position in spec.downsync
    api_group: str | None
    resources: tuple[str, ...]
    namespaces: tuple[str, ...]
    object_names: tuple[str, ...]
    object_selectors: tuple[Selector, ...]
    namespace_selectors: tuple[Selector, ...]
    create_only: bool
    status_collectors: tuple[str, ...]
    singleton_status: bool

    def matches(self, ref: ObjectRef, labels: Mapping[str, str],
                namespace_labels: Mapping[str, Mapping[str, str]]) -> bool:
        """KubeStellar's ``testObject`` for this clause (pkg/binding/selectors.go)."""
        if self.api_group is not None and self.api_group != ref.group:
            return False
        for allowed, value in ((self.resources, ref.resource), (self.namespaces, ref.namespace),
                               (self.object_names, ref.name)):
            if allowed and "*" not in allowed and value not in allowed:
                return False
        if self.object_selectors and not matches_any(self.object_selectors, labels):
            return False
        if self.namespace_selectors and not any(s.empty for s in self.namespace_selectors):
            ns = namespace_labels.get(ref.namespace) if ref.namespace else None
            if ns is None or not matches_any(self.namespace_selectors, ns):
                return False
        return True


@dataclass(frozen=True)
class Policy:
    """A BindingPolicy (selectors) or a Binding (explicit destinations and objects)."""

    kind: Literal["BindingPolicy", "Binding"]
    name: str
    where: str
    cluster_selectors: tuple[Selector, ...] = ()
    clauses: tuple[Clause, ...] = ()
    destinations: tuple[str, ...] = ()
    # Binding only: (group, resource, namespace, name) -> (createOnly, statusCollectors, singleton)
    listed: tuple[tuple[tuple[str, str, str, str], bool, tuple[str, ...], bool], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    def selects_site(self, site_name: str, site_labels: Mapping[str, str]) -> bool:
        if self.kind == "Binding":
            return site_name in self.destinations
        return matches_any(self.cluster_selectors, site_labels)


def _str_list(raw: object, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise PlacementError(f"{where} must be a list of strings")
    return tuple(raw)


def _bool(raw: object, where: str) -> bool:
    if raw is None:
        return False
    if not isinstance(raw, bool):
        raise PlacementError(f"{where} must be true or false")
    return raw


_CLAUSE_FIELDS = {"apiGroup", "resources", "namespaces", "objectNames", "objectSelectors", "namespaceSelectors",
                  "createOnly", "statusCollectors", "wantSingletonReportedState", "wantMultiWECReportedState"}


def parse_clause(raw: object, index: int, where: str) -> Clause:
    """One ``spec.downsync[]`` entry (CRD ``DownsyncPolicyClause``); PlacementError when malformed."""
    at = f"{where}: downsync[{index}]"
    if not isinstance(raw, dict):
        raise PlacementError(f"{at} must be a mapping")
    unknown = set(raw) - _CLAUSE_FIELDS
    if unknown:
        raise PlacementError(f"{at}: unknown field {sorted(unknown)[0]!r}")
    group = raw.get("apiGroup")
    if group is not None and not isinstance(group, str):
        raise PlacementError(f"{at}: apiGroup must be a string")
    return Clause(
        index=index, api_group=group,
        resources=_str_list(raw.get("resources"), f"{at}: resources"),
        namespaces=_str_list(raw.get("namespaces"), f"{at}: namespaces"),
        object_names=_str_list(raw.get("objectNames"), f"{at}: objectNames"),
        object_selectors=parse_selectors(raw.get("objectSelectors"), f"{at}: objectSelectors"),
        namespace_selectors=parse_selectors(raw.get("namespaceSelectors"), f"{at}: namespaceSelectors"),
        create_only=_bool(raw.get("createOnly"), f"{at}: createOnly"),
        status_collectors=_str_list(raw.get("statusCollectors"), f"{at}: statusCollectors"),
        singleton_status=_bool(raw.get("wantSingletonReportedState"), f"{at}: wantSingletonReportedState"),
    )


def parse_binding_policy(obj: SetObject) -> Policy:
    """A ``BindingPolicy`` object; PlacementError naming it when malformed or aimed at no WEC."""
    name = obj.body["metadata"]["name"]
    where = f"BindingPolicy {name} ({_where(obj)})"
    spec = obj.body.get("spec")
    if not isinstance(spec, dict):
        raise PlacementError(f"{where}: has no spec")
    selectors = parse_selectors(spec.get("clusterSelectors"), f"{where}: clusterSelectors")
    if not selectors:
        raise PlacementError(f"{where}: has no clusterSelectors, so it selects no WEC")
    downsync = spec.get("downsync") or []
    if not isinstance(downsync, list):
        raise PlacementError(f"{where}: downsync must be a list of clauses")
    clauses = tuple(parse_clause(c, i, where) for i, c in enumerate(downsync, start=1))
    return Policy("BindingPolicy", name, where, cluster_selectors=selectors, clauses=clauses)


def parse_binding(obj: SetObject) -> Policy:
    """A ``Binding`` object: explicit destinations (clusterId) and objects; PlacementError when malformed."""
    name = obj.body["metadata"]["name"]
    where = f"Binding {name} ({_where(obj)})"
    spec = obj.body.get("spec")
    if not isinstance(spec, dict):
        raise PlacementError(f"{where}: has no spec")
    dests = spec.get("destinations") or []
    if not isinstance(dests, list) or not all(isinstance(d, dict) and isinstance(d.get("clusterId"), str)
                                              for d in dests):
        raise PlacementError(f"{where}: destinations must be a list of {{clusterId: NAME}}")
    workload = spec.get("workload") or {}
    if not isinstance(workload, dict):
        raise PlacementError(f"{where}: workload must be a mapping")
    listed = []
    for scope, namespaced in (("clusterScope", False), ("namespaceScope", True)):
        entries = workload.get(scope) or []
        if not isinstance(entries, list):
            raise PlacementError(f"{where}: workload.{scope} must be a list")
        for i, e in enumerate(entries, start=1):
            at = f"{where}: workload.{scope}[{i}]"
            needed = ("resource", "name", "namespace") if namespaced else ("resource", "name")
            if not isinstance(e, dict) or not all(isinstance(e.get(k), str) and e.get(k) for k in needed):
                raise PlacementError(f"{at} must name its {', '.join(needed)}")
            group = e.get("group") or ""
            if not isinstance(group, str):
                raise PlacementError(f"{at}: group must be a string")
            key = (group, e["resource"], e["namespace"] if namespaced else "", e["name"])
            listed.append((key, _bool(e.get("createOnly"), f"{at}: createOnly"),
                           _str_list(e.get("statusCollectors"), f"{at}: statusCollectors"),
                           _bool(e.get("wantSingletonReportedState"), f"{at}: wantSingletonReportedState")))
    return Policy("Binding", name, where, destinations=tuple(d["clusterId"] for d in dests), listed=tuple(listed))


# --------------------------------------------------------------------------- custom transforms


def parse_remove_path(text: object, where: str) -> tuple[str, ...]:
    """A ``CustomTransform`` ``spec.remove`` entry in KubeStellar's JSONPath subset (pkg/jsonpath).

    ``$`` followed by segments ``.name`` (a letter, ``_`` or non-ASCII first, then also digits)
    or ``["name"]`` (a double-quoted string; ``\\"`` and ``\\\\`` escapes), no whitespace.

    Returns:
        The member names, outermost first (``$.spec.suspend`` -> ``("spec", "suspend")``).
    Raises:
        PlacementError: not that grammar, ``$`` alone (the whole object), or a path that would
            remove ``apiVersion``, ``kind``, ``metadata`` or ``metadata.name``.
    """
    if not isinstance(text, str):
        raise PlacementError(f"{where}: must be a string")
    if not text.startswith("$"):
        raise PlacementError(f"{where}: {text!r} does not start with the root identifier $")
    segments: list[str] = []
    i = 1
    while i < len(text):
        c = text[i]
        if c == ".":
            m = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*").match(text, i + 1)
            if not m:
                raise PlacementError(f"{where}: {text!r}: expected a member name after '.' at {i + 1}")
            segments.append(m.group())
            i = m.end()
        elif c == "[":
            m = re.compile(r'\["((?:[^"\\]|\\.)*)"\]').match(text, i)
            if not m:
                raise PlacementError(f"{where}: {text!r}: expected [\"name\"] at {i} (only member names are "
                                     "supported: no wildcards, indexes or filters)")
            segments.append(re.sub(r"\\(.)", r"\1", m.group(1)))
            i = m.end()
        else:
            raise PlacementError(f"{where}: {text!r}: unexpected {c!r} at {i}")
    if not segments:
        raise PlacementError(f"{where}: {text!r} identifies the whole object")
    for protected in PROTECTED_PATHS:
        if tuple(segments) == protected:
            raise PlacementError(f"{where}: {text!r} would remove {'.'.join(protected)}; the object could not "
                                 "be applied without it")
    return tuple(segments)


@dataclass(frozen=True)
class Transform:
    """A ``CustomTransform``: remove ``paths`` from objects of ``api_group`` + ``resource``."""

    name: str
    api_group: str
    resource: str
    paths: tuple[tuple[str, ...], ...]
    texts: tuple[str, ...]


def parse_transform(obj: SetObject) -> Transform:
    """A ``CustomTransform`` object; PlacementError naming it when malformed."""
    name = obj.body["metadata"]["name"]
    where = f"CustomTransform {name} ({_where(obj)})"
    spec = obj.body.get("spec")
    if not isinstance(spec, dict):
        raise PlacementError(f"{where}: has no spec")
    group, resource = spec.get("apiGroup"), spec.get("resource")
    if not isinstance(group, str) or not isinstance(resource, str) or not resource:
        raise PlacementError(f"{where}: spec.apiGroup and spec.resource are required strings")
    texts = _str_list(spec.get("remove"), f"{where}: spec.remove")
    paths = tuple(parse_remove_path(t, f"{where}: spec.remove[{i}]") for i, t in enumerate(texts, start=1))
    return Transform(name, group, resource, paths, texts)


def remove_path(body: dict[str, Any], path: Sequence[str]) -> bool:
    """Delete the member ``path`` names from ``body`` if present (pkg/jsonpath ``QueryValue`` with
    ``Node.Remove``); True when something was removed. A non-mapping on the way stops it."""
    node: Any = body
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and path[-1] in node:
        del node[path[-1]]
        return True
    return False


def strip_system_fields(body: dict[str, Any]) -> None:
    """The removals KubeStellar makes on every workload object (``TransformObject``)."""
    meta = body.get("metadata")
    if isinstance(meta, dict):
        for f in SYSTEM_METADATA:
            meta.pop(f, None)
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(LAST_APPLIED, None)
    body.pop("status", None)


# --------------------------------------------------------------------------- evaluating a set


@dataclass(frozen=True)
class Match:
    """A policy clause (or a Binding entry) that selected an object."""

    policy: str  # "BindingPolicy nginx", "Binding nginx"
    clause: int  # 1-based downsync clause, or workload entry of a Binding


Role = Literal["workload", "control", "never"]


@dataclass
class Decision:
    """What placement decided for one object of the set."""

    ref: ObjectRef
    role: Role
    selected: bool
    why: str
    by: tuple[Match, ...] = ()
    create_only: bool = False
    status_collectors: tuple[str, ...] = ()
    singleton_status: bool = False
    removed: tuple[str, ...] = ()  # CustomTransform paths that removed something, "ct-name: $.path"

    def to_json(self) -> dict[str, Any]:
        return {"object": self.ref.id, "role": self.role, "selected": self.selected, "why": self.why,
                "by": [{"policy": m.policy, "clause": m.clause} for m in self.by], "createOnly": self.create_only,
                "statusCollectors": list(self.status_collectors), "singletonStatus": self.singleton_status,
                "removed": list(self.removed)}


@dataclass
class Placement:
    """Placement of one set at one site: a decision per object (set order) and the bodies to apply."""

    site: str
    policies: list[tuple[str, bool]] = field(default_factory=list)  # (policy label, selects this site)
    decisions: list[Decision] = field(default_factory=list)
    bodies: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)  # key -> transformed
    #: one line each: a BindingPolicy whose clauses select no object of the set (not an error:
    #: KubeStellar reports nothing for it either, and the other policies still apply)
    warnings: list[str] = field(default_factory=list)
    #: the set's StatusCollectors by name (manifests.statuscollect.Collector), evaluated after apply
    collectors: dict[str, Any] = field(default_factory=dict)

    @property
    def selected(self) -> list[Decision]:
        return [d for d in self.decisions if d.selected]

    def to_json(self) -> dict[str, Any]:
        return {"site": self.site, "policies": [{"policy": p, "selectsSite": s} for p, s in self.policies],
                "objects": [d.to_json() for d in self.decisions], "warnings": list(self.warnings)}


def has_policies(objects: Sequence[SetObject]) -> bool:
    """Whether the set holds a BindingPolicy or a Binding (then placement decides what goes out)."""
    return any(str(o.body.get("apiVersion", "")).startswith(CONTROL_GROUP + "/")
               and o.body.get("kind") in ("BindingPolicy", "Binding") for o in objects)


def evaluate(objects: Sequence[SetObject], site_name: str, site_labels: Mapping[str, str], *,
             default_namespace: str = "default") -> Placement:
    """Decide, as KubeStellar would, which objects of a set go to the WEC ``site_name``.

    Args:
        objects: the set's objects in set order (``manifests.kube.KubeObject``); not changed.
        site_name: the WEC's name (a Binding's ``destinations[].clusterId``).
        site_labels: the WEC's labels (what ``clusterSelectors`` match), label key -> value.
        default_namespace: the namespace of namespaced objects that name none.
    Returns:
        A :class:`Placement`: one :class:`Decision` per object, and for each selected object its
        body after KubeStellar's removals and the set's CustomTransforms (deep copies).
    Raises:
        PlacementError: see the module docstring (malformed control objects, a Binding naming
            an object the set lacks, a policy selecting a kind KubeStellar never propagates for
            this WEC). A policy that selects no object is a warning (``Placement.warnings``).
    """
    refs = object_refs(objects, default_namespace)
    policies: list[Policy] = []
    transforms: list[Transform] = []
    known_collectors: dict[str, Any] = {}
    for obj, ref in zip(objects, refs):
        if ref.group != CONTROL_GROUP:
            continue
        if ref.kind == "BindingPolicy":
            policies.append(parse_binding_policy(obj))
        elif ref.kind == "Binding":
            policies.append(parse_binding(obj))
        elif ref.kind == "CustomTransform":
            transforms.append(parse_transform(obj))
        elif ref.kind == "StatusCollector":
            from manifests.statuscollect import parse_collector  # CEL is loaded only when a set needs it

            known_collectors[ref.name] = parse_collector(obj.body, f"StatusCollector {ref.name} ({_where(obj)})")
    namespace_labels = {r.name: _labels(o.body) for o, r in zip(objects, refs)
                        if (r.group, r.kind) == ("", "Namespace")}
    placement = Placement(site=site_name, collectors=known_collectors)
    chosen = {p.label: p.selects_site(site_name, site_labels) for p in policies}
    placement.policies = list(chosen.items())
    selected_any: set[str] = set()
    listed_seen: set[tuple[str, str, str, str]] = set()
    for obj, ref in zip(objects, refs):
        labels = _labels(obj.body)
        role: Role = "workload"
        if ref.group == CONTROL_GROUP:
            role = "control"
        elif ref.group in EXCLUDED_GROUPS or (ref.group, ref.resource) in EXCLUDED_RESOURCES:
            role = "never"
        hits: list[tuple[Policy, Match, bool, tuple[str, ...], bool]] = []
        for p in policies:
            if p.kind == "Binding":
                for i, (key, create_only, collectors, singleton) in enumerate(p.listed, start=1):
                    if key == (ref.group, ref.resource, ref.namespace, ref.name):
                        listed_seen.add(key)
                        hits.append((p, Match(p.label, i), create_only, collectors, singleton))
                continue
            for c in p.clauses:
                if c.matches(ref, labels, namespace_labels):
                    hits.append((p, Match(p.label, c.index), c.create_only, c.status_collectors, c.singleton_status))
        if role == "control":
            placement.decisions.append(Decision(ref, role, False, "a KubeStellar control object: never applied "
                                                                  "to a WEC"))
            continue
        for p, *_ in hits:
            selected_any.add(p.label)
        mine = [h for h in hits if chosen[h[0].label]]
        if role == "never":
            if mine:
                raise PlacementError(f"{mine[0][0].where}: selects {ref.id} for this WEC ({site_name}), but "
                                     "KubeStellar never propagates that kind to a WEC")
            placement.decisions.append(Decision(ref, role, False, "a kind KubeStellar never propagates to a WEC"))
            continue
        if mine:
            by = tuple(h[1] for h in mine)
            d = Decision(ref, role, True, "selected by " + ", ".join(_match_text(m) for m in by), by=by,
                         create_only=any(h[2] for h in mine),
                         status_collectors=tuple(sorted({s for h in mine for s in h[3]})),
                         singleton_status=any(h[4] for h in mine))
            body = copy.deepcopy(obj.body)
            strip_system_fields(body)
            removed = []
            for t in transforms:
                if (t.api_group, t.resource) != (ref.group, ref.resource):
                    continue
                for path, text in zip(t.paths, t.texts):
                    if remove_path(body, path):
                        removed.append(f"{t.name}: {text}")
            d.removed = tuple(removed)
            placement.bodies[ref.key] = body
        elif hits:
            others = sorted({h[0].label for h in hits})
            d = Decision(ref, role, False, f"matched only by {', '.join(others)}, which "
                                           f"{'does' if len(others) == 1 else 'do'} not select this WEC ({site_name})",
                         by=tuple(h[1] for h in hits))
        else:
            d = Decision(ref, role, False, "no downsync clause of any BindingPolicy or Binding matches it")
        placement.decisions.append(d)
    for p in policies:
        if p.kind == "Binding":
            for key, *_ in p.listed:
                if key not in listed_seen:
                    group, resource, ns, name = key
                    what = f"{resource}{'.' + group if group else ''} {ns + '/' if ns else ''}{name}"
                    raise PlacementError(f"{p.where}: names {what}, which the set does not hold")
        elif p.label not in selected_any:
            placement.warnings.append(f"{p.where}: its downsync clauses select no object of the set "
                                      "(nothing of the set goes anywhere by it)")
    missing = sorted({c for d in placement.selected for c in d.status_collectors} - set(known_collectors))
    if missing:
        placement.warnings.append(f"statusCollectors {', '.join(missing)}: not in the set, so not evaluated at "
                                  "this WEC (the whole .status is kept)")
    return placement


def _match_text(m: Match) -> str:
    unit = "entry" if m.policy.startswith("Binding ") else "clause"
    return f"{m.policy} ({unit} {m.clause})"
