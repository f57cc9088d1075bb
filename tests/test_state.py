"""The edge state: crashes at each journaled step are finished by the next import, exactly once;
read_installed works without the lock; free space is checked before writing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import importer.run as run_mod
from manifests.progress import Silent
from importer.apply import models as model_store
from importer.run import ImportOptions, run_import
from importer.state import EdgeState, read_installed
from importer.policy import Installed
from tests.support.bundles import model, write_bundle
from tests.support.common import KeyPair, run_ferry

FILES = {"w.bin": os.urandom(300_000), "c.json": b"{}"}


class Crash(BaseException):
    """Stands for kill -9 at a chosen instant (nothing after it runs, no cleanup)."""


def opts(hub: KeyPair, bundle: Path, state: Path) -> ImportOptions:
    return ImportOptions(paths=[bundle], trust=[hub.pub], state=state)


def decisions(state: Path) -> list[str]:
    lines = (state / "audit" / "trail.jsonl").read_text().splitlines()
    return [json.loads(line)["decision"] for line in lines]


@pytest.mark.parametrize("where", ["publish", "commit", "audit"])
def test_crash_inside_a_journaled_publish_is_finished_once(where: str, tmp_path: Path, hub_keys: KeyPair,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", FILES)])
    state = tmp_path / "edge"

    def crash(*args: object, **kwargs: object) -> None:
        raise Crash(where)

    if where == "publish":  # staged, journaled, nothing renamed yet
        monkeypatch.setattr(model_store, "publish_model", crash)
    elif where == "commit":  # renamed and switched, ledger not yet updated
        monkeypatch.setattr(model_store, "commit_model", crash)
    else:  # ledger committed, audit entry not yet written
        from importer.audit import AuditTrail

        monkeypatch.setattr(AuditTrail, "append", crash)
    with pytest.raises(Crash):
        run_import(opts(hub_keys, tmp_path / "b", state), Silent())
    monkeypatch.undo()

    s = EdgeState.open_readonly(state)
    assert s is not None and len(s.journal()) == 1  # the decision survived the crash
    s.close()

    r = run_ferry("import", tmp_path / "b", "--trust", hub_keys.pub, "--state", state)
    assert r.returncode == 0, r.stderr
    root = state / "models" / "m"
    assert {p.name: p.read_bytes() for p in (root / "1.0.0").iterdir()} == FILES
    assert os.readlink(root / "current") == "1.0.0"
    assert sorted(p.name for p in root.iterdir()) == ["1.0.0", "current"]
    assert read_installed(state)[("model", "m")].version == "1.0.0"
    # one "applied" (by the recovery), then the bundle's own decision: already there; and the
    # version, which the crash left unpublished, is published now (issue 14)
    assert decisions(state).count("applied") == 1
    assert decisions(state)[-2:] == ["skipped", "published"]
    with EdgeState.open(state) as s2:
        assert [(p.name, p.version) for p in s2.published()] == [("m", "1.0.0")]
    assert run_ferry("audit", "verify", "--state", state).returncode == 0


def test_read_installed_without_lock_and_without_state(tmp_path: Path, hub_keys: KeyPair) -> None:
    assert read_installed(tmp_path / "nothing") == {}
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", FILES)])
    state = tmp_path / "edge"
    run_import(opts(hub_keys, tmp_path / "b", state), Silent())
    holder = EdgeState.open(state)  # an import running: readers still read
    try:
        got = read_installed(state)
    finally:
        holder.close()
    assert set(got) == {("model", "m")} and isinstance(got[("model", "m")], Installed)


def test_free_space_checked_before_writing(tmp_path: Path, hub_keys: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", FILES)])
    state = tmp_path / "edge"
    real = shutil.disk_usage

    def small(path: object) -> object:
        u = real(path)
        return type(u)(u.total, u.total - 1000, 1000)

    monkeypatch.setattr(run_mod.shutil, "disk_usage", small)
    report = run_import(opts(hub_keys, tmp_path / "b", state), Silent())
    assert report.exit_code == 1
    reason = report.bundles[0].reason
    assert "not enough free space" in reason and "1000 B" in reason and "is free" in reason
    assert not (state / "models").exists()
    assert decisions(state) == ["refused"]


def test_interrupted_file_resumes_from_its_last_checkpoint(tmp_path: Path, hub_keys: KeyPair,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside one large file: chunks made durable before the crash are read back from the part
    file (verified), never from the medium again."""
    from importer.medium import PackReader

    big = {"w.bin": os.urandom(64 * 16 * 1024)}  # 64 chunks of 16 KiB
    m = write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", big)], chunk_size=16 * 1024)
    state = tmp_path / "edge"
    monkeypatch.setattr(model_store, "CHECKPOINT_BYTES", 10 * 16 * 1024)  # every 10 chunks
    reads: list[str] = []
    real_stored = PackReader.read_stored

    def counting(self: PackReader, chunk):  # noqa: ANN001, ANN202
        reads.append(chunk.id)
        if len(reads) == 35 and crash_now:
            raise Crash("after 35 chunks")
        return real_stored(self, chunk)

    monkeypatch.setattr(PackReader, "read_stored", counting)
    crash_now = True
    with pytest.raises(Crash):
        run_import(opts(hub_keys, tmp_path / "b", state), Silent())
    crash_now = False
    reads.clear()
    report = run_import(opts(hub_keys, tmp_path / "b", state), Silent())
    assert report.exit_code == 0
    # 30 chunks were durable at the crash (checkpoints at 10, 20, 30): only the other 34 are read
    assert len(reads) == len(m.chunks) - 30
    assert (state / "models" / "m" / "1.0.0" / "w.bin").read_bytes() == big["w.bin"]
    assert not list((state / "models" / "m").glob(".partial-*"))


def test_disk_full_while_writing_stops_cleanly_and_resumes(tmp_path: Path, hub_keys: KeyPair,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    big = {"w.bin": os.urandom(40 * 16 * 1024)}
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", big)], chunk_size=16 * 1024)
    state = tmp_path / "edge"
    monkeypatch.setattr(model_store, "CHECKPOINT_BYTES", 8 * 16 * 1024)

    class FullDisk:
        """os for the model writer, on a disk that fills up after 300 KiB."""

        budget = 300 * 1024

        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

        def write(self, fd: int, data: object) -> int:
            if FullDisk.budget <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            n = os.write(fd, data)  # type: ignore[arg-type]
            FullDisk.budget -= n
            return n

    monkeypatch.setattr(model_store, "os", FullDisk())
    with pytest.raises(model_store.NoSpace, match="no space left .* w.bin of model 'm'"):
        run_import(opts(hub_keys, tmp_path / "b", state), Silent())
    monkeypatch.undo()
    [part] = (state / "models" / "m" / model_store.partial_name("1.0.0")).iterdir()  # the part file, under its temp name
    assert part.stat().st_size == 16 * 16 * 1024  # cut back to the last checkpoint (2 x 8 chunks)
    r = run_ferry("import", tmp_path / "b", "--trust", hub_keys.pub, "--state", state)
    assert r.returncode == 0, r.stderr
    assert (state / "models" / "m" / "current" / "w.bin").read_bytes() == big["w.bin"]


def test_a_ledger_whose_creation_was_killed_reads_as_no_state(tmp_path: Path, hub_keys: KeyPair) -> None:
    """kill -9 while the first import creates the state: sqlite made the file, the schema's
    transaction never committed. Readers see no state (not an internal error) and the next
    import creates the schema and completes (tests/test_images_e2e.py kills at random moments)."""
    import sqlite3

    from importer.state import DB_NAME

    state = tmp_path / "edge"
    state.mkdir()
    sqlite3.connect(state / DB_NAME).close()  # the file, no tables
    assert EdgeState.open_readonly(state) is None and read_installed(state) == {}
    shown = run_ferry("status", "--state", state)
    assert shown.returncode == 2 and "no ferry edge state here" in shown.stderr
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", FILES)])
    done = run_ferry("import", tmp_path / "b", "--trust", hub_keys.pub, "--state", state)
    assert done.returncode == 0, done.stderr
    assert set(read_installed(state)) == {("model", "m")}


def test_an_import_killed_before_the_ledger_had_tables_is_redone(hub_keys: KeyPair, tmp_path: Path) -> None:
    """kill -9 right after sqlite created ``state.db`` leaves a file without tables: the next
    import (whose trust hook reads the ledger first) initialises it and goes on."""
    import sqlite3

    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", FILES)])
    edge = tmp_path / "edge"
    edge.mkdir()
    sqlite3.connect(edge / "state.db").close()
    done = run_ferry("import", tmp_path / "b", "--trust", hub_keys.pub, "--state", edge)
    assert done.returncode == 0, done.stderr
    assert read_installed(edge)[("model", "m")].version == "1.0.0"
