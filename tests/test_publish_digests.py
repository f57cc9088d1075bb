"""The publishing digests (format 1.3, docs/bundle-format.md 3.2.3, issue #14): the hub signs
each model file's sha256 and the modelcar layer's; the edge publishes with them without
hashing; ``ferry verify`` checks the files' in full; bundles without them import as before."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sqlite3
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from importer.apply import modelpack
from importer.run import ImportOptions, run_import
from manifests import PUBLISH_FORMAT_VERSION
from manifests.errors import FormatError
from manifests.model import Artifact, Entry, Manifest
from manifests.modelpack import TAR_END, ModelcarHasher, ModelFile, modelcar_plan
from manifests.progress import Silent
from tests.support.bundles import model as bundle_model, write_bundle
from tests.support.common import KeyPair
from tests.support.registry import unpack_image

SHA_RE = re.compile(r"sha256:[0-9a-f]{64}")
B3 = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"  # BLAKE3 of b""


def _entry(**fields: Any) -> dict[str, Any]:
    return {"path": "w.bin", "size": 0, "blake3": B3, "chunks": [], **fields}


# --------------------------------------------------------------------------- the parser

_digests = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex()),
    st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex().upper()),
    st.binary(min_size=32, max_size=32).map(lambda b: "sha512:" + b.hex()),
    st.binary(min_size=32, max_size=32).map(lambda b: b.hex()),
    st.binary(min_size=1, max_size=40).map(lambda b: "sha256:" + b.hex()),
    st.text(max_size=80),
    st.integers(), st.none(),
)


@settings(max_examples=300, deadline=None)
@given(value=_digests)
def test_a_file_sha256_is_accepted_exactly_when_well_formed(value: object) -> None:
    raw = _entry(sha256=value)
    if value is None:
        assert Entry.from_dict(raw, "f").sha256 is None
    elif isinstance(value, str) and SHA_RE.fullmatch(value):
        entry = Entry.from_dict(raw, "f")
        assert entry.sha256 == value and entry.to_dict() == raw  # it round-trips
    else:
        with pytest.raises(FormatError, match="sha256"):
            Entry.from_dict(raw, "f")


@settings(max_examples=300, deadline=None)
@given(value=_digests)
def test_a_modelcar_digest_is_accepted_exactly_when_well_formed(value: object) -> None:
    raw = {"kind": "model", "name": "m", "version": "1.0.0", "modelcar": value,
           "files": [_entry(sha256="sha256:" + "0" * 64)]}
    if value is None:
        assert Artifact.from_dict(raw, "a").modelcar is None
    elif isinstance(value, str) and SHA_RE.fullmatch(value):
        artifact = Artifact.from_dict(raw, "a")
        assert artifact.modelcar == value and artifact.publish_digests and artifact.to_dict() == raw
    else:
        with pytest.raises(FormatError, match="modelcar"):
            Artifact.from_dict(raw, "a")


def test_publishing_digests_belong_to_models_whose_files_all_have_them() -> None:
    good = "sha256:" + "ab" * 32
    with pytest.raises(FormatError, match="not every file has its sha256"):
        Artifact.from_dict({"kind": "model", "name": "m", "version": "1.0.0", "modelcar": good,
                            "files": [_entry(sha256=good), _entry(path="b.bin")]}, "a")
    with pytest.raises(FormatError, match="only model files"):
        Artifact.from_dict({"kind": "manifests", "name": "m", "version": "1.0.0", "files": [_entry(sha256=good)]}, "a")
    with pytest.raises(FormatError, match="only models"):
        Artifact.from_dict({"kind": "manifests", "name": "m", "version": "1.0.0", "modelcar": good,
                            "files": [_entry()]}, "a")
    with pytest.raises(FormatError, match="blob"):
        Entry.from_dict({"digest": good, "mediaType": "a/b", "size": 0, "blake3": B3, "chunks": [],
                         "sha256": good}, "b")
    # some files without: allowed (publishing hashes those), no modelcar then
    partial = Artifact.from_dict({"kind": "model", "name": "m", "version": "1.0.0",
                                  "files": [_entry(sha256=good), _entry(path="b.bin")]}, "a")
    assert not partial.publish_digests and modelpack.signed_digests(partial) is None


# --------------------------------------------------------------------------- the layer's hash


def _fill(path: str, size: int) -> bytes:
    seed = hashlib.sha256(path.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


_segment = st.text(alphabet=st.sampled_from("abcXYZ019._-"), min_size=1, max_size=20).filter(
    lambda s: s not in (".", ".."))
_paths = st.lists(st.lists(_segment, min_size=1, max_size=3).map("/".join), min_size=0, max_size=5, unique=True)


@settings(max_examples=80, deadline=None)
@given(paths=_paths, sizes=st.lists(st.integers(0, 9000), min_size=5, max_size=5))
def test_the_layer_hash_is_that_of_the_planned_tar(paths: list[str], sizes: list[int]) -> None:
    paths = [p for p in paths if not any(q.startswith(p + "/") for q in paths)]
    files = [(p, sizes[i]) for i, p in enumerate(paths)]
    layer = bytearray()
    for m in modelcar_plan([ModelFile(p, n, "") for p, n in files]):
        layer += m.header + (_fill(m.file.path, m.size) if m.file else b"") + bytes(m.padding)
    layer += TAR_END
    hasher = ModelcarHasher(files)
    for path, size in sorted(files):
        hasher.start(path)
        data = _fill(path, size)
        hasher.update(data[:size // 2])
        hasher.update(data[size // 2:])
        hasher.end(size)
    assert hasher.digest() == "sha256:" + hashlib.sha256(layer).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(bytes(layer))) as tar:  # and it is a tar of the files
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()} == \
            {f"models/{p}": _fill(p, n) for p, n in files}  # type: ignore[union-attr]


def test_the_layer_hash_refuses_files_out_of_order_or_missing() -> None:
    hasher = ModelcarHasher([("a.bin", 1), ("b.bin", 2)])
    with pytest.raises(FormatError, match="out of modelcar layer order"):
        hasher.start("b.bin")
    hasher = ModelcarHasher([("a.bin", 1), ("b.bin", 2)])
    hasher.start("a.bin")
    hasher.update(b"x")
    with pytest.raises(FormatError, match="2 bytes|1 bytes"):
        hasher.end(2)
    hasher = ModelcarHasher([("a.bin", 1), ("b.bin", 2)])
    hasher.start("a.bin")
    hasher.update(b"x")
    hasher.end(1)
    with pytest.raises(FormatError, match="every file"):
        hasher.digest()


# --------------------------------------------------------------------------- at the hub


def _ferry(*args: object) -> subprocess.CompletedProcess[str]:
    import sys
    return subprocess.run([sys.executable, "-m", "ferry", *map(str, args)], capture_output=True, text=True,
                          check=False)


def _layer_of(folder: Path) -> str:
    """The modelcar layer's digest, read from the folder by the edge's publishing code."""
    files, _ = modelpack.scan_model(folder)
    return "sha256:" + hashlib.sha256(b"".join(modelpack.modelcar_chunks(folder, files))).hexdigest()


@pytest.fixture()
def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    for path, data in {"z-last.safetensors": bytes(8) + b"{}" + hashlib.sha256(b"w").digest() * 4000,
                       "config.json": b'{"layers": 2}', "tokenizer/vocab.txt": b"a\nb\n" * 3000,
                       "A-upper.bin": b"\x01" * 70_000, "empty.txt": b""}.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    return folder


def _export(tmp_path: Path, folder: Path, keys: KeyPair, out: str) -> dict[str, Any]:
    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata:\n  name: m\nspec:\n  models:\n"
                    f"    - name: m\n      version: 1.0.0\n      path: {folder}\n")
    done = _ferry("export", spec, "--out", tmp_path / out, "--key", keys.key, "--state", tmp_path / "hub")
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / out / "manifest.json").read_bytes())


def _model(manifest: dict[str, Any]) -> dict[str, Any]:
    (model,) = [a for a in manifest["artifacts"] if a["kind"] == "model"]
    return model


def test_export_records_each_files_sha256_and_the_modelcar_digest(tmp_path: Path, hub_keys: KeyPair,
                                                                  model_folder: Path) -> None:
    """What the hub signs is what the edge would compute from the files; so on a second
    export from the chunk cache, and with the hub's digest cache emptied (a hub state from
    before 1.3: the files are read again) or holding the files' but not the layer's."""
    expect = {p.relative_to(model_folder).as_posix(): "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
              for p in model_folder.rglob("*") if p.is_file()}
    layer = _layer_of(model_folder)
    first = _export(tmp_path, model_folder, hub_keys, "b1")
    assert first["formatVersion"] == PUBLISH_FORMAT_VERSION
    assert {f["path"]: f["sha256"] for f in _model(first)["files"]} == expect
    assert _model(first)["modelcar"] == layer
    assert _model(_export(tmp_path, model_folder, hub_keys, "b2")) == _model(first)  # all from the caches
    db = sqlite3.connect(tmp_path / "hub" / "chunk-cache.sqlite")
    with db:
        db.execute("DELETE FROM digests WHERE key LIKE 'modelcar:%'")
    assert _model(_export(tmp_path, model_folder, hub_keys, "b3")) == _model(first)  # the layer read again
    with db:
        db.execute("DELETE FROM digests")
    db.close()
    assert _model(_export(tmp_path, model_folder, hub_keys, "b4")) == _model(first)  # the files cut afresh
    assert Manifest.from_bytes((tmp_path / "b4" / "manifest.json").read_bytes()).artifacts[0].publish_digests


@pytest.mark.parametrize("threads", [1, 2])
@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=9000), min_size=1, max_size=4),
       step=st.integers(min_value=1, max_value=5000), resume_at=st.integers(min_value=-1, max_value=3))
def test_the_hubs_hashing_threads_give_hashlibs_digests(threads: int, sizes: list[int], step: int,
                                                       resume_at: int) -> None:
    """ModelDigests fed window views (one window, written again after each settle) on one
    thread or two, from the start or resumed from a layer state saved after a file."""
    import mmap

    from bundler import modeldigests

    files = [(f"m/f{i}.bin", n) for i, n in enumerate(sizes)]
    bodies = {p: bytes((i * 7 + j) % 251 for j in range(n)) for i, (p, n) in enumerate(files)}
    layer = ModelcarHasher(files)
    for p, n in files:
        layer.start(p)
        layer.update(bodies[p])
        layer.end(n)
    resume = None
    resume_at = min(resume_at, len(files) - 1)
    if resume_at >= 0:
        saver = ModelcarHasher(files, modeldigests.sha256state.resumable())
        if not isinstance(saver.sha, modeldigests.sha256state.Sha256):
            return  # no libcrypto here: nothing to resume from
        for p, n in files[:resume_at + 1]:
            saver.start(p)
            saver.update(bodies[p])
            saver.end(n)
        resume = (files[resume_at][0], saver.sha.save())
    digests = modeldigests.ModelDigests(files, threads, resume)
    window = mmap.mmap(-1, 5000)
    for i, (p, n) in enumerate(files):
        if i <= resume_at:
            digests.known(p, "sha256:" + hashlib.sha256(bodies[p]).hexdigest(), in_layer=True)
            continue
        digests.start(p)
        for at in range(0, n, step):
            digests.settle()  # before the window is written again
            part = bodies[p][at:at + step]
            window[:len(part)] = part
            digests.update(memoryview(window)[:len(part)])
        digests.end(p, n)
    got, modelcar = digests.close()
    assert got == {p: "sha256:" + hashlib.sha256(b).hexdigest() for p, b in bodies.items()}
    assert modelcar == layer.digest()


def test_a_file_rewritten_in_place_with_its_mtime_set_back_is_hashed_again(tmp_path: Path, hub_keys: KeyPair,
                                                                          model_folder: Path) -> None:
    """The hub signs the sha256 it remembers for a file version: a file rewritten with the
    same size, in place (same inode), its mtime set back (``touch -d``, ``rsync -t``) is
    another version (its ctime moved), so the next export signs the new content's digests."""
    first = _model(_export(tmp_path, model_folder, hub_keys, "b1"))
    path = model_folder / "A-upper.bin"
    before = path.stat()
    with open(path, "r+b") as f:
        f.write(b"\x02" * before.st_size)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    second = _model(_export(tmp_path, model_folder, hub_keys, "b2"))
    files = {f["path"]: f["sha256"] for f in second["files"]}
    assert files["A-upper.bin"] == "sha256:" + hashlib.sha256(b"\x02" * before.st_size).hexdigest()
    assert files["A-upper.bin"] != {f["path"]: f["sha256"] for f in first["files"]}["A-upper.bin"]
    assert second["modelcar"] == _layer_of(model_folder) != first["modelcar"]


# --------------------------------------------------------------------------- at the edge


def test_import_publishes_with_the_signed_digests_without_hashing(tmp_path: Path, hub_keys: KeyPair,
                                                                  model_folder: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With the digests in the signed manifest, staging starts no hasher and publishing reads
    no file to hash it (safetensors headers aside); what is published is right and pulls back
    as the files."""
    _export(tmp_path, model_folder, hub_keys, "b")

    def no_hasher(*args: object, **kwargs: object) -> None:
        raise AssertionError("staging hashed a model whose digests the manifest carries")

    def no_reading(*args: object) -> Iterator[bytes]:
        raise AssertionError("publishing read the files to hash the modelcar layer")

    real_sha = hashlib.sha256
    hashed: list[str] = []

    class Counting:
        def __init__(self, data: bytes = b"") -> None:
            self._h = real_sha(data)

        def update(self, data: bytes) -> None:
            hashed.append("x")
            self._h.update(data)

        def hexdigest(self) -> str:
            return self._h.hexdigest()

    monkeypatch.setattr(modelpack, "StagingHasher", no_hasher)
    monkeypatch.setattr(modelpack, "modelcar_chunks", no_reading)
    monkeypatch.setattr(modelpack.hashlib, "sha256", Counting)  # publishing's own file hashing
    state = tmp_path / "edge"
    run_import(ImportOptions(paths=[tmp_path / "b"], trust=[hub_keys.pub], state=state), Silent())
    assert hashed == []  # no model file hashed by publishing (configs and manifests are hashed in one call)
    monkeypatch.undo()
    blobs = state / "oci" / "blobs" / "sha256"
    for blob in blobs.iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    root = unpack_image(f"oci:{state / 'oci'}:models/m:1.0.0-modelcar", tmp_path / "work") / "models"
    assert {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()} == \
        {p.relative_to(model_folder).as_posix(): p.read_bytes() for p in model_folder.rglob("*") if p.is_file()}


def test_a_bundle_without_the_digests_still_imports_and_publishes(tmp_path: Path, hub_keys: KeyPair) -> None:
    """A 1.1 bundle (no sha256, no modelcar): staging hashes, publishing is right."""
    files = {"w.bin": b"\x07" * 100_000, "config.json": b"{}"}
    manifest = write_bundle(tmp_path / "b", [hub_keys.key], [bundle_model("m", "1.0.0", files)])
    assert not manifest.artifacts[0].publish_digests
    state = tmp_path / "edge"
    run_import(ImportOptions(paths=[tmp_path / "b"], trust=[hub_keys.pub], state=state), Silent())
    index = json.loads((state / "oci" / "index.json").read_bytes())
    tags = {m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]}
    assert {"models/m:1.0.0", "models/m:1.0.0-modelcar"} <= tags
    for path, data in files.items():
        assert (state / "oci" / "blobs" / "sha256" / hashlib.sha256(data).hexdigest()).read_bytes() == data


def test_verify_refuses_a_file_whose_signed_sha256_is_wrong(tmp_path: Path, hub_keys: KeyPair,
                                                             model_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub that signs a wrong sha256 (simulated: the export's hashing thread reports
    another value for one file) makes a bundle that ``ferry verify`` refuses, naming the file."""
    from bundler import modeldigests

    real_end = modeldigests.ModelDigests._end

    def wrong_end(self: modeldigests.ModelDigests, path: str, size: int) -> None:
        real_end(self, path, size)
        if path == "config.json":
            self.files[path] = "sha256:" + "0" * 64

    monkeypatch.setattr(modeldigests.ModelDigests, "_end", wrong_end)
    from bundler.export import ExportOptions, export
    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata:\n  name: m\nspec:\n  models:\n"
                    f"    - name: m\n      version: 1.0.0\n      path: {model_folder}\n")
    export(ExportOptions(spec=spec, out=tmp_path / "b", keys=(hub_keys.key,), state=tmp_path / "hub"), Silent())
    done = _ferry("verify", tmp_path / "b", "--trust", hub_keys.pub)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "config.json" in done.stdout + done.stderr and "sha256" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


_long_segment = st.text(alphabet=st.sampled_from("abé漢09._-"), min_size=1, max_size=120).filter(
    lambda s: s not in (".", ".."))


@settings(max_examples=60, deadline=None)
@given(paths=st.lists(st.lists(_long_segment, min_size=1, max_size=3).map("/".join), min_size=0, max_size=4,
                      unique=True),
       sizes=st.lists(st.integers(0, 9000), min_size=4, max_size=4))
def test_the_conformance_writer_lays_out_the_same_modelcar_layer(paths: list[str], sizes: list[int]) -> None:
    """The conformance suite's second writer (conformance/generate.py, from the format
    document alone) and ferry's modelcar_plan give the same layer bytes: the layout that
    format 1.3 makes part of the format has two independent implementations that agree."""
    from conformance.generate import modelcar_layer

    paths = [p for p in paths if not any(q.startswith(p + "/") for q in paths)]
    files = {p: _fill(p, sizes[i]) for i, p in enumerate(paths)}
    layer = bytearray()
    for m in modelcar_plan([ModelFile(p, len(d), "") for p, d in files.items()]):
        layer += m.header + (files[m.file.path] if m.file else b"") + bytes(m.padding)
    assert modelcar_layer(files) == bytes(layer + TAR_END)


def test_a_cached_file_rewritten_while_its_layer_bytes_are_read_is_refused(tmp_path: Path, hub_keys: KeyPair,
                                                                           model_folder: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached (unchanged) file is read again only for the modelcar layer's hash, and those
    bytes are not checked against its cached BLAKE3. A writer that changes the file while the
    hub reads it, and puts it back before its chunks are read, must not get a modelcar digest
    signed (and cached) that is not the layer of the bytes shipped: the export is refused,
    and the next one signs the right digest."""
    from bundler import modeldigests
    from bundler.export import ExportOptions, export
    from manifests.errors import PlaceError

    _export(tmp_path, model_folder, hub_keys, "b1")
    db = sqlite3.connect(tmp_path / "hub" / "chunk-cache.sqlite")
    with db:  # the files' digests cached, not the layer's: the export reads the files for it
        db.execute("DELETE FROM digests WHERE key LIKE 'modelcar:%'")
    db.close()
    path = model_folder / "A-upper.bin"
    original = path.read_bytes()
    real_read = modeldigests.ModelDigests.read_file

    def racing_read(self: modeldigests.ModelDigests, name: str, *args: Any, **kwargs: Any) -> None:
        if name != "A-upper.bin":
            return real_read(self, name, *args, **kwargs)
        path.write_bytes(b"\x02" * len(original))  # same size, in place
        try:
            return real_read(self, name, *args, **kwargs)
        finally:
            path.write_bytes(original)

    monkeypatch.setattr(modeldigests.ModelDigests, "read_file", racing_read)
    spec = tmp_path / "spec.yaml"
    with pytest.raises(PlaceError, match="A-upper.bin changed while exporting") as refused:
        export(ExportOptions(spec=spec, out=tmp_path / "b2", keys=(hub_keys.key,), state=tmp_path / "hub"), Silent())
    assert refused.value.place == "source"
    monkeypatch.undo()
    assert _model(_export(tmp_path, model_folder, hub_keys, "b3"))["modelcar"] == _layer_of(model_folder)


@pytest.mark.parametrize("damage", ["garbage", "sha256:" + "AB" * 32, "sha256:" + "ab" * 32 + "\n", "", "NULL", "x'00'"])
def test_a_damaged_digest_cache_row_is_hashed_again_not_signed(tmp_path: Path, hub_keys: KeyPair, model_folder: Path,
                                                               damage: str) -> None:
    """The hub signs the sha256 values its digest cache holds: a damaged row (not
    ``sha256:<64 lowercase hex>``) was signed as it was, and every edge refused the bundle
    ("files[0].sha256 'garbage' is not sha256:<64 lowercase hex>"). It is hashed again."""
    first = _model(_export(tmp_path, model_folder, hub_keys, "b1"))
    db = sqlite3.connect(tmp_path / "hub" / "chunk-cache.sqlite")
    value = damage if damage in ("NULL", "x'00'") else "'" + damage + "'"
    with db:
        db.execute(f"UPDATE digests SET sha256={value} WHERE key LIKE 'blake3:%' OR key LIKE 'modelcar:%'")
    db.close()
    assert _model(_export(tmp_path, model_folder, hub_keys, "b2")) == first
    done = _ferry("verify", tmp_path / "b2", "--trust", hub_keys.pub)
    assert done.returncode == 0, done.stdout + done.stderr
