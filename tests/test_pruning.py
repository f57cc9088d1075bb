"""The prune plan (importer/pruning.py): pure, so every rule is a direct test."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from importer.pruning import AppliedObject, plan_prune
from manifests.errors import PolicyError

NS = AppliedObject("v1", "Namespace", "", "shop", 1)
CM = AppliedObject("v1", "ConfigMap", "shop", "settings", 2)
DEP = AppliedObject("apps/v1", "Deployment", "shop", "web", 3)
SVC = AppliedObject("v1", "Service", "shop", "web", 4)
PREVIOUS = [NS, CM, DEP, SVC]


def mine(uid: str = "u", rv: str = "1") -> dict[str, Any]:
    return {"uid": uid, "resourceVersion": rv, "annotations": {"ferry.io/set": "shop"}}


def test_dropped_objects_are_deleted_in_reverse_apply_order_with_preconditions() -> None:
    live = {o.key: mine(uid=o.name + o.kind, rv=str(o.position)) for o in PREVIOUS}
    plan = plan_prune("shop", PREVIOUS, {NS.key}, live)
    assert [d.obj for d in plan.delete] == [SVC, DEP, CM]
    assert (plan.delete[0].uid, plan.delete[0].resource_version) == ("webService", "4")


def test_objects_the_new_version_applies_are_never_candidates() -> None:
    plan = plan_prune("shop", PREVIOUS, {o.key for o in PREVIOUS}, {})
    assert plan.delete == [] and plan.lines() == []


def test_gone_objects_and_objects_handed_over_to_another_set() -> None:
    live = {DEP.key: {"annotations": {"ferry.io/set": "other"}}, CM.key: None}
    plan = plan_prune("shop", [CM, DEP], set(), live)
    assert plan.gone == [CM] and plan.handed_over == [(DEP, "other")] and plan.delete == []
    assert plan.lines() == ["already gone ConfigMap shop/settings",
                            "keep Deployment.apps shop/web: now applied by set 'other'"]


def test_an_object_ferry_does_not_own_refuses_the_whole_plan() -> None:
    live = {SVC.key: mine(), DEP.key: {"uid": "x", "annotations": {"team": "b"}}}
    with pytest.raises(PolicyError, match=r"would prune Deployment.apps shop/web, which ferry does not own .* "
                                          "nothing was applied"):
        plan_prune("shop", [DEP, SVC], set(), live)


def test_no_prune_keeps_everything_even_foreign_objects() -> None:
    plan = plan_prune("shop", PREVIOUS, set(), {DEP.key: {}}, no_prune=True)
    assert plan.delete == [] and [o for o, _ in plan.kept] == [SVC, DEP, CM, NS]


def test_namespaces_and_crds_are_never_pruned() -> None:
    crd = AppliedObject("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "widgets.example.com", 5)
    plan = plan_prune("shop", [NS, crd], set(), {NS.key: mine(), crd.key: mine()})
    assert plan.delete == [] and {o.kind for o, _ in plan.kept} == {"Namespace", "CustomResourceDefinition"}


def test_gitops_folder_plan_needs_no_live_state() -> None:
    plan = plan_prune("shop", PREVIOUS, {NS.key, DEP.key}, None)
    assert [d.obj for d in plan.delete] == [SVC, CM] and plan.delete[0].uid is None


objects = st.lists(st.builds(AppliedObject, st.just("v1"), st.sampled_from(["ConfigMap", "Secret", "Service"]),
                             st.sampled_from(["a", "b"]), st.sampled_from(["x", "y", "z"]), st.integers(1, 50)),
                   unique_by=lambda o: o.key, max_size=12)


@given(objects, st.data())
def test_never_deletes_a_kept_or_foreign_object_and_order_is_reverse(previous: list[AppliedObject],
                                                                   data: st.DataObject) -> None:
    keep = {o.key for o in previous if data.draw(st.booleans())}
    owners = {o.key: data.draw(st.sampled_from(["shop", "other", None, "gone"])) for o in previous}
    live = {k: (None if v == "gone" else {"annotations": {"ferry.io/set": v} if v else {}}) for k, v in owners.items()}
    try:
        plan = plan_prune("shop", previous, keep, live)
    except PolicyError:
        assert any(owners[o.key] is None and o.key not in keep for o in previous)
        return
    deleted = [d.obj for d in plan.delete]
    assert all(o.key not in keep and owners[o.key] == "shop" for o in deleted)
    assert [o.position for o in deleted] == sorted((o.position for o in deleted), reverse=True)
    assert {o.key for o in deleted} == {o.key for o in previous if o.key not in keep and owners[o.key] == "shop"}
