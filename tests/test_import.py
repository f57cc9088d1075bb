"""ferry import into an edge state: models and GitOps manifests, through the real CLI.

Bundles are written with tests/support/bundles.py (the contract's own pieces, no exporter);
every behaviour is checked from what an operator sees: exit status, one-line errors, the
files under EDGE, ``ferry status``/``receipt``, and the audit trail.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from importer.state import EdgeState
from manifests.bundle import PACKS_DIR
from manifests.digest import blake3_hex
from manifests.model import Manifest
from tests.support.bundles import Spec, image, model, write_bundle
from tests.support.common import KeyPair, assert_clean_failure, run_ferry


def rnd(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


FILES_V1 = {"model.safetensors": rnd(600_000, 1), "config.json": b'{"dim": 8}', "tok/vocab.txt": b"a\nb\n",
            "empty.bin": b""}
FILES_V2 = {**FILES_V1, "model.safetensors": FILES_V1["model.safetensors"][:300_000] + rnd(300_000, 2)}


def imp(hub: KeyPair, state: Path, *paths: Path | str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return run_ferry("import", *paths, "--trust", hub.pub, "--state", state, *extra)


def imp_json(hub: KeyPair, state: Path, *paths: Path | str, extra: tuple[str, ...] = ()) -> dict:
    r = imp(hub, state, *paths, extra=("--json", *extra))
    assert "Traceback" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    assert doc["exitCode"] == r.returncode
    return doc


def installed_files(state: Path, name: str, version: str) -> dict[str, bytes]:
    root = state / "models" / name / version
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Path -> content hash / link target of everything under ``root`` (to compare states)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if rel.startswith(skip):
                continue
            out[rel] = ("link:" + os.readlink(p) if p.is_symlink() else
                        blake3_hex(p.read_bytes()) if p.is_file() else "dir")
    return out


def ledger(state: Path) -> tuple:
    s = EdgeState.open_readonly(state)
    if s is None:
        return ()
    try:
        return (s.installed_rows(), s.channels(), s.db.execute("SELECT * FROM locations ORDER BY 1,2,3,4").fetchall())
    finally:
        s.close()


def audit_entries(state: Path) -> list[dict]:
    path = state / "audit" / "trail.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def tamper_chunk(bundle: Path, m: Manifest, chunk_id: str) -> None:
    c = m.chunk(chunk_id)
    pack = m.packs[c.pack]  # type: ignore[index]
    vol = bundle / f"vol-{pack.volume:03d}" if m.volumes > 1 else bundle
    with open(vol / PACKS_DIR / pack.name, "r+b") as f:
        f.seek(c.offset + c.stored // 2)  # type: ignore[operator]
        b = f.read(1)
        f.seek(c.offset + c.stored // 2)  # type: ignore[operator]
        f.write(bytes([b[0] ^ 0xFF]))


# --------------------------------------------------------------------------- models


def test_fresh_import_installs_exact_files_and_current(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "b", [hub_keys.key], [model("sentiment", "1.0.0", FILES_V1)])
    state = tmp_path / "edge"
    r = imp(hub_keys, state, tmp_path / "b")
    assert r.returncode == 0, r.stderr
    assert "model sentiment 1.0.0: applied" in r.stdout
    assert installed_files(state, "sentiment", "1.0.0") == {k: v for k, v in FILES_V1.items()}
    current = state / "models" / "sentiment" / "current"
    assert current.is_symlink() and os.readlink(current) == "1.0.0"
    assert (current / "model.safetensors").read_bytes() == FILES_V1["model.safetensors"]
    # no staging leftovers
    assert sorted(p.name for p in (state / "models" / "sentiment").iterdir()) == ["1.0.0", "current"]
    entry, published = audit_entries(state)
    assert entry["decision"] == "applied" and entry["versionAfter"] == "1.0.0"
    assert entry["signers"] == [hub_keys.keyid]
    # then where it was published (issue 14, item 5): the layout, both tags with their digests
    [row] = EdgeState.open_readonly(state).published()  # type: ignore[union-attr]
    assert published["decision"] == "published" and published["artifact"] == entry["artifact"]
    assert published["reason"] == (f"published models/sentiment:1.0.0 {row.digest} and "
                                   f"models/sentiment:1.0.0-modelcar {row.modelcar_digest} in EDGE/oci")


def test_reimport_is_a_noop_that_reads_no_pack(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "b", [hub_keys.key], [model("sentiment", "1.0.0", FILES_V1)])
    state = tmp_path / "edge"
    assert imp(hub_keys, state, tmp_path / "b").returncode == 0
    before = tree(state / "models")
    for pack in (tmp_path / "b" / PACKS_DIR).iterdir():
        pack.unlink()  # the ledger answers first: the packs are not even opened
    doc = imp_json(hub_keys, state, tmp_path / "b")
    assert doc["exitCode"] == 0
    assert doc["bundles"][0]["status"] == "repeat"
    assert tree(state / "models") == before
    assert audit_entries(state)[-1]["decision"] == "skipped"


def test_upgrade_keeps_old_version_and_reuses_held_chunks(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "b1", [hub_keys.key], [model("sentiment", "1.0.0", FILES_V1)], sequence=1)
    # v2 is a delta: model.safetensors' first half and the small files are not carried
    write_bundle(tmp_path / "b2", [hub_keys.key], [model("sentiment", "1.1.0", FILES_V2)], sequence=2,
                 held_by_base={"config.json", "tok/vocab.txt", "empty.bin"})
    state = tmp_path / "edge"
    assert imp(hub_keys, state, tmp_path / "b1").returncode == 0
    r = imp(hub_keys, state, tmp_path / "b2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed_files(state, "sentiment", "1.1.0") == FILES_V2
    assert installed_files(state, "sentiment", "1.0.0") == FILES_V1
    assert os.readlink(state / "models" / "sentiment" / "current") == "1.1.0"


def test_delta_chunk_the_site_does_not_hold_is_named(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "b2", [hub_keys.key], [model("sentiment", "1.1.0", FILES_V2)], sequence=2,
                 held_by_base={"config.json"})
    state = tmp_path / "edge"
    r = imp(hub_keys, state, tmp_path / "b2")
    assert_clean_failure(r, code=1, contains="not in this delta bundle")
    assert not (state / "models" / "sentiment" / "1.1.0").exists()


def test_downgrade_refused_then_forced_with_reason(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "new", [hub_keys.key], [model("sentiment", "2.0.0", FILES_V2)], sequence=1)
    write_bundle(tmp_path / "old", [hub_keys.key], [model("sentiment", "1.0.0", FILES_V1)], sequence=2)
    state = tmp_path / "edge"
    assert imp(hub_keys, state, tmp_path / "new").returncode == 0
    r = imp(hub_keys, state, tmp_path / "old")
    assert_clean_failure(r, code=1, contains="older than installed 2.0.0")
    assert os.readlink(state / "models" / "sentiment" / "current") == "2.0.0"
    assert audit_entries(state)[-1]["decision"] == "refused"

    r = imp(hub_keys, state, tmp_path / "old", extra=("--allow-downgrade",))
    assert_clean_failure(r, code=2, contains="--reason")

    r = imp(hub_keys, state, tmp_path / "old", extra=("--allow-downgrade", "--reason", "2.0.0 misclassifies",
                                                        "--note", "ticket 42"))
    assert r.returncode == 0, r.stderr
    assert os.readlink(state / "models" / "sentiment" / "current") == "1.0.0"
    assert installed_files(state, "sentiment", "1.0.0") == FILES_V1
    last, published = audit_entries(state)[-2:]  # the decision, then where the version was published
    assert published["decision"] == "published" and published["versionAfter"] == "1.0.0"
    assert last["decision"] == "downgrade-forced"
    assert "2.0.0 misclassifies" in last["note"] and "ticket 42" in last["note"]
    assert (last["versionBefore"], last["versionAfter"]) == ("2.0.0", "1.0.0")


def test_same_version_other_content_is_a_conflict(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "a", [hub_keys.key], [model("sentiment", "1.0.0", FILES_V1)], sequence=1)
    write_bundle(tmp_path / "b", [hub_keys.key], [model("sentiment", "1.0.0", FILES_V2),
                                                  model("other", "0.1.0", {"w": b"w" * 10})], sequence=2)
    state = tmp_path / "edge"
    assert imp(hub_keys, state, tmp_path / "a").returncode == 0
    doc = imp_json(hub_keys, state, tmp_path / "b")
    assert doc["exitCode"] == 1
    by_name = {a["name"]: a for a in doc["bundles"][0]["artifacts"]}
    assert by_name["sentiment"]["action"] == "conflict" and by_name["sentiment"]["status"] == "refused"
    assert by_name["other"]["status"] == "applied"  # the rest of the bundle still applies
    assert installed_files(state, "sentiment", "1.0.0") == FILES_V1


def test_stale_sequence_applies_only_newer(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "s5", [hub_keys.key], [model("a", "1.1.0", {"w": b"a11"})], sequence=5)
    write_bundle(tmp_path / "s3", [hub_keys.key], [model("a", "1.0.0", {"w": b"a10"}),
                                                   model("b", "1.0.0", {"w": b"b10"})], sequence=3)
    state = tmp_path / "edge"
    assert imp(hub_keys, state, tmp_path / "s5").returncode == 0
    doc = imp_json(hub_keys, state, tmp_path / "s3")
    assert doc["exitCode"] == 1
    bundle = doc["bundles"][0]
    assert bundle["freshness"] == "stale"
    arts = {a["name"]: a for a in bundle["artifacts"]}
    assert arts["a"]["status"] == "refused" and "stale bundle" in arts["a"]["reason"]
    assert arts["b"]["status"] == "applied"
    assert EdgeState.open_readonly(state).channels() == {"stable": 5}  # type: ignore[union-attr]


def test_two_bundles_with_one_id_and_different_content(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "a", [hub_keys.key], [model("a", "1.0.0", {"w": b"1"})], bundle_id="rel-7")
    write_bundle(tmp_path / "b", [hub_keys.key], [model("a", "1.0.1", {"w": b"2"})], bundle_id="rel-7",
                 sequence=2)
    state = tmp_path / "edge"
    assert imp(hub_keys, state, tmp_path / "a").returncode == 0
    r = imp(hub_keys, state, tmp_path / "b")
    assert_clean_failure(r, code=1, contains="was imported before with different content")


def test_untrusted_signer_refused_and_audited(tmp_path: Path, hub_keys: KeyPair, other_keys: KeyPair) -> None:
    write_bundle(tmp_path / "b", [other_keys.key], [model("a", "1.0.0", {"w": b"1"})])
    state = tmp_path / "edge"
    r = imp(hub_keys, state, tmp_path / "b")
    assert_clean_failure(r, code=1, contains="not trusted")
    assert not (state / "models").exists()
    assert audit_entries(state)[-1]["decision"] == "refused"


# --------------------------------------------------------------------------- volumes


def test_volumes_one_at_a_time_in_any_order(tmp_path: Path, hub_keys: KeyPair) -> None:
    files = {"w.bin": rnd(400_000, 7), "c.json": b"{}"}
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", files)], volumes=3, chunk_size=32 * 1024)
    state = tmp_path / "edge"
    r = imp(hub_keys, state, tmp_path / "b" / "vol-003")
    # incomplete is not success: exit 3 and one line saying what is still needed (issue #12)
    assert_clean_failure(r, code=3, contains="incomplete, waiting for volumes: bundle edge-ai: insert volume 1, 2")
    assert not (state / "models" / "m" / "1.0.0").exists()
    status = json.loads(run_ferry("status", "--state", state, "--json").stdout)
    assert status["store"]["spillChunks"] > 0 and status["waiting"]
    r = imp(hub_keys, state, tmp_path / "b" / "vol-001")
    assert_clean_failure(r, code=3, contains="insert volume 2 to finish")
    assert "insert volume 2" in r.stdout
    r = imp(hub_keys, state, tmp_path / "b" / "vol-002")
    assert r.returncode == 0 and "applied" in r.stdout
    assert installed_files(state, "m", "1.0.0") == files
    status = json.loads(run_ferry("status", "--state", state, "--json").stdout)
    assert status["store"]["spillChunks"] == 0 and not status["waiting"]  # spill emptied once installed
    assert not list((state / "store" / "spill").iterdir())


def test_all_volumes_in_one_run_reversed(tmp_path: Path, hub_keys: KeyPair) -> None:
    files = {"w.bin": rnd(200_000, 8)}
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", files)], volumes=2, chunk_size=32 * 1024)
    state = tmp_path / "edge"
    r = imp(hub_keys, state, tmp_path / "b" / "vol-002", tmp_path / "b" / "vol-001")
    assert r.returncode == 0, r.stderr
    assert installed_files(state, "m", "1.0.0") == files


def test_junk_signatures_on_one_volume_do_not_veto_a_signed_bundle(tmp_path: Path, hub_keys: KeyPair,
                                                                     other_keys: KeyPair) -> None:
    from manifests.keys import load_private
    from manifests.signing import sign

    files = {"w.bin": rnd(200_000, 9)}
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", files)], volumes=2, chunk_size=32 * 1024)
    body = (tmp_path / "b" / "vol-002" / "manifest.json").read_bytes()
    (tmp_path / "b" / "vol-002" / "manifest.json.sig").write_bytes(sign(body, [load_private(other_keys.key)]).to_bytes())
    state = tmp_path / "edge"
    r = imp(hub_keys, state, tmp_path / "b" / "vol-002", tmp_path / "b" / "vol-001")
    assert r.returncode == 0, r.stderr
    assert installed_files(state, "m", "1.0.0") == files
    # alone, the volume whose signature file holds only an untrusted key is refused
    alone = imp(hub_keys, tmp_path / "edge2", tmp_path / "b" / "vol-002")
    assert alone.returncode == 1 and "not trusted" in alone.stderr


# --------------------------------------------------------------------------- verification failures


def test_tampered_chunk_named_and_state_untouched(tmp_path: Path, hub_keys: KeyPair) -> None:
    state = tmp_path / "edge"
    write_bundle(tmp_path / "ok", [hub_keys.key], [model("base", "1.0.0", {"w": b"base"})])
    assert imp(hub_keys, state, tmp_path / "ok").returncode == 0
    m = write_bundle(tmp_path / "b", [hub_keys.key], [model("sentiment", "1.0.0", FILES_V1)], sequence=2)
    victim = next(e for e in m.artifact("model", "sentiment").entries if e.path == "model.safetensors")
    bad = victim.chunks[3]
    tamper_chunk(tmp_path / "b", m, bad)
    before_tree, before_ledger = tree(state, skip=("audit", "state.db", "lock")), ledger(state)
    r = imp(hub_keys, state, tmp_path / "b")
    assert_clean_failure(r, code=1, contains=bad)
    assert "model.safetensors" in r.stderr and "sentiment" in r.stderr
    assert tree(state, skip=("audit", "state.db", "lock")) == before_tree
    assert ledger(state) == before_ledger
    assert audit_entries(state)[-1]["decision"] == "refused"


def test_tampered_artifact_does_not_stop_the_rest(tmp_path: Path, hub_keys: KeyPair) -> None:
    m = write_bundle(tmp_path / "b", [hub_keys.key], [model("bad", "1.0.0", {"w": rnd(100_000, 3)}),
                                                      model("good", "1.0.0", {"w": rnd(100_000, 4)})])
    tamper_chunk(tmp_path / "b", m, m.artifact("model", "bad").entries[0].chunks[0])
    state = tmp_path / "edge"
    doc = imp_json(hub_keys, state, tmp_path / "b")
    arts = {a["name"]: a for a in doc["bundles"][0]["artifacts"]}
    assert arts["bad"]["status"] == "failed" and arts["good"]["status"] == "applied"
    assert not (state / "models" / "bad").exists() or not list((state / "models" / "bad").glob("1.0.0"))
    # a good copy of the bundle later completes it
    write_bundle(tmp_path / "b2", [hub_keys.key], [model("bad", "1.0.0", {"w": rnd(100_000, 3)}),
                                                   model("good", "1.0.0", {"w": rnd(100_000, 4)})])
    assert imp(hub_keys, state, tmp_path / "b2").returncode == 0


# --------------------------------------------------------------------------- plan, status, receipt


def test_dry_run_changes_nothing(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "b1", [hub_keys.key], [model("m", "1.0.0", FILES_V1)], sequence=1)
    write_bundle(tmp_path / "b2", [hub_keys.key], [model("m", "1.1.0", FILES_V2)], sequence=2)
    state = tmp_path / "edge"
    doc = imp_json(hub_keys, state, tmp_path / "b1", extra=("--dry-run",))
    assert not state.exists()  # not even created
    art = doc["bundles"][0]["artifacts"][0]
    assert (art["action"], art["status"]) == ("new", "planned")
    # the files, plus publishing into EDGE/oci: the modelcar's tar (a copy) and small blobs;
    # the ModelPack layers are hard links (same file system)
    from manifests.modelpack import ModelFile, modelcar_layer_size

    files = sum(len(v) for v in FILES_V1.values())
    car = modelcar_layer_size([ModelFile(k, len(v), "") for k, v in FILES_V1.items()])
    assert files + car < doc["bundles"][0]["bytesToWrite"] <= files + car + 16384
    assert imp(hub_keys, state, tmp_path / "b1").returncode == 0
    before = tree(state)
    r = imp(hub_keys, state, tmp_path / "b2", extra=("--dry-run",))
    assert r.returncode == 0 and "newer" in r.stdout and "dry run" in r.stdout
    assert tree(state) == before


def test_status_and_signed_receipt(tmp_path: Path, hub_keys: KeyPair) -> None:
    from manifests.keys import generate, load_public
    from manifests.receipt import Receipt
    from manifests.signing import RECEIPT_PAYLOAD_TYPE, SignatureFile, verify
    from manifests.trust import Trust, TrustedKey

    m = write_bundle(tmp_path / "b", [hub_keys.key], [model("sentiment", "1.0.0", FILES_V1)], sequence=4)
    state = tmp_path / "edge"
    assert imp(hub_keys, state, tmp_path / "b").returncode == 0
    r = run_ferry("status", "--state", state)
    assert r.returncode == 0 and "sentiment" in r.stdout and "channel stable: last sequence 4" in r.stdout
    doc = json.loads(run_ferry("status", "--state", state, "--json").stdout)
    assert doc["installed"][0]["version"] == "1.0.0" and doc["channels"] == {"stable": 4}
    assert doc["store"]["chunks"] == len(m.chunks)
    # how long the site has gone without updates, from the newest bundle's signed creation time
    assert doc["newestBundleCreated"] == {"stable": m.bundle.created}
    assert f"newest bundle created {m.bundle.created}" in r.stdout

    key, pub, _ = generate("edge", tmp_path / "keys")
    out = tmp_path / "receipt.json"
    r = run_ferry("receipt", "--state", state, "--out", out, "--key", key)
    assert r.returncode == 0, r.stderr
    receipt = Receipt.from_bytes(out.read_bytes())
    assert set(receipt.chunks) == {c.id for c in m.chunks}
    assert [(a.kind, a.name, a.version) for a in receipt.artifacts] == [("model", "sentiment", "1.0.0")]
    assert dict(receipt.channels) == {"stable": 4}
    sigfile = SignatureFile.from_bytes((tmp_path / "receipt.json.sig").read_bytes())
    trust = Trust(keys={k.keyid: k for k in [TrustedKey("edge", load_public(pub))]})
    assert verify(out.read_bytes(), sigfile, trust, channel=None, payload_type=RECEIPT_PAYLOAD_TYPE).ok

    assert_clean_failure(run_ferry("status", "--state", tmp_path / "nowhere"), code=2, contains="no ferry edge state")
    assert_clean_failure(run_ferry("receipt", "--state", state, "--out", out, "--key", pub), code=2)


def test_keep_prunes_old_versions_never_current(tmp_path: Path, hub_keys: KeyPair) -> None:
    state = tmp_path / "edge"
    for seq, v in enumerate(["1.0.0", "1.1.0", "1.2.0"], start=1):
        write_bundle(tmp_path / v, [hub_keys.key], [model("m", v, {"w": v.encode() * 1000})], sequence=seq)
        assert imp(hub_keys, state, tmp_path / v, extra=("--keep", "2")).returncode == 0
    names = sorted(p.name for p in (state / "models" / "m").iterdir())
    assert names == ["1.1.0", "1.2.0", "current"]
    assert os.readlink(state / "models" / "m" / "current") == "1.2.0"
    assert_clean_failure(imp(hub_keys, state, tmp_path / "1.0.0", extra=("--keep", "0")), code=2)


def test_second_concurrent_import_is_refused(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", {"w": b"x"})])
    state = tmp_path / "edge"
    holder = EdgeState.open(state)  # as a running import does
    try:
        r = imp(hub_keys, state, tmp_path / "b")
        assert_clean_failure(r, code=2, contains="in use by another ferry import")
    finally:
        holder.close()
    assert imp(hub_keys, state, tmp_path / "b").returncode == 0


def test_never_writes_through_a_link_under_edge(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", {"w": b"x"})])
    state, outside = tmp_path / "edge", tmp_path / "outside"
    outside.mkdir()
    (state / "models").mkdir(parents=True)
    (state / "models" / "m").symlink_to(outside)
    r = imp(hub_keys, state, tmp_path / "b")
    assert r.returncode == 1
    assert "link" in r.stdout + r.stderr
    assert list(outside.iterdir()) == []


def test_kill_9_at_random_points_then_rerun_gives_exact_files(tmp_path: Path, hub_keys: KeyPair) -> None:
    files = {f"shard-{i}.bin": rnd(12_000_000, 100 + i) for i in range(8)}
    write_bundle(tmp_path / "b", [hub_keys.key], [model("big", "1.0.0", files),
                                                  model("small", "0.1.0", {"w": b"s" * 1000})],
                 chunk_size=16 * 1024)
    state = tmp_path / "edge"
    rng = random.Random(1234)
    env = {k: v for k, v in os.environ.items() if k != "FERRY_DEBUG"}
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-m", "ferry", "import", str(tmp_path / "b"), "--trust",
                                 str(hub_keys.pub), "--state", str(state)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.2))  # a whole import takes about 1.5 s here
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    r = imp(hub_keys, state, tmp_path / "b")
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed_files(state, "big", "1.0.0") == files
    assert installed_files(state, "small", "0.1.0") == {"w": b"s" * 1000}
    assert sorted(p.name for p in (state / "models" / "big").iterdir()) == ["1.0.0", "current"]
    assert run_ferry("audit", "verify", "--state", state).returncode == 0
    doc = imp_json(hub_keys, state, tmp_path / "b")
    assert doc["bundles"][0]["status"] == "repeat"


# --------------------------------------------------------------------------- manifests (GitOps)

DEPLOYMENT = b"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: registry.example:5000/team/web:1.0.0
"""


#: The image DEPLOYMENT names (the edge refuses a set whose images it cannot pin).
WEB_IMAGE = image("team/web", "1.0.0", [b"web layer"], tag="1.0.0")


def test_manifest_set_written_for_gitops(tmp_path: Path, hub_keys: KeyPair) -> None:
    # The image travels in the first bundle only: the second set is pinned to what the ledger holds.
    write_bundle(tmp_path / "b", [hub_keys.key], [WEB_IMAGE, Spec("manifests", "web-app", "1.0.0",
                                                                  files={"deploy.yaml": DEPLOYMENT})])
    state = tmp_path / "edge"
    r = imp(hub_keys, state, tmp_path / "b")
    assert r.returncode == 0, r.stdout + r.stderr
    written = list((state / "manifests" / "web-app").rglob("*.yaml"))
    assert written
    text = "".join(p.read_text() for p in written)
    assert "ferry.io/version: 1.0.0" in text and "kind: Deployment" in text
    gitops = tmp_path / "gitops"
    write_bundle(tmp_path / "b2", [hub_keys.key], [Spec("manifests", "web-app", "1.1.0",
                                                        files={"deploy.yaml": DEPLOYMENT})], sequence=2)
    r = imp(hub_keys, state, tmp_path / "b2", extra=("--manifests-dir", str(gitops)))
    assert r.returncode == 0, r.stdout + r.stderr
    text = "".join(p.read_text() for p in (gitops / "web-app").rglob("*.yaml"))
    assert "ferry.io/version: 1.1.0" in text and "image: team/web@sha256:" in text


NAMESPACE = b"""apiVersion: v1
kind: Namespace
metadata:
  name: demo
"""


def test_manifest_set_server_side_applied_with_kubeconfig(tmp_path: Path, hub_keys: KeyPair, fakekube) -> None:  # noqa: ANN001
    write_bundle(tmp_path / "b", [hub_keys.key], [WEB_IMAGE, Spec("manifests", "web-app", "1.0.0",
                                                                  files={"ns.yaml": NAMESPACE, "deploy.yaml": DEPLOYMENT})])
    state = tmp_path / "edge"
    kubeconfig = fakekube.kubeconfig(tmp_path / "kubeconfig")
    r = imp(hub_keys, state, tmp_path / "b", extra=("--kubeconfig", str(kubeconfig), "--context", "wds1"))
    assert r.returncode == 0, r.stdout + r.stderr
    deployment = fakekube.get_object("apps/v1", "Deployment", "web", "demo")
    assert deployment is not None
    assert deployment["metadata"]["annotations"]["ferry.io/version"] == "1.0.0"
    assert fakekube.applies() and all(p.query.get("fieldManager") == "ferry"
               for p in fakekube.applies())
    assert not (state / "manifests").exists()  # the cluster, not a GitOps folder
    assert_clean_failure(imp(hub_keys, state, tmp_path / "b", extra=("--context", "wds1")), code=2,
                         contains="--kubeconfig")


def test_import_refused_when_the_audit_trail_was_edited(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "a", [hub_keys.key], [model("a", "1.0.0", {"w": b"1"})], sequence=1)
    write_bundle(tmp_path / "b", [hub_keys.key], [model("a", "1.1.0", {"w": b"2"})], sequence=2)
    state = tmp_path / "edge"
    assert imp(hub_keys, state, tmp_path / "a").returncode == 0
    trail = state / "audit" / "trail.jsonl"
    trail.write_text(trail.read_text().replace("not installed", "NOT installed"))
    before = tree(state / "models")
    assert_clean_failure(imp(hub_keys, state, tmp_path / "b"), code=1, contains="audit trail")
    assert tree(state / "models") == before


def test_several_bundles_in_one_run_apply_in_sequence_order(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "b1", [hub_keys.key], [model("sentiment", "1.0.0", FILES_V1)], sequence=1)
    write_bundle(tmp_path / "b2", [hub_keys.key], [model("sentiment", "1.1.0", FILES_V2)], sequence=2,
                 held_by_base={"config.json", "tok/vocab.txt", "empty.bin"})
    state = tmp_path / "edge"
    doc = imp_json(hub_keys, state, tmp_path / "b2", tmp_path / "b1")  # given newest first
    assert doc["exitCode"] == 0
    assert [b["status"] for b in doc["bundles"]] == ["imported", "imported"]
    assert os.readlink(state / "models" / "sentiment" / "current") == "1.1.0"
    assert installed_files(state, "sentiment", "1.1.0") == FILES_V2


def test_forced_downgrade_to_a_kept_version_only_moves_current(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "b1", [hub_keys.key], [model("m", "1.0.0", FILES_V1)], sequence=1)
    write_bundle(tmp_path / "b2", [hub_keys.key], [model("m", "1.1.0", FILES_V2)], sequence=2)
    state = tmp_path / "edge"
    assert imp(hub_keys, state, tmp_path / "b1").returncode == 0
    inode = (state / "models" / "m" / "1.0.0" / "model.safetensors").stat().st_ino
    assert imp(hub_keys, state, tmp_path / "b2").returncode == 0
    r = imp(hub_keys, state, tmp_path / "b1", extra=("--allow-downgrade", "--reason", "roll back"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.readlink(state / "models" / "m" / "current") == "1.0.0"
    assert (state / "models" / "m" / "1.0.0" / "model.safetensors").stat().st_ino == inode  # not rewritten
    assert installed_files(state, "m", "1.0.0") == FILES_V1
    assert [e["decision"] for e in audit_entries(state)[-2:]] == ["downgrade-forced", "published"]


def test_bad_registry_host_is_refused_before_anything_applies(tmp_path: Path, hub_keys: KeyPair) -> None:
    write_bundle(tmp_path / "b", [hub_keys.key], [model("sentiment", "1.0.0", FILES_V1)])
    state = tmp_path / "edge"
    r = imp(hub_keys, state, tmp_path / "b", extra=("--registry", "http://edge.local:5000"))
    assert_clean_failure(r, code=2, contains="is not HOST[:PORT]")
    assert not (state / "models").exists()


def test_max_age_refuses_a_withheld_bundle(tmp_path: Path, hub_keys: KeyPair) -> None:
    from datetime import datetime, timedelta, timezone

    old = (datetime.now(timezone.utc) - timedelta(days=40)).strftime("%Y-%m-%dT%H:%M:%SZ")
    files = {"w.bin": b"weights"}
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", files)], created=old)
    state = tmp_path / "edge"
    r = imp(hub_keys, state, tmp_path / "b", extra=("--max-age", "30d"))
    assert_clean_failure(r, code=1, contains="older than --max-age (30d)")
    assert not (state / "models" / "m").exists()
    assert [e["decision"] for e in audit_entries(state)] == ["refused"]
    r = imp(hub_keys, state, tmp_path / "b", extra=("--max-age", "60d"))
    assert r.returncode == 0, r.stderr
    assert installed_files(state, "m", "1.0.0") == files
    assert_clean_failure(imp(hub_keys, state, tmp_path / "b", extra=("--max-age", "soon")), code=2,
                         contains="not a duration")


def test_an_import_killed_before_the_ledger_was_initialised_reruns(tmp_path: Path, hub_keys: KeyPair) -> None:
    """A kill between creating state.db and its first commit leaves an empty database; the
    next import (whose trust step reads the ledger read-only first) must simply run."""
    import sqlite3

    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", {"w.bin": b"weights"})])
    state = tmp_path / "edge"
    state.mkdir()
    sqlite3.connect(state / "state.db").close()
    r = imp(hub_keys, state, tmp_path / "b")
    assert r.returncode == 0, r.stdout + r.stderr
