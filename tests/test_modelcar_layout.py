"""The modelcar layer's layout (issue #14, publishing cost): every file's data on a 4 KiB
boundary in a standard tar, hashed while staging writes the files, and cloned (reflink) from
the model store where the file system allows, else copied in the kernel or through a buffer."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from importer.apply import modelpack
from importer.run import ImportOptions, run_import
from manifests.progress import Silent
from importer.apply.modelpack import StagingHasher, modelcar_chunks, publish_model, scan_model
from manifests.errors import FormatError
from manifests.modelpack import (MODELCAR_ALIGN, TAR_END, ModelFile, aligned_file_header, modelcar_layer_size,
                                 modelcar_plan, pax_record)
from tests.support.bundles import model as bundle_model, write_bundle
from tests.support.common import SAMPLES, KeyPair
from tests.support.registry import unpack_image

SAMPLE = SAMPLES / "models" / "sentiment"


def _fill(path: str, size: int) -> bytes:
    seed = hashlib.sha256(path.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def _layer(files: list[ModelFile]) -> bytes:
    """The layer as modelcar_plan lays it out, with each file's bytes from _fill."""
    out = bytearray()
    for m in modelcar_plan(files):
        assert m.offset == len(out)
        out += m.header
        if m.file is not None:
            out += _fill(m.file.path, m.size)
        out += bytes(m.padding)
    return bytes(out + TAR_END)


_segment = st.text(alphabet=st.sampled_from("abcXYZ019._-é"), min_size=1, max_size=40).filter(
    lambda s: s not in (".", ".."))
_paths = st.lists(st.lists(_segment, min_size=1, max_size=4).map("/".join), min_size=1, max_size=6, unique=True)


@settings(max_examples=60, deadline=None)
@given(paths=_paths, sizes=st.lists(st.integers(0, 3 * MODELCAR_ALIGN + 7), min_size=6, max_size=6))
def test_the_layer_is_a_standard_tar_with_file_data_on_4k_boundaries(paths: list[str], sizes: list[int]) -> None:
    # a path that is also a folder of another path cannot be a file: drop such prefixes
    paths = [p for p in paths if not any(q.startswith(p + "/") for q in paths)]
    files = [ModelFile(p, sizes[i], "") for i, p in enumerate(paths)]
    layer = _layer(files)
    assert len(layer) == modelcar_layer_size(files)
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for f in files:
            m = members[f"models/{f.path}"]
            assert m.isreg() and m.size == f.size and m.mode == 0o644 and (m.uid, m.gid) == (0, 0)
            assert m.offset_data % MODELCAR_ALIGN == 0
            got = tar.extractfile(m)
            assert got is not None and got.read() == _fill(f.path, f.size)
        folders = {n for n, m in members.items() if m.isdir()}
        assert folders == {"models"} | {"models/" + "/".join(f.path.split("/")[:i])
                                        for f in files for i in range(1, f.path.count("/") + 1)}


@given(at=st.integers(0, 64).map(lambda k: k * 512), name_len=st.integers(1, 1200), size=st.integers(0, 1 << 40))
def test_every_start_and_name_length_aligns(at: int, name_len: int, size: int) -> None:
    # record lengths cross 100 and 1000 (a record cannot be exactly 100 or 1000 bytes long)
    header = aligned_file_header("models/" + "n" * name_len, size, at)
    assert len(header) % 512 == 0 and (at + len(header)) % MODELCAR_ALIGN == 0
    with tarfile.open(fileobj=io.BytesIO(header + bytes(1024)), mode="r:") as tar:
        info = tar.next()
        assert info is not None and info.name == "models/" + "n" * name_len and info.size == size


def test_pax_records_count_their_own_length() -> None:
    for value in ("", "x" * 85, "x" * 86, "x" * 87, "x" * 984, "é" * 40):
        rec = pax_record("comment", value)
        length, _, rest = rec.partition(b" ")
        assert int(length) == len(rec) and rest == f"comment={value}\n".encode()
    with pytest.raises(FormatError):
        aligned_file_header("models/a", 1, 100)


def test_gnu_tar_lists_and_extracts_the_layer(tmp_path: Path) -> None:
    files = [ModelFile("model.safetensors", 3 * MODELCAR_ALIGN + 5, ""), ModelFile("sub/" + "t" * 180, 700, ""),
             ModelFile("empty", 0, "")]
    (tmp_path / "layer.tar").write_bytes(_layer(files))
    (tmp_path / "out").mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "layer.tar"), "-C", str(tmp_path / "out")], check=True)
    for f in files:
        assert (tmp_path / "out" / "models" / f.path).read_bytes() == _fill(f.path, f.size)


# --------------------------------------------------------------------------- hashing while staging


def _model(tmp_path: Path) -> Path:
    folder = tmp_path / "m"
    shutil.copytree(SAMPLE, folder)
    (folder / "docs").mkdir()
    (folder / "docs" / "README.md").write_text("# m\n")
    (folder / "big.bin").write_bytes(os.urandom(5 * MODELCAR_ALIGN + 123))
    return folder


def _files(folder: Path) -> list[tuple[str, int]]:
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def _feed(hasher: StagingHasher, folder: Path, order: list[tuple[str, int]]) -> None:
    for path, size in order:
        hasher.start(path)
        data = (folder / path).read_bytes()
        for i in range(0, len(data), 1000):
            hasher.update(data[i:i + 1000])
        hasher.end(path, size)


def _stream_digest(folder: Path) -> str:
    files, _ = scan_model(folder)
    sha = hashlib.sha256()
    for data in modelcar_chunks(folder, files):
        sha.update(data)
    return "sha256:" + sha.hexdigest()


def test_staging_hashes_each_file_and_the_layer_in_one_pass(tmp_path: Path) -> None:
    folder = _model(tmp_path)
    files = _files(folder)
    hasher = StagingHasher(files)
    _feed(hasher, folder, files)
    got = hasher.close()
    want = {p: (n, "sha256:" + hashlib.sha256((folder / p).read_bytes()).hexdigest()) for p, n in files}
    assert got.files == want
    assert got.layer == _stream_digest(folder) and got.layer_files == tuple(files)
    # published with what staging knew: the same artifacts as publishing from the files alone
    with_digests = publish_model(folder, "m", "1.0.0", layout=tmp_path / "a", digests=got)
    alone = publish_model(folder, "m", "1.0.0", layout=tmp_path / "b")
    assert (with_digests.digest, with_digests.modelcar_digest) == (alone.digest, alone.modelcar_digest)
    assert with_digests.modelcar_digest is not None
    blob = tmp_path / "a" / "blobs" / "sha256"
    manifest = (blob / with_digests.modelcar_digest.split(":")[1]).read_text()
    assert got.layer.split(":")[1] in manifest
    assert "sha256:" + hashlib.sha256((blob / got.layer.split(":")[1]).read_bytes()).hexdigest() == got.layer


def test_a_resumed_or_reordered_staging_leaves_the_layer_to_publishing(tmp_path: Path) -> None:
    folder = _model(tmp_path)
    files = _files(folder)
    skipped = StagingHasher(files)  # the first file was staged by an interrupted run
    _feed(skipped, folder, files[1:])
    got = skipped.close()
    assert got.layer is None and set(got.files) == {p for p, _ in files[1:]}
    reordered = StagingHasher(files)
    _feed(reordered, folder, list(reversed(files)))
    got = reordered.close()
    assert got.layer is None and set(got.files) == {p for p, _ in files}
    unfinished = StagingHasher(files)  # a file whose bytes did not verify never ends
    unfinished.start(files[0][0])
    unfinished.update(b"x" * 10)
    got = unfinished.close()
    assert got.layer is None and got.files == {}
    # publishing then hashes what it lacks: the same digests
    published = publish_model(folder, "m", "1.0.0", layout=tmp_path / "a", digests=got)
    assert published.modelcar_digest == publish_model(folder, "m", "1.0.0", layout=tmp_path / "b").modelcar_digest


# --------------------------------------------------------------------------- cloned, or copied


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":")[1]


def _layer_digest(layout: Path, car_manifest_digest: str) -> str:
    import json

    return str(json.loads(_blob(layout, car_manifest_digest).read_text())["layers"][0]["digest"])


def test_copy_fallbacks_write_the_same_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _model(tmp_path)
    total = sum(n for _, n in _files(folder))
    first = publish_model(folder, "m", "1.0.0", layout=tmp_path / "a")
    assert first.cloned + first.copied == total and first.cloned % MODELCAR_ALIGN == 0
    assert first.modelcar_digest is not None

    def no_clone(*a: object) -> bool:
        return False

    def no_kernel_copy(*a: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(modelpack, "clone_range", no_clone)
    monkeypatch.setattr(os, "copy_file_range", no_kernel_copy)
    buffered = publish_model(folder, "m", "1.0.0", layout=tmp_path / "b")
    assert (buffered.cloned, buffered.copied) == (0, total)
    assert buffered.modelcar_digest == first.modelcar_digest
    layer = _layer_digest(tmp_path / "b", buffered.modelcar_digest or "")
    data = _blob(tmp_path / "b", layer).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == layer == _stream_digest(folder)
    # published again: the layer is there, nothing is copied
    again = publish_model(folder, "m", "1.0.0", layout=tmp_path / "b", digests=_staged(folder))
    assert (again.cloned, again.copied, again.modelcar_digest) == (0, 0, first.modelcar_digest)


def _staged(folder: Path) -> modelpack.StagedDigests:
    hasher = StagingHasher(_files(folder))
    _feed(hasher, folder, _files(folder))
    return hasher.close()


#: File systems with reflinks, and how to make one (Debian: xfsprogs, btrfs-progs).
MKFS = {"xfs": ["mkfs.xfs", "-q", "-m", "reflink=1"], "btrfs": ["mkfs.btrfs", "-q"]}


@pytest.fixture(params=sorted(MKFS))
def reflink_fs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A fresh XFS or btrfs file system, loop-mounted under tmp_path (root only; skipped where
    the test cannot make or mount one, e.g. a container without loop devices)."""
    mkfs = MKFS[request.param]
    if os.geteuid() != 0:
        pytest.skip("not root: cannot loop-mount a file system image")
    if shutil.which(mkfs[0]) is None:
        pytest.skip(f"{mkfs[0]} missing (Debian packages xfsprogs, btrfs-progs)")
    image, mnt = tmp_path / f"{request.param}.img", tmp_path / request.param
    with open(image, "wb") as f:
        f.truncate(512 << 20)
    subprocess.run([*mkfs, str(image)], check=True, capture_output=True)
    mnt.mkdir()
    done = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot loop-mount here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _used(mnt: Path) -> int:
    os.sync()
    st = os.statvfs(mnt)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_with_reflinks_the_modelcar_shares_the_model_stores_blocks(reflink_fs: Path, tmp_path: Path) -> None:
    folder = reflink_fs / "models" / "m" / "1.0.0"
    folder.parent.mkdir(parents=True)
    shutil.copytree(_model(tmp_path), folder)
    (folder / "model-2.safetensors").write_bytes(os.urandom(64 << 20))
    total = sum(n for _, n in _files(folder))
    before = _used(reflink_fs)
    published = publish_model(folder, "m", "1.0.0", layout=reflink_fs / "oci", digests=_staged(folder))
    added = _used(reflink_fs) - before
    assert published.linked == len(_files(folder))
    unaligned = sum(n % MODELCAR_ALIGN for _, n in _files(folder))
    assert (published.cloned, published.copied) == (total - unaligned, unaligned)
    # no model bytes added: the ModelPack layers are hard links, the modelcar's data is
    # reflinked; what is added is headers, each file's last block, the small blobs and metadata
    assert added < total // 20, f"publishing a {total}-byte model added {added} bytes"
    # and it is a modelcar skopeo copies and umoci unpacks to the same files
    root = unpack_image(f"oci:{reflink_fs / 'oci'}:models/m:1.0.0-modelcar", tmp_path / "work") / "models"
    assert {p: (root / p).read_bytes() for p, _ in _files(folder)} == \
        {p: (folder / p).read_bytes() for p, _ in _files(folder)}


# --------------------------------------------------------------------------- at import


def test_an_import_publishes_from_what_staging_hashed(tmp_path: Path, hub_keys: KeyPair,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A real import (chunks of 64 KiB, a file with zero chunks written as holes, folders):
    publishing gets every file's sha256 and the layer's from staging and reads no model file
    for them, and what it publishes is right (each blob hashes to its name; skopeo and umoci
    read the modelcar back as the files)."""
    files = {"model.safetensors": os.urandom(200_000) + bytes(300_000) + os.urandom(7),
             "sub/tokenizer.json": b'{"v": 1}', "README.md": b"# m\n", "a/b/c.bin": os.urandom(4096 * 3)}
    write_bundle(tmp_path / "b", [hub_keys.key], [bundle_model("m", "1.0.0", files)])
    seen: list[modelpack.StagedDigests | None] = []
    real = modelpack.publish_model

    def spy(*args: object, **kwargs: object) -> modelpack.Published:
        seen.append(kwargs.get("digests"))  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    def no_reading(*args: object) -> Iterator[bytes]:
        raise AssertionError("publishing read the files to hash the modelcar layer")

    monkeypatch.setattr(modelpack, "publish_model", spy)
    monkeypatch.setattr(modelpack, "modelcar_chunks", no_reading)
    state = tmp_path / "edge"
    run_import(ImportOptions(paths=[tmp_path / "b"], trust=[hub_keys.pub], state=state), Silent())
    (digests,) = seen
    assert digests is not None and digests.layer is not None
    assert digests.files == {p: (len(b), "sha256:" + hashlib.sha256(b).hexdigest()) for p, b in files.items()}
    blobs = state / "oci" / "blobs" / "sha256"
    for blob in blobs.iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    assert (blobs / digests.layer.split(":")[1]).is_file()
    root = unpack_image(f"oci:{state / 'oci'}:models/m:1.0.0-modelcar", tmp_path / "work") / "models"
    assert {p: (root / p).read_bytes() for p in files} == files
