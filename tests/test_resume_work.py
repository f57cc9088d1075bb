"""Work redone after a real kill -9 (issue 19, goal 4), counted in bytes, never timed.

* An export killed at 60% and rerun compresses again only what no finished pack holds, and
  reads again only that plus the one file it was cutting when killed (and, for the modelcar
  layer's hash, at most the files after the last state it saved).
* An import killed at 50% and rerun reads from the medium none of the chunks it had already
  verified and made durable (checkpointed into the part file).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from bundler import export as export_mod, modeldigests
from bundler.packs import Journal
from manifests.progress import Silent
from tests.support.bundles import model, write_bundle
from tests.support.common import KeyPair
from tests.support.export import MiB, kill_when, make_model, read_back, write_spec


class _Counter:
    """Counts bytes that pass through a wrapped function (its first argument's or result's length)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.ids: list[str] = []


def test_export_killed_at_60_percent_redoes_only_the_unfinished_part(tmp_path: Path, hub_keys: KeyPair,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    files = 8
    for i in range(files):  # several files, as a sharded checkpoint: each 4 tensors of 1 MiB
        make_model(tmp_path / "m" / f"s{i}", count=4, size=2 * MiB, seed=100 + i)
    total = sum(p.stat().st_size for p in (tmp_path / "m").rglob("*.safetensors"))
    largest = max(p.stat().st_size for p in (tmp_path / "m").rglob("*.safetensors"))
    spec = write_spec(tmp_path / "bundle.yaml", [("big", "1.0.0", "m")])
    out, state = tmp_path / "out", tmp_path / "hub"
    volume = 20 * MiB  # packs are bounded by the volume, so there are several
    args = ["export", spec, "--out", out, "--key", hub_keys.key, "--state", state, "--max-volume-size", "20MiB"]

    def stored_so_far() -> int:
        try:
            previous = Journal(out).read()
        except Exception:  # noqa: BLE001 - a journal line being written; look again
            return 0
        return sum(p.size for p in previous[1]) if previous else 0

    killed = -signal.SIGKILL == kill_when([sys.executable, "-m", "ferry", *map(str, args)], lambda: stored_so_far() >= 0.6 * total)
    assert killed, "the export finished before 60%: make the model larger"
    previous = Journal(out).read()
    assert previous is not None
    kept_raw = sum(c.size for p in previous[1] for c in p.chunks)
    assert 0.6 * total <= kept_raw < total

    compressed, read, checked, layer = _Counter(), _Counter(), _Counter(), _Counter()
    real_read_file = modeldigests.ModelDigests.read_file
    real_compress, real_pread = export_mod.compress_chunk, os.pread
    source = str(tmp_path / "m") + "/"

    def counting_compress(raw: bytes | memoryview, cctx: object = None) -> bytes:
        compressed.bytes += len(raw)
        return real_compress(raw, cctx)  # type: ignore[arg-type]

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        data = real_pread(fd, n, offset)
        where = os.readlink(f"/proc/self/fd/{fd}")
        (read if where.startswith(source) else checked).bytes += len(data)
        return data

    def counting_read_file(self: modeldigests.ModelDigests, path: str, size: int, *args: object) -> None:
        layer.bytes += size
        real_read_file(self, path, size, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(modeldigests.ModelDigests, "read_file", counting_read_file)
    monkeypatch.setattr(export_mod, "compress_chunk", counting_compress)
    monkeypatch.setattr(os, "pread", counting_pread)
    result = export_mod.export(export_mod.ExportOptions(spec=spec, out=out, keys=(hub_keys.key,), state=state,
                                                        max_volume_size=volume), Silent())
    monkeypatch.undo()
    assert result.reused_packs == len(previous[1])
    unfinished = total - kept_raw
    print(f"total {total}, kept {kept_raw}, compressed again {compressed.bytes}, source read again {read.bytes}, "
          f"medium read back {checked.bytes}, read again for the modelcar layer's hash {layer.bytes}")
    # Compressed again: the unfinished part, plus at most the pack that was being written
    # (bounded by the volume) when the kill came.
    assert compressed.bytes <= unfinished + volume
    # Read again: the unfinished part, plus the file being cut when killed (its chunk list was
    # not cached yet, so it is cut again; its chunks in finished packs are hashed, not compressed).
    assert read.bytes <= unfinished + largest + volume
    assert read.bytes < total  # less than a fresh export reads
    # The modelcar layer's hash (format 1.3) goes on from the state the killed run saved after
    # a file (at least every SAVE_EVERY bytes): files cut before it are not read again for it.
    assert layer.bytes <= modeldigests.SAVE_EVERY + largest
    assert layer.bytes < kept_raw - largest
    # The finished packs are read back once at most, to check they survived (a pulled stick):
    # hashed against the BLAKE3 the journal recorded (mapped: no pread), never recompressed.
    assert checked.bytes <= sum(p.size for p in previous[1]) + unfinished + volume
    _, got = read_back(out, hub_keys.pub)
    for i in range(files):
        assert got[f"model/big/s{i}/model.safetensors"] == (tmp_path / "m" / f"s{i}" / "model.safetensors").read_bytes()


def _durable_chunks(state: Path) -> set[str]:
    """Chunks the edge recorded as written and fsynced in a part file (its checkpoints)."""
    # read-write: after kill -9 the WAL may need recovery, which a mode=ro connection cannot do
    # ("attempt to write a readonly database", seen once in the whole suite); this only reads
    db = sqlite3.connect(state / "state.db")
    try:
        return {row[0] for row in db.execute("SELECT chunk FROM locations WHERE file LIKE '%.part%'")}
    finally:
        db.close()


def test_import_killed_at_50_percent_rereads_nothing_it_verified_and_kept(tmp_path: Path, hub_keys: KeyPair,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from importer import medium
    from importer.run import ImportOptions, run_import

    data = os.urandom(24 * MiB)
    write_bundle(tmp_path / "b", [hub_keys.key], [model("big", "1.0.0", {"weights.bin": data})],
                 chunk_size=256 * 1024)
    state = tmp_path / "edge"
    # The real CLI in a child process, checkpointing every MiB (64 MiB in production) so that a
    # small file has several checkpoints; then kill -9 once half of the file is on disk.
    child = ("import sys, importer.apply.models as m; m.CHECKPOINT_BYTES = 1 << 20; "
             "from ferry.cli import main; sys.argv[0] = 'ferry'; main()")

    def half_written() -> bool:
        return any(p.stat().st_size >= len(data) // 2 for p in state.rglob(".part*") if p.is_file())

    killed = -signal.SIGKILL == kill_when([sys.executable, "-c", child, "import", str(tmp_path / "b"), "--trust", str(hub_keys.pub),
                         "--state", str(state)], half_written)
    assert killed, "the import finished before 50%"
    durable = _durable_chunks(state)
    assert durable, "no checkpoint was made before the kill"

    read = _Counter()
    real = medium.PackReader.read_stored

    def counting(self: medium.PackReader, chunk):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
        read.ids.append(chunk.id)
        read.bytes += chunk.size
        return real(self, chunk)

    monkeypatch.setattr(medium.PackReader, "read_stored", counting)
    report = run_import(ImportOptions(paths=[tmp_path / "b"], trust=[hub_keys.pub], state=state), Silent())
    monkeypatch.undo()
    assert report.exit_code == 0
    print(f"file {len(data)}, durable before the kill {256 * 1024 * len(durable)}, medium read again {read.bytes}")
    assert not durable & set(read.ids)  # nothing verified and kept is read from the medium again
    assert read.bytes <= len(data) - 256 * 1024 * len(durable)
    installed = [p for p in (state / "models" / "big").rglob("weights.bin")]
    assert installed and installed[0].read_bytes() == data


def test_import_killed_before_its_ledger_had_a_schema_starts_afresh(tmp_path: Path, hub_keys: KeyPair) -> None:
    """A first import killed between creating EDGE/state.db and writing its schema leaves an
    empty database: the rerun treats it as no state yet instead of failing on a missing table."""
    from tests.support.common import run_ferry

    data = os.urandom(300_000)
    write_bundle(tmp_path / "b", [hub_keys.key], [model("m", "1.0.0", {"w.bin": data})])
    state = tmp_path / "edge"
    state.mkdir()
    (state / "state.db").touch()
    r = run_ferry("import", tmp_path / "b", "--trust", hub_keys.pub, "--state", state)
    assert r.returncode == 0, r.stderr
    assert [p.read_bytes() for p in (state / "models" / "m").rglob("w.bin")] == [data]
