"""``import --dry-run`` and ``verify --state`` list placement per object at a KubeStellar WEC, and
the import carries out exactly that plan (issue 16, "--dry-run and verify --state list, per
object, selected or not and by which policy and clause"). Through the real CLI, against a fake
WEC (tests/support/fakekube.py) reached with the real kubernetes client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.common import KeyPair, run_ferry
from tests.support.fakekube import FakeKube
from tests.test_wec import bundles, import_, site  # noqa: F401  (bundles is a fixture)


def placement_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The manifest set's placement from ``import --json``."""
    [art] = [a for b in doc["bundles"] for a in b["artifacts"] if a["kind"] == "manifests"]
    assert art["placement"] is not None, art
    return art["placement"]  # type: ignore[no-any-return]


def verify_placement(bundle: Path, keys: KeyPair, state: Path) -> dict[str, Any]:
    result = run_ferry("verify", bundle, "--trust", keys.pub, "--state", state, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    [art] = [a for b in json.loads(result.stdout)["bundles"] for a in b["artifacts"] if a["kind"] == "manifests"]
    return art["plan"]["placement"]  # type: ignore[no-any-return]


def test_dry_run_and_verify_list_the_plan_the_import_carries_out(bundles: dict[str, Path],  # noqa: F811
                                                                  hub_keys: KeyPair, fakekube: FakeKube,
                                                                  tmp_path: Path) -> None:
    north = site(tmp_path, fakekube, "wec-north", "location-group=edge", "zone=north")
    fakekube.requests.clear()
    dry = run_ferry("import", bundles["1.0.0"], "--trust", hub_keys.pub, "--state", north, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    planned = placement_of(json.loads(dry.stdout))
    assert {r.method for r in fakekube.requests} <= {"GET"} and fakekube.objects == {}  # reads only
    lines = planned["lines"]
    assert lines == [  # set order: files sorted by path (app, namespace, policies), documents as written
        "apply ConfigMap shop/settings (createOnly): selected by BindingPolicy edge (clause 1), "
        "BindingPolicy edge (clause 2)",
        "apply ConfigMap shop/common: selected by BindingPolicy edge (clause 1)",
        "apply ConfigMap shop/north-only: selected by BindingPolicy north (clause 1)",
        "apply Deployment.apps shop/web: selected by BindingPolicy edge (clause 1)",
        "apply Service shop/web: selected by BindingPolicy edge (clause 1)",
        "apply Namespace shop: selected by BindingPolicy edge (clause 1)",
        "skip  BindingPolicy.control.kubestellar.io edge: a KubeStellar control object: never applied to a WEC",
        "skip  BindingPolicy.control.kubestellar.io north: a KubeStellar control object: never applied to a WEC",
        "skip  CustomTransform.control.kubestellar.io no-debug: a KubeStellar control object: never applied "
        "to a WEC",
    ]
    objects = {o["object"]: o for o in planned["placement"]["objects"]}
    assert objects["ConfigMap shop/settings"]["by"] == [{"policy": "BindingPolicy edge", "clause": 1},
                                                        {"policy": "BindingPolicy edge", "clause": 2}]
    assert objects["ConfigMap shop/settings"]["createOnly"] is True
    assert objects["ConfigMap shop/common"]["removed"] == ["no-debug: $.data.debug"]
    assert verify_placement(bundles["1.0.0"], hub_keys, north) == planned  # verify --state: the same plan

    text = run_ferry("import", bundles["1.0.0"], "--trust", hub_keys.pub, "--state", north, "--dry-run")
    assert text.returncode == 0 and "    apply ConfigMap shop/north-only: selected by BindingPolicy north " \
                                    "(clause 1)" in text.stdout
    shown = run_ferry("verify", bundles["1.0.0"], "--trust", hub_keys.pub, "--state", north)
    assert "  apply Service shop/web: selected by BindingPolicy edge (clause 1)" in shown.stdout

    done = import_(bundles["1.0.0"], hub_keys, north, "--json")
    assert done.returncode == 0, done.stdout + done.stderr  # type: ignore[attr-defined]
    assert placement_of(json.loads(done.stdout)) == planned  # type: ignore[attr-defined]

    # The newer set: the createOnly ConfigMap exists (kept), the dropped Service is pruned.
    fakekube.requests.clear()
    dry = run_ferry("import", bundles["1.1.0"], "--trust", hub_keys.pub, "--state", north, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    planned = placement_of(json.loads(dry.stdout))
    assert {r.method for r in fakekube.requests} == {"GET"}
    assert "keep  ConfigMap shop/settings (createOnly): selected by BindingPolicy edge (clause 1), BindingPolicy " \
           "edge (clause 2); it exists on the WEC, not updated" in planned["lines"]
    assert planned["lines"][-1] == "prune Service shop/web"
    assert planned["existsOnWec"] == ["ConfigMap shop/settings"]
    assert planned["prune"]["delete"] == ["Service shop/web"]
    assert verify_placement(bundles["1.1.0"], hub_keys, north) == planned
    assert fakekube.get_object("v1", "Service", "web", "shop") is not None  # the dry runs deleted nothing
    done = import_(bundles["1.1.0"], hub_keys, north, "--json")
    assert done.returncode == 0, done.stdout + done.stderr  # type: ignore[attr-defined]
    assert placement_of(json.loads(done.stdout)) == planned  # type: ignore[attr-defined]
    assert fakekube.get_object("v1", "Service", "web", "shop") is None


def test_a_dry_run_shows_the_prune_refusal_the_import_would_stop_with(bundles: dict[str, Path],  # noqa: F811
                                                                       hub_keys: KeyPair, fakekube: FakeKube,
                                                                       tmp_path: Path) -> None:
    state = site(tmp_path, fakekube, "wec-1", "location-group=edge")
    assert import_(bundles["1.0.0"], hub_keys, state).returncode == 0  # type: ignore[attr-defined]
    svc = fakekube.get_object("v1", "Service", "web", "shop")
    assert svc is not None
    del svc["metadata"]["annotations"]  # someone else's now
    dry = run_ferry("import", bundles["1.1.0"], "--trust", hub_keys.pub, "--state", state, "--dry-run")
    assert dry.returncode == 1
    assert "would prune Service shop/web, which ferry does not own" in dry.stderr
    assert dry.stderr.count("ferry: error") == 1 and "Traceback" not in dry.stderr
    verify = run_ferry("verify", bundles["1.1.0"], "--trust", hub_keys.pub, "--state", state, "--json")
    [art] = [a for b in json.loads(verify.stdout)["bundles"] for a in b["artifacts"] if a["kind"] == "manifests"]
    assert art["plan"]["status"] == "failed" and "which ferry does not own" in art["plan"]["reason"]
