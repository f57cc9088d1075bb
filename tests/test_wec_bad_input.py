"""Issue 16, "Bad input", at a KubeStellar WEC: each case one clear line and nothing half-applied
(the plan is computed whole before the first request), or, for a policy that selects nothing,
one warning line while the rest of the set goes on. The cases already covered elsewhere:
malformed selectors (tests/test_placement.py parametrized, tests/test_wec.py through the CLI),
kinds KubeStellar never propagates (test_placement.py), remove paths (test_placement.py), and
pruning an object ferry does not own (test_wec.py, test_wec_plan.py, test_pruning.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from importer.apply.kube import ManifestTarget
from importer.state import EdgeState
from importer.wec import apply_placed, read_inventory
from manifests.errors import ClusterError
from tests.support.common import KeyPair, assert_clean_failure, run_ferry
from tests.support.fakekube import FakeKube
from tests.test_kube_apply import ORIGIN
from tests.test_wec import NAMESPACE, POLICIES, import_, site
from tests.test_wec_apply import EDGE, make_set

WIDGET = b"""apiVersion: example.com/v1
kind: Widget
metadata: {name: w, namespace: shop, labels: {app: shop}}
spec: {size: 1}
"""
CONFIG = b"""apiVersion: v1
kind: ConfigMap
metadata: {name: common, namespace: shop, labels: {app: shop}}
data: {release: "1"}
"""


def test_a_kind_the_wec_does_not_serve_refuses_the_set_before_any_change(fakekube: FakeKube, tmp_path: Path) -> None:
    """A selected custom resource whose CRD the WEC lacks (and the set does not carry): one line
    naming the object, no PATCH, no inventory."""
    target = ManifestTarget(None, fakekube.kubeconfig(tmp_path / "k", context="wec-1"), "wec-1")
    fakekube.requests.clear()
    with EdgeState.open(tmp_path / "edge") as state:
        art, read = make_set({"a.yaml": NAMESPACE.encode() + b"---\n" + CONFIG + b"---\n" + WIDGET,
                              "p.yaml": POLICIES.encode().split(b"---")[0]}, name="shop")
        with pytest.raises(ClusterError) as err:
            apply_placed(art, read, target, state=state, site=EDGE, image_refs={}, origin=ORIGIN)
        assert read_inventory(state, "shop") == []
    assert "\n" not in str(err.value)
    assert "Widget.example.com shop/w: the server does not serve this kind" in str(err.value)
    assert fakekube.applies() == [] and fakekube.deletes() == []


def export_set(tmp: Path, keys: KeyPair, files: dict[str, str]) -> Path:
    folder = tmp / "set"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    spec = tmp / "bundle.yaml"
    spec.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata: {name: shop, channel: stable}\nspec:\n"
                    f"  manifests:\n    - name: shop\n      version: 1.0.0\n      path: {folder}\n")
    result = run_ferry("export", spec, "--out", tmp / "usb", "--key", keys.key, "--state", tmp / "hub")
    assert result.returncode == 0, result.stderr
    return tmp / "usb"


NOTHING = """apiVersion: control.kubestellar.io/v1alpha1
kind: BindingPolicy
metadata: {name: typo}
spec:
  clusterSelectors: [{matchLabels: {location-group: edge}}]
  downsync: [{objectNames: [no-such-object]}]
"""


def test_a_policy_selecting_nothing_is_one_warning_line_and_the_set_goes_on(hub_keys: KeyPair, fakekube: FakeKube,
                                                                            tmp_path: Path) -> None:
    usb = export_set(tmp_path, hub_keys, {"ns.yaml": NAMESPACE, "app.yaml": CONFIG.decode(),
                                          "policies.yaml": POLICIES.split("---")[0] + "---\n" + NOTHING})
    state = site(tmp_path, fakekube, "wec-1", "location-group=edge")
    warning = ("BindingPolicy typo (policies.yaml document 2): its downsync clauses select no object of the set "
               "(nothing of the set goes anywhere by it)")
    dry = run_ferry("import", usb, "--trust", hub_keys.pub, "--state", state, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"    warning: {warning}" in dry.stdout
    done = import_(usb, hub_keys, state)
    assert done.returncode == 0, done.stdout + done.stderr  # type: ignore[attr-defined]
    lines = [line for line in done.stderr.splitlines() if "select no object" in line]  # type: ignore[attr-defined]
    assert lines == [f"warning: manifests 'shop': {warning}"]
    assert fakekube.get_object("v1", "ConfigMap", "common", "shop") is not None


def test_custom_transforms_missing_path_applies_and_metadata_name_refuses(hub_keys: KeyPair, fakekube: FakeKube,
                                                                         tmp_path: Path) -> None:
    """transforming.md: "remove if present", so a path that matches nothing is no error; a path
    removing metadata.name could never be applied: one line, nothing applied."""
    absent = POLICIES.split("---")[0] + "---\n" + POLICIES.split("---")[2].replace("$.data.debug", "$.data.nope")
    (tmp_path / "a").mkdir()
    usb = export_set(tmp_path / "a", hub_keys, {"ns.yaml": NAMESPACE, "app.yaml": CONFIG.decode(),
                                                "policies.yaml": absent})
    state = site(tmp_path, fakekube, "wec-1", "location-group=edge")
    done = import_(usb, hub_keys, state)
    assert done.returncode == 0, done.stdout + done.stderr  # type: ignore[attr-defined]
    common = fakekube.get_object("v1", "ConfigMap", "common", "shop")
    assert common is not None and common["data"] == {"release": "1"}

    (tmp_path / "b").mkdir()
    name = absent.replace("$.data.nope", "$.metadata.name")
    usb = export_set(tmp_path / "b", hub_keys, {"ns.yaml": NAMESPACE, "app.yaml": CONFIG.decode(),
                                                "policies.yaml": name})
    other = site(tmp_path, fakekube, "wec-2", "location-group=edge")
    fakekube.requests.clear()
    refused = import_(usb, hub_keys, other)
    assert_clean_failure(refused, code=1, contains="CustomTransform no-debug (policies.yaml document 2): "  # type: ignore[arg-type]
                         "spec.remove[1]: '$.metadata.name' would remove metadata.name")
    assert fakekube.applies() == []
