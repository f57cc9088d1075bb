"""The real OCI registry fixture (Debian's docker-registry on 127.0.0.1), and test images.

``registry`` (the hub's) and ``edge_registry`` (the site's) are two separate
``docker-registry serve`` processes, each on a free loopback port with its own temporary
storage, started once per session and stopped at its end. Images are built by the test as
OCI layouts in Python (:func:`make_image`, :func:`make_index`) and pushed with the real
``skopeo copy`` (:meth:`Registry.push`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import socket
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DOCKER_REGISTRY = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    root: Path  # its storage folder
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def push(self, layout: Path, tag: str, repo: str, dest_tag: str | None = None) -> None:
        """``skopeo copy oci:LAYOUT:TAG docker://HOST/REPO:TAG``, digests preserved."""
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false",
             f"oci:{layout}:{tag}", f"docker://{self.host}/{repo}:{dest_tag or tag}"],
            check=True, capture_output=True, timeout=120)

    def raw_manifest(self, ref: str) -> bytes:
        """``skopeo inspect --raw`` of ``REPO:TAG`` or ``REPO@DIGEST`` in this registry."""
        return subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{self.host}/{ref}"],
                              check=True, capture_output=True, timeout=60).stdout

    def inspect(self, ref: str) -> dict:
        """``skopeo inspect`` (the parsed image) of a reference in this registry."""
        out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{self.host}/{ref}"],
                             check=True, capture_output=True, timeout=60).stdout
        return json.loads(out)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(root: Path) -> Registry:
    """Start docker-registry on a free 127.0.0.1 port, storing under ``root``."""
    for _attempt in range(5):
        port = _free_port()
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n")
        log = open(root / "registry.log", "ab")
        proc = subprocess.Popen([DOCKER_REGISTRY, "serve", str(config)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as resp:
                    if resp.status == 200:
                        return Registry(f"127.0.0.1:{port}", root / "data", proc)
            except OSError:
                time.sleep(0.05)
        proc.kill()
        proc.wait()
    raise RuntimeError(f"docker-registry did not start; see {root / 'registry.log'}")


def _stop(reg: Registry) -> None:
    reg.process.terminate()
    try:
        reg.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        reg.process.kill()
        reg.process.wait()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The hub's registry."""
    reg = start_registry(tmp_path_factory.mktemp("registry-hub"))
    yield reg
    _stop(reg)


@pytest.fixture(scope="session")
def edge_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The site's registry, a separate instance."""
    reg = start_registry(tmp_path_factory.mktemp("registry-edge"))
    yield reg
    _stop(reg)


# --------------------------------------------------------------------------- test images


def _json(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _put_blob(layout: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def layer(files: dict[str, bytes]) -> bytes:
    """A gzipped tar layer with ``files`` (deterministic)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(content), 1767225600, 0o644
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(buf.getvalue(), mtime=0)


def _init_layout(layout: Path) -> None:
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')


def _write_index(layout: Path, entries: list[dict]) -> None:
    index_path = layout / "index.json"
    existing = json.loads(index_path.read_text())["manifests"] if index_path.exists() else []
    names = {e["annotations"][REF_NAME] for e in entries}
    kept = [e for e in existing if e.get("annotations", {}).get(REF_NAME) not in names]
    index_path.write_bytes(_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": kept + entries}))


def _image_manifest(layout: Path, layers: list[bytes], arch: str, label: str) -> tuple[bytes, dict]:
    diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest() for blob in layers]
    config = _json({"architecture": arch, "os": "linux", "config": {"Labels": {"test": label}},
                    "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    manifest = _json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **_put_blob(layout, config)},
        "layers": [{"mediaType": OCI_LAYER, **_put_blob(layout, blob)} for blob in layers],
    })
    return manifest, {"mediaType": OCI_MANIFEST, **_put_blob(layout, manifest)}


def make_image(layout: Path, tag: str, layers: list[bytes], *, arch: str = "amd64", label: str = "") -> str:
    """Add a single-platform image named ``tag`` to an OCI layout; return its manifest digest."""
    _init_layout(layout)
    _manifest, desc = _image_manifest(layout, layers, arch, label or tag)
    _write_index(layout, [{**desc, "annotations": {REF_NAME: tag}}])
    return desc["digest"]


def make_index(layout: Path, tag: str, platforms: dict[str, list[bytes]], *, label: str = "") -> str:
    """Add a multi-platform image (an index of one manifest per ``arch``) named ``tag``;
    return the index digest."""
    _init_layout(layout)
    children = []
    for arch, layers in platforms.items():
        _manifest, desc = _image_manifest(layout, layers, arch, label or tag)
        children.append({**desc, "platform": {"architecture": arch, "os": "linux"}})
    index = _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})
    desc = {"mediaType": OCI_INDEX, **_put_blob(layout, index)}
    _write_index(layout, [{**desc, "annotations": {REF_NAME: tag}}])
    return desc["digest"]


def random_layer(size: int, seed: int) -> bytes:
    """A layer with ``size`` bytes of incompressible content (so sizes mean something)."""
    import random

    rng = random.Random(seed)
    return layer({f"data-{seed}.bin": rng.randbytes(size)})

