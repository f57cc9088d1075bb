"""Issue 11 item 4 through the CLI: build metadata and pre-release precedence (SemVer 2.0
§10, §11) decide with messages that name the rule and the way out."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.common import run_ferry
from tests.support.export import make_model, write_spec


def _bundle(tmp: Path, hub_keys, version: str, seed: int) -> Path:
    model = make_model(tmp / f"m-{version}", count=2, size=64 * 1024, seed=seed)
    out = tmp / f"out-{version}"
    spec = write_spec(tmp / f"{version}.yaml", [("llm", f'"{version}"', str(model))])
    done = run_ferry("export", spec, "--out", out, "--key", hub_keys.key, "--state", tmp / "hub")
    assert done.returncode == 0, done.stderr
    return out


def _import(bundle: Path, hub_keys, edge: Path, *extra: str) -> tuple[int, dict]:
    done = run_ferry("import", bundle, "--trust", hub_keys.pub, "--state", edge, "--json", *extra)
    assert "Traceback" not in done.stderr
    return done.returncode, json.loads(done.stdout)["bundles"][0]["artifacts"][0]


def test_a_rebuild_with_build_metadata_has_a_clear_path(hub_keys, tmp_path):
    edge = tmp_path / "edge"
    assert _import(_bundle(tmp_path, hub_keys, "1.2.0", 1), hub_keys, edge)[0] == 0
    rebuild = _bundle(tmp_path, hub_keys, "1.2.0+build.2", 2)
    code, a = _import(rebuild, hub_keys, edge)
    assert code == 1 and a["action"] == "conflict"
    assert "§10" in a["reason"] and "1.2.1" in a["reason"] and "--allow-downgrade" in a["reason"]
    code, a = _import(rebuild, hub_keys, edge, "--allow-downgrade", "--reason", "hotfix rebuild")
    assert code == 0 and a["status"] == "applied"
    status = json.loads(run_ferry("status", "--state", edge, "--json").stdout)
    assert [r["version"] for r in status["installed"]] == ["1.2.0+build.2"]


def test_rc9_to_rc10_says_why_and_what_to_do(hub_keys, tmp_path):
    edge = tmp_path / "edge"
    assert _import(_bundle(tmp_path, hub_keys, "2.0.0-rc9", 3), hub_keys, edge)[0] == 0
    code, a = _import(_bundle(tmp_path, hub_keys, "2.0.0-rc10", 4), hub_keys, edge)
    assert code == 1 and a["action"] == "older"
    assert "§11.4.2" in a["reason"] and "rc.10" in a["reason"]
