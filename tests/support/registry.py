"""The real OCI registry fixture (Debian's docker-registry on 127.0.0.1), and test images.

``registry`` (the hub's) and ``edge_registry`` (the site's) are two separate
``docker-registry serve`` processes, each on a free loopback port with its own temporary
storage, started once per session and stopped at its end. Images are built by the test as
OCI layouts in Python (:func:`make_image`, :func:`make_index`) and pushed with the real
``skopeo copy`` (:meth:`Registry.push`).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from manifests.oci import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP as OCI_LAYER, OCI_MANIFEST
from manifests.oci import REF_NAME_ANNOTATION as REF_NAME

DOCKER_REGISTRY = "/usr/bin/docker-registry"


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    root: Path  # its storage folder
    process: subprocess.Popen[bytes]
    login: tuple[str, str] | None = None

    def _creds(self, flag: str) -> list[str]:
        return [flag, ":".join(self.login)] if self.login else []

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def push(self, layout: Path, tag: str, repo: str, dest_tag: str | None = None) -> None:
        """``skopeo copy oci:LAYOUT:TAG docker://HOST/REPO:TAG``, digests preserved."""
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false",
             *self._creds("--dest-creds"),
             f"oci:{layout}:{tag}", f"docker://{self.host}/{repo}:{dest_tag or tag}"],
            check=True, capture_output=True, timeout=120)

    def _inspect(self, ref: str, *flags: str) -> bytes:
        return subprocess.run(["skopeo", "inspect", *flags, "--tls-verify=false", *self._creds("--creds"),
                               f"docker://{self.host}/{ref}"], check=True, capture_output=True, timeout=60).stdout

    def raw_manifest(self, ref: str) -> bytes:
        """``skopeo inspect --raw`` of ``REPO:TAG`` or ``REPO@DIGEST`` in this registry."""
        return self._inspect(ref, "--raw")

    def inspect(self, ref: str) -> dict:
        """``skopeo inspect`` (the parsed image) of a reference in this registry."""
        return json.loads(self._inspect(ref))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _htpasswd(path: Path, user: str, password: str) -> None:
    """An htpasswd file with one bcrypt entry (libxcrypt's bcrypt, via the crypt module)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    path.write_text(f"{user}:{hashed}\n")


def start_registry(root: Path, login: tuple[str, str] | None = None,
                   token: TokenServer | None = None, *, delete: bool = True) -> Registry:
    """Start docker-registry on a free 127.0.0.1 port, storing under ``root``; with
    ``login`` (user, password) it demands HTTP Basic auth (htpasswd); with ``token``, Bearer
    tokens from that token server; ``delete`` False refuses deletes (405), its default."""
    auth = ""
    if token is not None:
        auth = (f"auth:\n  token:\n    realm: {token.url}\n    service: {token.service}\n"
                f"    issuer: {token.issuer}\n    rootcertbundle: {token.cert_path}\n")
    if login is not None:
        _htpasswd(root / "htpasswd", *login)
        auth = f"auth:\n  htpasswd:\n    realm: ferry-test\n    path: {root / 'htpasswd'}\n"
    for _attempt in range(5):
        port = _free_port()
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: {str(delete).lower()}\n"
            f"http:\n  addr: 127.0.0.1:{port}\n" + auth)
        log = open(root / "registry.log", "ab")
        proc = subprocess.Popen([DOCKER_REGISTRY, "serve", str(config)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as resp:
                    if resp.status == 200:
                        return Registry(f"127.0.0.1:{port}", root / "data", proc, login)
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    return Registry(f"127.0.0.1:{port}", root / "data", proc, login)
                time.sleep(0.05)
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
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry that demands a login: user ``ferry``, password ``s3cret``."""
    reg = start_registry(tmp_path_factory.mktemp("registry-auth"), login=("ferry", "s3cret"))
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


def layer(files: dict[str, bytes], level: int = 9) -> bytes:
    """A gzipped tar layer with ``files`` (deterministic)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(content), 1767225600, 0o644
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(buf.getvalue(), compresslevel=level, mtime=0)


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
    return layer({f"data-{seed}.bin": rng.randbytes(size)}, level=1)



# --------------------------------------------------------------------------- token auth


class TokenServer:
    """A tiny Docker token service (the ``realm`` of a Bearer challenge) on 127.0.0.1.

    It grants every requested action to ``user``/``password`` (HTTP Basic on the token
    request), and pull only to anonymous callers; tokens are ES256 JWTs that the registry
    verifies against the certificate in its ``rootcertbundle`` (key id in libtrust form).
    ``requests`` records each scope asked for.
    """

    def __init__(self, root: Path, user: str, password: str, service: str) -> None:
        import datetime
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferry-test-token")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.key.public_key()).serial_number(1)
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .sign(self.key, hashes.SHA256()))
        self.cert_path = root / "token-cert.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        der = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
        self.kid = ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))
        self.user, self.password, self.service, self.issuer = user, password, service, "ferry-test-issuer"
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlparse

                query = parse_qs(urlparse(self.path).query)
                scopes = query.get("scope", [])
                server.requests.extend(scopes)
                header = self.headers.get("Authorization", "")
                authed = header == "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
                if header and not authed:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": server.token(scopes, push=authed)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def token(self, scopes: list[str], push: bool) -> str:
        import time as _time

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if push or a == "pull"]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(_time.time())
        claims = {"iss": self.issuer, "sub": self.user if push else "", "aud": self.service,
                  "exp": now + 300, "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        signing_input = (b64(json.dumps({"typ": "JWT", "alg": "ES256", "kid": self.kid}).encode()) + "."
                         + b64(json.dumps(claims).encode()))
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, TokenServer]]:
    """A registry behind Bearer-token auth (anonymous pull, push for ``ferry``/``s3cret``)."""
    root = tmp_path_factory.mktemp("registry-token")
    tokens = TokenServer(root, "ferry", "s3cret", "ferry-test")
    reg = start_registry(root, token=tokens)
    reg.login = ("ferry", "s3cret")
    yield reg, tokens
    _stop(reg)
    tokens.stop()


def unpack_image(source: str, work: Path) -> Path:
    """Copy image ``source`` (a skopeo reference, e.g. ``oci:LAYOUT:TAG``) with skopeo into
    an OCI layout under ``work`` and unpack it with umoci, two real clients; returns the
    unpacked root file system. Fails the test with the client's message if either refuses."""
    work.mkdir(parents=True, exist_ok=True)
    for cmd in (["skopeo", "copy", "--quiet", source, f"oci:{work / 'car'}:car"],
                ["umoci", "unpack", "--rootless", "--image", f"{work / 'car'}:car", str(work / "bundle")]):
        done = subprocess.run(cmd, capture_output=True, check=False)
        assert done.returncode == 0, done.stderr.decode()
    return work / "bundle" / "rootfs"
