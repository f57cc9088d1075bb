"""Models as OCI artifacts: the ModelPack form and the modelcar image, checked with skopeo,
umoci and the real registry; and pulled through ``ferry serve``."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from importer.apply.modelpack import publish_model, repository_for, scan_model, tag_for
from manifests.errors import FormatError, PlaceError
from manifests.modelpack import (CODE, DOC, FILEPATH, MODEL_CONFIG, MODEL_MANIFEST, WEIGHT, WEIGHT_CONFIG,
                                 ModelFile, layer_media_type, modelcar_entries, modelpack_manifest, param_size,
                                 safetensors_facts)
from transport.registry import RegistryClient
from tests.support.common import SAMPLES
from tests.support.registry import Registry

SAMPLE = SAMPLES / "models" / "sentiment"


def sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def run(*cmd: str) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(list(cmd), capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """The sample model as the model store holds a version, with a sub-folder and a README."""
    folder = tmp_path / "models" / "sentiment" / "1.2.0"
    shutil.copytree(SAMPLE, folder)
    (folder / "docs").mkdir()
    (folder / "docs" / "README.md").write_text("# sentiment\n")
    return folder


# --------------------------------------------------------------------------- pure rules


def test_layer_media_type_rule() -> None:
    assert layer_media_type("model.safetensors") == WEIGHT
    assert layer_media_type("shards/model-00001-of-00002.gguf") == WEIGHT
    assert layer_media_type("pytorch_model.bin") == WEIGHT
    assert layer_media_type("config.json") == WEIGHT_CONFIG
    assert layer_media_type("tokenizer.json") == WEIGHT_CONFIG
    assert layer_media_type("vocab.txt") == WEIGHT_CONFIG
    assert layer_media_type("README.md") == DOC
    assert layer_media_type("LICENSE") == DOC
    assert layer_media_type("docs/usage.rst") == DOC
    assert layer_media_type("modeling_sentiment.py") == CODE


@given(st.integers(0, 10 ** 18))
def test_param_size_follows_the_spec_grammar(count: int) -> None:
    text = param_size(count)
    assert re.match(r"^[0-9]+(\.[0-9])?[KMBTQ]$", text), text
    scale = {"K": 10 ** 3, "M": 10 ** 6, "B": 10 ** 9, "T": 10 ** 12, "Q": 10 ** 15}[text[-1]]
    assert abs(float(text[:-1]) * scale - max(count, 1000)) <= 0.05 * scale + 1


def test_param_size_examples() -> None:
    assert [param_size(n) for n in (6_700_000_000, 100_000_000, 147_840, 10 ** 12)] == ["6.7B", "100M", "147.8K", "1T"]


def test_safetensors_facts_of_the_sample() -> None:
    data = (SAMPLE / "model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    expected = sum(
        __import__("math").prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    assert safetensors_facts(data[8:8 + length]) == (expected, "fp16")
    with pytest.raises(FormatError):
        safetensors_facts(b'{"w": {"dtype": "F16"}}')


@given(st.lists(st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8}){0,2}\.(bin|json|md)", fullmatch=True),
                min_size=1, max_size=8, unique=True))
def test_manifest_has_one_layer_per_file_with_its_digest(paths: list[str]) -> None:
    files = [ModelFile(p, i, "sha256:" + hashlib.sha256(p.encode()).hexdigest()) for i, p in enumerate(paths)]
    doc = json.loads(modelpack_manifest(b"{}", "sha256:" + "0" * 64, files))
    assert doc["artifactType"] == MODEL_MANIFEST and doc["config"]["mediaType"] == MODEL_CONFIG
    assert sorted((d["annotations"][FILEPATH], d["digest"], d["size"]) for d in doc["layers"]) == \
        sorted((f.path, f.digest, f.size) for f in files)
    names = [name for name, _ in modelcar_entries(files)]
    assert all(n.startswith("models/") for n in names) and len(names) == len(set(names))


def test_bad_paths_names_and_versions_are_refused(tmp_path: Path) -> None:
    for bad in ("/etc/passwd", "../x", "a/../../x", "a//b"):
        with pytest.raises(FormatError):
            modelpack_manifest(b"{}", "sha256:" + "0" * 64, [ModelFile(bad, 1, "sha256:" + "1" * 64)])
    with pytest.raises(FormatError):
        repository_for("-bad-")
    assert repository_for("Sentiment") == "models/sentiment"
    assert tag_for("1.2.0+build.5") == "1.2.0_build.5"
    with pytest.raises(FormatError):
        tag_for("1.0 beta")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.bin").symlink_to("/etc/passwd")
    with pytest.raises(PlaceError):
        scan_model(folder)


# --------------------------------------------------------------------------- published, pulled back


def _check_modelpack_copy(copy: Path, model: Path) -> None:
    """A layout holding the pulled ModelPack artifact: each layer is its file, byte for byte."""
    index = json.loads((copy / "index.json").read_text())
    manifest = json.loads((copy / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    assert manifest["artifactType"] == MODEL_MANIFEST
    got = {d["annotations"][FILEPATH]: (copy / "blobs" / "sha256" / d["digest"].split(":")[1]).read_bytes()
           for d in manifest["layers"]}
    want = {p.relative_to(model).as_posix(): p.read_bytes() for p in model.rglob("*") if p.is_file()}
    assert got == want
    config = json.loads((copy / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text())
    assert config["descriptor"] == {"name": "sentiment", "version": "1.2.0"}
    assert config["config"] == {"format": "safetensors", "precision": "fp16", "paramSize": "147.8K"}
    assert config["modelfs"]["diff_ids"] == [d["digest"] for d in manifest["layers"]]
    media = {d["annotations"][FILEPATH]: d["mediaType"] for d in manifest["layers"]}
    assert media == {"config.json": WEIGHT_CONFIG, "model.safetensors": WEIGHT, "tokenizer.json": WEIGHT_CONFIG,
                     "docs/README.md": DOC}


def _check_modelcar(source: str, model: Path, work: Path) -> None:
    """Copy the modelcar with skopeo into a layout, unpack it with umoci: the same files."""
    run("skopeo", "copy", "--quiet", "--src-tls-verify=false", source, f"oci:{work / 'car'}:car")
    run("umoci", "unpack", "--rootless", "--image", f"{work / 'car'}:car", str(work / "bundle"))
    root = work / "bundle" / "rootfs" / "models"
    got = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    want = {p.relative_to(model).as_posix(): p.read_bytes() for p in model.rglob("*") if p.is_file()}
    assert got == want


def test_publish_into_a_layout_hard_links_and_skopeo_umoci_read_it(model: Path, tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    published = publish_model(model, "sentiment", "1.2.0", layout=layout)
    assert (published.repository, published.tag, published.modelcar_tag) == \
        ("models/sentiment", "1.2.0", "1.2.0-modelcar")
    assert published.linked == 4
    for f in model.rglob("*"):
        if f.is_file():  # no model byte stored twice: the blob is the store's file
            assert (layout / "blobs" / "sha256" / sha(f).split(":")[1]).stat().st_ino == f.stat().st_ino
    raw = run("skopeo", "inspect", "--raw", f"oci:{layout}:models/sentiment:1.2.0").stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == published.digest
    run("skopeo", "copy", "--quiet", "--preserve-digests", f"oci:{layout}:models/sentiment:1.2.0",
        f"oci:{tmp_path / 'copy'}:x")
    _check_modelpack_copy(tmp_path / "copy", model)
    _check_modelcar(f"oci:{layout}:models/sentiment:1.2.0-modelcar", model, tmp_path)
    # publishing again changes nothing (same digests: reproducible)
    again = publish_model(model, "sentiment", "1.2.0", layout=layout)
    assert (again.digest, again.modelcar_digest) == (published.digest, published.modelcar_digest)


def test_publish_into_a_registry(model: Path, tmp_path: Path, edge_registry: Registry) -> None:
    client = RegistryClient(edge_registry.host)
    published = publish_model(model, "sentiment", "1.2.0", client=client)
    raw = edge_registry.raw_manifest("models/sentiment:1.2.0")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == published.digest
    run("skopeo", "copy", "--quiet", "--preserve-digests", "--src-tls-verify=false",
        f"docker://{edge_registry.host}/models/sentiment:1.2.0", f"oci:{tmp_path / 'copy'}:x")
    _check_modelpack_copy(tmp_path / "copy", model)
    _check_modelcar(f"docker://{edge_registry.host}/models/sentiment:1.2.0-modelcar", model, tmp_path)


def test_published_model_pulls_through_ferry_serve(model: Path, tmp_path: Path) -> None:
    from tests.test_serve import start_serve, stop

    state = tmp_path / "edge"
    publish_model(model, "sentiment", "1.2.0", layout=state / "oci")
    server = start_serve(state)
    try:
        run("skopeo", "copy", "--quiet", "--preserve-digests", "--src-tls-verify=false",
            f"docker://{server.host}/models/sentiment:1.2.0", f"oci:{tmp_path / 'copy'}:x")
        _check_modelpack_copy(tmp_path / "copy", model)
        _check_modelcar(f"docker://{server.host}/models/sentiment:1.2.0-modelcar", model, tmp_path)
    finally:
        stop(server)
