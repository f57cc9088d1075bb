#!/usr/bin/env python3
"""Write ferry's sample container image as an OCI image layout, byte for byte the same on every run.

    python samples/make_image.py [--out DIR]     # default: samples/images/sentiment-server

Two small layers: ``app/serve.py`` (from samples/src/sentiment-server, the inference server for
samples/models/sentiment) and ``etc/sentiment-server/release``. The image has no base layer, so
it carries no Python of its own: it is a transport sample that skopeo, umoci and registries
accept, kept tiny on purpose (put it on top of a python base to run it). Determinism: tar
entries in fixed order with fixed mtime, uid/gid 0 and no user names (USTAR); gzip with
mtime 0 and no file name; JSON with sorted keys. The gzip bytes depend on zlib's deflate,
which has been stable for years but is the one thing outside this script's control.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "src" / "sentiment-server"
TAG = "1.2.0"
EPOCH = 1767225600  # 2026-01-01T00:00:00Z: every timestamp in the image
CREATED = "2026-01-01T00:00:00Z"

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(entries: list[tuple[str, bytes | None, int]]) -> bytes:
    """A tar of (path, content or None for a folder, mode), parents listed before children."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, content, mode in entries:
            info = tarfile.TarInfo(path)
            info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = EPOCH, mode, 0, 0, "", ""
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def gzipped(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def blobs() -> tuple[dict[str, bytes], bytes]:
    """All blobs by digest, and the index.json bytes."""
    release = f"name=sentiment-server\nversion={TAG}\nmodel=sentiment\n".encode()
    tars = [
        ("app/serve.py", layer_tar([("app", None, 0o755), ("app/serve.py", (SOURCE / "app" / "serve.py").read_bytes(), 0o755)])),
        ("etc/sentiment-server/release", layer_tar([("etc", None, 0o755), ("etc/sentiment-server", None, 0o755),
                                                    ("etc/sentiment-server/release", release, 0o644)])),
    ]
    out: dict[str, bytes] = {}
    layers = []
    for _, tar in tars:
        gz = gzipped(tar)
        out[sha256(gz)] = gz
        layers.append({"mediaType": MT_LAYER, "digest": sha256(gz), "size": len(gz)})
    config = canonical({
        "created": CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": "65532:65532",
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "MODEL_DIR=/models/sentiment", "PORT=8080"],
            "Entrypoint": ["python3", "/app/serve.py"],
            "WorkingDir": "/app",
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {"org.opencontainers.image.title": "sentiment-server",
                       "org.opencontainers.image.version": TAG},
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar) for _, tar in tars]},
        "history": [{"created": CREATED, "created_by": f"samples/make_image.py: add {what}"} for what, _ in tars],
    })
    out[sha256(config)] = config
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": layers,
        "annotations": {
            "org.opencontainers.image.created": CREATED,
            "org.opencontainers.image.title": "sentiment-server",
            "org.opencontainers.image.description": "Sentiment inference server, ferry's sample image",
            "org.opencontainers.image.version": TAG,
            "org.opencontainers.image.licenses": "Apache-2.0",
        },
    })
    out[sha256(manifest)] = manifest
    index = canonical({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST, "digest": sha256(manifest), "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": TAG},
        }],
    })
    return out, index


def write(out: Path) -> list[Path]:
    """Write the layout into ``out`` (blobs not part of the image are removed) and list its files."""
    by_digest, index = blobs()
    blob_dir = out / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    for stale in blob_dir.iterdir():
        if "sha256:" + stale.name not in by_digest:
            stale.unlink()
    for digest, data in sorted(by_digest.items()):
        (blob_dir / digest.removeprefix("sha256:")).write_bytes(data)
    (out / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    (out / "index.json").write_bytes(index)
    return sorted(p for p in out.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "images" / "sentiment-server")
    for path in write(parser.parse_args().out):
        print(f"{path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
