"""Manifest sets through the real CLI: ``ferry export`` of the sample KubeStellar set and its
image, ``ferry import`` into a real edge registry and a fake WDS (tests/support/fakekube.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.support.kubeschema import crd_documents
from tests.support.common import SAMPLES, KeyPair, assert_clean_failure, run_ferry
from tests.support.fakekube import FakeKube
from tests.support.registry import Registry

IMAGE_REF = "registry.example:5000/team/sentiment-server:1.2.0"


def _spec(tmp: Path, version: str, *, image: bool = True) -> Path:
    """A spec for the sample set (at ``version``), the sample model its image volume names
    (``models/sentiment:1.2.0``) and, optionally, the sample image."""
    manifests = tmp / f"set-{version}"
    shutil.copytree(SAMPLES / "kubestellar" / "sentiment", manifests)
    images = f"  images:\n    - ref: {IMAGE_REF}\n      layout: {SAMPLES / 'images' / 'sentiment-server'}\n" if image else ""
    spec = tmp / f"bundle-{version}.yaml"
    spec.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata: {name: edge-ai, channel: stable}\nspec:\n"
                    f"  models:\n    - name: sentiment\n      version: 1.2.0\n"
                    f"      path: {SAMPLES / 'models' / 'sentiment'}\n"
                    f"{images}  manifests:\n    - name: sentiment-app\n      version: {version}\n"
                    f"      path: {manifests}\n")
    return spec


def _export(spec: Path, out: Path, keys: KeyPair, hub: Path) -> None:
    result = run_ferry("export", spec, "--out", out, "--key", keys.key, "--state", hub)
    assert result.returncode == 0, result.stderr


def _wds(fake: FakeKube, tmp: Path) -> Path:
    """The fake API server as a WDS: KubeStellar's CRDs installed, as KubeStellar does."""
    for crd in crd_documents():
        fake.put_object(crd, manager="kubestellar")
    return fake.kubeconfig(tmp / "wds.kubeconfig", context="wds1")


@pytest.fixture(scope="module")
def bundles(hub_keys: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("kube-cli")
    _export(_spec(tmp, "1.2.0"), tmp / "b1", hub_keys, tmp / "hub")
    _export(_spec(tmp, "1.3.0"), tmp / "b2", hub_keys, tmp / "hub")
    return {"1.2.0": tmp / "b1", "1.3.0": tmp / "b2"}


def test_import_applies_the_sample_set_to_a_wds(bundles: dict[str, Path], hub_keys: KeyPair,
                                                edge_registry: Registry, fakekube: FakeKube,
                                                tmp_path: Path) -> None:
    kubeconfig = _wds(fakekube, tmp_path)
    fakekube.requests.clear()
    result = run_ferry("import", bundles["1.2.0"], "--trust", hub_keys.pub, "--state", tmp_path / "edge",
                       "--registry", edge_registry.host, "--kubeconfig", kubeconfig, "--context", "wds1")
    assert result.returncode == 0, result.stdout + result.stderr

    digest = edge_registry.inspect("team/sentiment-server:1.2.0")["Digest"]
    deployment = fakekube.get_object("apps/v1", "Deployment", "sentiment", "sentiment")
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"{edge_registry.host}/team/sentiment-server@{digest}"
    car = edge_registry.inspect("models/sentiment:1.2.0-modelcar")["Digest"]  # the image volume: the modelcar
    assert deployment["spec"]["template"]["spec"]["volumes"][0]["image"]["reference"] == \
        f"{edge_registry.host}/models/sentiment@{car}"
    annotations = deployment["metadata"]["annotations"]
    assert annotations["ferry.io/set"] == "sentiment-app" and annotations["ferry.io/version"] == "1.2.0"
    assert annotations["ferry.io/bundle"] == "edge-ai" and annotations["ferry.io/channel"] == "stable"

    patches = fakekube.applies()
    assert [p.body["kind"] for p in patches][0] == "Namespace"
    assert sorted(p.body["kind"] for p in patches) == ["BindingPolicy", "Deployment", "Namespace", "Service"]
    assert all(p.content_type == "application/apply-patch+yaml" and p.query["fieldManager"] == "ferry"
               for p in patches)
    policy = fakekube.get_object("control.kubestellar.io/v1alpha1", "BindingPolicy", "sentiment")
    assert policy is not None and policy["spec"]["clusterSelectors"] == [{"matchLabels": {"location-group": "edge"}}]


def test_older_bundle_from_another_station_leaves_newer_objects(bundles: dict[str, Path], hub_keys: KeyPair,
                                                                fakekube: FakeKube, tmp_path: Path) -> None:
    """Two import stations (two edge states) share one WDS: the one still on 1.2.0 must not
    roll back what the other applied from 1.3.0."""
    kubeconfig = _wds(fakekube, tmp_path)
    first = run_ferry("import", bundles["1.3.0"], "--trust", hub_keys.pub, "--state", tmp_path / "station-a",
                      "--kubeconfig", kubeconfig)
    assert first.returncode == 0, first.stdout + first.stderr
    newer = fakekube.get_object("apps/v1", "Deployment", "sentiment", "sentiment")
    fakekube.requests.clear()

    second = run_ferry("import", bundles["1.2.0"], "--trust", hub_keys.pub, "--state", tmp_path / "station-b",
                       "--kubeconfig", kubeconfig, "--json")
    assert "Traceback" not in second.stderr
    assert fakekube.applies() == []
    assert fakekube.get_object("apps/v1", "Deployment", "sentiment", "sentiment") == newer
    assert "newer on the cluster" in json.dumps(json.loads(second.stdout))


def test_import_to_an_unreachable_cluster_is_one_clear_line(bundles: dict[str, Path], hub_keys: KeyPair,
                                                            tmp_path: Path) -> None:
    fake = FakeKube()
    fake.start()
    kubeconfig = fake.kubeconfig(tmp_path / "wds.kubeconfig")
    fake.stop()
    result = run_ferry("import", bundles["1.2.0"], "--trust", hub_keys.pub, "--state", tmp_path / "edge",
                       "--kubeconfig", kubeconfig)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"cannot reach {fake.url}" in result.stdout + result.stderr


def test_export_refuses_a_non_kubernetes_document(hub_keys: KeyPair, tmp_path: Path) -> None:
    spec = _spec(tmp_path, "1.0.0", image=False)
    (tmp_path / "set-1.0.0" / "values.yaml").write_text("replicas: 3\n")
    result = run_ferry("export", spec, "--out", tmp_path / "out", "--key", hub_keys.key, "--state", tmp_path / "hub")
    assert_clean_failure(result, code=2, contains="values.yaml document 1: not a Kubernetes object (no apiVersion)")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_export_warns_about_an_image_it_does_not_carry(hub_keys: KeyPair, tmp_path: Path) -> None:
    spec = _spec(tmp_path, "1.0.0", image=False)
    result = run_ferry("export", spec, "--out", tmp_path / "out", "--key", hub_keys.key, "--state", tmp_path / "hub")
    assert result.returncode == 0, result.stderr
    assert IMAGE_REF in result.stderr and "does not carry" in result.stderr


def _without_current_context(kubeconfig: Path) -> Path:
    """The same kubeconfig with ``current-context`` removed, as some generators write it."""
    doc = yaml.safe_load(kubeconfig.read_text())
    del doc["current-context"]
    kubeconfig.write_text(yaml.safe_dump(doc))
    return kubeconfig


def test_a_kubeconfig_without_current_context_works_with_context(bundles: dict[str, Path], hub_keys: KeyPair,
                                                                 edge_registry: Registry, fakekube: FakeKube,
                                                                 tmp_path: Path) -> None:
    kubeconfig = _without_current_context(_wds(fakekube, tmp_path))
    fakekube.requests.clear()
    result = run_ferry("import", bundles["1.2.0"], "--trust", hub_keys.pub, "--state", tmp_path / "edge",
                       "--registry", edge_registry.host, "--kubeconfig", kubeconfig, "--context", "wds1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.body["kind"] for p in fakekube.applies()) == ["BindingPolicy", "Deployment", "Namespace", "Service"]
    assert fakekube.get_object("apps/v1", "Deployment", "sentiment", "sentiment") is not None


def test_a_kubeconfig_without_current_context_needs_context(bundles: dict[str, Path], hub_keys: KeyPair,
                                                            fakekube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = _without_current_context(_wds(fakekube, tmp_path))
    fakekube.requests.clear()
    for dry in ([], ["--dry-run"]):
        result = run_ferry("import", bundles["1.2.0"], "--trust", hub_keys.pub, "--state", tmp_path / "edge",
                           "--kubeconfig", kubeconfig, *dry)
        assert_clean_failure(result, code=2, contains="pass --context")
        assert str(kubeconfig) in result.stderr and "current-context" in result.stderr
        assert result.stderr.startswith("ferry: error:")
    assert fakekube.applies() == []


def test_an_unknown_context_is_refused_naming_those_there_are(bundles: dict[str, Path], hub_keys: KeyPair,
                                                             fakekube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = _wds(fakekube, tmp_path)
    doc = yaml.safe_load(kubeconfig.read_text())
    doc["contexts"].append({"name": "wds2", "context": {"cluster": "fake", "user": "tester"}})
    kubeconfig.write_text(yaml.safe_dump(doc))
    for path in (kubeconfig, _without_current_context(kubeconfig)):
        result = run_ferry("import", bundles["1.2.0"], "--trust", hub_keys.pub, "--state", tmp_path / "edge",
                           "--kubeconfig", path, "--context", "wds9")
        assert_clean_failure(result, code=2, contains="--context wds9")
        assert "it has: wds1, wds2" in result.stderr
    assert fakekube.applies() == []


def test_a_kubeconfig_alias_bomb_is_refused(bundles: dict[str, Path], hub_keys: KeyPair, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.kubeconfig"
    rows = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    rows += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
             for i in range(1, 10)]
    bomb.write_text("\n".join(rows) + "\ncontexts: []\n")
    result = run_ferry("import", bundles["1.2.0"], "--trust", hub_keys.pub, "--state", tmp_path / "edge",
                       "--kubeconfig", bomb, "--context", "x")
    assert_clean_failure(result, code=2, contains="aliases are expanded")


def test_watch_takes_context_for_a_kubeconfig_without_current_context(bundles: dict[str, Path], hub_keys: KeyPair,
                                                                      fakekube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = _without_current_context(_wds(fakekube, tmp_path))
    drop = tmp_path / "drop"
    shutil.copytree(bundles["1.2.0"], drop / "edge-ai")
    fakekube.requests.clear()
    args = ("watch", drop, "--trust", hub_keys.pub, "--state", tmp_path / "edge", "--once", "--settle", "0",
            "--kubeconfig", kubeconfig)
    refused = run_ferry(*args)
    assert_clean_failure(refused, code=2, contains="pass --context")
    assert not (tmp_path / "edge").exists()  # refused before anything is written
    result = run_ferry(*args, "--context", "wds1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.body["kind"] for p in fakekube.applies()) == ["BindingPolicy", "Deployment", "Namespace", "Service"]
