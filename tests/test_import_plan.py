"""The import plan and what an operator can rely on when a bundle is not whole (issue #12 item 2),
through the real command line: exit codes, the one error line, and the files under EDGE.

Also the EDGE writer (importer.fsroot): a symbolic link planted under the state is never
written through.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.fsroot import FsRoot
from importer.plan import Needs, Present, Status, make_plan
from manifests.errors import PlaceError
from tests.support.bundles import Spec, image, model, write_bundle
from tests.support.common import KeyPair, assert_clean_failure, run_ferry

CONFIGMAP = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config, namespace: default}\ndata: {a: b}\n"


def rnd(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def manifests(name: str, version: str) -> Spec:
    return Spec("manifests", name, version, files={"app.yaml": CONFIGMAP})


def imp(hub: KeyPair, state: Path, *paths: Path, extra: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    return run_ferry("import", *paths, "--trust", hub.pub, "--state", state, *extra)


def imp_json(hub: KeyPair, state: Path, *paths: Path, extra: tuple[str, ...] = ()) -> dict:
    r = imp(hub, state, *paths, extra=("--json", *extra))
    assert "Traceback" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    assert doc["exitCode"] == r.returncode
    return doc


def statuses(doc: dict) -> dict[str, str]:
    return {a["name"]: a["status"] for b in doc["bundles"] for a in b["artifacts"]}


# --------------------------------------------------------------------------- a damaged copy


def test_a_missing_pack_of_a_present_volume_is_a_damaged_copy(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", {"w.bin": rnd(200_000, 1)})])
    (tmp_path / "b" / "packs" / "pack-000001").unlink()
    state = tmp_path / "edge"
    r = imp(hub_keys, state, tmp_path / "b")
    assert_clean_failure(r, code=3, contains="copy again packs/pack-000001 (missing from the volume given: "
                                             "a damaged copy) to finish")
    assert "insert volume" not in r.stderr + r.stdout
    assert not (state / "models" / "m" / "1.0.0").exists()
    v = run_ferry("verify", tmp_path / "b", "--trust", hub_keys.pub, "--json")
    assert v.returncode == 1
    report = json.loads(v.stdout)
    [volumes] = [c for c in report["bundles"][0]["checks"] if c["name"] == "volumes"]
    assert not volumes["ok"] and "damaged: pack file(s) packs/pack-000001 missing" in volumes["reason"]
    assert report["bundles"][0]["volumes"]["missing"] == []  # not a missing volume


def test_missing_volume_and_damaged_copy_named_together(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", {"w.bin": rnd(300_000, 2)})],
                 volumes=3, chunk_size=32 * 1024)
    (tmp_path / "b" / "vol-001" / "packs" / "pack-000001").unlink()
    r = imp(hub_keys, tmp_path / "edge", tmp_path / "b" / "vol-001", tmp_path / "b" / "vol-003")
    assert_clean_failure(r, code=3, contains="insert volume 2 and copy again vol-001/packs/pack-000001")


# --------------------------------------------------------------------------- manifest sets wait for what they need


def test_manifest_set_is_held_while_its_model_is_refused(tmp_path: Path, hub_keys: KeyPair) -> None:
    state = tmp_path / "edge"
    write_bundle(tmp_path / "new", [hub_keys.key], [model("m", "2.0.0", {"w": b"2"})], sequence=1)
    assert imp(hub_keys, state, tmp_path / "new").returncode == 0
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", {"w": b"1"}), manifests("app", "1.0.0")],
                 sequence=2)
    r = imp(hub_keys, state, tmp_path / "b")
    assert_clean_failure(r, code=1, contains="model m 1.0.0: refused")
    assert "app 1.0.0" in r.stdout and "held back: model 'm'" in r.stdout
    assert not (state / "manifests" / "app").exists()


def test_manifest_set_waits_for_the_volume_its_model_is_on(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", {"w.bin": rnd(200_000, 3)}),
                                                  manifests("app", "1.0.0")], volumes=2, chunk_size=32 * 1024)
    state = tmp_path / "edge"
    doc = imp_json(hub_keys, state, tmp_path / "b" / "vol-001")
    assert doc["exitCode"] == 3
    assert statuses(doc)["m"] == "waiting"
    assert statuses(doc)["app"] in ("waiting", "held")
    assert not (state / "manifests" / "app").exists()
    # the second volume alone finishes: the set's chunks from volume 1 were kept
    r = imp(hub_keys, state, tmp_path / "b" / "vol-002")
    assert r.returncode == 0, r.stderr
    assert (state / "manifests" / "app").is_dir() and (state / "models" / "m" / "1.0.0").is_dir()


def test_manifest_set_is_held_while_its_image_fails(tmp_path: Path, hub_keys: KeyPair) -> None:
    """The wrong-site case of issue #12: the image fails, its workload YAML is not written."""
    state = tmp_path / "edge"
    (state / "oci").mkdir(parents=True)
    (state / "oci" / "blobs").symlink_to(tmp_path)  # the image cannot be written here
    deployment = (b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: default}\n"
                  b"spec: {selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, "
                  b"spec: {containers: [{name: web, image: 'team/app:v1'}]}}}\n")
    spec = Spec("manifests", "app", "1.0.0", files={"app.yaml": deployment}, images=("team/app:v1",))
    m = write_bundle(tmp_path / "b", [hub_keys.key], [image("team/app", "1.0.0", [rnd(1000, 4)]), spec])
    assert m.artifacts[0].kind == "image"
    r = imp(hub_keys, state, tmp_path / "b")
    assert_clean_failure(r, code=1, contains="image team/app 1.0.0: failed")
    assert "held back: image 'team/app:v1'" in r.stdout
    assert not (state / "manifests" / "app").exists()


# --------------------------------------------------------------------------- all or nothing


def test_atomic_applies_nothing_when_one_artifact_is_refused(tmp_path: Path, hub_keys: KeyPair) -> None:
    state = tmp_path / "edge"
    write_bundle(tmp_path / "new", [hub_keys.key], [model("b", "2.0.0", {"w": b"2"})], sequence=1)
    assert imp(hub_keys, state, tmp_path / "new").returncode == 0
    write_bundle(tmp_path / "x", [hub_keys.key], [model("a", "1.0.0", {"w": b"a"}), model("b", "1.0.0", {"w": b"1"})],
                 sequence=2)
    r = imp(hub_keys, state, tmp_path / "x", extra=("--atomic",))
    assert_clean_failure(r, code=1, contains="model b 1.0.0: refused")
    assert "--atomic: nothing of this bundle is applied while model 'b' is refused" in r.stdout
    assert not (state / "models" / "a").exists()
    # the default applies what can be applied
    r = imp(hub_keys, state, tmp_path / "x")
    assert_clean_failure(r, code=1, contains="model b 1.0.0: refused")
    assert (state / "models" / "a" / "1.0.0" / "w").read_bytes() == b"a"


def test_atomic_waits_for_every_volume(tmp_path: Path, hub_keys: KeyPair) -> None:
    files = {"w.bin": rnd(200_000, 5)}
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", files), model("s", "1.0.0", {"x": b"x"})],
                 volumes=2, chunk_size=32 * 1024)
    state = tmp_path / "edge"
    r = imp(hub_keys, state, tmp_path / "b" / "vol-001", extra=("--atomic",))
    assert_clean_failure(r, code=3, contains="insert volume 2 to finish")
    assert not (state / "models").exists()
    r = imp(hub_keys, state, tmp_path / "b" / "vol-002", extra=("--atomic",))
    assert r.returncode == 0, r.stderr
    assert (state / "models" / "m" / "1.0.0" / "w.bin").read_bytes() == files["w.bin"]


# --------------------------------------------------------------------------- the plan printed is the plan carried out


def test_dry_run_prints_the_plan_that_is_carried_out(tmp_path: Path, hub_keys: KeyPair) -> None:
    state = tmp_path / "edge"
    write_bundle(tmp_path / "v1", [hub_keys.key], [model("m", "1.0.0", {"w.bin": rnd(100_000, 6)})], sequence=1)
    assert imp(hub_keys, state, tmp_path / "v1").returncode == 0
    write_bundle(tmp_path / "v2", [hub_keys.key],
                 [model("m", "1.1.0", {"w.bin": rnd(150_000, 7)}), model("k", "1.0.0", {"c": b"{}"}),
                  manifests("app", "1.0.0")], sequence=2)
    plan = imp_json(hub_keys, state, tmp_path / "v2", extra=("--dry-run",))
    done = imp_json(hub_keys, state, tmp_path / "v2")
    [p], [d] = plan["bundles"], done["bundles"]
    assert p["status"] == "planned" and d["status"] == "imported"
    assert p["bytesToWrite"] == d["bytesToWrite"] > 0
    fields = ("kind", "name", "version", "installed", "action", "bytes", "reason")
    assert [{k: a[k] for k in fields} for a in p["artifacts"]] == [{k: a[k] for k in fields} for a in d["artifacts"]]
    assert [a["status"] for a in p["artifacts"]] == ["planned"] * 3
    assert [a["status"] for a in d["artifacts"]] == ["applied"] * 3
    assert [a["kind"] for a in d["artifacts"]] == ["model", "model", "manifests"]  # apply order
    text = imp(hub_keys, tmp_path / "edge2", tmp_path / "v2", extra=("--dry-run",)).stdout
    assert "  model m 1.1.0: planned [new, 146.5 KiB]" in text


# --------------------------------------------------------------------------- the EDGE writer


def test_writer_refuses_a_planted_link_anywhere_below_the_root(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "edge", tmp_path / "elsewhere"
    (root / "oci").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "oci" / "blobs").symlink_to(elsewhere)
    with FsRoot.open(root) as fs:
        with pytest.raises(PlaceError, match="is a link or not a folder"):
            fs.write_atomic("oci/blobs/sha256/abc", b"x")
        with pytest.raises(PlaceError, match="is a link or not a folder"):
            with fs.replacing("oci/blobs/x") as f:
                f.write(b"x")
        (root / "index.json").symlink_to(elsewhere / "target")
        with fs.replacing("index.json") as f:  # a link at the final name is replaced, not written through
            f.write(b"{}")
    assert os.listdir(elsewhere) == []
    assert not (root / "index.json").is_symlink() and (root / "index.json").read_bytes() == b"{}"


def test_import_does_not_write_through_a_link_planted_in_the_gitops_folder(tmp_path: Path, hub_keys: KeyPair) -> None:
    state, elsewhere = tmp_path / "edge", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (state / "manifests").mkdir(parents=True)
    (state / "manifests" / "app").symlink_to(elsewhere)
    write_bundle(tmp_path / "b", [hub_keys.key], [manifests("app", "1.0.0")])
    r = imp(hub_keys, state, tmp_path / "b")
    assert_clean_failure(r, code=1, contains="is not a folder")
    assert os.listdir(elsewhere) == []
    (state / "manifests" / "app").unlink()
    (state / "manifests").rmdir()
    (state / "manifests").symlink_to(elsewhere)
    r = imp(hub_keys, state, tmp_path / "b")
    assert_clean_failure(r, code=1, contains="is a link or not a folder")
    assert os.listdir(elsewhere) == []


# --------------------------------------------------------------------------- the planner's rules (pure)


@settings(max_examples=60, deadline=None)
@given(given_packs=st.sets(st.integers(0, 2)), given_volumes=st.sets(st.integers(1, 3)),
       held=st.sets(st.integers(0, 40)))
def test_plan_rules(tmp_path_factory: pytest.TempPathFactory, hub_keys: KeyPair, given_packs: set[int],
                    given_volumes: set[int], held: set[int]) -> None:
    """Ready exactly when every chunk is held or at hand; otherwise waiting for the volumes
    not given and naming the files missing from the volumes given; the set follows its model;
    the spill only holds chunks at hand."""
    out = tmp_path_factory.mktemp("plan")
    m = write_bundle(out, [hub_keys.key], [model("m", "1.0.0", {"w": rnd(100_000, 8)}), manifests("app", "1.0.0")],
                     volumes=3, chunk_size=8 * 1024)
    ids = sorted(c.id for c in m.chunks)
    held_ids = frozenset(ids[i] for i in held if i < len(ids))
    volumes = frozenset(given_volumes | {m.packs[p].volume for p in given_packs})
    needs = {a.key: Needs(a.entries, a.size) for a in m.artifacts}
    plan = make_plan(m, {}, Present(held=held_ids, packs=frozenset(given_packs), volumes=volumes, needs=needs))
    by = {s.artifact.kind: s for s in plan.steps}
    assert [s.artifact.kind for s in plan.steps] == ["model", "manifests"]
    for s in plan.steps:
        lacking = [m.chunk(c) for e in s.artifact.entries for c in e.chunks if c not in held_ids]
        lacking = [c for c in lacking if c.pack not in given_packs]
        if s.artifact.kind == "model" or by["model"].status is Status.READY:
            assert (s.status is Status.READY) == (not lacking)
        if lacking and s.status is Status.WAITING:
            assert set(s.waiting_volumes) == {m.packs[c.pack].volume for c in lacking} - volumes  # type: ignore[index]
            assert len(s.missing_files) == len({c.pack for c in lacking if m.packs[c.pack].volume in volumes})  # type: ignore[index]
    if by["model"].status is not Status.READY:
        assert by["manifests"].status in (Status.HELD, Status.WAITING)
    assert all(m.chunk(c).pack in given_packs and c not in held_ids for c in plan.spill)


def test_verify_state_shows_the_plan_import_dry_run_shows(tmp_path: Path, hub_keys: KeyPair) -> None:
    state = tmp_path / "edge"
    write_bundle(tmp_path / "v1", [hub_keys.key], [model("k", "2.0.0", {"c": b"2"})], sequence=1)
    assert imp(hub_keys, state, tmp_path / "v1").returncode == 0
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", {"w.bin": rnd(200_000, 9)}),
                                                  model("k", "1.0.0", {"c": b"1"}), manifests("app", "1.0.0")],
                 volumes=2, chunk_size=32 * 1024, sequence=2)
    dry = imp_json(hub_keys, state, tmp_path / "b" / "vol-001", extra=("--dry-run",))
    v = run_ferry("verify", tmp_path / "b" / "vol-001", "--trust", hub_keys.pub, "--state", state, "--json")
    # k is refused: exit 1 as the dry run's (a refusal outranks a volume still to come); the plan is still given
    assert v.returncode == dry["exitCode"] == 1
    report = json.loads(v.stdout)
    planned = {a["name"]: (a["status"], a["action"], a["reason"]) for a in dry["bundles"][0]["artifacts"]}
    verified = {a["name"]: (a["plan"]["status"], a["plan"]["action"], a["plan"]["reason"])
                for a in report["bundles"][0]["artifacts"]}
    assert planned["m"] == verified["m"] == ("waiting", "new", "insert volume 2 to finish")
    assert planned["k"] == verified["k"] and planned["k"][0] == "refused"
    assert planned["app"] == verified["app"] and planned["app"][0] in ("held", "waiting")
