"""Issue 11 item 7: every shape of image a registry may serve (OCI image spec v1.1, Docker
schema 2) either travels exactly — the edge registry serves the very bytes, so the digest is
the hub's (checked with skopeo) — or is refused with a message naming what is special and
what to do. Images are pushed by hand to the Debian registry on loopback."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile

import pytest
import zstandard

from transport.registry import RegistryClient
from tests.support.common import assert_clean_failure, run_ferry
from tests.support.registry import Registry, layer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(content), 1767225600
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


class Pusher:
    def __init__(self, registry: Registry, repo: str) -> None:
        self.client, self.repo = RegistryClient(registry.host), repo

    def blob(self, content: bytes, media_type: str, **extra: object) -> dict:
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        self.client.upload_blob(self.repo, digest, len(content), iter([content]))
        return {"mediaType": media_type, "digest": digest, "size": len(content), **extra}

    def manifest(self, tag: str | None, doc: dict, media_type: str) -> tuple[bytes, dict]:
        data = json.dumps(doc, indent=2).encode()
        digest = self.client.put_manifest(self.repo, tag or "sha256:" + hashlib.sha256(data).hexdigest(), data,
                                          media_type)
        return data, {"mediaType": media_type, "digest": digest, "size": len(data)}

    def image(self, tag: str | None, layers: list[dict], *, media_type: str = OCI_MANIFEST,
              config_type: str = OCI_CONFIG, arch: str = "amd64", **extra: object) -> tuple[bytes, dict]:
        config = self.blob(json.dumps({"architecture": arch, "os": "linux",
                                       "rootfs": {"type": "layers", "diff_ids": []}}).encode(), config_type)
        return self.manifest(tag, {"schemaVersion": 2, "mediaType": media_type, "config": config,
                                   "layers": layers, **extra}, media_type)


def _travels(registry, edge_registry, hub_keys, tmp_path, repo: str, tag: str, pushed: bytes,
             *extra: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata: {name: shapes}\n"
                    f"spec:\n  images:\n    - ref: {registry.host}/{repo}:{tag}\n")
    out = tmp_path / "out"
    done = run_ferry("export", spec, "--out", out, "--key", hub_keys.key, "--state", tmp_path / "hub", *extra)
    assert done.returncode == 0, done.stderr
    done = run_ferry("import", out, "--trust", hub_keys.pub, "--state", tmp_path / "edge",
                     "--registry", edge_registry.host)
    assert done.returncode == 0, done.stdout + done.stderr
    assert registry.raw_manifest(f"{repo}:{tag}") == pushed
    assert edge_registry.raw_manifest(f"{repo}:{tag}") == pushed  # skopeo: digest-identical


def test_zstd_uncompressed_layers_and_annotations_travel_exactly(registry, edge_registry, hub_keys, tmp_path):
    p = Pusher(registry, "shapes/layers")
    plain = _tar({"plain.txt": b"uncompressed layer"})
    zst = zstandard.ZstdCompressor(level=3).compress(_tar({"z.txt": b"zstd layer"}))
    layers = [p.blob(plain, "application/vnd.oci.image.layer.v1.tar", annotations={"x.layer": "plain"}),
              p.blob(zst, "application/vnd.oci.image.layer.v1.tar+zstd"),
              p.blob(layer({"g.txt": b"gzip"}), "application/vnd.oci.image.layer.v1.tar+gzip")]
    pushed, _ = p.image("1.0.0", layers, annotations={"org.opencontainers.image.source": "https://x.example"})
    _travels(registry, edge_registry, hub_keys, tmp_path, "shapes/layers", "1.0.0", pushed)


def test_artifact_with_empty_config_and_data_field_travels_exactly(registry, edge_registry, hub_keys, tmp_path):
    """An OCI 1.1 artifact: artifactType, the empty config (``{}``, also inlined as ``data``),
    a non-image layer, and a ``subject`` naming an image (a referrer)."""
    p = Pusher(registry, "shapes/artifact")
    _, subject = p.image("1.0.0", [p.blob(layer({"a": b"1"}), "application/vnd.oci.image.layer.v1.tar+gzip")])
    empty = p.blob(b"{}", EMPTY, data=base64.b64encode(b"{}").decode())
    sbom = p.blob(b'{"spdxVersion":"SPDX-2.3"}', "application/spdx+json",
                  annotations={"org.opencontainers.image.title": "sbom.spdx.json"})
    pushed, _ = p.manifest("2.0.0", {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                     "artifactType": "application/spdx+json", "config": empty, "layers": [sbom],
                                     "subject": subject, "annotations": {"x.kind": "sbom"}}, OCI_MANIFEST)
    _travels(registry, edge_registry, hub_keys, tmp_path, "shapes/artifact", "2.0.0", pushed)


def test_docker_manifest_list_travels_whole(registry, edge_registry, hub_keys, tmp_path):
    p = Pusher(registry, "shapes/dockerlist")
    children = []
    for arch in ("amd64", "arm64"):
        _, desc = p.image(None, [p.blob(layer({arch: arch.encode()}), DOCKER_LAYER)], media_type=DOCKER_MANIFEST,
                          config_type=DOCKER_CONFIG, arch=arch)
        children.append({**desc, "platform": {"architecture": arch, "os": "linux"}})
    pushed, _ = p.manifest("3.0.0", {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": children},
                           DOCKER_LIST)
    _travels(registry, edge_registry, hub_keys, tmp_path, "shapes/dockerlist", "3.0.0", pushed)


def test_oci_index_with_an_attestation_manifest_travels_whole(registry, edge_registry, hub_keys, tmp_path):
    """BuildKit's shape: an index whose entries are the platform image and an attestation
    manifest (platform unknown/unknown) that refers to it."""
    p = Pusher(registry, "shapes/index")
    _, image = p.image(None, [p.blob(layer({"i": b"1"}), "application/vnd.oci.image.layer.v1.tar+gzip")])
    _, att = p.manifest(None, {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": p.blob(b"{}", EMPTY),
                               "layers": [p.blob(b'{"_type":"in-toto"}', "application/vnd.in-toto+json")]},
                        OCI_MANIFEST)
    pushed, _ = p.manifest("4.0.0", {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {**image, "platform": {"architecture": "amd64", "os": "linux"}},
        {**att, "platform": {"architecture": "unknown", "os": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                         "vnd.docker.reference.digest": image["digest"]}}]}, OCI_INDEX)
    _travels(registry, edge_registry, hub_keys, tmp_path, "shapes/index", "4.0.0", pushed)


def test_foreign_layer_is_refused_naming_it(hub_keys, tmp_path):
    """A non-distributable (foreign) layer lives at its ``urls``, not with the image (the
    Debian registry refuses to store such a manifest at all, so the hub reads an OCI layout):
    refused before anything is written, naming the layer, its URL and what to do."""
    layout = tmp_path / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(content: bytes, media_type: str, **extra: object) -> dict:
        digest = hashlib.sha256(content).hexdigest()
        (blobs / digest).write_bytes(content)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(content), **extra}

    data = layer({"win": b"base layer"})
    foreign = {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
               "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data),
               "urls": ["https://mcr.example/base.tar.gz"]}
    config = put(b'{"architecture":"amd64","os":"windows","rootfs":{"type":"layers","diff_ids":[]}}', OCI_CONFIG)
    manifest = put(json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                               "layers": [foreign, put(layer({"app": b"1"}), "application/vnd.oci.image.layer.v1.tar+gzip")]}
                              ).encode(), OCI_MANIFEST, annotations={"org.opencontainers.image.ref.name": "5.0.0"})
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata: {name: shapes}\n"
                    f"spec:\n  images:\n    - ref: shapes/foreign:5.0.0\n      layout: {layout}\n")
    done = run_ferry("export", spec, "--out", tmp_path / "out", "--key", hub_keys.key, "--state", tmp_path / "hub")
    assert_clean_failure(done, code=2, contains="non-distributable")
    assert "https://mcr.example/base.tar.gz" in done.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()
