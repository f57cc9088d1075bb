"""Kubernetes ``List`` documents (issue #11 item 3) and the edge's proof that every workload
image is pinned before a set is applied or written.

A ``kind: List`` (or any ``*List`` kind with ``items``), as ``kubectl get -o yaml`` writes, is
read as its items by the one parser both sides use (:func:`manifests.kube.parse_documents`),
so every reader (checks, image records, pinning, apply order, GitOps output, placement) sees
the items. The end-to-end tests run the real CLI: export from the sample image layout, import
into the edge's GitOps folder (no cluster needed) and into the Debian registry fixture.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.apply.kube import ManifestTarget, apply_manifests
from manifests.errors import FerryError, FormatError, LimitError, VerificationError
from manifests.kube import parse_documents, workload_images
from manifests.limits import MAX_KUBE_NODES
from tests.support.common import SAMPLES, KeyPair, assert_clean_failure, run_ferry
from tests.support.registry import Registry
from tests.test_kube_apply import ORIGIN, make_set

IMAGE_REF = "registry.example:5000/team/sentiment-server:1.2.0"

DAEMONSET = {
    "apiVersion": "apps/v1", "kind": "DaemonSet",
    "metadata": {"name": "agent", "namespace": "ops"},
    "spec": {"selector": {"matchLabels": {"app": "agent"}},
             "template": {"metadata": {"labels": {"app": "agent"}},
                          "spec": {"containers": [{"name": "agent", "image": IMAGE_REF}]}}},
}
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops"}}


def as_list(items: list[object], kind: str = "List", api_version: str = "v1") -> bytes:
    """A list document as ``kubectl get -o yaml`` writes it (a List has no metadata.name)."""
    return yaml.safe_dump({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": ""},
                           "items": items}).encode()


# --------------------------------------------------------------------------- the parser

names = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
config_maps = st.builds(
    lambda name, data: {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data},
    names, st.dictionaries(names, st.text(max_size=20), max_size=3))


@settings(max_examples=60, deadline=None)
@given(before=st.lists(config_maps, max_size=3), items=st.lists(config_maps, max_size=6),
       after=st.lists(config_maps, max_size=3), kind=st.sampled_from(["List", "ConfigMapList"]))
def test_a_list_reads_as_its_items_in_place(before: list[dict[str, object]], items: list[dict[str, object]],
                                            after: list[dict[str, object]], kind: str) -> None:
    """Objects around a list, and the list's items, come out in file order, exactly the bodies
    written as separate documents would give; each item says where it was read."""
    docs = [yaml.safe_dump(d) for d in before] + [as_list(list(items), kind).decode()] + \
        [yaml.safe_dump(d) for d in after]
    objects = parse_documents("---\n".join(docs).encode(), "set.yaml")
    assert [o.body for o in objects] == before + items + after
    in_list = objects[len(before):len(before) + len(items)]
    assert [o.where for o in in_list] == [f"set.yaml document {len(before) + 1} items[{i}]"
                                          for i in range(len(items))]
    assert all(o.item is None for o in objects[:len(before)] + objects[len(before) + len(items):])


def test_a_list_item_is_a_workload_like_any_other() -> None:
    (obj,) = parse_documents(as_list([DAEMONSET], "DaemonSetList", "apps/v1"), "ds.yaml")
    assert obj.id == "DaemonSet.apps ops/agent" and workload_images(obj) == [IMAGE_REF]


def test_a_list_kind_without_items_is_an_ordinary_object() -> None:
    """``FooList`` without ``items`` is a custom kind that happens to end in List."""
    with pytest.raises(FormatError, match="document 1: PriorityList has no metadata.name"):
        parse_documents(b"apiVersion: example.com/v1\nkind: PriorityList\nspec: {}\n", "x.yaml")
    (obj,) = parse_documents(b"apiVersion: example.com/v1\nkind: PriorityList\nmetadata: {name: p}\n", "x.yaml")
    assert obj.kind == "PriorityList"


HOSTILE = [
    (b"apiVersion: v1\nkind: List\n", FormatError, "x.yaml document 1: List items must be a list of objects (missing)"),
    (b"apiVersion: v1\nkind: List\nitems: {a: 1}\n", FormatError,
     "x.yaml document 1: List items must be a list of objects (a dict)"),
    (b"apiVersion: v1\nkind: ConfigMapList\nitems: 3\n", FormatError,
     "x.yaml document 1: ConfigMapList items must be a list of objects (a int)"),
    (b"apiVersion: v1\nkind: List\nitems: [3]\n", FormatError,
     "x.yaml document 1 items[0]: not a Kubernetes object (a int, not a mapping)"),
    (b"apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: ConfigMap}]\n", FormatError,
     "x.yaml document 1 items[0]: ConfigMap has no metadata.name"),
    (b"apiVersion: v1\nkind: List\nitems: [{kind: ConfigMap, metadata: {name: a}}]\n", FormatError,
     "x.yaml document 1 items[0]: not a Kubernetes object (no apiVersion)"),
    (b"apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: List, items: []}]\n", FormatError,
     "x.yaml document 1 items[0]: a List inside a List; list its items directly"),
    (b"apiVersion: 'no such/thing/v1'\nkind: List\nitems: []\n", FormatError,
     "x.yaml document 1: List apiVersion 'no such/thing/v1' is not like v1 or apps/v1"),
]


@pytest.mark.parametrize(("data", "error", "message"), HOSTILE)
def test_hostile_lists_are_one_clear_line(data: bytes, error: type[FerryError], message: str) -> None:
    with pytest.raises(error) as caught:
        parse_documents(data, "x.yaml")
    assert str(caught.value) == message


def test_a_huge_list_meets_the_value_limit_before_any_item_is_read() -> None:
    """An alias bomb of items (every item the same anchor) is counted as expanded."""
    item = "{apiVersion: v1, kind: ConfigMap, metadata: {name: a}, data: {a: '1', b: '2'}}"
    data = (f"apiVersion: v1\nkind: List\nx: &i {item}\nitems: [" + ", ".join(["*i"] * (MAX_KUBE_NODES // 6))
            + "]\n").encode()
    with pytest.raises(LimitError, match=f"x.yaml document 1: more than {MAX_KUBE_NODES} values"):
        parse_documents(data, "x.yaml")


def test_the_same_object_twice_across_a_list_names_both_places() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}
    from manifests.kube import check_unique

    objects = parse_documents(yaml.safe_dump(cm).encode() + b"---\n" + as_list([cm]), "x.yaml")
    with pytest.raises(FormatError, match=r"ConfigMap a appears twice \(x.yaml document 1 and x.yaml document 2 "
                                          r"items\[0\]\)"):
        check_unique(objects, "set")


# --------------------------------------------------------------------------- every image pinned at the edge

PINNED = "edge.local:5000/team/sentiment-server@sha256:" + "5" * 64


def _pod(spec: dict[str, object]) -> bytes:
    return as_list([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ops"},
                     "spec": spec}])


def test_every_image_field_is_pinned_containers_and_image_volumes(tmp_path: Path) -> None:
    spec = {"initContainers": [{"name": "i", "image": IMAGE_REF}],
            "containers": [{"name": "c", "image": IMAGE_REF}],
            "ephemeralContainers": [{"name": "e", "image": IMAGE_REF}],
            "volumes": [{"name": "v", "image": {"reference": IMAGE_REF}}, {"name": "e", "emptyDir": {}}]}
    art, read = make_set({"pod.yaml": _pod(spec)})
    result = apply_manifests(art, read, ManifestTarget(tmp_path / "out", None, None),
                             image_refs={IMAGE_REF: PINNED}, origin=ORIGIN, registry="edge.local:5000")
    assert result.applied == ["Pod ops/p"]
    (written,) = (tmp_path / "out" / "sentiment-app").iterdir()
    body = yaml.safe_load(written.read_text())["spec"]
    assert [c["image"] for f in ("initContainers", "containers", "ephemeralContainers") for c in body[f]] == [PINNED] * 3
    assert body["volumes"][0]["image"]["reference"] == PINNED


@pytest.mark.parametrize(("field", "image", "registry"), [
    ("ephemeralContainers", "busybox:1.36", "edge.local:5000"),  # not carried: names Docker Hub
    ("initContainers", "edge.local:5000/team/tool:1.0", "edge.local:5000"),  # the site's registry, no digest
    ("containers", "other.example/team/tool@sha256:" + "7" * 64, "edge.local:5000"),  # digest, another registry
    ("containers", "other.example/team/tool@sha256:" + "7" * 64, None),  # layout: only what the edge pinned
    ("volumes", "busybox:1.36", None),
])
def test_an_image_left_unpinned_refuses_the_set_and_nothing_is_written(
        tmp_path: Path, field: str, image: str, registry: str | None) -> None:
    spec: dict[str, object] = {"containers": [{"name": "c", "image": IMAGE_REF}]}
    if field == "volumes":
        spec["volumes"] = [{"name": "v", "image": {"reference": image}}]
    else:
        spec[field] = [*spec.get(field, []), {"name": "x", "image": image}]  # type: ignore[list-item]
    art, read = make_set({"pod.yaml": _pod(spec)})
    with pytest.raises(VerificationError) as caught:
        apply_manifests(art, read, ManifestTarget(tmp_path / "out", None, None),
                        image_refs={IMAGE_REF: PINNED}, origin=ORIGIN, registry=registry)
    message = str(caught.value)
    assert message.startswith("pod.yaml document 1 items[0]: Pod ops/p: ") and f"{image!r} is not pinned" in message
    assert "\n" not in message
    assert not (tmp_path / "out").exists()


def test_an_image_already_pinned_to_the_site_registry_passes(tmp_path: Path) -> None:
    own = "edge.local:5000/team/tool@sha256:" + "8" * 64
    art, read = make_set({"pod.yaml": _pod({"containers": [{"name": "c", "image": own}]})})
    result = apply_manifests(art, read, ManifestTarget(tmp_path / "out", None, None), image_refs={},
                             origin=ORIGIN, registry="edge.local:5000")
    assert result.applied == ["Pod ops/p"]


# --------------------------------------------------------------------------- the flow, real CLI


def _spec(tmp: Path, folder: Path, *, image: bool = True) -> Path:
    images = f"  images:\n    - ref: {IMAGE_REF}\n      layout: {SAMPLES / 'images' / 'sentiment-server'}\n" \
        if image else ""
    spec = tmp / "bundle.yaml"
    spec.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata: {name: ops, channel: stable}\nspec:\n"
                    f"{images}  manifests:\n    - name: agent\n      version: 1.0.0\n      path: {folder}\n")
    return spec


def _list_set(tmp: Path) -> Path:
    folder = tmp / "set"
    folder.mkdir()
    (folder / "list.yaml").write_bytes(as_list([NAMESPACE, DAEMONSET]))
    return folder


def test_a_list_exports_its_image_and_the_edge_pins_the_daemonset(hub_keys: KeyPair, edge_registry: Registry,
                                                                  tmp_path: Path) -> None:
    """The issue's case: a ``kind: List`` holding a DaemonSet. The hub records its image; at the
    edge the DaemonSet names the site registry by digest, in its own GitOps file."""
    spec = _spec(tmp_path, _list_set(tmp_path))
    exported = run_ferry("export", spec, "--out", tmp_path / "usb", "--key", hub_keys.key, "--state",
                         tmp_path / "hub")
    assert exported.returncode == 0, exported.stderr
    assert "does not carry" not in exported.stdout + exported.stderr
    manifest = json.loads((tmp_path / "usb" / "manifest.json").read_text())
    (agent,) = [a for a in manifest["artifacts"] if a["kind"] == "manifests"]
    assert agent["images"] == [IMAGE_REF]

    edge = tmp_path / "edge"
    result = run_ferry("import", tmp_path / "usb", "--trust", hub_keys.pub, "--state", edge,
                       "--registry", edge_registry.host, "--manifests-dir", tmp_path / "gitops")
    assert result.returncode == 0, result.stdout + result.stderr
    digest = edge_registry.inspect("team/sentiment-server:1.2.0")["Digest"]
    out = tmp_path / "gitops" / "agent"
    assert sorted(p.name for p in out.iterdir()) == ["0001-namespace-ops.yaml", "0002-daemonset-agent.yaml"]
    daemonset = yaml.safe_load((out / "0002-daemonset-agent.yaml").read_text())
    assert daemonset["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"{edge_registry.host}/team/sentiment-server@{digest}"


def test_a_set_whose_image_the_edge_cannot_pin_is_refused_with_one_line(hub_keys: KeyPair,
                                                                         tmp_path: Path) -> None:
    """The hub only warns (the image may already be at the site); an edge that does not hold
    it refuses the set: nothing is written, the line names the object and the image."""
    spec = _spec(tmp_path, _list_set(tmp_path), image=False)
    exported = run_ferry("export", spec, "--out", tmp_path / "usb", "--key", hub_keys.key, "--state",
                         tmp_path / "hub")
    assert exported.returncode == 0, exported.stderr
    assert "which this bundle does not carry" in exported.stdout + exported.stderr
    result = run_ferry("import", tmp_path / "usb", "--trust", hub_keys.pub, "--state", tmp_path / "edge")
    assert_clean_failure(result, code=1, contains=f"list.yaml document 1 items[1]: DaemonSet.apps ops/agent: "
                                                  f"containers[0].image {IMAGE_REF!r} is not pinned at this edge")
    assert not (tmp_path / "edge" / "manifests" / "agent").exists()


def test_a_later_set_is_pinned_to_an_image_an_earlier_bundle_brought(hub_keys: KeyPair, tmp_path: Path) -> None:
    """Bundle 1 brings the image (and the set); bundle 2 brings only a new version of the set:
    its DaemonSet is pinned to the image the ledger holds, not left naming the hub's registry."""
    folder = _list_set(tmp_path)
    first = _spec(tmp_path, folder)
    assert run_ferry("export", first, "--out", tmp_path / "usb1", "--key", hub_keys.key, "--state",
                     tmp_path / "hub").returncode == 0
    second = tmp_path / "bundle2.yaml"
    second.write_text(_spec(tmp_path, folder, image=False).read_text().replace("version: 1.0.0", "version: 1.1.0"))
    assert run_ferry("export", second, "--out", tmp_path / "usb2", "--key", hub_keys.key, "--state",
                     tmp_path / "hub").returncode == 0
    edge = tmp_path / "edge"
    for usb in ("usb1", "usb2"):
        result = run_ferry("import", tmp_path / usb, "--trust", hub_keys.pub, "--state", edge)
        assert result.returncode == 0, result.stdout + result.stderr
    daemonset = yaml.safe_load((edge / "manifests" / "agent" / "0002-daemonset-agent.yaml").read_text())
    assert daemonset["metadata"]["annotations"]["ferry.io/version"] == "1.1.0"
    image = daemonset["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("registry.example:5000/team/sentiment-server@sha256:")


def test_kubestellar_placement_reads_a_lists_items(tmp_path: Path) -> None:
    """A BindingPolicy and the objects it selects, all inside one List: the WEC gets exactly
    the selected items, each in its own GitOps file; the policy itself is not applied."""
    from importer.site import Site
    from importer.state import EdgeState
    from importer.wec import apply_placed

    policy = {"apiVersion": "control.kubestellar.io/v1alpha1", "kind": "BindingPolicy",
              "metadata": {"name": "edge"},
              "spec": {"clusterSelectors": [{"matchLabels": {"location-group": "edge"}}],
                       "downsync": [{"objectSelectors": [{"matchLabels": {"app": "a"}}]}]}}
    chosen = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "ops",
                                                                      "labels": {"app": "a"}}}
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": "ops"}}
    art, read = make_set({"all.yaml": as_list([policy, chosen, other])})
    with EdgeState.open(tmp_path / "edge") as state:
        result = apply_placed(art, read, ManifestTarget(tmp_path / "out", None, None), state=state,  # type: ignore[arg-type]
                              site=Site("wec-1", wec=True, labels={"location-group": "edge"}),
                              image_refs={}, origin=ORIGIN)
    assert result.applied == ["ConfigMap ops/a"]
    assert [p.name for p in (tmp_path / "out" / "sentiment-app").iterdir()] == ["0001-configmap-a.yaml"]
