"""The library interfaces issue #10 moved into the contract: progress reporting, the one
atomic write, typed chunk and place errors, the one clock."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from manifests.bundle import read_bounded
from manifests.chunks import compress_chunk, decompress_chunk
from manifests.digest import blake3_hex
from manifests.durable import write_atomic, write_atomic_at
from manifests.errors import EXIT_REFUSED, EXIT_USAGE, ChunkError, PlaceError
from manifests.model import TIME_RE, utc_now
from manifests.progress import Progress, Silent, human_bytes


# --------------------------------------------------------------------------- progress


def _progress_user(progress: Progress) -> int:
    """Library-style use of the interface: a task advanced, an event, a warning."""
    done = 0
    with progress.task("work", 10) as task:
        for _ in range(10):
            task.advance(1)
            done += 1
    progress.info("done")
    progress.warn("careful")
    return done


def test_silent_is_a_progress_that_says_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert _progress_user(Silent()) == 10
    assert capsys.readouterr() == ("", "")


def test_the_command_line_ui_implements_the_same_interface(capsys: pytest.CaptureFixture[str]) -> None:
    from ferry.ui import UI

    assert _progress_user(UI()) == 10
    err = capsys.readouterr().err
    assert "work: 10 B in" in err and "done" in err and "careful" in err


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
                                     (5 * 2**20, "5.0 MiB"), (3 * 2**30, "3.0 GiB"), (2**50, "1024.0 TiB")])
def test_human_bytes_uses_iec_units(n: int, text: str) -> None:
    assert human_bytes(n) == text


@given(st.integers(min_value=0, max_value=2**60))
def test_human_bytes_shape(n: int) -> None:
    text = human_bytes(n)
    assert re.fullmatch(r"\d+ B|\d+\.\d (KiB|MiB|GiB|TiB)", text)
    if not text.endswith("TiB"):
        assert float(text.split()[0]) < 1024


# --------------------------------------------------------------------------- atomic write


def test_write_atomic_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    write_atomic(target, b"old")
    write_atomic(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_write_atomic_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / ".f.tmp").symlink_to(victim)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        write_atomic_at(fd, "f", b"data")
    finally:
        os.close(fd)
    assert victim.read_bytes() == b"keep"
    assert (tmp_path / "f").read_bytes() == b"data"


def test_a_folder_in_the_way_is_a_place_error(tmp_path: Path) -> None:
    (tmp_path / ".f.tmp").mkdir()
    with pytest.raises(PlaceError, match="a folder is in the way") as info:
        write_atomic(tmp_path / "f", b"data", "medium")
    assert info.value.place == "medium" and info.value.exit_code == EXIT_USAGE


# --------------------------------------------------------------------------- typed errors


def _stored(raw: bytes) -> tuple[str, bytes]:
    return blake3_hex(raw), compress_chunk(raw)


def test_chunk_errors_carry_the_chunk_id_and_why() -> None:
    raw = b"ferry chunk " * 100
    cid, stored = _stored(raw)
    assert decompress_chunk(stored, chunk_id=cid, size=len(raw)) == raw
    cases = [
        (dict(stored=stored, chunk_id="0" * 64, size=len(raw)), "digest"),
        (dict(stored=stored, chunk_id=cid, size=len(raw) - 1), "size"),
        (dict(stored=b"not zstd at all", chunk_id=cid, size=len(raw)), "corrupt"),
    ]
    for kwargs, why in cases:
        with pytest.raises(ChunkError) as info:
            decompress_chunk(kwargs.pop("stored"), **kwargs)  # type: ignore[arg-type]
        assert info.value.why == why
        assert info.value.chunk_id == kwargs["chunk_id"] and info.value.chunk_id in str(info.value)
        assert info.value.exit_code == EXIT_REFUSED


def test_read_bounded_names_the_place(tmp_path: Path) -> None:
    with pytest.raises(PlaceError, match="not found") as info:
        read_bounded(tmp_path / "missing.json", 100, "spec file", place="source")
    assert info.value.place == "source" and info.value.path == str(tmp_path / "missing.json")
    with pytest.raises(PlaceError, match="is a folder") as info:
        read_bounded(tmp_path, 100, "manifest.json")
    assert info.value.place == "medium"


def test_one_clock_writes_the_format_s_time() -> None:
    assert TIME_RE.match(utc_now())
