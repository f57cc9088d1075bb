"""Models from OCI at the hub (issue #14, item 3): a spec model ``ref:`` naming a ModelPack
artifact or a KitOps ModelKit in a registry (Debian's docker-registry, pushed by the test with
the project's own OCI code), exported as the model's files with the same content-defined
chunks as a folder, so a delta between two versions carries only changed chunks."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from pathlib import Path

import pytest
import zstandard

from bundler.sources.oci_models import KITOPS_CONFIG, layer_form
from importer.apply.modelpack import publish_model
from manifests.oci import OCI_MANIFEST
from tests.support.common import KeyPair, assert_clean_failure, run_ferry
from tests.support.registry import Registry
from transport.registry import RegistryClient

MIB = 1 << 20


def weights(seed: int, tail: int = 0, size: int = 4 * MIB) -> bytes:
    """``size`` random bytes; ``tail`` changes only the last 64 KiB."""
    data = random.Random(seed).randbytes(size)
    return data[:-65536] + random.Random(1000 + tail).randbytes(65536) if tail else data


def spec(path: Path, name: str, version: str, source: str) -> Path:
    path.write_text(f"apiVersion: ferry/v1\nkind: Bundle\nmetadata: {{name: {name}, channel: stable}}\nspec:\n"
                    f"  models:\n    - name: {name}\n      version: {version}\n      {source}\n")
    return path


def export(tmp: Path, keys: KeyPair, spec_file: Path, out: str, *extra: str) -> dict:
    r = run_ferry("export", spec_file, "--out", tmp / out, "--key", keys.key, "--state", tmp / "hub", "--json", *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def blob(client: RegistryClient, repo: str, data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    client.upload_blob(repo, digest, len(data), [data])
    return {"digest": digest, "size": len(data)}


def tar_of(files: dict[str, bytes], *, link: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in sorted({str(Path(p).parent) for p in files} - {"."}):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo("model/escape")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return buf.getvalue()


def push_modelkit(reg: Registry, repo: str, tag: str, w: bytes, *, link: bool = False) -> str:
    """A ModelKit as kit pack lays it out: the Kitfile as config, a tar+gzip model layer, a
    tar+zstd docs layer. Returns its manifest digest."""
    client = RegistryClient(reg.host)
    kitfile = json.dumps({"manifestVersion": "1.0.0", "package": {"name": repo},
                          "model": {"path": "model/weights.bin"}, "docs": [{"path": "docs/README.md"}]}).encode()
    model_layer = gzip.compress(tar_of({"model/weights.bin": w}, link=link), mtime=0)
    docs_layer = zstandard.ZstdCompressor().compress(tar_of({"docs/README.md": b"# tiny\n"}))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": KITOPS_CONFIG, **blob(client, repo, kitfile)},
        "layers": [{"mediaType": "application/vnd.kitops.modelkit.model.v1.tar+gzip", **blob(client, repo, model_layer)},
                   {"mediaType": "application/vnd.kitops.modelkit.docs.v1.tar+zstd", **blob(client, repo, docs_layer)}],
    }).encode()
    return client.put_manifest(repo, tag, manifest, OCI_MANIFEST)


def edge_files(state: Path, name: str, version: str) -> dict[str, bytes]:
    root = state / "models" / name / version
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_layer_forms() -> None:
    assert layer_form("application/vnd.cncf.model.weight.v1.raw") == "raw"
    assert layer_form("application/vnd.cncf.model.weight.config.v1.tar+zstd") == "tar+zstd"
    assert layer_form("application/vnd.kitops.modelkit.dataset.v1.tar+gzip") == "tar+gzip"
    assert layer_form("application/vnd.kitops.modelkit.code.v1.tar") == "tar"
    assert layer_form("application/vnd.oci.image.layer.v1.tar+gzip") is None
    assert layer_form("application/vnd.cncf.model.weight.v1.zip") is None


def test_a_modelpack_artifact_exports_as_its_files_with_the_folders_chunks(
        tmp_path: Path, hub_keys: KeyPair, registry: Registry) -> None:
    folder = tmp_path / "tiny"
    (folder / "tok").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights(1))
    (folder / "config.json").write_text('{"dim": 4}')
    (folder / "tok" / "vocab.txt").write_text("a\nb\n")
    published = publish_model(folder, "tiny", "1.0.0", client=RegistryClient(registry.host), modelcar=False)
    by_ref = export(tmp_path, hub_keys, spec(tmp_path / "a.yaml", "tiny", "1.0.0",
                                             f"ref: {registry.host}/models/tiny@{published.digest}"), "oci")
    by_folder = export(tmp_path, hub_keys, spec(tmp_path / "b.yaml", "tiny", "1.0.0", f"path: {folder}"), "dir")
    a = json.loads((tmp_path / "oci" / "manifest.json").read_bytes())["artifacts"][0]
    b = json.loads((tmp_path / "dir" / "manifest.json").read_bytes())["artifacts"][0]
    assert a["files"] == b["files"]  # same paths, sizes, blake3 and chunk ids
    assert by_ref["chunks"] == by_folder["chunks"]
    state = tmp_path / "edge"
    r = run_ferry("import", tmp_path / "oci", "--trust", hub_keys.pub, "--state", state)
    assert r.returncode == 0, r.stdout + r.stderr
    assert edge_files(state, "tiny", "1.0.0") == {p.relative_to(folder).as_posix(): p.read_bytes()
                                                  for p in folder.rglob("*") if p.is_file()}


def test_a_modelkit_delta_carries_only_changed_chunks(tmp_path: Path, hub_keys: KeyPair, registry: Registry) -> None:
    big = 24 * MIB  # several content-defined chunks
    push_modelkit(registry, "kits/tiny", "1.0.0", weights(2, size=big))
    push_modelkit(registry, "kits/tiny", "1.1.0", weights(2, tail=1, size=big))
    export(tmp_path, hub_keys, spec(tmp_path / "v1.yaml", "kit", "1.0.0", f"ref: {registry.host}/kits/tiny:1.0.0"), "v1")
    state = tmp_path / "edge"
    run_ferry("import", tmp_path / "v1", "--trust", hub_keys.pub, "--state", state).check_returncode()
    assert edge_files(state, "kit", "1.0.0") == {"model/weights.bin": weights(2, size=big), "docs/README.md": b"# tiny\n"}
    run_ferry("receipt", "--state", state, "--out", tmp_path / "receipt.json").check_returncode()
    v2 = export(tmp_path, hub_keys, spec(tmp_path / "v2.yaml", "kit", "1.1.0", f"ref: {registry.host}/kits/tiny:1.1.0"),
                "v2", "--since", str(tmp_path / "receipt.json"))
    assert 0 < v2["carriedChunks"] < v2["chunks"]  # the unchanged head of the weights is not carried
    assert v2["storedBytes"] < big // 2  # of a 24 MiB model whose last 64 KiB changed
    r = run_ferry("import", tmp_path / "v2", "--trust", hub_keys.pub, "--state", state)
    assert r.returncode == 0, r.stdout + r.stderr
    assert edge_files(state, "kit", "1.1.0")["model/weights.bin"] == weights(2, tail=1, size=big)


@pytest.mark.parametrize("case", ["image", "link", "digest", "missing"])
def test_what_is_not_a_model_is_one_line(tmp_path: Path, hub_keys: KeyPair, registry: Registry, case: str) -> None:
    client = RegistryClient(registry.host)
    if case == "image":
        cfg = blob(client, "plain/img", b"{}")
        layer = blob(client, "plain/img", gzip.compress(tar_of({"a": b"a"})))
        client.put_manifest("plain/img", "1", json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}]}).encode(), OCI_MANIFEST)
        ref, code, says = f"{registry.host}/plain/img:1", 2, "not a ModelPack artifact or KitOps ModelKit"
    elif case == "link":
        push_modelkit(registry, "kits/evil", "1", b"w", link=True)
        ref, code, says = f"{registry.host}/kits/evil:1", 2, "is a link or special file"
    elif case == "digest":
        ref, code, says = f"{registry.host}/kits/tiny@sha256:{'0' * 64}", 2, "not found"
    else:
        ref, code, says = f"{registry.host}/kits/none:1", 2, "not found"
    r = run_ferry("export", spec(tmp_path / "s.yaml", "m", "1.0.0", f"ref: {ref}"), "--out", tmp_path / "o",
                  "--key", hub_keys.key, "--state", tmp_path / "hub")
    assert_clean_failure(r, code=code, contains=says)
    assert not list((tmp_path / "hub" / "oci-models").glob(".*.part")) if (tmp_path / "hub" / "oci-models").exists() else True


def test_the_spec_takes_exactly_one_of_path_and_ref(tmp_path: Path, hub_keys: KeyPair) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w").write_bytes(b"w")
    for source in (f"path: {tmp_path / 'm'}\n      ref: example.org/x:1", "description: none"):
        r = run_ferry("export", spec(tmp_path / "s.yaml", "m", "1.0.0", source), "--out", tmp_path / "o",
                      "--key", hub_keys.key, "--state", tmp_path / "hub")
        assert_clean_failure(r, code=2)
