"""KubeStellar objects checked against ferry's own schema of the KubeStellar fields it relies on
(tests/support/kubestellar/kubestellar.schema.json); cross-checked against KubeStellar's own
crds.yaml only where that file sits beside the checkout."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bundler.sources.kube import manifests_source
from manifests.kube import parse_documents
from tests.support.common import KUBESTELLAR_EXAMPLES, SAMPLES
from tests.support.kubeschema import UPSTREAM_CRDS, crd_documents, crd_schemas, kind_schemas, schema_errors, validate

EDGE_POLICY: dict[str, Any] = {
    "apiVersion": "control.kubestellar.io/v1alpha1",
    "kind": "BindingPolicy",
    "metadata": {"name": "sentiment-edge"},
    "spec": {
        "clusterSelectors": [{"matchLabels": {"location-group": "edge"}}],
        "downsync": [{"objectSelectors": [{"matchLabels": {"app.kubernetes.io/name": "sentiment"}}]}],
    },
}


def test_all_five_kubestellar_kinds_have_schemas() -> None:
    assert {kind for _, kind in kind_schemas()} == {
        "BindingPolicy", "Binding", "CustomTransform", "StatusCollector", "CombinedStatus"}


def test_the_crds_built_from_the_schema_carry_it() -> None:
    crds = crd_documents()
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "bindingpolicies.control.kubestellar.io", "bindings.control.kubestellar.io",
        "combinedstatuses.control.kubestellar.io", "customtransforms.control.kubestellar.io",
        "statuscollectors.control.kubestellar.io"]
    assert "$ref" not in repr(crds)  # Kubernetes refuses $ref in a CRD schema


def test_binding_policy_selecting_edge_wecs_is_valid() -> None:
    assert validate(EDGE_POLICY) == []


def _broken(path: list[str | int], value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(EDGE_POLICY)
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return obj


BROKEN = [
    # label values must be label-shaped
    (_broken(["spec", "clusterSelectors", 0, "matchLabels", "location-group"], "edge!"), "location-group"),
    # label keys too
    (_broken(["spec", "clusterSelectors", 0], {"matchExpressions": [{"key": "-bad", "operator": "In"}]}), "key"),
    # each downsync clause needs at least one selector
    (_broken(["spec", "downsync", 0], {"createOnly": True}), "spec.downsync.0"),
    # operators are an enumeration
    (_broken(["spec", "clusterSelectors", 0], {"matchExpressions": [{"key": "a", "operator": "Maybe"}]}), "operator"),
    # types
    (_broken(["spec", "clusterSelectors"], "edge"), "spec.clusterSelectors"),
    (_broken(["spec", "downsync", 0, "createOnly"], "yes"), "createOnly"),
    # required fields of the other kinds
    ({"apiVersion": "control.kubestellar.io/v1alpha1", "kind": "StatusCollector", "metadata": {"name": "s"},
      "spec": {"combinedFields": [{"name": "count", "type": "COUNT"}]}}, "limit"),
    ({"apiVersion": "control.kubestellar.io/v1alpha1", "kind": "CustomTransform", "metadata": {"name": "c"},
      "spec": {"apiGroup": "apps", "remove": ["$.spec.replicas"]}}, "resource"),
    ({"apiVersion": "control.kubestellar.io/v1alpha1", "kind": "Binding", "metadata": {"name": "b"},
      "spec": {"destinations": [{"name": "cluster1"}]}}, "clusterId"),
]


@pytest.mark.parametrize("obj, where", BROKEN)
def test_invalid_objects_are_rejected(obj: dict[str, Any], where: str) -> None:
    errors = validate(obj)
    assert errors and any(where in e for e in errors), errors


def _examples() -> list[dict[str, Any]]:
    art = manifests_source("examples", "1.0.0", KUBESTELLAR_EXAMPLES)
    return [obj.body for f in art.files for obj in parse_documents(f.open().read(), f.path or "")
            if obj.group == "control.kubestellar.io"]


def test_documentation_examples_are_valid() -> None:
    examples = _examples()
    assert {o["kind"] for o in examples} >= {"BindingPolicy", "StatusCollector", "CustomTransform"}
    for obj in examples:
        assert validate(obj) == [], obj["metadata"]


def test_samples_are_valid() -> None:
    checked = 0
    for path in sorted((SAMPLES / "kubestellar").rglob("*.y*ml")):
        for obj in parse_documents(path.read_bytes(), path.name):
            if obj.group == "control.kubestellar.io":
                assert validate(obj.body) == [], (path, obj.id)
                checked += 1
    assert checked >= 1


def test_own_schema_agrees_with_kubestellar_crds() -> None:
    """Cross-check: every object either schema accepts, the other accepts; every broken one both refuse."""
    theirs = crd_schemas(UPSTREAM_CRDS)
    assert set(theirs) == set(kind_schemas())
    for obj in [EDGE_POLICY, *_examples()]:
        assert schema_errors(obj, theirs[(obj["apiVersion"], obj["kind"])]) == [], obj["metadata"]
    for obj, _ in BROKEN:
        assert schema_errors(obj, theirs[(obj["apiVersion"], obj["kind"])]) != [], obj
