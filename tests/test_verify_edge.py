"""End to end with the real exporter and importer: ``verify --state`` says what an import would
do, and the import's audit trail verifies, shows and exports for the auditors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.common import KeyPair, assert_clean_failure, run_ferry
from tests.support.export import make_model, write_spec

KiB = 1024


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, hub_keys: KeyPair) -> Path:
    """Four bundles of model ``sentiment`` from the real ``ferry export``: 1.0.0, 1.1.0, an
    older 0.9.0, and a 1.0.0 with other content."""
    root = tmp_path_factory.mktemp("verify-edge")
    make_model(root / "m1", count=3, size=200 * KiB, seed=1)
    make_model(root / "m2", count=3, size=200 * KiB, seed=2)
    for name, version, folder in (("v1", "1.0.0", "m1"), ("v2", "1.1.0", "m2"), ("old", "0.9.0", "m2"),
                                  ("conflict", "1.0.0", "m2")):
        spec = write_spec(root / f"{name}.yaml", [("sentiment", version, folder)])
        result = run_ferry("export", spec, "--out", root / name, "--key", hub_keys.key, "--state", root / "hubstate")
        assert result.returncode == 0, result.stderr
    return root


def plan(hub_keys: KeyPair, bundle: Path, edge: Path) -> dict:
    """The plan ``verify --state`` reports; its exit status and verdict are the dry run's."""
    result = run_ferry("verify", bundle, "--trust", hub_keys.pub, "--state", edge, "--json")
    report = json.loads(result.stdout)
    dry = run_ferry("import", bundle, "--trust", hub_keys.pub, "--state", edge, "--dry-run")
    assert result.returncode == dry.returncode, (result.stderr, dry.stderr)
    assert report["state"] == str(edge)
    the_plan = report["bundles"][0]["artifacts"][0]["plan"]
    assert report["verdict"] == ("fail" if the_plan["refused"] else "pass")
    plan_checks = [c for c in report["bundles"][0]["checks"] if c["name"] == "plan"]
    assert [c["ok"] for c in plan_checks] == ([False] if the_plan["refused"] else [])
    return the_plan


def test_exported_bundle_verifies_and_state_plan_matches_the_import(hub: Path, hub_keys: KeyPair,
                                                                    tmp_path: Path) -> None:
    edge = tmp_path / "edge"
    edge.mkdir()
    assert plan(hub_keys, hub / "v1", edge)["action"] == "new"
    imported = run_ferry("import", hub / "v1", "--trust", hub_keys.pub, "--state", edge)
    assert imported.returncode == 0, imported.stderr

    # the bundle imported: the import would skip it (its gate, importer.policy.gate), and so says verify
    again = json.loads(run_ferry("verify", hub / "v1", "--trust", hub_keys.pub, "--state", edge, "--json").stdout)
    assert again["verdict"] == "pass" and again["bundles"][0]["artifacts"][0]["plan"] is None
    assert {"name": "plan", "ok": True, "reason": "already imported; nothing to do (ferry import would skip this bundle)"} \
        in again["bundles"][0]["checks"]
    assert plan(hub_keys, hub / "v2", edge)["action"] == "newer"
    older = plan(hub_keys, hub / "old", edge)
    assert older["action"] == "older" and older["refused"] and "older than installed 1.0.0" in older["reason"]
    assert plan(hub_keys, hub / "conflict", edge)["action"] == "conflict"

    table = run_ferry("verify", hub / "old", "--trust", hub_keys.pub, "--state", edge, env={"COLUMNS": "220"})
    assert table.returncode == 1 and "import would" in table.stdout and "older" in table.stdout
    assert "plan: an import into the edge state would refuse 1 artifact(s)" in table.stderr

    # what verify predicted is what the import decided, and the trail records it
    refused = run_ferry("import", hub / "old", "--trust", hub_keys.pub, "--state", edge)
    assert refused.returncode != 0
    forced = run_ferry("import", hub / "old", "--trust", hub_keys.pub, "--state", edge,
                       "--allow-downgrade", "--reason", "rollback after incident 42")
    assert forced.returncode == 0, forced.stderr
    shown = run_ferry("audit", "show", "--state", edge, "--json")
    entries = [json.loads(line) for line in shown.stdout.splitlines()]
    decisions = [e["decision"] for e in entries]
    # the forced decision, then where that version was published (issue 14)
    assert decisions[0] == "applied" and "refused" in decisions and decisions[-2:] == ["downgrade-forced", "published"]
    assert entries[-2]["versionBefore"] == "1.0.0" and entries[-2]["versionAfter"] == "0.9.0"
    assert all(e["manifestDigest"].startswith("sha256:") and e["signers"] == [hub_keys.keyid]
               for e in entries if e["decision"] in ("applied", "downgrade-forced"))
    assert run_ferry("audit", "verify", "--state", edge).returncode == 0

    # the signed export checks out on another machine; the edge's trail edited afterwards does not
    out = tmp_path / "export" / "trail.json"
    out.parent.mkdir()
    assert run_ferry("audit", "export", "--state", edge, "--out", out, "--key", hub_keys.key).returncode == 0
    elsewhere = tmp_path / "auditor"
    elsewhere.mkdir()
    for f in (out, out.with_name("trail.json.sig"), hub_keys.pub):
        shutil.copy(f, elsewhere / f.name)
    ok = run_ferry("audit", "verify", "--file", elsewhere / "trail.json", "--trust", elsewhere / hub_keys.pub.name)
    assert ok.returncode == 0, ok.stderr
    trail = edge / "audit" / "trail.jsonl"
    trail.write_bytes(trail.read_bytes().replace(b'"downgrade-forced"', b'"applied"'))
    assert_clean_failure(run_ferry("audit", "verify", "--state", edge), code=1, contains="edited")


def test_state_that_is_not_a_folder_is_one_line(hub: Path, hub_keys: KeyPair, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a state")
    assert_clean_failure(run_ferry("verify", hub / "v1", "--trust", hub_keys.pub, "--state", tmp_path / "file"),
                         code=2, contains="not a folder")


def test_a_site_with_no_state_yet_is_checked_like_a_dry_run(hub: Path, hub_keys: KeyPair, tmp_path: Path) -> None:
    """verify --state EDGE on a new site: everything would be new, as import --dry-run plans it; nothing is created."""
    r = run_ferry("verify", hub / "v1", "--trust", hub_keys.pub, "--state", tmp_path / "edge", "--json")
    assert r.returncode == 0, r.stderr
    plan = run_ferry("import", hub / "v1", "--trust", hub_keys.pub, "--state", tmp_path / "edge", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "new" in r.stdout and "new" in plan.stdout
    assert not (tmp_path / "edge").exists()


def test_real_volumes_and_delta_bundles(hub: Path, hub_keys: KeyPair, tmp_path: Path) -> None:
    """Bundles split by ``export --max-volume-size`` and made with ``--since`` a site's receipt."""
    make_model(tmp_path / "big", count=5, size=8 * 1024 * KiB, seed=3)
    spec = write_spec(tmp_path / "big.yaml", [("big", "1.0.0", "big")])
    vols = tmp_path / "vols"
    made = run_ferry("export", spec, "--out", vols, "--key", hub_keys.key, "--state", tmp_path / "hub",
                     "--max-volume-size", "20MiB")
    assert made.returncode == 0, made.stderr
    volumes = sorted(p for p in vols.iterdir() if p.name.startswith("vol-"))
    assert len(volumes) >= 2
    one = run_ferry("verify", volumes[0], "--trust", hub_keys.pub, "--json")
    assert one.returncode == 3  # the volume verifies on its own; the bundle is incomplete
    report = json.loads(one.stdout)["bundles"][0]
    assert report["volumes"]["missing"] == [int(v.name[4:]) for v in volumes[1:]]
    assert all(a["chunks"]["bad"] == 0 for a in report["artifacts"])
    assert run_ferry("verify", *reversed(volumes), "--trust", hub_keys.pub).returncode == 0

    edge = tmp_path / "edge"
    edge.mkdir()
    assert run_ferry("import", hub / "v1", "--trust", hub_keys.pub, "--state", edge).returncode == 0
    assert run_ferry("receipt", "--state", edge, "--out", tmp_path / "receipt.json").returncode == 0
    again = write_spec(tmp_path / "again.yaml", [("sentiment", "1.0.1", str(hub / "m1"))])
    delta = tmp_path / "delta"
    made = run_ferry("export", again, "--out", delta, "--key", hub_keys.key, "--state", tmp_path / "hub",
                     "--since", tmp_path / "receipt.json")
    assert made.returncode == 0, made.stderr
    result = run_ferry("verify", delta, "--trust", hub_keys.pub, "--state", edge, "--json")
    assert result.returncode == 0, result.stderr
    b = json.loads(result.stdout)["bundles"][0]
    assert b["base"] is not None and b["base"]["receipt"].startswith("sha256:")
    art = b["artifacts"][0]
    assert art["chunks"]["heldByBase"] == art["chunks"]["total"] > 0 and art["chunks"]["missing"] == 0
    assert art["plan"]["action"] == "newer"
