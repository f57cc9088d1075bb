"""KubeStellar WECs fed by media, through the real CLI: ``ferry site set``, then ``ferry import``
of one bundle whose set holds two BindingPolicies into two sites labelled differently, each with
its own WEC (tests/support/fakekube.py, reached with the real kubernetes client). Then a newer
set drops an object (pruned where it had been applied), changes a createOnly object (not
updated), and the status the WEC reports is read back into the site's state (issue 16)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.common import KeyPair, assert_clean_failure, run_ferry
from tests.support.fakekube import FakeKube

NAMESPACE = """apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {app: shop}}
"""

# Two BindingPolicies in the style of KubeStellar's "Scenario 1" and the createOnly example
# (kubestellar/docs example-scenarios.md and binding.md), and a CustomTransform in the style of
# transforming.md: "edge" sends the app to every WEC labelled location-group=edge, the settings
# ConfigMap create-only; "north" adds one ConfigMap for WECs in zone north.
POLICIES = """apiVersion: control.kubestellar.io/v1alpha1
kind: BindingPolicy
metadata: {name: edge}
spec:
  clusterSelectors:
  - matchLabels: {location-group: edge}
  downsync:
  - objectSelectors:
    - matchLabels: {app: shop}
      matchExpressions: [{key: zone, operator: DoesNotExist}]
  - createOnly: true
    resources: [configmaps]
    objectNames: [settings]
---
apiVersion: control.kubestellar.io/v1alpha1
kind: BindingPolicy
metadata: {name: north}
spec:
  clusterSelectors:
  - matchExpressions: [{key: zone, operator: In, values: [north]}]
  downsync:
  - objectSelectors: [{matchLabels: {zone: north}}]
---
apiVersion: control.kubestellar.io/v1alpha1
kind: CustomTransform
metadata: {name: no-debug}
spec: {apiGroup: "", resource: configmaps, remove: ["$.data.debug"]}
"""


def app(version: str, *, with_service: bool) -> str:
    docs = [f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: shop, labels: {{app: shop}}}}
data: {{greeting: "hello from {version}"}}
""", f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: common, namespace: shop, labels: {{app: shop}}}}
data: {{release: "{version}", debug: "on"}}
""", """apiVersion: v1
kind: ConfigMap
metadata: {name: north-only, namespace: shop, labels: {app: shop, zone: north}}
data: {x: "1"}
""", """apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, labels: {app: shop}}
spec:
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      containers: [{name: web, image: "registry.example:5000/team/web:1.0"}]
"""]
    if with_service:
        docs.append("""apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, labels: {app: shop}}
spec: {selector: {app: shop}, ports: [{port: 80}]}
""")
    return "---\n".join(docs)


def export(tmp: Path, version: str, keys: KeyPair, *, with_service: bool) -> Path:
    folder = tmp / f"set-{version}"
    folder.mkdir()
    (folder / "namespace.yaml").write_text(NAMESPACE)
    (folder / "policies.yaml").write_text(POLICIES)
    (folder / "app.yaml").write_text(app(version, with_service=with_service))
    spec = tmp / f"bundle-{version}.yaml"
    # The workload's image travels with the set (the edge refuses a set whose images it cannot pin).
    layout = Path(__file__).parent.parent / "samples" / "images" / "sentiment-server"
    spec.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata: {name: shop, channel: stable}\nspec:\n"
                    f"  images:\n    - ref: registry.example:5000/team/web:1.0\n      layout: {layout}\n      version: 1.0.0\n"
                    f"  manifests:\n    - name: shop\n      version: {version}\n      path: {folder}\n")
    out = tmp / f"usb-{version}"
    result = run_ferry("export", spec, "--out", out, "--key", keys.key, "--state", tmp / "hub")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def bundles(hub_keys: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("wec")
    return {"1.0.0": export(tmp, "1.0.0", hub_keys, with_service=True),
            "1.1.0": export(tmp, "1.1.0", hub_keys, with_service=False)}


@pytest.fixture
def second_wec() -> Iterator[FakeKube]:
    fake = FakeKube()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def site(tmp: Path, fake: FakeKube, name: str, *labels: str) -> Path:
    """An edge state whose WEC identity is ``name`` with ``labels``, its cluster a kubeconfig context."""
    state = tmp / name
    kubeconfig = fake.kubeconfig(tmp / f"{name}.kubeconfig", context=name)
    args = [a for label in labels for a in ("--label", label)]
    result = run_ferry("site", "set", "--state", state, "--kubeconfig", kubeconfig, "--context", name, *args)
    assert result.returncode == 0, result.stderr
    return state


def names(fake: FakeKube) -> set[str]:
    return {f"{o['kind']} {o['metadata'].get('namespace', '')}/{o['metadata']['name']}".replace(" /", " ")
            for o in fake.objects.values()}


def import_(bundle: Path, keys: KeyPair, state: Path, *extra: object) -> object:
    return run_ferry("import", bundle, "--trust", keys.pub, "--state", state, *extra)


def test_two_sites_prune_create_only_and_status(bundles: dict[str, Path], hub_keys: KeyPair, fakekube: FakeKube,
                                                second_wec: FakeKube, tmp_path: Path) -> None:
    north = site(tmp_path, fakekube, "wec-north", "location-group=edge", "zone=north")
    south = site(tmp_path, second_wec, "wec-south", "location-group=edge", "zone=south")
    for state in (north, south):
        result = import_(bundles["1.0.0"], hub_keys, state)
        assert result.returncode == 0, result.stdout + result.stderr  # type: ignore[attr-defined]

    # One bundle, two BindingPolicies, two sites: different objects; control objects on neither.
    app_objects = {"Namespace shop", "ConfigMap shop/settings", "ConfigMap shop/common", "Deployment shop/web",
                   "Service shop/web"}
    assert names(fakekube) == app_objects | {"ConfigMap shop/north-only"}
    assert names(second_wec) == app_objects
    common = fakekube.get_object("v1", "ConfigMap", "common", "shop")
    assert common is not None and common["data"] == {"release": "1.0.0"}  # CustomTransform removed data.debug
    assert common["metadata"]["annotations"]["ferry.io/set"] == "shop"

    # The WEC's controllers report status; the next import reads it back.
    fakekube.set_status("apps/v1", "Deployment", "web", "shop",
                        {"availableReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]})
    fakekube.requests.clear()
    result = import_(bundles["1.1.0"], hub_keys, north)
    assert result.returncode == 0, result.stdout + result.stderr  # type: ignore[attr-defined]
    assert "Service shop/web" not in names(fakekube)  # dropped from the set: pruned
    [delete] = fakekube.deletes()
    assert delete.path == "/api/v1/namespaces/shop/services/web"
    assert set(delete.body["preconditions"]) == {"uid", "resourceVersion"}
    # createOnly: exists, so not updated; the ordinary ConfigMap is
    settings = fakekube.get_object("v1", "ConfigMap", "settings", "shop")
    assert settings is not None and settings["data"] == {"greeting": "hello from 1.0.0"}
    common = fakekube.get_object("v1", "ConfigMap", "common", "shop")
    assert common is not None and common["data"] == {"release": "1.1.0"}
    assert not any(r.path.endswith("/configmaps/settings") for r in fakekube.applies())

    status = json.loads(run_ferry("status", "--state", north, "--json").stdout)
    assert status["siteIdentity"]["labels"] == {"location-group": "edge", "zone": "north"}
    [web] = [o for o in status["objectStatus"] if o["object"] == "Deployment.apps shop/web"]
    assert web["status"]["availableReplicas"] == 1 and web["summary"] == "Available=True"
    assert web["set"] == "shop"
    human = run_ferry("status", "--state", north).stdout
    assert "KubeStellar WEC wec-north: labels location-group=edge, zone=north" in human
    assert "status of Deployment.apps shop/web (set shop" in human

    # On the south WEC someone replaced the Service (no ferry annotation): pruning refuses, whole.
    svc = second_wec.get_object("v1", "Service", "web", "shop")
    assert svc is not None
    del svc["metadata"]["annotations"]
    second_wec.requests.clear()
    refused = import_(bundles["1.1.0"], hub_keys, south)
    assert refused.returncode == 1  # type: ignore[attr-defined]
    assert "would prune Service shop/web, which ferry does not own" in refused.stdout + refused.stderr  # type: ignore[attr-defined]
    assert second_wec.applies() == [] and second_wec.deletes() == []  # nothing half-applied
    kept = import_(bundles["1.1.0"], hub_keys, south, "--no-prune")
    assert kept.returncode == 0, kept.stdout + kept.stderr  # type: ignore[attr-defined]
    assert "Service shop/web" in names(second_wec) and second_wec.deletes() == []


def test_site_set_refuses_bad_input_with_one_line(fakekube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = fakekube.kubeconfig(tmp_path / "k", context="wec-1")
    state = tmp_path / "edge"
    for args, message in [
        (("--label", "zone"), "write KEY=VALUE"),
        (("--label", "zone=north", "--label", "zone=south"), "--label zone is given twice"),
        (("--label", "zone=not ok"), "the value is not a label value"),
        (("--kubeconfig", kubeconfig, "--context", "nope"), "has no such context (it has: wec-1)"),
        (("--kubeconfig", kubeconfig), "also name the WEC's --context"),
        (("--context", "wec-1"), "--context needs --kubeconfig"),
        (("--name", "a/b"), "a site name is letters, digits"),
    ]:
        assert_clean_failure(run_ferry("site", "set", "--state", state, *args), code=2, contains=message)
    assert_clean_failure(run_ferry("site", "show", "--state", tmp_path / "none"), code=2,
                         contains="no ferry edge state here")


def test_site_changes_are_audited_and_the_name_defaults_to_the_context(fakekube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = fakekube.kubeconfig(tmp_path / "k", context="wec-12")
    state = tmp_path / "edge"
    assert run_ferry("site", "set", "--state", state, "--kubeconfig", kubeconfig, "--context", "wec-12",
                     "--label", "location-group=edge").returncode == 0
    again = run_ferry("site", "set", "--state", state, "--label", "location-group=edge")
    assert again.returncode == 0 and "unchanged" in again.stderr
    assert run_ferry("site", "set", "--state", state, "--label", "location-group=core").returncode == 0
    shown = json.loads(run_ferry("site", "show", "--state", state, "--json").stdout)
    assert shown == {"name": "wec-12", "wec": True, "labels": {"location-group": "core"},
                     "kubeconfig": str(kubeconfig.absolute()), "context": "wec-12",
                     "resources": {"memory": None, "accelerator": None, "link": None}}  # none recorded (issue #20)
    trail = [json.loads(line) for line in (state / "audit" / "trail.jsonl").read_text().splitlines()]
    assert [e["decision"] for e in trail] == ["site-changed", "site-changed"]  # the no-op is not recorded
    assert trail[1]["reason"].endswith("wec-12 {location-group=edge} (kubeconfig " + str(kubeconfig.absolute())
                                       + ", context wec-12) -> wec-12 {location-group=core} (kubeconfig "
                                       + str(kubeconfig.absolute()) + ", context wec-12)")
    assert run_ferry("audit", "verify", "--state", state).returncode == 0


def test_a_malformed_policy_refuses_the_set_before_anything_is_applied(hub_keys: KeyPair, fakekube: FakeKube,
                                                                       tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "ns.yaml").write_text(NAMESPACE)
    (folder / "policy.yaml").write_text(POLICIES.split("---")[0].replace("operator: DoesNotExist",
                                                                         "operator: Missing"))
    spec = tmp_path / "bundle.yaml"
    # The workload's image travels with the set (the edge refuses a set whose images it cannot pin).
    layout = Path(__file__).parent.parent / "samples" / "images" / "sentiment-server"
    spec.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata: {name: shop, channel: stable}\nspec:\n"
                    f"  images:\n    - ref: registry.example:5000/team/web:1.0\n      layout: {layout}\n      version: 1.0.0\n"
                    f"  manifests:\n    - name: shop\n      version: 1.0.0\n      path: {folder}\n")
    assert run_ferry("export", spec, "--out", tmp_path / "usb", "--key", hub_keys.key,
                     "--state", tmp_path / "hub").returncode == 0
    state = site(tmp_path, fakekube, "wec-1", "location-group=edge")
    fakekube.requests.clear()
    result = import_(tmp_path / "usb", hub_keys, state)
    assert result.returncode == 1  # type: ignore[attr-defined]
    assert "BindingPolicy edge (policy.yaml document 1): downsync[1]: objectSelectors[1]: matchExpressions[1]: " \
           "operator 'Missing' is not one of In, NotIn, Exists, DoesNotExist" in result.stdout + result.stderr  # type: ignore[attr-defined]
    assert fakekube.applies() == []
