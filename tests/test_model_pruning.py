"""``--keep N`` removes what was published for the versions it prunes (issue #14, item 5):
tags and only-theirs blobs in EDGE/oci, manifests in a registry that allows deletes; status
and the audit trail say what is published where. Real parts: skopeo, Debian's docker-registry."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.bundles import model, write_bundle
from tests.support.common import KeyPair, run_ferry
from tests.support.registry import Registry, _stop, start_registry

VERSIONS = ["1.0.0", "1.1.0", "1.2.0"]
SHARED = b'{"dim": 8}'  # config.json: the same bytes in every version, so one raw layer for all


def files(v: str) -> dict[str, bytes]:
    return {"config.json": SHARED, "w.bin": v.encode() * 5000}


def import_all(tmp: Path, keys: KeyPair, state: Path, name: str, *extra: str) -> list[dict]:
    """Import the three versions one by one with ``--keep 2``; the JSON result of each."""
    docs = []
    for seq, v in enumerate(VERSIONS, start=1):
        write_bundle(tmp / f"{name}-{v}", [keys.key], [model(name, v, files(v))], sequence=seq)
        r = run_ferry("import", tmp / f"{name}-{v}", "--trust", keys.pub, "--state", state, "--keep", "2",
                      "--json", *extra)
        assert r.returncode == 0, r.stdout + r.stderr
        docs.append(json.loads(r.stdout))
    return docs


def status(state: Path) -> dict:
    return json.loads(run_ferry("status", "--state", state, "--json").stdout)


def reached(layout: Path, digest: str) -> set[str]:
    """Blob digests one manifest reaches (config and layers), itself included."""
    doc = json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())
    return {digest, doc["config"]["digest"], *(d["digest"] for d in doc["layers"])}


def audit(state: Path) -> list[dict]:
    return [json.loads(line) for line in (state / "audit" / "trail.jsonl").read_text().splitlines()]


def test_keep_removes_pruned_versions_from_the_layout(tmp_path: Path, hub_keys: KeyPair) -> None:
    state, layout = tmp_path / "edge", tmp_path / "edge" / "oci"
    write_bundle(tmp_path / "first", [hub_keys.key], [model("m", "1.0.0", files("1.0.0"))], sequence=1)
    run_ferry("import", tmp_path / "first", "--trust", hub_keys.pub, "--state", state).check_returncode()
    (v1,) = status(state)["published"]
    v1_blobs = reached(layout, v1["digest"]) | reached(layout, v1["modelcarDigest"])
    for seq, v in enumerate(VERSIONS[1:], start=2):
        write_bundle(tmp_path / v, [hub_keys.key], [model("m", v, files(v))], sequence=seq)
        r = run_ferry("import", tmp_path / v, "--trust", hub_keys.pub, "--state", state, "--keep", "2")
        assert r.returncode == 0, r.stdout + r.stderr

    published = status(state)["published"]
    assert [(p["version"], p["place"]) for p in published] == [("1.1.0", "EDGE/oci"), ("1.2.0", "EDGE/oci")]
    names = {d["annotations"]["org.opencontainers.image.ref.name"]
             for d in json.loads((layout / "index.json").read_bytes())["manifests"]}
    assert names == {"models/m:1.1.0", "models/m:1.1.0-modelcar", "models/m:1.2.0", "models/m:1.2.0-modelcar"}
    kept = set().union(*(reached(layout, p[k]) for p in published for k in ("digest", "modelcarDigest")))
    on_disk = {"sha256:" + p.name for p in (layout / "blobs" / "sha256").iterdir()}
    assert on_disk == kept  # nothing only 1.0.0 reached is left, nothing a kept version reaches is gone
    assert v1_blobs - kept and v1_blobs & kept  # 1.0.0 had blobs of its own, and shared config.json
    for p in published:  # what stays is whole: skopeo reads both forms
        for tag in (p["tag"], p["modelcarTag"]):
            subprocess.run(["skopeo", "inspect", "--raw", f"oci:{layout}:models/m:{tag}"], check=True,
                           capture_output=True, timeout=60)
    (gone,) = [e for e in audit(state) if e["decision"] == "unpublished"]
    assert gone["artifact"] == {"kind": "model", "name": "m", "version": "1.0.0"}
    assert v1["digest"] in gone["reason"] and v1["modelcarDigest"] in gone["reason"] and "EDGE/oci" in gone["reason"]
    out = run_ferry("status", "--state", state).stdout
    assert f"model m 1.2.0 published in EDGE/oci: models/m:1.2.0 {published[1]['digest']}" in out.replace("\n", "")


def test_keep_deletes_pruned_versions_from_the_registry(tmp_path: Path, hub_keys: KeyPair,
                                                        edge_registry: Registry) -> None:
    state = tmp_path / "edge"
    import_all(tmp_path, hub_keys, state, "prunable", "--registry", edge_registry.host)
    assert [p["version"] for p in status(state)["published"]] == ["1.1.0", "1.2.0"]
    for tag in ("1.0.0", "1.0.0-modelcar"):
        with pytest.raises(subprocess.CalledProcessError):
            edge_registry.raw_manifest(f"models/prunable:{tag}")
    for tag in ("1.1.0", "1.1.0-modelcar", "1.2.0", "1.2.0-modelcar"):
        assert edge_registry.raw_manifest(f"models/prunable:{tag}")
    assert [e["versionBefore"] for e in audit(state) if e["decision"] == "unpublished"] == ["1.0.0"]


def test_a_registry_without_deletes_keeps_the_version_and_says_so(tmp_path: Path, hub_keys: KeyPair) -> None:
    (tmp_path / "reg").mkdir()
    reg = start_registry(tmp_path / "reg", delete=False)
    try:
        state = tmp_path / "edge"
        docs = import_all(tmp_path, hub_keys, state, "kept", "--registry", reg.host)
        (art,) = docs[-1]["bundles"][0]["artifacts"]
        assert art["status"] == "applied"
        assert f"models/kept:1.0.0 stays published in {reg.host}: registry {reg.host} does not allow deletes" \
            in art["reason"]
        assert reg.raw_manifest("models/kept:1.0.0")  # still there, and still recorded as published
        assert [p["version"] for p in status(state)["published"]] == VERSIONS
        assert sorted(p.name for p in (state / "models" / "kept").iterdir()) == ["1.1.0", "1.2.0", "current"]
    finally:
        _stop(reg)
