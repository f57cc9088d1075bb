"""``ferry verify``: a good bundle's report, and each kind of failure in the report with its reason."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest

from manifests import canonical
from manifests.bundle import MANIFEST_NAME, SIGNATURE_NAME, volume_dir_name
from manifests.keys import load_private
from manifests.model import Manifest
from manifests.signing import sign
from tests.support.bundles import Spec, image, model, pack_path, tamper, write_bundle
from tests.support.common import REPO, KeyPair, assert_clean_failure, run_ferry

SCHEMA = json.loads((REPO / "manifests" / "schema" / "verify-report.schema.json").read_bytes())


def items() -> list[Spec]:
    return [model("resnet", "1.2.0", {"model.safetensors": random.Random(1).randbytes(300_000),
                                      "config.json": b'{"layers": 50}'}),
            image("library/app", "2.0.0", [random.Random(2).randbytes(150_000)])]


@dataclass
class Built:
    path: Path
    manifest: Manifest

    def volume(self, n: int) -> Path:
        return self.path / volume_dir_name(n)


def build(path: Path, key: Path, specs: list[Spec] | None = None, **kw: object) -> Built:
    return Built(path, write_bundle(path, [key], items() if specs is None else specs, **kw))  # type: ignore[arg-type]


def verify(*args: object) -> tuple[int, dict, str]:
    """Run ferry verify with --json; return (exit code, report, stderr)."""
    result = run_ferry("verify", *args, "--json")
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def check(report: dict, name: str, bundle: int = 0) -> dict:
    return next(c for c in report["bundles"][bundle]["checks"] if c["name"] == name)


@pytest.fixture
def good(tmp_path: Path, hub_keys: KeyPair) -> Built:
    return build(tmp_path / "bundle", hub_keys.key)


def test_good_bundle_report(good: Built, hub_keys: KeyPair, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = run_ferry("verify", good.path, "--trust", hub_keys.pub, "--report", out, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "PASS" in result.stdout.splitlines()[-1]
    assert "resnet" in result.stdout and "library/app" in result.stdout  # the rich table
    report = json.loads(out.read_bytes())
    jsonschema.validate(report, SCHEMA)
    assert canonical.encode(report) + b"\n" == out.read_bytes()  # canonical, like every ferry document
    assert report["verdict"] == "pass" and report["failures"] == []
    assert report["ferryVersion"] == "0.1.0" and report["verifiedAt"].endswith("Z")
    b = report["bundles"][0]
    assert b["bundle"] == {"name": "edge-ai", "id": "edge-ai-0001", "channel": "stable", "sequence": 1,
                           "created": "2026-11-23T12:00:00Z", "producer": "ferry 0.1.0 (test)"}
    manifest_bytes = (good.path / MANIFEST_NAME).read_bytes()
    assert b["manifestDigest"] == "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    assert b["signatures"]["signers"] == [{"keyid": hub_keys.keyid, "name": "hub", "valid": True,
                                           "counted": True, "reason": "ok"}]
    assert b["base"] is None and b["volumes"] == {"expected": 1, "missing": []}
    resnet, app = b["artifacts"]
    assert (resnet["kind"], resnet["name"], resnet["version"], resnet["size"]) == ("model", "resnet", "1.2.0", 300_014)
    assert resnet["contentDigest"].startswith("blake3:")
    assert resnet["chunks"] == {"total": 6, "ok": 6, "bad": 0, "missing": 0, "heldByBase": 0}
    assert {e["path"] for e in resnet["entries"]} == {"model.safetensors", "config.json"}
    assert all(e["status"] == "ok" for e in resnet["entries"])
    assert app["kind"] == "image" and app["image"]["repository"] == "library/app"
    assert all(e["digest"].startswith("sha256:") and e["status"] == "ok" for e in app["entries"])
    assert all(c["ok"] for c in b["checks"])


def test_every_tampered_chunk_is_recorded_not_just_the_first(good: Built, hub_keys: KeyPair, tmp_path: Path) -> None:
    weights = good.manifest.artifact("model", "resnet").entries[1]
    assert weights.path == "model.safetensors"
    layer = good.manifest.artifact("image", "library/app").entries[2]
    targets = [weights.chunks[0], weights.chunks[3], layer.chunks[1]]
    for cid in targets:
        tamper(good.path, good.manifest, cid)
    code, report, stderr = verify(good.path, "--trust", hub_keys.pub, "--report", tmp_path / "r.json")
    assert code == 1 and "chunks" in stderr
    jsonschema.validate(report, SCHEMA)
    assert report["verdict"] == "fail"
    resnet, app = report["bundles"][0]["artifacts"]
    assert resnet["status"] == "bad" and resnet["chunks"]["bad"] == 2 and resnet["chunks"]["ok"] == 4
    assert {c["id"] for c in resnet["badChunks"]} == set(targets[:2])
    assert all("tampered" in c["reason"] or "corrupt" in c["reason"] or "zstd" in c["reason"]
               for c in resnet["badChunks"])
    assert {c["id"] for c in app["badChunks"]} == {targets[2]}
    statuses = {e["path"]: e["status"] for e in resnet["entries"]}
    assert statuses == {"model.safetensors": "bad", "config.json": "ok"}
    assert "3 of" in check(report, "chunks")["reason"]
    assert not check(report, "content")["ok"] and check(report, "signatures")["ok"]
    assert (tmp_path / "r.json").exists()


def test_missing_volume_is_missing_not_corrupt(tmp_path: Path, hub_keys: KeyPair) -> None:
    built = build(tmp_path / "b", hub_keys.key, volumes=3)
    code, report, _ = verify(built.volume(1), built.volume(3), "--trust", hub_keys.pub)
    assert code == 3  # incomplete: what was given verified (docs/bundle-format.md section 1)
    b = report["bundles"][0]
    assert b["volumes"] == {"expected": 3, "missing": [2]}
    volumes = check(report, "volumes")
    assert not volumes["ok"] and "volume(s) 2 of 3 not given" in volumes["reason"]
    assert check(report, "chunks")["ok"]  # nothing read was bad
    counts = [a["chunks"] for a in b["artifacts"]]
    assert sum(c["missing"] for c in counts) > 0 and sum(c["bad"] for c in counts) == 0
    assert "incomplete" in {a["status"] for a in b["artifacts"]}
    # all volumes, given as the folder of volumes or one by one in any order: pass
    assert verify(built.path, "--trust", hub_keys.pub)[0] == 0
    assert verify(built.volume(3), built.volume(1), built.volume(2), "--trust", hub_keys.pub)[0] == 0


def test_delta_bundle_chunks_held_by_base_are_not_missing(tmp_path: Path, hub_keys: KeyPair) -> None:
    delta = build(tmp_path / "delta", hub_keys.key, held_by_base={"model.safetensors"})
    code, report, stderr = verify(delta.path, "--trust", hub_keys.pub)
    assert code == 0, stderr
    b = report["bundles"][0]
    assert b["base"] == {"receipt": "sha256:" + "5" * 64, "site": "edge-1", "created": "2026-11-22T12:00:00Z"}
    resnet = b["artifacts"][0]
    assert resnet["chunks"]["heldByBase"] == 5 and resnet["chunks"]["missing"] == 0
    assert resnet["chunks"]["ok"] == 1 and b["artifacts"][1]["status"] == "ok"
    assert {e["path"]: e["status"] for e in resnet["entries"]}["model.safetensors"] == "held-by-base"
    assert "held by base" in check(report, "chunks")["reason"]


def test_untrusted_signer_still_gets_a_report(good: Built, other_keys: KeyPair, tmp_path: Path) -> None:
    html = tmp_path / "r.html"
    code, report, stderr = verify(good.path, "--trust", other_keys.pub, "--html", html)
    assert code == 1 and "signatures" in stderr
    jsonschema.validate(report, SCHEMA)
    sig = check(report, "signatures")
    assert not sig["ok"] and "not trusted" in sig["reason"] and "threshold is 1" in sig["reason"]
    signer = report["bundles"][0]["signatures"]["signers"][0]
    assert signer["name"] is None and signer["valid"] is False
    # an untrusted manifest is never parsed (format spec, verification order step 2)
    assert report["bundles"][0]["bundle"] is None
    assert "not parsed" in check(report, "manifest")["reason"]
    assert html.exists() and "not trusted" in html.read_text()


def test_bad_signature_bytes_are_named_per_signer(good: Built, hub_keys: KeyPair) -> None:
    sig_path = good.path / SIGNATURE_NAME
    doc = json.loads(sig_path.read_bytes())
    import base64

    raw = bytearray(base64.b64decode(doc["signatures"][0]["sig"]))
    raw[5] ^= 1
    doc["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    sig_path.write_bytes(canonical.encode(doc))
    code, report, _ = verify(good.path, "--trust", hub_keys.pub)
    assert code == 1
    signer = report["bundles"][0]["signatures"]["signers"][0]
    assert signer == {"keyid": hub_keys.keyid, "name": "hub", "valid": False, "counted": False,
                      "reason": "signature does not match the bytes"}


def test_threshold_and_channel_restrictions_fail_with_reasons(good: Built, hub_keys: KeyPair,
                                                              other_keys: KeyPair, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"apiVersion: ferry/v1\nkind: TrustPolicy\nthreshold: 2\nkeys:\n"
                      f"  - name: release-a\n    file: {hub_keys.pub}\n"
                      f"  - name: release-b\n    file: {other_keys.pub}\n")
    code, report, _ = verify(good.path, "--trust", policy)
    assert code == 1 and "threshold is 2" in check(report, "signatures")["reason"]
    assert report["bundles"][0]["signatures"]["signers"][0]["name"] == "release-a"
    beta = tmp_path / "beta.yaml"
    beta.write_text(f"apiVersion: ferry/v1\nkind: TrustPolicy\nkeys:\n"
                    f"  - name: beta-only\n    file: {hub_keys.pub}\n    channels: [beta]\n")
    code, report, _ = verify(good.path, "--trust", beta)
    assert code == 1 and "may not sign channel 'stable'" in check(report, "signatures")["reason"]
    signer = report["bundles"][0]["signatures"]["signers"][0]
    assert signer["valid"] is True and signer["counted"] is False


def test_unparseable_manifest_still_gets_a_report(good: Built, hub_keys: KeyPair) -> None:
    bad = b'{"format": "ferry-bundle"}'  # signed by the trusted key, but not a manifest
    (good.path / MANIFEST_NAME).write_bytes(bad)
    (good.path / SIGNATURE_NAME).write_bytes(sign(bad, [load_private(hub_keys.key)]).to_bytes())
    code, report, stderr = verify(good.path, "--trust", hub_keys.pub)
    assert code == 1
    jsonschema.validate(report, SCHEMA)
    manifest = check(report, "manifest")
    assert not manifest["ok"] and "canonical" in manifest["reason"]
    assert check(report, "signatures")["ok"]
    assert report["bundles"][0]["bundle"] is None and report["bundles"][0]["artifacts"] == []


def test_corrupt_signature_file_is_a_failed_check(good: Built, hub_keys: KeyPair) -> None:
    (good.path / SIGNATURE_NAME).write_bytes(b"\x00garbage")
    code, report, _ = verify(good.path, "--trust", hub_keys.pub)
    assert code == 1
    assert not check(report, "signature-file")["ok"] and not check(report, "signatures")["ok"]


def test_content_not_matching_its_digest_although_every_chunk_is_fine(good: Built, hub_keys: KeyPair) -> None:
    doc = json.loads((good.path / MANIFEST_NAME).read_bytes())
    doc["artifacts"][0]["files"][0]["blake3"] = "0" * 64  # config.json claims other content
    body = Manifest.from_dict(doc).to_bytes()
    (good.path / MANIFEST_NAME).write_bytes(body)
    (good.path / SIGNATURE_NAME).write_bytes(sign(body, [load_private(hub_keys.key)]).to_bytes())
    code, report, _ = verify(good.path, "--trust", hub_keys.pub)
    assert code == 1
    content = check(report, "content")
    assert not content["ok"] and "config.json" in content["reason"] and "BLAKE3" in content["reason"]
    assert check(report, "chunks")["ok"]


def test_truncated_pack_names_the_chunks(good: Built, hub_keys: KeyPair) -> None:
    pack = pack_path(good.path, good.manifest, good.manifest.chunks[0].id)
    data = pack.read_bytes()
    pack.write_bytes(data[: len(data) // 2])
    code, report, _ = verify(good.path, "--trust", hub_keys.pub)
    assert code == 1
    reasons = [c["reason"] for a in report["bundles"][0]["artifacts"] for c in a["badChunks"]]
    assert reasons and any("truncated" in r for r in reasons)


def test_path_without_a_bundle_is_a_finding(good: Built, hub_keys: KeyPair, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, report, _ = verify(good.path, empty, "--trust", hub_keys.pub)
    assert code == 1
    assert report["checks"][0]["name"] == "medium" and "not a ferry bundle" in report["checks"][0]["reason"]
    assert report["bundles"][0]["verdict"] == "pass" and report["verdict"] == "fail"


def test_usage_errors_are_one_line(good: Built, hub_keys: KeyPair, tmp_path: Path) -> None:
    assert_clean_failure(run_ferry("verify", good.path), code=2, contains="--trust")
    assert_clean_failure(run_ferry("verify", good.path, "--trust", hub_keys.key), code=2, contains="private key")
    assert_clean_failure(run_ferry("verify", good.path, "--trust", hub_keys.pub, "--report",
                                   tmp_path / "nowhere" / "r.json"), code=2, contains="does not exist")
    failed = run_ferry("verify", tmp_path / "missing", "--trust", hub_keys.pub)
    assert_clean_failure(failed, code=1, contains="no such bundle folder")


def test_two_bundles_in_one_run(tmp_path: Path, hub_keys: KeyPair) -> None:
    a = build(tmp_path / "a", hub_keys.key, sequence=1)
    b = build(tmp_path / "b", hub_keys.key, items()[:1], sequence=2)
    code, report, _ = verify(a.path, b.path, "--trust", hub_keys.pub)
    assert code == 0
    assert [x["bundle"]["sequence"] for x in report["bundles"]] == [1, 2]
    shutil.rmtree(b.path / "packs")
    code, report, stderr = verify(a.path, b.path, "--trust", hub_keys.pub)
    assert code == 1 and "#2" in stderr
    assert [x["verdict"] for x in report["bundles"]] == ["pass", "fail"]


def test_terminal_failure_shows_table_verdict_and_one_error_line(good: Built, hub_keys: KeyPair) -> None:
    tamper(good.path, good.manifest, good.manifest.chunks[0].id)
    result = run_ferry("verify", good.path, "--trust", hub_keys.pub, env={"COLUMNS": "200"})
    assert_clean_failure(result, code=1, contains="ferry: error: FAIL: edge-ai (stable #1): chunks:")
    assert "chunks ok/bad/missing/base" in result.stdout and "✗ chunks" in result.stdout
