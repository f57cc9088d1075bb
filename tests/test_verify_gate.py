"""``verify --state`` runs the import's bundle gate (importer.policy.gate): a reused bundle id,
a bundle imported before, a stale bundle after a newer one. Its verdict, exit status and words
are the import's, through the real CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hypothesis import given, strategies as st

from importer.policy import REPEAT_REASON, gate
from tests.support.bundles import model, write_bundle
from tests.support.common import KeyPair, assert_clean_failure, run_ferry

REFUSE_BUNDLE = "an import into the edge state would refuse the bundle: "


def verify(hub: KeyPair, state: Path, bundle: Path) -> tuple[int, dict]:
    r = run_ferry("verify", bundle, "--trust", hub.pub, "--state", state, "--json")
    return r.returncode, json.loads(r.stdout)


def imp(hub: KeyPair, state: Path, bundle: Path, *extra: str) -> tuple[int, dict]:
    r = run_ferry("import", bundle, "--trust", hub.pub, "--state", state, "--json", *extra)
    return r.returncode, json.loads(r.stdout)


def plan_check(report: dict) -> dict | None:
    checks = [c for c in report["bundles"][0]["checks"] if c["name"] == "plan"]
    assert len(checks) <= 1, checks
    return checks[0] if checks else None


def test_a_reused_bundle_id_is_refused_by_verify_as_by_the_import(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "a", [hub_keys.key], [model("a", "1.0.0", {"w": b"1"})], bundle_id="rel-7")
    write_bundle(tmp_path / "b", [hub_keys.key], [model("a", "1.0.1", {"w": b"2"})], bundle_id="rel-7", sequence=2)
    state = tmp_path / "edge"
    assert imp(hub_keys, state, tmp_path / "a")[0] == 0

    code, report = verify(hub_keys, state, tmp_path / "b")
    dry_code, dry = imp(hub_keys, state, tmp_path / "b", "--dry-run")
    check = plan_check(report)
    assert code == dry_code == 1 and report["verdict"] == "fail"
    assert check is not None and not check["ok"]
    # the import's own words, after verify's prefix
    assert check["reason"] == REFUSE_BUNDLE + dry["bundles"][0]["reason"]
    assert "was imported before with different content" in check["reason"]
    assert all(a["plan"] is None for a in report["bundles"][0]["artifacts"])  # nothing planned, as the import
    # the other checks still say the bundle is authentic and whole
    assert all(c["ok"] for c in report["bundles"][0]["checks"] if c["name"] != "plan")

    table = run_ferry("verify", tmp_path / "b", "--trust", hub_keys.pub, "--state", state)
    assert_clean_failure(table, code=1, contains="would refuse the bundle: bundle id 'rel-7' was imported before")
    real = run_ferry("import", tmp_path / "b", "--trust", hub_keys.pub, "--state", state)
    assert_clean_failure(real, code=1, contains=dry["bundles"][0]["reason"])


def test_a_bundle_imported_once_is_skipped_by_both(tmp_path: Path, hub_keys: KeyPair) -> None:
    """v1 imported, then v2 (newer): v1 again is a no-op for the import (exit 0), and verify
    --state says so instead of planning 1.0.0 against the installed 1.1.0 (which it would refuse)."""
    write_bundle(tmp_path / "v1", [hub_keys.key], [model("a", "1.0.0", {"w": b"1"})], sequence=1)
    write_bundle(tmp_path / "v2", [hub_keys.key], [model("a", "1.1.0", {"w": b"2"})], sequence=2)
    state = tmp_path / "edge"
    assert imp(hub_keys, state, tmp_path / "v1")[0] == 0
    assert imp(hub_keys, state, tmp_path / "v2")[0] == 0

    code, report = verify(hub_keys, state, tmp_path / "v1")
    again_code, again = imp(hub_keys, state, tmp_path / "v1")
    assert code == again_code == 0 and report["verdict"] == "pass"
    assert again["bundles"][0]["status"] == "repeat" and again["bundles"][0]["reason"] == REPEAT_REASON
    check = plan_check(report)
    assert check is not None and check["ok"] and check["reason"].startswith(REPEAT_REASON)
    assert all(a["plan"] is None for a in report["bundles"][0]["artifacts"])

    table = run_ferry("verify", tmp_path / "v1", "--trust", hub_keys.pub, "--state", state)
    assert table.returncode == 0 and f"plan: {REPEAT_REASON}" in table.stdout


def test_an_older_bundle_after_a_newer_one_is_stale_in_both(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "s5", [hub_keys.key], [model("a", "1.1.0", {"w": b"a11"})], sequence=5)
    write_bundle(tmp_path / "s3", [hub_keys.key], [model("a", "1.0.0", {"w": b"a10"}),
                                                   model("b", "1.0.0", {"w": b"b10"})], sequence=3)
    state = tmp_path / "edge"
    assert imp(hub_keys, state, tmp_path / "s5")[0] == 0

    code, report = verify(hub_keys, state, tmp_path / "s3")
    dry_code, dry = imp(hub_keys, state, tmp_path / "s3", "--dry-run")
    assert code == dry_code == 1
    planned = {a["name"]: a["plan"] for a in report["bundles"][0]["artifacts"]}
    dried = {a["name"]: a for a in dry["bundles"][0]["artifacts"]}
    assert planned["a"]["refused"] and "(stale bundle: sequence 3 is not after 5" in planned["a"]["reason"]
    assert {n: p["reason"] for n, p in planned.items()} == {n: a["reason"] for n, a in dried.items()}
    assert not planned["b"]["refused"]
    check = plan_check(report)
    assert check is not None and not check["ok"] and "stale bundle" in check["reason"]

    real_code, real = imp(hub_keys, state, tmp_path / "s3")
    assert real_code == 1
    assert {a["name"]: a["reason"] for a in real["bundles"][0]["artifacts"]}["a"] == planned["a"]["reason"]


class _Ledger:
    def __init__(self, ids: dict[str, str], status: dict[str, str], last: dict[str, int]) -> None:
        self.ids, self.status, self.last = ids, status, last

    def digests_for_bundle_id(self, bundle_id: str) -> list[str]:
        return [d for d, i in self.ids.items() if i == bundle_id]

    def bundle_status(self, digest: str) -> str | None:
        return self.status.get(digest)

    def last_sequence(self, channel: str) -> int | None:
        return self.last.get(channel)


NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


@given(last=st.none() | st.integers(0, 20), sequence=st.integers(0, 20), imported=st.booleans(),
       reused=st.booleans(), downgrade=st.booleans(), age_days=st.integers(0, 60))
def test_gate_verdicts(last: int | None, sequence: int, imported: bool, reused: bool, downgrade: bool,
                       age_days: int) -> None:
    """The order of the gate's rules: a reused id first, then the age limit (not for a bundle
    already imported), then replay, then the channel sequence."""
    me = "sha256:" + "1" * 64
    ids = {me: "rel"} if imported else {}
    if reused:
        ids["sha256:" + "2" * 64] = "rel"
    ledger = _Ledger(ids, {me: "imported"} if imported else {}, {"stable": last} if last is not None else {})
    created = (NOW - timedelta(days=age_days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    g = gate(ledger, me, "rel", "stable", sequence, created, now=NOW, max_age=timedelta(days=30),
             allow_downgrade=downgrade)
    if reused:
        assert g.freshness is None and "two bundles may not share an id" in g.refusal
    elif age_days > 30 and not imported:
        assert g.freshness is None and "older than --max-age (30d)" in g.refusal
    elif imported and not downgrade:
        assert g.freshness == "repeat" and g.stale == ""
    elif last is not None and sequence <= last:
        assert g.freshness == "stale" and f"sequence {sequence} is not after {last}" in g.stale
    else:
        assert g.freshness == "new" and g.refusal == "" and g.stale == ""
