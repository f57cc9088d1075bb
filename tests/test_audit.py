"""The edge's audit trail: hash chain, chain head, crash healing, show, signed export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importer.audit import (DECISIONS, GENESIS, AuditTrail, Head, check_chain, entry_hash,
                            parse_export)
from manifests import canonical
from manifests.errors import FerryError, FormatError
from tests.support.common import KeyPair, assert_clean_failure, run_ferry

DIGEST = "sha256:" + "ab" * 32


def add(trail: AuditTrail, i: int, decision: str = "applied", note: str | None = None) -> dict:
    return trail.append(decision, f"step {i}", bundle={"name": "edge-ai", "id": f"b-{i:04d}"},
                        manifest_digest=DIGEST, signers=["k" * 64],
                        artifact={"kind": "model", "name": "resnet", "version": f"1.{i}.0"},
                        version_before=f"1.{i - 1}.0" if i else None, version_after=f"1.{i}.0",
                        note=note)


@pytest.fixture
def edge(tmp_path: Path) -> Path:
    state = tmp_path / "edge"
    state.mkdir()
    trail = AuditTrail(state)
    for i in range(5):
        add(trail, i)
    return state


def lines_of(state: Path) -> list[bytes]:
    return (state / "audit" / "trail.jsonl").read_bytes().split(b"\n")[:-1]


def rewrite(state: Path, lines: list[bytes]) -> None:
    (state / "audit" / "trail.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))


def test_entries_are_chained_from_genesis_and_the_head_is_kept_apart(edge: Path) -> None:
    entries = list(AuditTrail(edge).entries())
    assert [e["seq"] for e in entries] == [0, 1, 2, 3, 4]
    assert entries[0]["prev"] == GENESIS
    for before, after in zip(entries, entries[1:]):
        assert after["prev"] == before["hash"]
    for e in entries:
        assert e["hash"] == entry_hash(e)
        assert e["time"].endswith("Z") and len(e["time"]) == 20
    head = json.loads((edge / "audit" / "head.json").read_bytes())
    assert head == {"format": "ferry-audit-head", "seq": 4, "hash": entries[-1]["hash"]}
    # each line is the canonical JSON of its entry
    assert all(canonical.encode(canonical.decode(line)) == line for line in lines_of(edge))

    result = run_ferry("audit", "verify", "--state", edge)
    assert result.returncode == 0, result.stderr
    assert "whole: 5 entries" in result.stdout


def test_edited_entry_is_named(edge: Path) -> None:
    lines = lines_of(edge)
    lines[2] = lines[2].replace(b'"applied"', b'"skipped"')
    rewrite(edge, lines)
    check = AuditTrail(edge).verify()
    assert (check.ok, check.reason, check.first_bad_seq) == (False, "edited", 2)
    assert_clean_failure(run_ferry("audit", "verify", "--state", edge), code=1, contains="entry 2 was edited")


def test_edited_and_rehashed_entry_breaks_the_link(edge: Path) -> None:
    lines = lines_of(edge)
    entry = canonical.decode(lines[1])
    entry["reason"] = "nothing to see"
    entry["hash"] = entry_hash(entry)
    lines[1] = canonical.encode(entry)
    rewrite(edge, lines)
    check = AuditTrail(edge).verify()
    assert (check.reason, check.first_bad_seq) == ("edited", 1)


def test_whole_chain_rewritten_from_an_entry_is_caught_by_the_head(edge: Path) -> None:
    lines = lines_of(edge)
    prev = canonical.decode(lines[2])["hash"]
    for i in (3, 4):
        entry = canonical.decode(lines[i])
        entry["decision"], entry["prev"] = "skipped", prev
        entry["hash"] = prev = entry_hash(entry)
        lines[i] = canonical.encode(entry)
    rewrite(edge, lines)
    check = AuditTrail(edge).verify()
    assert (check.ok, check.reason, check.first_bad_seq) == (False, "edited", 4)


@pytest.mark.parametrize("index, where", [(0, "first"), (2, "middle"), (4, "last")])
def test_deleted_entry_is_named(edge: Path, index: int, where: str) -> None:
    lines = lines_of(edge)
    del lines[index]
    rewrite(edge, lines)
    check = AuditTrail(edge).verify()
    assert (check.ok, check.reason, check.first_bad_seq) == (False, "removed", index), where
    assert_clean_failure(run_ferry("audit", "verify", "--state", edge), code=1,
                         contains=f"entry {index} is missing")


def test_deleting_the_last_two_entries_is_caught(edge: Path) -> None:
    rewrite(edge, lines_of(edge)[:3])
    check = AuditTrail(edge).verify()
    assert (check.reason, check.first_bad_seq) == ("removed", 3)
    assert "entries 3 to 4" in check.detail


def test_reordering_is_named(edge: Path) -> None:
    lines = lines_of(edge)
    lines[1], lines[3] = lines[3], lines[1]
    rewrite(edge, lines)
    check = AuditTrail(edge).verify()
    assert (check.ok, check.reason, check.first_bad_seq) == (False, "reordered", 1)
    assert_clean_failure(run_ferry("audit", "verify", "--state", edge), code=1, contains="reordered")


def test_truncated_file_is_named(edge: Path) -> None:
    path = edge / "audit" / "trail.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    check = AuditTrail(edge).verify()
    assert (check.ok, check.reason, check.first_bad_seq) == (False, "truncated", 4)
    assert_clean_failure(run_ferry("audit", "verify", "--state", edge, "--json"), code=1, contains="truncated")


def test_emptied_trail_or_missing_head_is_caught(edge: Path) -> None:
    shutil.copytree(edge, edge.parent / "copy")
    (edge / "audit" / "trail.jsonl").write_bytes(b"")
    assert (AuditTrail(edge).verify().reason, AuditTrail(edge).verify().first_bad_seq) == ("removed", 0)
    other = edge.parent / "copy"
    (other / "audit" / "head.json").unlink()
    assert AuditTrail(other).verify().reason == "head"


def test_a_removed_trail_and_head_is_caught_by_the_ledger(tmp_path: Path, hub_keys: KeyPair) -> None:
    """Found walking the guide: with audit/ deleted whole (trail and head together), `audit
    verify` said "whole: 0 entries" and the next import or `site set` started a fresh trail. The
    ledger records every imported bundle, each audited before it was called imported."""
    from tests.support.bundles import model, write_bundle

    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", {"w": b"1"})])
    edge = tmp_path / "edge"
    assert run_ferry("import", tmp_path / "b", "--trust", hub_keys.pub, "--state", edge).returncode == 0
    assert run_ferry("audit", "verify", "--state", edge).returncode == 0
    shutil.rmtree(edge / "audit")
    says = "the trail is empty or missing, but the ledger records 1 bundle(s) imported: its entries were removed"
    assert_clean_failure(run_ferry("audit", "verify", "--state", edge), code=1, contains=says)
    assert_clean_failure(run_ferry("import", tmp_path / "b", "--trust", hub_keys.pub, "--state", edge), code=1,
                         contains=says)
    assert_clean_failure(run_ferry("site", "set", "--state", edge, "--name", "x"), contains=says)
    assert not (edge / "audit" / "trail.jsonl").exists()  # nothing papered over it
    # a folder that is no edge state at all (a typo) is not an edge with a whole, empty trail
    assert_clean_failure(run_ferry("audit", "verify", "--state", tmp_path), code=2,
                         contains=f"--state {tmp_path}: no ferry edge state here")


def test_crash_before_the_head_moved_is_whole_and_healed_by_the_next_append(edge: Path) -> None:
    head_before = (edge / "audit" / "head.json").read_bytes()
    add(AuditTrail(edge), 5)
    (edge / "audit" / "head.json").write_bytes(head_before)  # as if killed between the two writes
    check = AuditTrail(edge).verify()
    assert check.ok and check.entries == 6 and check.pending and "interrupted" in check.pending
    add(AuditTrail(edge), 6)
    check = AuditTrail(edge).verify()
    assert check.ok and check.entries == 7 and check.pending is None
    assert AuditTrail(edge).head() == Head(6, list(AuditTrail(edge).entries())[-1]["hash"])


def test_crash_inside_the_line_write_is_whole_and_cut_by_the_next_append(edge: Path) -> None:
    path = edge / "audit" / "trail.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"artifact":{"kind":"model"')  # torn append, head still on entry 4
    check = AuditTrail(edge).verify()
    assert check.ok and check.pending and "partial line" in check.pending
    entry = add(AuditTrail(edge), 5)
    assert entry["seq"] == 5
    check = AuditTrail(edge).verify()
    assert check.ok and check.entries == 6 and check.pending is None


def test_first_append_cut_short_is_not_a_missing_head(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path)
    add(trail, 0)
    (tmp_path / "audit" / "head.json").write_bytes(
        canonical.encode(Head(-1, GENESIS).to_dict()))  # the head written before the first entry
    assert trail.verify().ok
    add(trail, 1)
    assert trail.verify().ok and trail.verify().pending is None


def test_a_trail_whose_end_is_broken_is_never_extended(edge: Path) -> None:
    rewrite(edge, lines_of(edge)[:4])  # the last entry deleted: the head names entry 4
    with pytest.raises(FerryError, match="head does not match its last entry"):
        add(AuditTrail(edge), 9)
    assert len(lines_of(edge)) == 4
    lines = lines_of(edge)
    lines[3] = lines[3].replace(b"step 3", b"step X")
    rewrite(edge, lines)
    with pytest.raises(FerryError, match="last entry is not intact"):
        add(AuditTrail(edge), 9)


def test_appending_after_a_gap_keeps_the_gap_detectable(edge: Path) -> None:
    """An append reads only the end of the trail (its cost does not grow with the trail); a
    gap further back is not hidden by new entries: verify still names it."""
    lines = lines_of(edge)
    del lines[1]
    rewrite(edge, lines)
    add(AuditTrail(edge), 5)
    check = AuditTrail(edge).verify()
    assert (check.ok, check.reason, check.first_bad_seq) == (False, "removed", 1)


def test_decisions_are_the_documented_list(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path)
    for decision in DECISIONS:
        add(trail, 1, decision)
    with pytest.raises(FerryError, match="unknown decision"):
        add(trail, 1, "approved")
    assert [e["decision"] for e in trail.entries()] == list(DECISIONS)


def test_show_as_table_json_lines_and_since(edge: Path) -> None:
    add(AuditTrail(edge), 5, "downgrade-forced", note="rollback after incident 42")
    table = run_ferry("audit", "show", "--state", edge, env={"COLUMNS": "250"})
    assert table.returncode == 0, table.stderr
    assert "downgrade-forced" in table.stdout and "incident 42" in table.stdout
    out = run_ferry("audit", "show", "--state", edge, "--json")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["seq"] for r in rows] == list(range(6))
    assert rows[5]["note"] == "rollback after incident 42"
    later = run_ferry("audit", "show", "--state", edge, "--json", "--since", "2999-01-01")
    assert later.returncode == 0 and later.stdout == ""
    all_rows = run_ferry("audit", "show", "--state", edge, "--json", "--since", "2000-01-01T00:00:00Z")
    assert len(all_rows.stdout.splitlines()) == 6
    assert_clean_failure(run_ferry("audit", "show", "--state", edge, "--since", "last tuesday"),
                         code=2, contains="--since")


def test_show_warns_when_the_chain_is_broken(edge: Path) -> None:
    rewrite(edge, lines_of(edge)[:4])
    result = run_ferry("audit", "show", "--state", edge, "--json")
    assert "warning: audit trail removed" in result.stderr


def test_signed_export_verifies_elsewhere_and_is_refused_when_altered(
        edge: Path, tmp_path: Path, hub_keys: KeyPair, other_keys: KeyPair) -> None:
    out = tmp_path / "out" / "trail.json"
    out.parent.mkdir()
    result = run_ferry("audit", "export", "--state", edge, "--out", out, "--key", hub_keys.key)
    assert result.returncode == 0, result.stderr
    assert "exported 5 entries" in result.stdout
    # the auditor's machine: only the export, its signature and the edge's public key
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    shutil.copy(out, auditor / "trail.json")
    shutil.copy(out.with_name("trail.json.sig"), auditor / "trail.json.sig")
    shutil.copy(hub_keys.pub, auditor / "edge.pub")
    ok = run_ferry("audit", "verify", "--file", auditor / "trail.json", "--trust", auditor / "edge.pub")
    assert ok.returncode == 0, ok.stderr
    assert "whole: 5 entries" in ok.stdout and "signed by edge" in ok.stdout
    doc = json.loads(out.read_bytes())
    assert doc["head"]["seq"] == 4 and len(doc["entries"]) == 5

    wrong_key = run_ferry("audit", "verify", "--file", auditor / "trail.json", "--trust", other_keys.pub)
    assert_clean_failure(wrong_key, code=1, contains="not trusted")

    data = (auditor / "trail.json").read_bytes()
    (auditor / "trail.json").write_bytes(data.replace(b'"step 2"', b'"step X"'))
    altered = run_ferry("audit", "verify", "--file", auditor / "trail.json", "--trust", auditor / "edge.pub")
    assert_clean_failure(altered, code=1, contains="signature")

    (auditor / "trail.json").write_bytes(data)
    (auditor / "trail.json.sig").unlink()
    unsigned = run_ferry("audit", "verify", "--file", auditor / "trail.json", "--trust", auditor / "edge.pub")
    assert_clean_failure(unsigned, code=1, contains="unsigned")


def test_export_of_a_broken_chain_is_signed_as_found_and_fails_verification(
        edge: Path, tmp_path: Path, hub_keys: KeyPair) -> None:
    lines = lines_of(edge)
    del lines[4]
    rewrite(edge, lines)
    out = tmp_path / "trail.json"
    result = run_ferry("audit", "export", "--state", edge, "--out", out, "--key", hub_keys.key)
    assert result.returncode == 0 and "warning" in result.stderr
    check = run_ferry("audit", "verify", "--file", out, "--trust", hub_keys.pub, "--json")
    assert check.returncode == 1
    assert json.loads(check.stdout)["reason"] == "removed"


def test_audit_usage_errors_are_one_line(edge: Path, tmp_path: Path, hub_keys: KeyPair) -> None:
    assert_clean_failure(run_ferry("audit", "verify"), code=2, contains="--state")
    assert_clean_failure(run_ferry("audit", "verify", "--file", tmp_path / "x.json"), code=2, contains="--trust")
    assert_clean_failure(run_ferry("audit", "verify", "--state", tmp_path / "nowhere"), code=2)
    assert_clean_failure(run_ferry("audit", "export", "--state", edge, "--out", tmp_path / "t.json",
                                   "--key", hub_keys.pub), code=2, contains="public key")
    assert not (tmp_path / "t.json").exists()
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00\xffnot json")
    assert_clean_failure(run_ferry("audit", "verify", "--file", garbage, "--trust", hub_keys.pub), code=1)


# --------------------------------------------------------------------------- properties


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_export_parser_never_crashes(data: bytes) -> None:
    try:
        parse_export(data)
    except FormatError:
        pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=6), st.binary(max_size=40),
       st.one_of(st.none(), st.builds(Head, st.integers(-1, 8), st.sampled_from([GENESIS, "x"]))))
def test_chain_check_never_crashes_on_arbitrary_lines(lines: list[bytes], tail: bytes, head: Head | None) -> None:
    check = check_chain([line + b"\n" for line in lines] + ([tail] if tail else []), head)
    assert check.ok in (True, False)
    if not check.ok:
        assert check.reason is not None and check.detail


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=3000))
def test_trail_reader_never_crashes_on_arbitrary_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    state = tmp_path_factory.mktemp("fuzz")
    (state / "audit").mkdir()
    (state / "audit" / "trail.jsonl").write_bytes(data)
    (state / "audit" / "head.json").write_bytes(data[:200])
    AuditTrail(state).verify()
    try:
        list(AuditTrail(state).entries())
    except FormatError:
        pass


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_change_in_a_committed_trail_is_detected(edge: Path, data: st.DataObject) -> None:
    path = edge / "audit" / "trail.jsonl"
    original = path.read_bytes()
    pos = data.draw(st.integers(0, len(original) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != original[pos]))
    path.write_bytes(original[:pos] + bytes([byte]) + original[pos + 1:])
    try:
        assert not AuditTrail(edge).verify().ok
    finally:
        path.write_bytes(original)


def test_kill_9_during_appends_leaves_a_whole_trail_that_the_next_append_heals(tmp_path: Path) -> None:
    import random
    import signal
    import subprocess
    import sys
    import time

    from tests.support.common import REPO

    state = tmp_path / "edge"
    state.mkdir()
    writer = (
        "import sys; from pathlib import Path; from importer.audit import AuditTrail\n"
        "t = AuditTrail(Path(sys.argv[1]))\n"
        "while True:\n"
        "    t.append('applied', 'x' * 3000, bundle=None, manifest_digest=None, signers=[], artifact=None,\n"
        "             version_before=None, version_after=None)\n"
    )
    rng = random.Random(7)
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", writer, str(state)], cwd=REPO)
        time.sleep(rng.uniform(0.3, 0.8))  # only to vary where the kill lands
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        check = AuditTrail(state).verify()
        assert check.ok, check.summary
        before = check.entries
        add(AuditTrail(state), 0)
        after = AuditTrail(state).verify()
        assert after.ok and after.pending is None and after.entries == before + 1
