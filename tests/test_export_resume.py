"""kill -9 the export at different points; the same command then finishes a bundle that verifies."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from manifests.bundle import SIGNATURE_NAME
from tests.support.common import run_ferry
from tests.support.export import MiB, kill_when, make_model, read_back, write_spec


def _journal_packs(out: Path) -> int:
    try:
        return len((out / ".ferry-export" / "journal.jsonl").read_bytes().splitlines()) - 1
    except FileNotFoundError:
        return 0


POINTS: dict[str, Callable[[Path], bool]] = {
    "before-any-pack": lambda out: any(out.rglob(".pack-*.tmp")),
    "after-a-pack": lambda out: _journal_packs(out) >= 1,
    "mid-way": lambda out: _journal_packs(out) >= 3,
    "writing-manifests": lambda out: any(out.rglob(SIGNATURE_NAME)),
}


@pytest.mark.parametrize("point", list(POINTS))
def test_rerun_after_kill_finishes_a_verified_bundle(tmp_path: Path, hub_keys, point: str) -> None:  # noqa: ANN001
    make_model(tmp_path / "m", count=16, size=4 * MiB, seed=5)
    spec = write_spec(tmp_path / "bundle.yaml", [("big", "2.0.0", "m")])
    out = tmp_path / "out"
    args = ["export", spec, "--out", out, "--key", hub_keys.key, "--state", tmp_path / "state",
            "--max-volume-size", "20MiB", "--json"]
    reached = POINTS[point]
    status = kill_when([sys.executable, "-m", "ferry", *map(str, args)], lambda: out.exists() and reached(out))
    killed = status == -signal.SIGKILL
    if not killed:  # the last point is a narrow window; a finished export is fine too
        assert point == "writing-manifests" and status == 0
        read_back(out, hub_keys.pub)
        return
    # nothing looks finished: a manifest without the journal would claim a complete bundle
    assert not any(out.rglob("manifest.json")) or (out / ".ferry-export").exists()
    kept_before = _journal_packs(out)

    result = run_ferry(*args)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    if killed and point in ("mid-way", "writing-manifests"):
        assert doc["reusedPacks"] >= 1 and doc["reusedPacks"] >= min(kept_before, 1)
    assert doc["bundle"]["sequence"] == 1  # a resume is the same bundle, not the next one
    assert not (out / ".ferry-export").exists() and not list(out.rglob("*.tmp"))
    _, files = read_back(out, hub_keys.pub)
    assert files["model/big/model.safetensors"] == (tmp_path / "m" / "model.safetensors").read_bytes()


def test_resume_with_other_options_is_refused(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    from tests.support.common import assert_clean_failure

    make_model(tmp_path / "m", count=1, size=4096)
    spec = write_spec(tmp_path / "bundle.yaml", [("a", "1.0.0", "m")])
    out = tmp_path / "out"
    (out / ".ferry-export").mkdir(parents=True)
    (out / ".ferry-export" / "journal.jsonl").write_text(
        json.dumps({"fingerprint": "sha256:" + "0" * 64, "id": "x-1", "sequence": 1,
                    "created": "2026-01-01T00:00:00Z"}) + "\n")
    r = run_ferry("export", spec, "--out", out, "--key", hub_keys.key, "--state", tmp_path / "s")
    assert_clean_failure(r, code=2, contains="unfinished export of another spec")


@pytest.mark.parametrize("journal", ["with-pack-digests", "from-before-pack-digests"])
def test_a_kept_pack_changed_between_runs_is_written_again(tmp_path: Path, hub_keys, journal: str) -> None:  # noqa: ANN001
    """A resumed export keeps a finished pack only if its bytes are those written: checked
    against the BLAKE3 the journal recorded for it, or (a journal without one) frame by frame."""
    make_model(tmp_path / "m", count=16, size=4 * MiB, seed=6)
    spec = write_spec(tmp_path / "bundle.yaml", [("big", "2.0.0", "m")])
    out = tmp_path / "out"
    args = ["export", spec, "--out", out, "--key", hub_keys.key, "--state", tmp_path / "state",
            "--max-volume-size", "20MiB", "--json"]
    status = kill_when([sys.executable, "-m", "ferry", *map(str, args)], lambda: _journal_packs(out) >= 2)
    assert status == -signal.SIGKILL, "the export finished before two packs: make the model larger"
    path = out / ".ferry-export" / "journal.jsonl"
    lines = path.read_bytes().splitlines()
    packs = []
    for line in lines[1:]:
        try:
            packs.append(json.loads(line))
        except ValueError:  # a line torn by the kill: that pack is unknown, as to ferry
            break
    assert all(len(p.get("blake3", "")) == 64 for p in packs)  # recorded as each pack was finished
    if journal == "from-before-pack-digests":
        for p in packs:
            del p["blake3"]
    path.write_bytes(b"\n".join([lines[0], *(json.dumps(p).encode() for p in packs)]) + b"\n")
    first = packs[0]
    (victim,) = out.rglob(first["name"])
    _, _, stored, offset = first["chunks"][-1]
    with open(victim, "r+b") as f:  # one byte inside the last frame of the first pack
        f.seek(offset + stored // 2)
        byte = f.read(1)
        f.seek(offset + stored // 2)
        f.write(bytes([byte[0] ^ 0x40]))

    result = run_ferry(*args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["reusedPacks"] == len(packs) - 1
    _, files = read_back(out, hub_keys.pub)
    assert files["model/big/model.safetensors"] == (tmp_path / "m" / "model.safetensors").read_bytes()
