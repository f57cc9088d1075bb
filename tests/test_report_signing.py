"""The auditor's report (issue #15, item 5): signers, policy, expiry, sha256 of every model
file, host and time, and ``--sign-report`` making the filed report tamper-evident."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import jsonschema

from manifests.keys import generate
from manifests.signing import REPORT_PAYLOAD_TYPE, SignatureFile, verify
from manifests.trust import load_trust
from tests.support.common import REPO, assert_clean_failure, run_ferry
from tests.support.export import make_model, write_spec

SCHEMA = json.loads((REPO / "manifests" / "schema" / "verify-report.schema.json").read_bytes())


def test_signed_report_names_signers_policy_expiry_and_sha256(tmp_path: Path) -> None:
    hub_key, hub_pub, hub_id = generate("hub", tmp_path / "keys")
    r = run_ferry("keys", "generate", "auditor", "--out", tmp_path / "keys", env={"FERRY_KEY_PASSPHRASE": "audit pw"})
    assert r.returncode == 0, r.stderr
    model = make_model(tmp_path / "model", count=2, size=32 * 1024)
    spec = write_spec(tmp_path / "b.yaml", [("m", "1.0.0", str(model))])
    assert run_ferry("export", spec, "--out", tmp_path / "usb", "--key", hub_key, "--state", tmp_path / "hub",
                     "--expires", "30d").returncode == 0
    report, html = tmp_path / "report.json", tmp_path / "report.html"
    r = run_ferry("verify", tmp_path / "usb", "--trust", hub_pub, "--report", report, "--html", html,
                  "--sign-report", f"{tmp_path / 'keys' / 'auditor.key'}:env=AUD", env={"AUD": "audit pw"})
    assert r.returncode == 0, r.stderr
    body = report.read_bytes()
    doc = json.loads(body)
    jsonschema.validate(doc, SCHEMA)
    assert doc["formatVersion"] == "1.2" and doc["host"] == socket.gethostname() and doc["verifiedAt"]
    bundle = doc["bundles"][0]
    signers = bundle["signatures"]["signers"]
    assert [s["keyid"] for s in signers] == [hub_id] and signers[0]["name"] == "hub"
    assert bundle["bundle"]["expires"]
    files = {e["path"]: e["sha256"] for e in bundle["artifacts"][0]["entries"]}
    for name in ("model.safetensors", "config.json"):
        assert files[name] == "sha256:" + hashlib.sha256((model / name).read_bytes()).hexdigest()
    page = html.read_text()
    assert files["config.json"] in page and bundle["bundle"]["expires"] in page and socket.gethostname() in page
    # the report's signature verifies under the auditor's key, and not once the report is edited
    trust = load_trust([tmp_path / "keys" / "auditor.pub"])
    sigfile = SignatureFile.from_bytes((tmp_path / "report.json.sig").read_bytes())
    assert verify(body, sigfile, trust, channel=None, payload_type=REPORT_PAYLOAD_TYPE).ok
    forged = body.replace(b'"verdict":"pass"', b'"verdict":"fail"')
    assert forged != body
    assert not verify(forged, sigfile, trust, channel=None, payload_type=REPORT_PAYLOAD_TYPE).ok
    # --sign-report without --report is a usage error
    assert_clean_failure(run_ferry("verify", tmp_path / "usb", "--trust", hub_pub, "--sign-report", hub_key),
                         code=2, contains="--report")
