"""The hub's SHA-256 with a saved state (bundler.sha256state): what the modelcar layer's hash
resumes from (format 1.3, docs/bundle-format.md 3.2.3). Checked against hashlib."""

from __future__ import annotations

import hashlib
import mmap

import pytest
from hypothesis import given, settings, strategies as st

from bundler import sha256state
from manifests.modelpack import ModelcarHasher

pytestmark = pytest.mark.skipif(sha256state.resumable() is None, reason="libcrypto's SHA256_* not loadable here")


def _new() -> sha256state.Sha256:
    sha = sha256state.resumable()
    assert sha is not None
    return sha


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600), cut=st.integers(min_value=0, max_value=600),
       kind=st.sampled_from(["bytes", "bytearray", "memoryview", "readonly"]))
def test_a_state_saved_anywhere_goes_on_to_hashlibs_digest(data: bytes, cut: int, kind: str) -> None:
    cut = min(cut, len(data))
    wrap = {"bytes": bytes, "bytearray": bytearray, "memoryview": lambda b: memoryview(bytearray(b)),
            "readonly": memoryview}[kind]
    first = _new()
    first.update(wrap(data[:cut]))
    assert first.hashed == cut
    saved = first.save()
    second = _new()
    assert second.restore(saved, cut)
    second.update(wrap(data[cut:]))
    assert second.hexdigest() == first_rest(first, data[cut:]) == hashlib.sha256(data).hexdigest()


def first_rest(sha: sha256state.Sha256, rest: bytes) -> str:
    sha.update(rest)
    return sha.hexdigest()


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=1, max_size=300), claimed=st.integers(min_value=0, max_value=400))
def test_a_state_is_refused_unless_it_hashed_what_it_is_said_to(data: bytes, claimed: int) -> None:
    sha = _new()
    sha.update(data)
    saved = sha.save()
    other = _new()
    assert other.restore(saved, claimed) == (claimed == len(data))
    if claimed != len(data):  # refused: still a fresh hash
        assert other.hexdigest() == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("saved", ["", "x", "openssl-sha256-ctx-v1-big:" + "00" * 112,
                                   sha256state.STATE_TAG + ":zz", sha256state.STATE_TAG + ":" + "00" * 111])
def test_a_malformed_state_is_refused(saved: str) -> None:
    sha = _new()
    assert not sha.restore(saved, 0)
    assert sha.hexdigest() == hashlib.sha256(b"").hexdigest()


def test_a_window_view_is_hashed_in_place_and_the_window_can_be_reused() -> None:
    window = mmap.mmap(-1, 1 << 16)
    window[:] = bytes(range(256)) * 256
    sha = _new()
    sha.update(memoryview(window)[100:60_000])
    window[:10] = b"x" * 10  # not held: the export's windows are written again
    window.close()
    assert sha.hexdigest() == hashlib.sha256((bytes(range(256)) * 256)[100:60_000]).hexdigest()


@settings(max_examples=50, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=5), at=st.integers(0, 4))
def test_the_modelcar_layer_hash_resumed_after_a_file_is_the_whole_layers(sizes: list[int], at: int) -> None:
    files = [(f"d/f{i}.bin", n) for i, n in enumerate(sizes)]
    at = min(at, len(files) - 1)
    whole = ModelcarHasher(files)
    first = ModelcarHasher(files, _new())
    for i, (path, n) in enumerate(files):
        body = bytes([i]) * n
        for h in (whole, first) if i <= at else (whole,):
            h.start(path)
            h.update(body)
            h.end(n)
    resumed = ModelcarHasher(files, _new())
    assert resumed.resume_after(files[at][0]) == first.hashed
    assert resumed.sha.restore(first.sha.save(), first.hashed)
    for i, (path, n) in enumerate(files[at + 1:], start=at + 1):
        resumed.start(path)
        resumed.update(bytes([i]) * n)
        resumed.end(n)
    assert resumed.digest() == whole.digest()


@pytest.mark.parametrize("md_len", [0, 28, 64])
def test_a_saved_state_of_another_digest_length_is_not_restored(md_len: int) -> None:
    """A damaged hub state whose SHA256_CTX.md_len is not 32 would make SHA256_Final write a
    short (SHA-224's 28 bytes) or no digest: a wrong sha256 the hub would sign. Refused."""
    import struct

    first = _new()
    first.update(b"x" * 100)
    tag, _, hexed = first.save().rpartition(":")
    raw = bytearray(bytes.fromhex(hexed))
    struct.pack_into("=I", raw, 108, md_len)
    second = _new()
    assert not second.restore(f"{tag}:{raw.hex()}", 100)
    second.update(b"y")
    assert second.hexdigest() == hashlib.sha256(b"y").hexdigest()  # unchanged: a fresh hash
