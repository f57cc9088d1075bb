"""KubeStellar objects checked against the CRDs a WDS installs (shared/kubestellar/crds.yaml)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bundler.sources.kube import manifests_source
from manifests.kube import parse_documents
from tests.support.common import KUBESTELLAR
from tests.support.kubeschema import crd_schemas, validate

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
    assert {kind for _, kind in crd_schemas()} == {
        "BindingPolicy", "Binding", "CustomTransform", "StatusCollector", "CombinedStatus"}


def test_binding_policy_selecting_edge_wecs_is_valid() -> None:
    assert validate(EDGE_POLICY) == []


def _broken(path: list[str | int], value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(EDGE_POLICY)
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return obj


@pytest.mark.parametrize("obj, where", [
    # label values must be label-shaped
    (_broken(["spec", "clusterSelectors", 0, "matchLabels", "location-group"], "edge!"), "location-group"),
    # crds.yaml (not crds/) demands at least one selector in each downsync clause
    (_broken(["spec", "downsync", 0], {"createOnly": True}), "spec.downsync.0"),
    # operators are an enumeration
    (_broken(["spec", "clusterSelectors", 0], {"matchExpressions": [{"key": "a", "operator": "Maybe"}]}), "operator"),
    # types
    (_broken(["spec", "clusterSelectors"], "edge"), "spec.clusterSelectors"),
])
def test_invalid_binding_policies_are_rejected(obj: dict[str, Any], where: str) -> None:
    errors = validate(obj)
    assert errors and any(where in e for e in errors), errors


def test_documentation_examples_are_valid() -> None:
    art = manifests_source("examples", "1.0.0", KUBESTELLAR / "examples")
    checked = 0
    for f in art.files:
        for obj in parse_documents(f.open().read(), f.path or ""):
            if obj.group == "control.kubestellar.io":
                assert validate(obj.body) == [], (f.path, obj.id)
                checked += 1
    assert checked >= 5


def test_samples_validate_if_present() -> None:
    from tests.support.common import SAMPLES

    folder = SAMPLES / "kubestellar"
    if not folder.is_dir():  # written by the samples part of the project
        return
    for path in sorted(folder.rglob("*.y*ml")):
        for obj in parse_documents(path.read_bytes(), path.name):
            if obj.group == "control.kubestellar.io":
                assert validate(obj.body) == [], (path, obj.id)
