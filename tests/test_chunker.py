"""Chunking: pieces cover the file exactly, and a changed tensor changes only its own chunks."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bundler import chunker
from manifests import limits
from tests.support.export import MiB, tensors, write_safetensors


@given(st.lists(st.integers(min_value=0, max_value=10**7), max_size=40), st.integers(min_value=0, max_value=10**7),
       st.integers(min_value=1, max_value=10**6))
def test_coalesce_covers_file_and_respects_minimum(cuts: list[int], size: int, min_gap: int) -> None:
    pieces = chunker.coalesce([c for c in cuts if c <= size], size, min_gap)
    assert pieces[0][0] == 0 and pieces[-1][1] == size
    for (a, b), (c, _) in zip(pieces, pieces[1:]):
        assert b == c and b - a >= min_gap
    assert all(b >= a for a, b in pieces)


def test_safetensors_cuts_at_each_tensor() -> None:
    header = {"__metadata__": {}, "a": {"data_offsets": [0, 10]}, "b": {"data_offsets": [10, 30]}}
    assert chunker.safetensors_cuts(100, header, 8 + 100 + 30) == [108, 118]
    assert chunker.safetensors_cuts(100, {"a": {"data_offsets": [0, 10**9]}}, 200) == []
    assert chunker.safetensors_cuts(100, ["not", "a", "header"], 200) == []


def _chunks(path: Path) -> list[bytes]:
    with open(path, "rb") as f:
        return [bytes(data) for _, data in chunker.cut_file(f, chunker.segments(path, path.stat().st_size))]


def test_chunks_rebuild_the_file_within_limits(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    write_safetensors(path, tensors(3, 3 * MiB, seed=1) + [("tiny.bias", b"\x01" * 64)] + tensors(2, 5 * MiB, seed=2))
    chunks = _chunks(path)
    assert b"".join(chunks) == path.read_bytes()
    assert all(len(c) <= limits.MAX_CHUNK_SIZE for c in chunks)


def test_changed_tensor_changes_only_its_chunks(tmp_path: Path) -> None:
    ts = tensors(10, 3 * MiB, seed=3)
    write_safetensors(tmp_path / "v1.safetensors", ts)
    changed = list(ts)
    changed[4] = (changed[4][0], random.Random(9).randbytes(3 * MiB))
    write_safetensors(tmp_path / "v2.safetensors", changed)
    v1, v2 = set(_chunks(tmp_path / "v1.safetensors")), _chunks(tmp_path / "v2.safetensors")
    new = [c for c in v2 if c not in v1]
    assert sum(map(len, new)) <= 3 * MiB  # only the changed tensor's bytes are new


def test_plain_files_and_streams_are_chunked_by_content(tmp_path: Path) -> None:
    data = random.Random(5).randbytes(9 * MiB)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert chunker.segments(path, len(data)) == [(0, len(data))]
    with open(path, "rb") as f:
        assert b"".join(chunker.cut_stream(f)) == data



def test_windowed_cutting_equals_cutting_at_once(tmp_path: Path) -> None:
    data = random.Random(8).randbytes(3 * chunker.WINDOW + 12345)
    whole = [bytes(c.data) for c in chunker._cdc.cut_buf(data)]
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    with open(path, "rb") as f:
        assert [bytes(d) for d in chunker.cut_stream(f)] == whole
    with open(path, "rb") as f:
        assert [bytes(d) for _, d in chunker.cut_file(f, [(0, len(data))])] == whole
