"""Issue 11 item 1: several tags of one image repository travel and stay side by side; the
version rule protects a tag (importer.policy.unit), not a repository. Real registry, skopeo."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.support.common import run_ferry
from tests.support.registry import Registry, layer, make_image


def _spec(path: Path, name: str, items: list[tuple[str, str | None]]) -> Path:
    lines = "".join(f"    - ref: {ref}\n" + (f"      version: \"{v}\"\n" if v else "") for ref, v in items)
    path.write_text(f"apiVersion: ferry/v1\nkind: Bundle\nmetadata: {{name: {name}, channel: stable}}\n"
                    f"spec:\n  images:\n{lines}")
    return path


@pytest.fixture(scope="module")
def app_tags(registry: Registry, tmp_path_factory) -> dict[str, str]:
    """team/app:1.0.0, :1.0.1, :1.1.0 and a cosign-style signature tag of 1.1.0, each distinct content."""
    tmp = tmp_path_factory.mktemp("tags")
    digests = {}
    for tag in ("1.0.0", "1.0.1", "1.1.0"):
        digests[tag] = make_image(tmp / tag, tag, [layer({"version": tag.encode()})], label=tag)
        registry.push(tmp / tag, tag, "team/app")
    sig_tag = "sha256-" + digests["1.1.0"].split(":")[1] + ".sig"
    digests[sig_tag] = make_image(tmp / "sig", "sig", [layer({"signature": b"cosign"})], label="sig")
    registry.push(tmp / "sig", "sig", "team/app", dest_tag=sig_tag)
    return digests


def _export(registry: Registry, hub_keys, tmp: Path, name: str, items: list[tuple[str, str | None]]) -> Path:
    spec = _spec(tmp / f"{name}.yaml", name, [(f"{registry.host}/team/app:{t}", v) for t, v in items])
    out = tmp / f"{name}-out"
    done = run_ferry("export", spec, "--out", out, "--key", hub_keys.key, "--state", tmp / "hub")
    assert done.returncode == 0, done.stderr
    return out


def _skopeo_digest(layout: Path, tag: str) -> str:
    out = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{layout}:team/app:{tag}"], check=True,
                         capture_output=True, timeout=60).stdout
    import hashlib

    return "sha256:" + hashlib.sha256(out).hexdigest()


def test_tags_of_one_repository_travel_together_and_stay_side_by_side(registry, app_tags, hub_keys, tmp_path):
    sig = next(t for t in app_tags if t.endswith(".sig"))
    both = _export(registry, hub_keys, tmp_path, "both", [("1.0.0", None), ("1.1.0", None), (sig, "1.1.0")])
    edge = tmp_path / "edge"
    done = run_ferry("import", both, "--trust", hub_keys.pub, "--state", edge)
    assert done.returncode == 0, done.stdout + done.stderr
    for tag in ("1.0.0", "1.1.0", sig):
        assert _skopeo_digest(edge / "oci", tag) == app_tags[tag]

    # a patch of the older line: a different tag, so nothing is overwritten and nothing refused
    patch = _export(registry, hub_keys, tmp_path, "patch", [("1.0.1", None)])
    done = run_ferry("import", patch, "--trust", hub_keys.pub, "--state", edge, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    [a] = json.loads(done.stdout)["bundles"][0]["artifacts"]
    assert (a["action"], a["status"]) == ("new", "applied")
    assert _skopeo_digest(edge / "oci", "1.1.0") == app_tags["1.1.0"]
    assert _skopeo_digest(edge / "oci", "1.0.1") == app_tags["1.0.1"]

    status = json.loads(run_ferry("status", "--state", edge, "--json").stdout)
    held = {(a["name"], a["version"]) for a in status["installed"] if a["kind"] == "image"}
    assert held == {("team/app:1.0.0", "1.0.0"), ("team/app:1.0.1", "1.0.1"), ("team/app:1.1.0", "1.1.0"),
                    (f"team/app:{sig}", "1.1.0")}
    text = run_ferry("status", "--state", edge).stdout
    assert "team/app:1.0.1" in text.replace("\n", "") or "1.0.1" in text


def test_a_tag_never_moves_to_older_content(registry, app_tags, hub_keys, tmp_path):
    """`latest` (version given in the spec) is one tag: 1.1.0 then 1.0.0 under it is refused."""
    edge = tmp_path / "edge"
    tmp = tmp_path
    registry_tmp = tmp / "latest"
    for tag, version in (("1.1.0", "1.1.0"), ("1.0.0", "1.0.0")):
        make_image(registry_tmp / tag, tag, [layer({"v": tag.encode()})], label=tag)
        registry.push(registry_tmp / tag, tag, "team/app", dest_tag="latest")
        out = _export(registry, hub_keys, tmp, f"latest-{tag}", [("latest", version)])
        done = run_ferry("import", out, "--trust", hub_keys.pub, "--state", edge, "--json")
        if version == "1.1.0":
            assert done.returncode == 0, done.stderr
    assert done.returncode == 1
    [a] = json.loads(done.stdout)["bundles"][0]["artifacts"]
    assert a["action"] == "older" and "§11.2" in a["reason"]


def test_the_same_ref_twice_is_still_refused(registry, app_tags, hub_keys, tmp_path):
    spec = _spec(tmp_path / "dup.yaml", "dup", [(f"{registry.host}/team/app:1.0.0", None)] * 2)
    done = run_ferry("export", spec, "--out", tmp_path / "out", "--key", hub_keys.key, "--state", tmp_path / "hub")
    assert done.returncode == 2 and "listed twice" in done.stderr and "Traceback" not in done.stderr


def test_schema_1_state_is_migrated_to_tag_keys(registry, app_tags, hub_keys, tmp_path):
    """A state written before tags were the unit (image rows keyed by repository, schema 1)
    keeps working: the row becomes repository:tag, and a newer tag then imports beside it."""
    out = _export(registry, hub_keys, tmp_path, "old", [("1.1.0", None)])
    edge = tmp_path / "edge"
    assert run_ferry("import", out, "--trust", hub_keys.pub, "--state", edge).returncode == 0
    db = sqlite3.connect(edge / "state.db")
    with db:  # rewrite the ledger as schema 1 wrote it
        db.execute("UPDATE installed SET name='team/app' WHERE kind='image'")
        db.execute("UPDATE meta SET value='1' WHERE key='schema'")
    db.close()
    patch = _export(registry, hub_keys, tmp_path, "patch", [("1.0.1", None)])
    done = run_ferry("import", patch, "--trust", hub_keys.pub, "--state", edge, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(run_ferry("status", "--state", edge, "--json").stdout)
    assert sorted(a["name"] for a in status["installed"]) == ["team/app:1.0.1", "team/app:1.1.0"]
    db = sqlite3.connect(edge / "state.db")
    assert db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == "3"  # 1 -> 2 -> 3 (#20: variant)
    db.close()
