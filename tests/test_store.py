"""The chunk store: installed files serve chunks, verified on read; spilled chunks are kept once."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

from tests.support.bundles import model, write_bundle
from tests.support.common import KeyPair, assert_clean_failure, run_ferry

V1 = {"w.bin": random.Random(5).randbytes(256 * 1024), "c.json": b"{}"}
V2 = {"w.bin": V1["w.bin"][: 128 * 1024] + random.Random(6).randbytes(128 * 1024), "c.json": b"{}"}


def imp(hub: KeyPair, state: Path, *paths: Path) -> subprocess.CompletedProcess[str]:
    return run_ferry("import", *paths, "--trust", hub.pub, "--state", state)


def test_an_edited_installed_file_is_never_trusted_as_a_chunk(tmp_path: Path, hub_keys: KeyPair) -> None:
    state = tmp_path / "edge"
    write_bundle(tmp_path / "b1", [hub_keys.key], [model("m", "1.0.0", V1)], sequence=1)
    assert imp(hub_keys, state, tmp_path / "b1").returncode == 0
    # someone edits the installed weights after the import
    w = state / "models" / "m" / "1.0.0" / "w.bin"
    w.chmod(0o644)
    data = bytearray(w.read_bytes())
    data[10] ^= 0xFF
    w.write_bytes(bytes(data))
    # a delta that relies on the site holding w.bin's first half: refused, naming the chunk
    write_bundle(tmp_path / "d2", [hub_keys.key], [model("m", "1.1.0", V2)], sequence=2, held_by_base={"w.bin"})
    r = imp(hub_keys, state, tmp_path / "d2")
    assert_clean_failure(r, code=1, contains="does not hold it")
    assert not (state / "models" / "m" / "1.1.0").exists()
    # the same version in a full bundle applies: the bad location is dropped, the pack serves it
    write_bundle(tmp_path / "f2", [hub_keys.key], [model("m", "1.1.0", V2)], sequence=3)
    r = imp(hub_keys, state, tmp_path / "f2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (state / "models" / "m" / "1.1.0" / "w.bin").read_bytes() == V2["w.bin"]


def test_a_spilled_chunk_is_not_written_again(tmp_path: Path, hub_keys: KeyPair) -> None:
    state = tmp_path / "edge"
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", V1)], volumes=2, chunk_size=32 * 1024)
    assert imp(hub_keys, state, tmp_path / "b" / "vol-002").returncode == 3  # incomplete (issue #12)
    spill = state / "store" / "spill"
    first = {p.name: p.stat().st_mtime_ns for p in spill.iterdir()}
    assert first
    assert imp(hub_keys, state, tmp_path / "b" / "vol-002").returncode == 3
    assert {p.name: p.stat().st_mtime_ns for p in spill.iterdir()} == first
    status = json.loads(run_ferry("status", "--state", state, "--json").stdout)
    assert status["store"]["spillChunks"] == len(first)
    # installed files hold them now: the spill store empties itself
    assert imp(hub_keys, state, tmp_path / "b" / "vol-001").returncode == 0
    assert list(spill.iterdir()) == []
    assert {p.name: p.read_bytes() for p in (state / "models" / "m" / "current").iterdir()} == V1


def test_receipt_lists_exactly_the_chunks_held(tmp_path: Path, hub_keys: KeyPair) -> None:
    state = tmp_path / "edge"
    m1 = write_bundle(tmp_path / "b1", [hub_keys.key], [model("m", "1.0.0", V1)], sequence=1)
    m2 = write_bundle(tmp_path / "b2", [hub_keys.key], [model("m", "1.1.0", V2)], sequence=2)
    for b in ("b1", "b2"):
        assert imp(hub_keys, state, tmp_path / b).returncode == 0
    run_ferry("receipt", "--state", state, "--out", tmp_path / "r.json").check_returncode()
    held = set(json.loads((tmp_path / "r.json").read_bytes())["chunks"])
    assert held == {c.id for c in m1.chunks} | {c.id for c in m2.chunks}
    # --keep 1 drops 1.0.0: its own chunks are no longer held
    write_bundle(tmp_path / "b3", [hub_keys.key], [model("m", "1.2.0", V2 | {"x": b"x"})], sequence=3)
    r = run_ferry("import", tmp_path / "b3", "--trust", hub_keys.pub, "--state", state, "--keep", "1")
    assert r.returncode == 0, r.stderr
    run_ferry("receipt", "--state", state, "--out", tmp_path / "r.json").check_returncode()
    held = set(json.loads((tmp_path / "r.json").read_bytes())["chunks"])
    only_v1 = {c.id for c in m1.chunks} - {c.id for c in m2.chunks}
    assert only_v1 and not (held & only_v1)
    assert sorted(os.listdir(state / "models" / "m")) == ["1.2.0", "current"]
