"""Concurrency on the cluster, against the loopback API server (tests/support/fakekube.py) with
the real kubernetes client: DELETE preconditions when another writer changes an object between
ferry's plan and its prune, and a manifest naming a stale ``metadata.resourceVersion`` (server-side
apply then answers 409). Each is one clear line; nothing is deleted that ferry did not read."""

from __future__ import annotations

from pathlib import Path

import pytest

from importer.apply.kube import ManifestTarget
from importer.state import EdgeState
from importer.wec import apply_placed, read_inventory
from manifests.errors import ClusterError
from tests.support.common import KeyPair, run_ferry
from tests.support.fakekube import FakeKube
from tests.test_kube_apply import ORIGIN, apply_set
from tests.test_wec import bundles, import_, site  # noqa: F401  (bundles is a fixture)
from tests.test_wec_apply import EDGE, OBJECTS, POLICY, make_set

NS = b"apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n"


def config_map(data: str, resource_version: str | None = None) -> bytes:
    version = f", resourceVersion: '{resource_version}'" if resource_version is not None else ""
    return (f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: shop{version}}}\n"
            f"data: {{a: '{data}'}}\n").encode()


def test_a_manifest_naming_a_stale_resource_version_is_one_clear_line(fakekube: FakeKube, tmp_path: Path) -> None:
    target = ManifestTarget(None, fakekube.kubeconfig(tmp_path / "k"), None)
    apply_set({"a.yaml": NS + config_map("1")}, target)
    current = fakekube.get_object("v1", "ConfigMap", "settings", "shop")
    assert current is not None
    version = current["metadata"]["resourceVersion"]
    # saved with `kubectl get -o yaml` earlier: the object has changed since
    assert version != "1"
    stale = config_map("2", resource_version="1")
    with pytest.raises(ClusterError) as err:
        apply_set({"a.yaml": NS + stale}, target, version="1.3.0")
    message = str(err.value)
    assert "\n" not in message
    assert ('applying ConfigMap shop/settings: HTTP 409 Conflict: Operation cannot be fulfilled on configmaps '
            '"settings": the object has been modified') in message
    assert message.endswith("(the manifest names metadata.resourceVersion 1, so it applies only to that version of "
                            "the object: remove resourceVersion from the manifest at the hub and export a new "
                            "version)")
    after = fakekube.get_object("v1", "ConfigMap", "settings", "shop")
    assert after is not None and after["data"] == {"a": "1"}
    # The current version applies (the server checks it, it does not refuse every resourceVersion).
    apply_set({"a.yaml": NS + config_map("3", resource_version=version)}, target, version="1.4.0")
    after = fakekube.get_object("v1", "ConfigMap", "settings", "shop")
    assert after is not None and after["data"] == {"a": "3"}


def test_an_object_changed_between_plan_and_prune_is_not_deleted(fakekube: FakeKube, tmp_path: Path) -> None:
    """The DELETE carries the uid and resourceVersion ferry read when planning: another writer
    changing the object in between makes the server refuse it (409), one line, and the object
    stays; the inventory still names it, so the next import prunes it once it is read again."""
    target = ManifestTarget(None, fakekube.kubeconfig(tmp_path / "k", context="wec-1"), "wec-1")
    with EdgeState.open(tmp_path / "edge") as state:
        art, read = make_set({"p.yaml": POLICY, "o.yaml": OBJECTS}, name="app")
        apply_placed(art, read, target, state=state, site=EDGE, image_refs={}, origin=ORIGIN)
        dropped = OBJECTS.replace(b"name: one,", b"name: two,")

        def another_writer(method: str, path: str) -> None:  # at ferry's first PATCH, after its plan
            if method == "PATCH" and fakekube.before is not None:
                fakekube.before = None
                fakekube.set_status("v1", "ConfigMap", "one", "a", {"touched": "by someone"})

        fakekube.before = another_writer
        art, read = make_set({"p.yaml": POLICY, "o.yaml": dropped}, name="app", version="1.3.0")
        with pytest.raises(ClusterError) as err:
            apply_placed(art, read, target, state=state, site=EDGE, image_refs={}, origin=ORIGIN)
        message = str(err.value)
        assert "\n" not in message
        assert "pruning ConfigMap a/one: HTTP 409 Conflict: Precondition failed: resourceVersion" in message
        assert fakekube.get_object("v1", "ConfigMap", "one", "a") is not None
        assert "one" in [o.name for o in read_inventory(state, "app")]
        [delete] = fakekube.deletes()
        assert set(delete.body["preconditions"]) == {"uid", "resourceVersion"}

        art, read = make_set({"p.yaml": POLICY, "o.yaml": dropped}, name="app", version="1.3.0")
        result = apply_placed(art, read, target, state=state, site=EDGE, image_refs={}, origin=ORIGIN)
        assert result.pruned == ["ConfigMap a/one"]
        assert fakekube.get_object("v1", "ConfigMap", "one", "a") is None


def test_the_cli_says_so_in_one_line(bundles: dict[str, Path], hub_keys: KeyPair,  # noqa: F811
                                     fakekube: FakeKube, tmp_path: Path) -> None:
    state = site(tmp_path, fakekube, "wec-1", "location-group=edge")
    assert import_(bundles["1.0.0"], hub_keys, state).returncode == 0  # type: ignore[attr-defined]

    def another_writer(method: str, path: str) -> None:
        if method == "PATCH" and fakekube.before is not None:
            fakekube.before = None
            fakekube.set_status("v1", "Service", "web", "shop", {"loadBalancer": {}})

    fakekube.before = another_writer
    result = run_ferry("import", bundles["1.1.0"], "--trust", hub_keys.pub, "--state", state)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("ferry: error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "pruning Service shop/web: HTTP 409 Conflict: Precondition failed: resourceVersion" in errors[0]
    assert fakekube.get_object("v1", "Service", "web", "shop") is not None
    again = import_(bundles["1.1.0"], hub_keys, state)
    assert again.returncode == 0, again.stdout + again.stderr  # type: ignore[attr-defined]
    assert fakekube.get_object("v1", "Service", "web", "shop") is None
