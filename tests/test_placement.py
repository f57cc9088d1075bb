"""Placement at the edge (manifests/placement.py): KubeStellar's rules, each with the documented
example it comes from. Examples are written here, with their source; KubeStellar v0.30.0."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler.sources.kube import KubeObject, parse_documents
from manifests.errors import FerryError, PlacementError
from manifests.placement import (
    Requirement,
    Selector,
    evaluate,
    guess_resource,
    parse_remove_path,
    parse_selector,
)

# kubestellar/docs docs/content/kubestellar/example-scenarios.md, "Scenario 1: Multi-cluster Workload
# Deployment with Kubectl" (docs commit 4471dff), label_query_both resolved as get-started.md does
# (location-group=edge).
SCENARIO_1 = b"""
apiVersion: control.kubestellar.io/v1alpha1
kind: BindingPolicy
metadata:
  name: nginx-bpolicy
spec:
  clusterSelectors:
  - matchLabels: {"location-group": "edge"}
  downsync:
  - objectSelectors:
    - matchLabels: {"app.kubernetes.io/name":"nginx"}
---
apiVersion: v1
kind: Namespace
metadata:
  labels:
    app.kubernetes.io/name: nginx
  name: nginx
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  namespace: nginx
  labels:
    app.kubernetes.io/name: nginx
spec:
  replicas: 1
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: public.ecr.aws/nginx/nginx:latest
"""

# kubestellar/docs docs/content/kubestellar/binding.md ("used in the end-to-end test of createOnly
# functionality"), verbatim; with the Scenario 1 Namespace and Deployment it selects.
CREATE_ONLY = b"""
apiVersion: control.kubestellar.io/v1alpha1
kind: BindingPolicy
metadata:
  name: nginx
spec:
  clusterSelectors:
  - matchLabels:
      location-group: edge
  downsync:
  - objectSelectors:
    - matchLabels:
        app.kubernetes.io/name: nginx
    resources:
    - namespaces
  - createOnly: true
    objectSelectors:
    - matchLabels:
        app.kubernetes.io/name: nginx
    resources:
    - deployments
"""

# kubestellar/docs docs/content/kubestellar/example-scenarios.md "Scenario 4: Singleton Status":
# clusterSelectors from label_query_one=name=cluster1; the Deployment names no namespace.
SCENARIO_4 = b"""
apiVersion: control.kubestellar.io/v1alpha1
kind: BindingPolicy
metadata:
  name: nginx-singleton-bpolicy
spec:
  clusterSelectors:
  - matchLabels: {"name": "cluster1"}
  downsync:
  - objectSelectors:
    - matchLabels: {"app.kubernetes.io/name":"nginx-singleton"}
    wantSingletonReportedState: true
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-singleton-deployment
  labels:
    app.kubernetes.io/name: nginx-singleton
spec:
  replicas: 1
"""

# kubestellar/docs docs/content/kubestellar/transforming.md, verbatim.
TRANSFORM = b"""
apiVersion: control.kubestellar.io/v1alpha1
kind: CustomTransform
metadata:
  name: example
spec:
  apiGroup: batch
  resource: jobs
  remove:
  - "$.spec.suspend"
"""

# kubestellar/docs docs/content/kubestellar/combined-status.md "Number of WECs", verbatim.
STATUS_COLLECTOR = b"""
apiVersion: control.kubestellar.io/v1alpha1
kind: StatusCollector
metadata:
  name: count-wecs
spec:
  combinedFields:
     - name: count
       type: COUNT
  limit: 10
---
apiVersion: control.kubestellar.io/v1alpha1
kind: BindingPolicy
metadata:
  name: example-binding-policy
spec:
  clusterSelectors:
  - matchLabels: {"location-group":"edge"}
  downsync:
  - objectSelectors:
    - matchLabels: {"app.kubernetes.io/name":"nginx"}
    statusCollectors: [ count-wecs ]
"""

EDGE = {"location-group": "edge", "name": "cluster1"}


def objs(*docs: bytes) -> list[KubeObject]:
    out: list[KubeObject] = []
    for i, d in enumerate(docs):
        out.extend(parse_documents(d, f"f{i}.yaml"))
    return out


def decisions(placement: Any) -> dict[str, Any]:
    return {d.ref.id: d for d in placement.decisions}


def job(name: str = "pi", labels: dict[str, str] | None = None, **spec: Any) -> bytes:
    import yaml

    return yaml.safe_dump({"apiVersion": "batch/v1", "kind": "Job",
                           "metadata": {"name": name, "namespace": "nginx",
                                        "labels": labels or {"app.kubernetes.io/name": "nginx"}},
                           "spec": {"suspend": True, "template": {"spec": {"containers": []}}, **spec}}).encode()


# --------------------------------------------------------------------------- clusterSelectors


def test_scenario_1_selects_namespace_and_deployment_on_an_edge_wec() -> None:
    p = evaluate(objs(SCENARIO_1), "cluster1", EDGE)
    d = decisions(p)
    assert d["Namespace nginx"].selected and d["Deployment.apps nginx/nginx-deployment"].selected
    assert d["Deployment.apps nginx/nginx-deployment"].why == "selected by BindingPolicy nginx-bpolicy (clause 1)"
    bp = d["BindingPolicy.control.kubestellar.io nginx-bpolicy"]
    assert not bp.selected and bp.role == "control"  # control objects never go to the WEC
    assert p.policies == [("BindingPolicy nginx-bpolicy", True)]


def test_scenario_1_selects_nothing_on_a_wec_without_the_label() -> None:
    p = evaluate(objs(SCENARIO_1), "cluster3", {"location-group": "core"})
    assert not p.selected
    why = decisions(p)["Namespace nginx"].why
    assert why == "matched only by BindingPolicy nginx-bpolicy, which does not select this WEC (cluster3)"


def test_scenario_4_by_name_label_and_default_namespace_and_singleton_status() -> None:
    d = decisions(evaluate(objs(SCENARIO_4), "cluster1", EDGE))
    dep = d["Deployment.apps default/nginx-singleton-deployment"]  # no namespace: the context's default
    assert dep.selected and dep.singleton_status
    assert not decisions(evaluate(objs(SCENARIO_4), "cluster2", {"name": "cluster2"}))[
        "Deployment.apps default/nginx-singleton-deployment"].selected


def test_two_sites_labelled_differently_get_different_objects() -> None:
    """The issue's 'done when': one set, two BindingPolicies, two sites."""
    two = SCENARIO_1 + b"""
---
apiVersion: v1
kind: ConfigMap
metadata: {name: north-only, namespace: nginx, labels: {tier: north}}
---
apiVersion: control.kubestellar.io/v1alpha1
kind: BindingPolicy
metadata: {name: north}
spec:
  clusterSelectors:
  - matchExpressions: [{key: zone, operator: In, values: [north]}]
  downsync:
  - objectSelectors: [{matchLabels: {tier: north}}]
"""
    north = {o.ref.id for o in evaluate(objs(two), "wec-1", {"location-group": "edge", "zone": "north"}).selected}
    south = {o.ref.id for o in evaluate(objs(two), "wec-2", {"location-group": "edge", "zone": "south"}).selected}
    assert "ConfigMap nginx/north-only" in north and "ConfigMap nginx/north-only" not in south
    assert "Deployment.apps nginx/nginx-deployment" in north & south


def test_cluster_selectors_are_ored_and_an_empty_list_is_refused() -> None:
    doc = SCENARIO_1.replace(b'- matchLabels: {"location-group": "edge"}',
                             b'- matchLabels: {"location-group": "edge"}\n  - matchLabels: {zone: west}')
    assert evaluate(objs(doc), "w", {"zone": "west"}).selected
    empty = SCENARIO_1.replace(b'  clusterSelectors:\n  - matchLabels: {"location-group": "edge"}\n', b"")
    with pytest.raises(PlacementError, match="has no clusterSelectors, so it selects no WEC"):
        evaluate(objs(empty), "w", EDGE)


# --------------------------------------------------------------------------- downsync clauses


def test_create_only_example_flags_only_the_deployment() -> None:
    ns_and_dep = SCENARIO_1.split(b"---", 1)[1]
    d = decisions(evaluate(objs(CREATE_ONLY, ns_and_dep), "cluster1", EDGE))
    assert d["Namespace nginx"].selected and not d["Namespace nginx"].create_only
    dep = d["Deployment.apps nginx/nginx-deployment"]
    assert dep.selected and dep.create_only and [m.clause for m in dep.by] == [2]


def test_create_only_bits_are_ored_across_clauses() -> None:
    """CRD text of spec.downsync: 'the createOnly bits are ORed together'."""
    both = CREATE_ONLY.replace(b"    resources:\n    - namespaces\n", b"")  # clause 1 now matches the Deployment too
    d = decisions(evaluate(objs(both, SCENARIO_1.split(b"---", 1)[1]), "c", EDGE))
    dep = d["Deployment.apps nginx/nginx-deployment"]
    assert dep.create_only and [m.clause for m in dep.by] == [1, 2]


def _policy(clause: str) -> bytes:
    return (b"apiVersion: control.kubestellar.io/v1alpha1\nkind: BindingPolicy\nmetadata: {name: p}\n"
            b"spec:\n  clusterSelectors: [{}]\n  downsync:\n  - " + clause.encode() + b"\n")


WORKLOADS = b"""
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev, labels: {env: dev}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: a, namespace: prod, labels: {app: x}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: b, namespace: dev}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: a, namespace: prod}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w, namespace: unlisted}
"""


@pytest.mark.parametrize("clause, expected", [
    # apiGroup: "" is the core group; absent means every group (types.go DownsyncObjectTest)
    ('apiGroup: ""', {"Namespace prod", "Namespace dev", "ConfigMap prod/a", "ConfigMap dev/b"}),
    ("apiGroup: apps", {"Deployment.apps prod/a"}),
    # resources: lowercase plurals, "*" all
    ("resources: [configmaps]", {"ConfigMap prod/a", "ConfigMap dev/b"}),
    ("resources: [widgets]", {"Widget.example.com unlisted/w"}),
    # namespaces: a cluster-scoped object's namespace is "", so only "*" selects it
    ("namespaces: [prod]", {"ConfigMap prod/a", "Deployment.apps prod/a"}),
    ('namespaces: ["*"]', None),
    # objectNames
    ("objectNames: [a]", {"ConfigMap prod/a", "Deployment.apps prod/a"}),
    # namespaceSelectors: the labels of the object's Namespace in the set; cluster-scoped never
    ("namespaceSelectors: [{matchLabels: {env: prod}}]", {"ConfigMap prod/a", "Deployment.apps prod/a"}),
    # ... and one empty selector in the list passes every object, cluster-scoped ones too
    ("namespaceSelectors: [{matchLabels: {env: prod}}, {}]", None),
    # objectSelectors with an expression
    ("objectSelectors: [{matchExpressions: [{key: app, operator: Exists}]}]", {"ConfigMap prod/a"}),
    # all tests of a clause are ANDed
    ("{resources: [configmaps], namespaces: [dev]}", {"ConfigMap dev/b"}),
])
def test_downsync_tests(clause: str, expected: set[str] | None) -> None:
    """pkg/binding/selectors.go testObject; field meanings from the BindingPolicy CRD descriptions."""
    if clause.startswith("{"):
        clause = clause[1:-1].replace(", ", "\n    ")
    p = evaluate(objs(_policy(clause), WORKLOADS), "c", {})
    everything = {d.ref.id for d in p.decisions if d.role == "workload"}
    assert {d.ref.id for d in p.selected} == (everything if expected is None else expected)


def test_kinds_ks_never_propagates_are_refused_when_selected_for_this_wec() -> None:
    event = b"apiVersion: v1\nkind: Event\nmetadata: {name: e, namespace: prod, labels: {app: x}}\n"
    p = _policy("objectSelectors: [{matchLabels: {app: x}}]")
    with pytest.raises(PlacementError, match="selects Event prod/e for this WEC .* never propagates"):
        evaluate(objs(p, WORKLOADS, event), "c", {})
    other_site = p.replace(b"clusterSelectors: [{}]", b"clusterSelectors: [{matchLabels: {a: b}}]")
    d = decisions(evaluate(objs(other_site, WORKLOADS, event), "c", {}))
    assert d["Event prod/e"].role == "never" and not d["Event prod/e"].selected


def test_a_policy_selecting_no_object_is_a_warning_and_the_others_still_apply() -> None:
    """Issue #16 "Bad input": a policy that selects nothing gives one warning line, not an error."""
    nothing = _policy("objectNames: [nothing-by-this-name]")
    placement = evaluate(objs(nothing, WORKLOADS), "c", {})
    assert placement.warnings == ["BindingPolicy p (f0.yaml document 1): its downsync clauses select no object "
                                  "of the set (nothing of the set goes anywhere by it)"]
    assert placement.selected == [] and placement.to_json()["warnings"] == placement.warnings
    other = _policy("objectSelectors: [{matchLabels: {app: x}}]").replace(b"name: p", b"name: q")
    both = evaluate(objs(nothing, other, WORKLOADS), "c", {})
    assert len(both.warnings) == 1 and both.selected


@pytest.mark.parametrize("clause, message", [
    ("objectSelectors: [{matchExpressions: [{key: app, operator: Has}]}]", "operator 'Has' is not one of"),
    ("objectSelectors: [{matchExpressions: [{key: app, operator: In}]}]", "operator In needs at least one value"),
    ("objectSelectors: [{matchExpressions: [{key: app, operator: Exists, values: [x]}]}]", "Exists takes no values"),
    ("objectSelectors: [{matchLabels: {app: 'not ok'}}]", "is not a label value"),
    ("objectSelectors: [{matchLabels: {'-bad': x}}]", "is not a label name"),
    ("objectSelectors: {matchLabels: {app: x}}", "must be a list of label selectors"),
    ("resources: configmaps", "resources must be a list of strings"),
    ("createOnly: yes-please", "createOnly must be true or false"),
    ("objectSelector: [{}]", "unknown field 'objectSelector'"),
])
def test_malformed_clauses_are_one_clear_line(clause: str, message: str) -> None:
    with pytest.raises(PlacementError, match=message) as err:
        evaluate(objs(_policy(clause), WORKLOADS), "c", {})
    assert "BindingPolicy p (f0.yaml document 1): downsync[1]" in str(err.value)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- Binding


BINDING = b"""
apiVersion: control.kubestellar.io/v1alpha1
kind: Binding
metadata: {name: direct}
spec:
  destinations: [{clusterId: wec-12}]
  workload:
    clusterScope:
    - {group: "", version: v1, resource: namespaces, name: prod, resourceVersion: "1"}
    namespaceScope:
    - {group: "", version: v1, resource: configmaps, namespace: prod, name: a, resourceVersion: "1", createOnly: true}
"""


def test_binding_sends_listed_objects_to_its_destinations() -> None:
    """api/control/v1alpha1/types.go: BindingSpec.Workload (clusterScope, namespaceScope), Destinations."""
    d = decisions(evaluate(objs(BINDING, WORKLOADS), "wec-12", {}))
    assert d["Namespace prod"].selected and d["ConfigMap prod/a"].create_only
    assert d["ConfigMap prod/a"].why == "selected by Binding direct (entry 2)"
    assert not d["ConfigMap dev/b"].selected
    assert not evaluate(objs(BINDING, WORKLOADS), "wec-13", {}).selected


def test_binding_naming_an_object_the_set_lacks_is_refused() -> None:
    with pytest.raises(PlacementError, match="names namespaces prod, which the set does not hold"):
        evaluate(objs(BINDING), "wec-12", {})


# --------------------------------------------------------------------------- CustomTransform


def test_transform_example_removes_spec_suspend_from_jobs() -> None:
    p = evaluate(objs(TRANSFORM, _policy("resources: [jobs]"), job()), "c", {})
    [d] = p.selected
    assert d.removed == ("example: $.spec.suspend",)
    body = p.bodies[d.ref.key]
    assert "suspend" not in body["spec"] and "template" in body["spec"]


def test_transform_path_absent_is_not_an_error_and_other_kinds_are_untouched() -> None:
    """CRD: 'identify part of the object to remove if present'."""
    cm = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: nginx}\ndata: {suspend: 'x'}\n"
    p = evaluate(objs(TRANSFORM, _policy("namespaces: [nginx]"), job(spec_extra=1).replace(b"suspend: true", b"x: 1"),
                      cm), "c", {})
    assert all(d.removed == () for d in p.selected)
    assert p.bodies[("", "ConfigMap", "nginx", "c")]["data"] == {"suspend": "x"}


def test_builtin_removals_of_every_workload_object() -> None:
    """user-guide.md 'Transformations for all workload objects' / TransformObject."""
    doc = (b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: n, uid: u, resourceVersion: '7', "
           b"generation: 2, finalizers: [f], annotations: {kubectl.kubernetes.io/last-applied-configuration: '{}', "
           b"keep: me}}\nstatus: {phase: x}\n")
    p = evaluate(objs(_policy("objectNames: [c]"), doc), "c", {})
    body = p.bodies[("", "ConfigMap", "n", "c")]
    assert body["metadata"] == {"name": "c", "namespace": "n", "annotations": {"keep": "me"}}
    assert "status" not in body


@pytest.mark.parametrize("path, message", [
    ("$", "identifies the whole object"),
    ("spec.suspend", "does not start with the root identifier"),
    ("$.spec[0]", r'expected \["name"\]'),
    ("$.spec.*", "expected a member name"),
    ("$..suspend", "expected a member name"),
    ("$.metadata.name", "would remove metadata.name"),
    ('$["metadata"]["name"]', "would remove metadata.name"),
    ("$.metadata", "would remove metadata"),
    ("$.kind", "would remove kind"),
    ("$.spec .x", "unexpected ' '"),
])
def test_bad_remove_paths(path: str, message: str) -> None:
    with pytest.raises(PlacementError, match=message):
        parse_remove_path(path, "ct")


def test_bad_remove_path_in_a_set_names_the_transform() -> None:
    bad = TRANSFORM.replace(b'"$.spec.suspend"', b'"$.metadata.name"')
    with pytest.raises(PlacementError, match=r"CustomTransform example \(f0.yaml document 1\): spec.remove\[1\]"):
        evaluate(objs(bad, _policy("resources: [jobs]"), job()), "c", {})


@given(st.lists(st.text(alphabet=st.characters(min_codepoint=0x41, max_codepoint=0x7a) | st.just("_"),
                        min_size=1, max_size=8).filter(lambda s: not s[0].isdigit()), min_size=1, max_size=4),
       st.booleans())
def test_remove_path_round_trip(names: list[str], bracket: bool) -> None:
    import json

    text = "$" + "".join(f".{n}" if not bracket and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n)
                         else f"[{json.dumps(n, ensure_ascii=False)}]" for n in names)
    if tuple(names) in (("apiVersion",), ("kind",), ("metadata",), ("metadata", "name")):
        with pytest.raises(PlacementError):
            parse_remove_path(text, "ct")
    else:
        assert parse_remove_path(text, "ct") == tuple(names)


@given(st.text(max_size=30))
def test_remove_path_never_crashes(text: str) -> None:
    try:
        parse_remove_path(text, "ct")
    except PlacementError:
        pass


# --------------------------------------------------------------------------- status collectors


def test_status_collectors_are_recorded_per_object() -> None:
    ns = SCENARIO_1.split(b"---", 1)[1]
    d = decisions(evaluate(objs(STATUS_COLLECTOR, ns), "c", EDGE))
    assert d["Deployment.apps nginx/nginx-deployment"].status_collectors == ("count-wecs",)
    assert d["StatusCollector.control.kubestellar.io count-wecs"].role == "control"


# --------------------------------------------------------------------------- the selector matcher


keys = st.sampled_from(["app", "tier", "example.com/zone", "k"])
values = st.sampled_from(["a", "b", "edge", "x.y", ""])
label_sets = st.dictionaries(keys, values, max_size=4)


@given(label_sets, keys, st.lists(values, min_size=1, max_size=3))
def test_notin_is_the_negation_of_in(labels: dict[str, str], key: str, vals: list[str]) -> None:
    s_in = parse_selector({"matchExpressions": [{"key": key, "operator": "In", "values": vals}]}, "s")
    s_not = parse_selector({"matchExpressions": [{"key": key, "operator": "NotIn", "values": vals}]}, "s")
    assert s_in.matches(labels) != s_not.matches(labels)


@given(label_sets, keys)
def test_exists_and_does_not_exist(labels: dict[str, str], key: str) -> None:
    ex = parse_selector({"matchExpressions": [{"key": key, "operator": "Exists"}]}, "s")
    dne = parse_selector({"matchExpressions": [{"key": key, "operator": "DoesNotExist"}]}, "s")
    assert ex.matches(labels) == (key in labels) != dne.matches(labels)


@given(label_sets, label_sets)
def test_match_labels_is_in_with_one_value_and_ands(wanted: dict[str, str], labels: dict[str, str]) -> None:
    by_labels = parse_selector({"matchLabels": wanted}, "s")
    by_exprs = parse_selector({"matchExpressions": [{"key": k, "operator": "In", "values": [v]}
                                                    for k, v in wanted.items()]}, "s")
    expected = all(labels.get(k) == v for k, v in wanted.items())
    assert by_labels.matches(labels) == by_exprs.matches(labels) == expected
    assert by_labels.matches({**labels, **wanted})  # a superset of what it asks always matches


@given(label_sets)
def test_empty_selector_matches_everything(labels: dict[str, str]) -> None:
    assert parse_selector({}, "s").matches(labels) and Selector().matches(labels)
    assert Requirement("k", "NotIn", frozenset({"a"})).matches({})  # NotIn holds when the key is absent


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                           max_leaves=10)


@settings(max_examples=300)
@given(json_values)
def test_selector_parser_never_crashes(raw: Any) -> None:
    try:
        parse_selector(raw, "s")
    except PlacementError as err:
        assert "\n" not in str(err)


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(["clusterSelectors", "downsync"]), json_values, min_size=1))
def test_policy_spec_never_crashes(spec: dict[str, Any]) -> None:
    import yaml

    doc = yaml.safe_dump({"apiVersion": "control.kubestellar.io/v1alpha1", "kind": "BindingPolicy",
                          "metadata": {"name": "p"}, "spec": spec}).encode()
    try:
        evaluate(objs(doc, WORKLOADS), "c", {})
    except FerryError as err:
        assert isinstance(err, PlacementError) and "\n" not in str(err)


def test_guess_resource() -> None:
    """apimachinery UnsafeGuessKindToResource."""
    assert [guess_resource(k) for k in ("Widget", "Ingress", "NetworkPolicy", "Gateway")] == [
        "widgets", "ingresses", "networkpolicies", "gateways"]
