"""``ferry serve``: real pull clients (skopeo, containerd's ctr) and hostile requests.

The server runs as the operator runs it (``python -m ferry serve`` in a subprocess) over an
OCI layout built here with the registry fixture's image helpers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from manifests.oci import OCI_INDEX, OCI_MANIFEST, REF_NAME_ANNOTATION
from tests.support.common import assert_clean_failure, run_ferry
from tests.support.registry import make_image, make_index, random_layer

BIG = 6 * 1024 * 1024 + 12345  # crosses several 1 MiB reads, and not a multiple of one
SBOM_TYPE = "application/vnd.example.sbom.v1+json"


@dataclass
class Site:
    state: Path
    layout: Path
    app: str         # manifest digest of team/app:1.0
    multi: str       # index digest of team/multi:2.0
    big: str         # digest of the big layer of team/app:1.0
    big_bytes: bytes
    referrer: str    # digest of an SBOM artifact whose subject is team/app:1.0


def _blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    state = tmp_path_factory.mktemp("serve-edge")
    layout = state / "oci"
    big_layer = random_layer(BIG, seed=14)
    app = make_image(layout, "team/app:1.0", [big_layer, random_layer(1000, seed=15)])
    make_image(layout, "team/app:0.9", [random_layer(2000, seed=16)])
    multi = make_index(layout, "team/multi:2.0", {"amd64": [random_layer(3000, seed=17)],
                                                   "arm64": [random_layer(3000, seed=18)]})
    make_image(layout, "other/secret:1", [random_layer(500, seed=19)])
    # an SBOM that refers to team/app:1.0, listed untagged in index.json (as oras writes it)
    empty = _blob(layout, b"{}")
    sbom = _blob(layout, b'{"sbom": true}')
    app_size = (layout / "blobs" / "sha256" / app.split(":")[1]).stat().st_size
    referrer_doc = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SBOM_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/json", "digest": sbom, "size": 14}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": app, "size": app_size},
        "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
    }).encode()
    referrer = _blob(layout, referrer_doc)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"].append({"mediaType": OCI_MANIFEST, "digest": referrer, "size": len(referrer_doc),
                               "artifactType": SBOM_TYPE})
    (layout / "index.json").write_text(json.dumps(index))
    big = "sha256:" + hashlib.sha256(big_layer).hexdigest()
    return Site(state, layout, app, multi, big, big_layer, referrer)


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]


def start_serve(state: Path, *args: str) -> Server:
    """``ferry serve --state STATE --listen 127.0.0.1:0 ARGS``; waits for its "serving" line."""
    env = {k: v for k, v in os.environ.items() if k != "FERRY_DEBUG"}
    proc = subprocess.Popen([sys.executable, "-m", "ferry", "serve", "--state", str(state),
                             "--listen", "127.0.0.1:0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("serving "):
        proc.kill()
        raise AssertionError(f"ferry serve did not start: {line}{proc.communicate()[1]}")
    return Server(proc, line.split(" at ", 1)[1].split()[0])


def stop(server: Server) -> str:
    """SIGTERM, as an init system stops it; returns stderr. It must exit 0."""
    server.process.send_signal(signal.SIGTERM)
    _, err = server.process.communicate(timeout=30)
    assert server.process.returncode == 0, err
    return err


@pytest.fixture(scope="module")
def server(site: Site) -> Iterator[Server]:
    srv = start_serve(site.state)
    yield srv
    err = stop(srv)
    assert "Traceback" not in err, err


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET",
        context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60, context=context) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def raw_request(server: Server, request: bytes) -> tuple[int, bytes]:
    """Send bytes exactly as given (no client-side path clean-up); the status and body."""
    host, port = server.host.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def skopeo(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["skopeo", *args], capture_output=True, timeout=120, check=False)


def blob_files(layout: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}


# --------------------------------------------------------------------------- real clients


def test_skopeo_copies_images_byte_identical(site: Site, server: Server, tmp_path: Path) -> None:
    for ref, digest in (("team/app:1.0", site.app), ("team/multi:2.0", site.multi)):
        out = tmp_path / ref.replace("/", "_").replace(":", "_")
        done = skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false",
                      f"docker://{server.host}/{ref}", f"oci:{out}:x")
        assert done.returncode == 0, done.stderr
        index = json.loads((out / "index.json").read_text())
        assert index["manifests"][0]["digest"] == digest
        served = blob_files(out)
        original = blob_files(site.layout)
        assert served and all(original[name] == data for name, data in served.items())
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{server.host}/team/app:1.0").stdout)
    assert inspected["Digest"] == site.app
    assert sorted(inspected["RepoTags"]) == ["0.9", "1.0"]


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A containerd of our own (Debian's package), its content store in a temporary folder."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.fail("containerd and ctr are needed (apt-get install containerd; tests/run.sh does)")
    root = Path(tempfile_short())
    (root / "config.toml").write_text(
        f'version = 2\nroot = "{root}/root"\nstate = "{root}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{root}/sock"\n[ttrpc]\n  address = "{root}/sock.ttrpc"\n')
    log = open(root / "log", "wb")
    proc = subprocess.Popen(["containerd", "--config", str(root / "config.toml")], stdout=log, stderr=log)
    sock = root / "sock"
    for _ in range(200):
        if sock.exists() and subprocess.run(["ctr", "--address", str(sock), "version"],
                                            capture_output=True, check=False).returncode == 0:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"containerd did not start: {(root / 'log').read_text()[-2000:]}")
    yield sock
    proc.terminate()
    proc.wait(timeout=30)
    log.close()
    shutil.rmtree(root, ignore_errors=True)


def tempfile_short() -> str:
    """A short temporary folder (unix socket paths are limited to 108 bytes)."""
    import tempfile

    return tempfile.mkdtemp(prefix="ctrd-", dir="/tmp")


def test_containerd_ctr_fetches_through_serve(site: Site, server: Server, containerd: Path) -> None:
    ctr = ["ctr", "--address", str(containerd), "--namespace", "ferry-serve-test"]
    done = subprocess.run([*ctr, "content", "fetch", "--plain-http", f"{server.host}/team/app:1.0"],
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    got = subprocess.run([*ctr, "content", "get", site.big], capture_output=True, timeout=60, check=True).stdout
    assert got == site.big_bytes


# --------------------------------------------------------------------------- the API


def test_base_manifest_blob_head_and_get(site: Site, server: Server) -> None:
    status, headers, body = get(f"{server.url}/v2/")
    assert status == 200 and headers["docker-distribution-api-version"] == "registry/2.0"
    manifest = (site.layout / "blobs" / "sha256" / site.app.split(":")[1]).read_bytes()
    for ref in ("1.0", site.app):
        status, headers, body = get(f"{server.url}/v2/team/app/manifests/{ref}")
        assert (status, body) == (200, manifest)
        assert headers["content-type"] == OCI_MANIFEST and headers["docker-content-digest"] == site.app
        status, headers, body = get(f"{server.url}/v2/team/app/manifests/{ref}", method="HEAD")
        assert (status, body, headers["content-length"]) == (200, b"", str(len(manifest)))
    status, headers, body = get(f"{server.url}/v2/team/multi/manifests/2.0")
    assert status == 200 and headers["content-type"] == OCI_INDEX
    status, headers, body = get(f"{server.url}/v2/team/app/blobs/{site.big}", method="HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", str(BIG_LEN(site)))
    status, headers, body = get(f"{server.url}/v2/team/app/blobs/{site.big}")
    assert status == 200 and body == site.big_bytes and headers["docker-content-digest"] == site.big


def BIG_LEN(site: Site) -> int:  # noqa: N802 - reads as the constant it stands for
    return len(site.big_bytes)


def test_unknown_things_are_spec_errors(site: Site, server: Server) -> None:
    cases = {
        "/v2/nobody/manifests/1.0": (404, "NAME_UNKNOWN"),
        "/v2/team/app/manifests/7.7": (404, "MANIFEST_UNKNOWN"),
        f"/v2/team/app/blobs/sha256:{'0' * 64}": (404, "BLOB_UNKNOWN"),
        "/v2/team/app/blobs/sha256:1234": (400, "DIGEST_INVALID"),
        "/v2/team/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e": (400, "DIGEST_INVALID"),
        "/v2/Team/App/tags/list": (404, "NAME_INVALID"),
        "/v2/_catalog": (404, "NOT_FOUND"),
    }
    for path, (code, error) in cases.items():
        status, _, body = get(server.url + path)
        assert status == code, path
        assert json.loads(body)["errors"][0]["code"] == error, path
    status, headers, _ = get(f"{server.url}/v2/team/app/manifests/1.0", method="DELETE")
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_repositories_do_not_leak_into_each_other(site: Site, server: Server) -> None:
    secret = json.loads((site.layout / "blobs" / "sha256" / _tag_digest(site, "other/secret:1").split(":")[1])
                        .read_text())["layers"][0]["digest"]
    assert get(f"{server.url}/v2/other/secret/blobs/{secret}")[0] == 200
    assert get(f"{server.url}/v2/team/app/blobs/{secret}")[0] == 404
    assert get(f"{server.url}/v2/other/secret/manifests/{site.app}")[0] == 404


def _tag_digest(site: Site, name: str) -> str:
    index = json.loads((site.layout / "index.json").read_text())
    return next(d["digest"] for d in index["manifests"]
                if d.get("annotations", {}).get(REF_NAME_ANNOTATION) == name)


def test_tags_list_pages_in_lexical_order(server: Server) -> None:
    status, _, body = get(f"{server.url}/v2/team/app/tags/list")
    assert (status, json.loads(body)) == (200, {"name": "team/app", "tags": ["0.9", "1.0"]})
    status, headers, body = get(f"{server.url}/v2/team/app/tags/list?n=1")
    assert json.loads(body)["tags"] == ["0.9"]
    assert headers["link"] == '</v2/team/app/tags/list?n=1&last=0.9>; rel="next"'
    status, headers, body = get(f"{server.url}/v2/team/app/tags/list?n=1&last=0.9")
    assert json.loads(body)["tags"] == ["1.0"] and "link" not in headers
    assert get(f"{server.url}/v2/team/app/tags/list?n=-1")[0] == 400
    for odd in ("%C2%B2", "%E2%81%B4", "%EF%BC%91"):  # ², ⁴, a full-width 1: digits to isdigit(), not to int()
        status, _, body = get(f"{server.url}/v2/team/app/tags/list?n={odd}")
        assert status == 400 and json.loads(body)["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"


def test_referrers_api_lists_and_filters(site: Site, server: Server) -> None:
    status, headers, body = get(f"{server.url}/v2/team/app/referrers/{site.app}")
    doc = json.loads(body)
    assert status == 200 and headers["content-type"] == OCI_INDEX
    assert [(d["digest"], d["artifactType"]) for d in doc["manifests"]] == [(site.referrer, SBOM_TYPE)]
    assert doc["manifests"][0]["annotations"] == {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}
    status, headers, body = get(f"{server.url}/v2/team/app/referrers/{site.app}?artifactType=application/x-none")
    assert json.loads(body)["manifests"] == [] and headers["oci-filters-applied"] == "artifactType"
    # the referrer itself is served from the repository of its subject, and only there
    assert get(f"{server.url}/v2/team/app/manifests/{site.referrer}")[0] == 200
    assert get(f"{server.url}/v2/team/multi/manifests/{site.referrer}")[0] == 404
    status, _, body = get(f"{server.url}/v2/team/multi/referrers/{site.multi}")
    assert status == 200 and json.loads(body)["manifests"] == []


# --------------------------------------------------------------------------- ranges


def test_ranges(site: Site, server: Server) -> None:
    url = f"{server.url}/v2/team/app/blobs/{site.big}"
    size = len(site.big_bytes)
    for header, (first, last) in {"bytes=0-9": (0, 9), "bytes=1048570-1048600": (1048570, 1048600),
                                  "bytes=-100": (size - 100, size - 1), f"bytes={size - 5}-": (size - 5, size - 1),
                                  "bytes=10-" + "9" * 40: (10, size - 1), "bytes=-" + "9" * 40: (0, size - 1)}.items():
        status, headers, body = get(url, {"Range": header})
        assert status == 206, header
        assert body == site.big_bytes[first:last + 1], header
        assert headers["content-range"] == f"bytes {first}-{last}/{size}", header
    for header in (f"bytes={size}-", "bytes=" + "9" * 40 + "-", "bytes=9-3", "bytes=-0", "bytes=abc", "bytes=-"):
        status, headers, _ = get(url, {"Range": header})
        assert (status, headers["content-range"]) == (416, f"bytes */{size}"), header
    for header in ("bytes=0-1,5-9", "items=0-5", "bytes=0-0," * 2000 + "0-0"):
        status, _, body = get(url, {"Range": header})
        assert (status, body) == (200, site.big_bytes), header[:40]


# --------------------------------------------------------------------------- hostile requests


def test_path_tricks_never_reach_a_file(site: Site, server: Server) -> None:
    for path in (b"/v2/../../../../etc/passwd", b"/v2/team/app/blobs/sha256:../../index.json",
                 b"/v2/team/app/blobs/%2e%2e%2f%2e%2e%2findex.json", b"/v2/team/app/manifests/..%2f..%2foci-layout",
                 b"/v2/team/../team/app/manifests/1.0", b"/v2/team/app/blobs/sha256:" + b"a" * 64 + b"%00",
                 b"/v2/%2e%2e/blobs/" + site.big.encode(), b"/etc/passwd", b"//v2/team/app/tags/list"):
        status, body = raw_request(server, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status in (400, 404), path
        assert b"root:" not in body and b"imageLayoutVersion" not in body, path


def test_links_and_damaged_blobs_are_refused(tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    layer_a, layer_b = random_layer(4000, seed=21), random_layer(4000, seed=22)
    make_image(layout, "team/a:1", [layer_a])
    make_image(layout, "team/b:1", [layer_b])
    blobs = layout / "blobs" / "sha256"
    a = "sha256:" + hashlib.sha256(layer_a).hexdigest()
    b = "sha256:" + hashlib.sha256(layer_b).hexdigest()
    outside = tmp_path / "outside"
    outside.write_bytes(layer_a)  # the right bytes, but outside the layout: still refused
    (blobs / a.split(":")[1]).unlink()
    (blobs / a.split(":")[1]).symlink_to(outside)
    (blobs / b.split(":")[1]).write_bytes(layer_b[:-1] + bytes([layer_b[-1] ^ 1]))  # same size, one bit off
    srv = start_serve(tmp_path)
    try:
        for repo, digest in (("team/a", a), ("team/b", b)):
            for headers in ({}, {"Range": "bytes=0-10"}):
                status, _, body = get(f"{srv.url}/v2/{repo}/blobs/{digest}", headers)
                assert status == 404 and json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"
        done = skopeo("copy", "--src-tls-verify=false", f"docker://{srv.host}/team/b:1", f"oci:{tmp_path / 'copy'}:x")
        assert done.returncode != 0
        # repaired (as a re-import does), it is served again: the check follows the file
        (blobs / b.split(":")[1]).write_bytes(layer_b)
        assert get(f"{srv.url}/v2/team/b/blobs/{b}")[2] == layer_b
    finally:
        err = stop(srv)
    assert f"blob {b} does not match its digest" in err


def test_slow_and_stuck_clients_do_not_hold_up_others(site: Site, server: Server) -> None:
    host, port = server.host.rsplit(":", 1)
    stuck = []
    try:
        for _ in range(4):  # a reader that never reads, and a request that never ends
            s = socket.create_connection((host, int(port)), timeout=30)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(f"GET /v2/team/app/blobs/{site.big} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            stuck.append(s)
            t = socket.create_connection((host, int(port)), timeout=30)
            t.sendall(b"GET /v2/team/app/manif")
            stuck.append(t)
        status, _, body = get(f"{server.url}/v2/team/app/blobs/{site.big}")
        assert status == 200 and body == site.big_bytes
    finally:
        for s in stuck:
            s.close()
    assert server.process.poll() is None


def test_sixteen_concurrent_pulls_are_byte_identical(site: Site, server: Server) -> None:
    results: list[bytes] = []
    lock = threading.Lock()

    def pull() -> None:
        data = get(f"{server.url}/v2/team/app/blobs/{site.big}")[2]
        with lock:
            results.append(data)

    threads = [threading.Thread(target=pull) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 16 and all(r == site.big_bytes for r in results)


# --------------------------------------------------------------------------- authentication


def test_basic_and_bearer_auth(site: Site, tmp_path: Path) -> None:
    (tmp_path / "users").write_text("puller:pa:ss\n")
    (tmp_path / "token").write_text("t0ken-abc\n")
    srv = start_serve(site.state, "--basic-auth-file", str(tmp_path / "users"), "--token-file", str(tmp_path / "token"))
    try:
        url = f"{srv.url}/v2/team/app/manifests/1.0"
        status, headers, body = get(url)
        assert status == 401 and json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
        good_basic = "Basic " + base64.b64encode(b"puller:pa:ss").decode()
        for header in ("Basic " + base64.b64encode(b"puller:wrong").decode(), "Basic !!!", "Bearer nope",
                       "Basic " + base64.b64encode(b"nobody:pa:ss").decode(), "Digest x", good_basic + "x"):
            assert get(url, {"Authorization": header})[0] == 401, header
        assert get(url, {"Authorization": good_basic})[0] == 200
        assert get(url, {"Authorization": "Bearer t0ken-abc"})[0] == 200
        ref = f"docker://{srv.host}/team/app:1.0"
        assert skopeo("inspect", "--tls-verify=false", ref).returncode != 0
        assert skopeo("inspect", "--tls-verify=false", "--creds", "puller:wrong", ref).returncode != 0
        done = skopeo("inspect", "--tls-verify=false", "--creds", "puller:pa:ss", ref)
        assert done.returncode == 0 and json.loads(done.stdout)["Digest"] == site.app
    finally:
        stop(srv)


def test_tls(site: Site, tmp_path: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferry-serve-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    srv = start_serve(site.state, "--tls-cert", str(tmp_path / "c.pem"), "--tls-key", str(tmp_path / "k.pem"))
    try:
        assert srv.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))
        status, _, body = get(f"{srv.url}/v2/team/app/blobs/{site.big}", context=context)
        assert status == 200 and body == site.big_bytes
        done = skopeo("inspect", "--cert-dir", str(tmp_path / "nocerts"), "--tls-verify=false",
                      f"docker://{srv.host}/team/app:1.0")
        assert done.returncode == 0, done.stderr
    finally:
        stop(srv)


# --------------------------------------------------------------------------- the command line


def test_cli_refusals_are_one_line(site: Site, tmp_path: Path) -> None:
    assert_clean_failure(run_ferry("serve", "--state", site.state, "--listen", "0.0.0.0:0"),
                         code=2, contains="--plain-http")
    assert_clean_failure(run_ferry("serve", "--state", site.state, "--tls-cert", tmp_path / "c.pem"),
                         code=2, contains="--tls-key")
    assert_clean_failure(run_ferry("serve", "--state", site.state, "--listen", "nonsense"),
                         code=2, contains="HOST:PORT")
    assert_clean_failure(run_ferry("serve", "--state", tmp_path / "nothing", "--listen", "127.0.0.1:0"),
                         code=2, contains="no OCI layout")
    assert_clean_failure(run_ferry("serve", "--state", site.state, "--listen", "127.0.0.1:0",
                                   "--token-file", tmp_path / "missing"), code=2,
                         contains=f"token file {tmp_path / 'missing'}: not found")
    (tmp_path / "users").write_text("no-colon\n")
    assert_clean_failure(run_ferry("serve", "--state", site.state, "--listen", "127.0.0.1:0",
                                   "--basic-auth-file", tmp_path / "users"), code=2, contains="line 1")
    (tmp_path / "c.pem").write_text("not a certificate")
    (tmp_path / "k.pem").write_text("not a key")
    assert_clean_failure(run_ferry("serve", "--state", site.state, "--listen", "127.0.0.1:0",
                                   "--tls-cert", tmp_path / "c.pem", "--tls-key", tmp_path / "k.pem"),
                         code=2, contains="--tls-cert")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert_clean_failure(run_ferry("serve", "--state", site.state, "--listen", f"127.0.0.1:{port}"),
                             code=2, contains="cannot listen")


def test_an_unexpected_failure_is_one_log_line_and_a_500_never_a_traceback(site: Site, capsys) -> None:
    # the last line of defence (as the CLI's): a fault injected into a real layout's catalog
    import asyncio

    from importer.serve import Auth, LayoutView, RegistryApp

    view = LayoutView(site.layout)

    def broken() -> dict:
        raise RuntimeError("disk on fire")

    view.catalog = broken  # type: ignore[method-assign]
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "GET", "path": "/v2/team/app/tags/list", "headers": [], "query_string": b""}
    try:
        asyncio.run(RegistryApp(view, Auth())(scope, receive, send))
    finally:
        view.close()
    assert sent[0]["status"] == 500 and json.loads(sent[1]["body"])["errors"][0]["code"] == "UNKNOWN"
    err = capsys.readouterr().err
    assert err == "ferry serve: GET '/v2/team/app/tags/list': RuntimeError: disk on fire\n"
