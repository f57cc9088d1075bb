"""importer.wec.apply_placed without the CLI: dry runs, the GitOps folder of a WEC, the sample set."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import yaml

from importer.apply.kube import ManifestTarget
from importer.site import Site
from importer.state import EdgeState
from manifests.model import Artifact, Entry
from importer.wec import FLUX_SSA_ANNOTATION, apply_placed, read_inventory
from tests.support.common import SAMPLES
from tests.support.fakekube import FakeKube
from tests.test_kube_apply import ORIGIN
from tests.test_kube_apply import make_set as _make_set


def make_set(files: dict[str, bytes], **kw: str) -> tuple[Artifact, Callable[[Entry], Iterator[bytes]]]:
    """test_kube_apply's set builder, typed as the importer's read_entry."""
    art, read = _make_set(files, **kw)
    return art, cast(Callable[[Entry], Iterator[bytes]], read)

POLICY = b"""apiVersion: control.kubestellar.io/v1alpha1
kind: BindingPolicy
metadata: {name: edge}
spec:
  clusterSelectors: [{matchLabels: {location-group: edge}}]
  downsync:
  - objectSelectors: [{matchLabels: {app: a}}]
  - {createOnly: true, objectNames: [seed]}
"""
OBJECTS = b"""apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {app: a}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: one, namespace: a, labels: {app: a}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: seed, namespace: a}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: elsewhere, namespace: a}
"""
#: The sample set's one image, as the edge pins it (test_kube_apply covers the pinning itself).
SAMPLE_IMAGE = {"registry.example:5000/team/sentiment-server:1.2.0":
                "registry.example:5000/team/sentiment-server@sha256:" + "5" * 64}
#: The sample Deployment's image volume names the model; the site has published it.
SAMPLE_MODEL = {"models/sentiment:1.2.0": "models/sentiment@sha256:" + "c" * 64}
SAMPLE_REFS = {**SAMPLE_IMAGE, **SAMPLE_MODEL}
EDGE = Site("wec-1", wec=True, labels={"location-group": "edge"})


def test_the_sample_set_is_selected_whole_at_an_edge_wec(tmp_path: Path) -> None:
    """samples/kubestellar/sentiment: its BindingPolicy selects location-group=edge WECs."""
    files = {p.name: p.read_bytes() for p in (SAMPLES / "kubestellar" / "sentiment").glob("*.yaml")}
    art, read = make_set(files)
    with EdgeState.open(tmp_path / "edge") as state:
        result = apply_placed(art, read, ManifestTarget(tmp_path / "out", None, None), state=state, site=EDGE,
                              image_refs=SAMPLE_REFS, origin=ORIGIN)
        assert sorted(result.applied) == ["Deployment.apps sentiment/sentiment", "Namespace sentiment",
                                          "Service sentiment/sentiment"]
        assert [p.name for p in sorted((tmp_path / "out" / "sentiment-app").iterdir())] == [
            "0001-namespace-sentiment.yaml", "0002-deployment-sentiment.yaml", "0003-service-sentiment.yaml"]
        core = Site("wec-2", wec=True, labels={"location-group": "core"})
        art, read = make_set(files, version="1.3.0")
        result = apply_placed(art, read, ManifestTarget(tmp_path / "out", None, None), state=state, site=core,
                              image_refs=SAMPLE_REFS, origin=ORIGIN)
        assert result.applied == [] and sorted(result.pruned) == ["Deployment.apps sentiment/sentiment",
                                                                  "Service sentiment/sentiment"]
        assert list((tmp_path / "out" / "sentiment-app").iterdir()) == []


def test_gitops_folder_of_a_wec_holds_only_selected_objects(tmp_path: Path) -> None:
    art, read = make_set({"p.yaml": POLICY, "o.yaml": OBJECTS}, name="app")
    with EdgeState.open(tmp_path / "edge") as state:
        result = apply_placed(art, read, ManifestTarget(tmp_path / "out", None, None), state=state, site=EDGE,
                              image_refs=SAMPLE_REFS, origin=ORIGIN)
        written = {p.name: yaml.safe_load(p.read_text()) for p in (tmp_path / "out" / "app").iterdir()}
        assert sorted(written) == ["0001-namespace-a.yaml", "0002-configmap-one.yaml", "0003-configmap-seed.yaml"]
        assert written["0003-configmap-seed.yaml"]["metadata"]["annotations"][FLUX_SSA_ANNOTATION] == "IfNotPresent"
        assert FLUX_SSA_ANNOTATION not in written["0002-configmap-one.yaml"]["metadata"]["annotations"]
        assert [o.id for o in read_inventory(state, "app")] == ["Namespace a", "ConfigMap a/one", "ConfigMap a/seed"]
    assert result.plan_lines() == [  # set order: files sorted by path, documents as written
        "apply Namespace a: selected by BindingPolicy edge (clause 1)",
        "apply ConfigMap a/one: selected by BindingPolicy edge (clause 1)",
        "apply ConfigMap a/seed (createOnly): selected by BindingPolicy edge (clause 2)",
        "skip  ConfigMap a/elsewhere: no downsync clause of any BindingPolicy or Binding matches it",
        "skip  BindingPolicy.control.kubestellar.io edge: a KubeStellar control object: never applied to a WEC",
    ]


def test_dry_run_against_a_cluster_reads_only(fakekube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = fakekube.kubeconfig(tmp_path / "k", context="wec-1")
    target = ManifestTarget(None, kubeconfig, "wec-1")
    with EdgeState.open(tmp_path / "edge") as state:
        art, read = make_set({"p.yaml": POLICY, "o.yaml": OBJECTS}, name="app")
        apply_placed(art, read, target, state=state, site=EDGE, image_refs={}, origin=ORIGIN)
        fakekube.requests.clear()
        art, read = make_set({"p.yaml": POLICY, "o.yaml": OBJECTS.replace(b"name: one,", b"name: two,")},
                             name="app", version="1.3.0")
        plan = apply_placed(art, read, target, state=state, site=EDGE, image_refs={}, origin=ORIGIN, dry_run=True)
        assert {r.method for r in fakekube.requests} == {"GET"}
        assert plan.prune is not None and plan.prune.lines() == ["prune ConfigMap a/one"]
        assert plan.skipped == [("ConfigMap a/seed", "createOnly: it exists on the WEC, not updated")]
        assert fakekube.get_object("v1", "ConfigMap", "one", "a") is not None
        assert [o.name for o in read_inventory(state, "app")] == ["a", "one", "seed"]  # unchanged by a dry run


def test_a_run_failing_half_way_still_lets_the_next_prune_what_it_applied(fakekube: FakeKube,
                                                                          tmp_path: Path) -> None:
    import pytest

    from manifests.errors import FerryError

    target = ManifestTarget(None, fakekube.kubeconfig(tmp_path / "k", context="wec-1"), "wec-1")
    extra = b"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: two, namespace: a, labels: {app: a}}\n"
    broken = b"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad, namespace: nowhere, labels: {app: a}}\n"
    with EdgeState.open(tmp_path / "edge") as state:
        art, read = make_set({"p.yaml": POLICY, "o.yaml": OBJECTS + extra + broken}, name="app")
        with pytest.raises(FerryError, match='namespaces "nowhere" not found'):
            apply_placed(art, read, target, state=state, site=EDGE, image_refs={}, origin=ORIGIN)
        assert fakekube.get_object("v1", "ConfigMap", "two", "a") is not None  # applied before the failure
        art, read = make_set({"p.yaml": POLICY, "o.yaml": OBJECTS}, name="app", version="1.3.0")
        result = apply_placed(art, read, target, state=state, site=EDGE, image_refs={}, origin=ORIGIN)
        assert result.pruned == ["ConfigMap a/two"] and result.prune is not None
        assert result.prune.gone[0].id == "ConfigMap nowhere/bad"
        assert fakekube.get_object("v1", "ConfigMap", "two", "a") is None
