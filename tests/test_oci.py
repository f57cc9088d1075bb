"""manifests.oci and the pure parts of transport.registry: references, manifests, platforms,
verified reading, Docker config credentials."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import string

import pytest
from hypothesis import assume, given, settings, strategies as st

from manifests.errors import FerryError, FormatError, VerificationError
from manifests.model import REPOSITORY_RE, TAG_RE
from manifests.oci import (DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, DigestReader, is_loopback_host,
                           parse_manifest, parse_platform, parse_reference, select_platform)
from transport.registry import Credentials, load_credentials, parse_challenge

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
D3 = "sha256:" + "c" * 64


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("text, registry, repository, tag, digest", [
    ("ubuntu", "docker.io", "library/ubuntu", "latest", None),
    ("ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", None),
    ("team/app:1.2.0", "docker.io", "team/app", "1.2.0", None),
    ("docker.io/ubuntu", "docker.io", "library/ubuntu", "latest", None),
    ("index.docker.io/team/app:1", "docker.io", "team/app", "1", None),
    ("localhost/app:1", "localhost", "app", "1", None),
    ("localhost:5000/a/b/c:v1", "localhost:5000", "a/b/c", "v1", None),
    ("127.0.0.1:5000/team/app:1.2.0", "127.0.0.1:5000", "team/app", "1.2.0", None),
    ("registry.example/app", "registry.example", "app", "latest", None),
    ("registry.example:5000/team/sentiment:1.2.0", "registry.example:5000", "team/sentiment", "1.2.0", None),
    (f"reg.example/app@{D1}", "reg.example", "app", None, D1),
    (f"reg.example/app:1.0.0@{D1}", "reg.example", "app", "1.0.0", D1),
    ("[::1]:5000/app:1", "[::1]:5000", "app", "1", None),
])
def test_reference_follows_docker_rules(text, registry, repository, tag, digest):
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


@pytest.mark.parametrize("host, ok", [
    ("127.0.0.1:5000", True), ("registry.local", True), ("[::1]:5000", True), ("reg-1.example.com:443", True),
    ("http://reg.example", False), ("reg.example/path", False), ("", False), ("reg example", False),
])
def test_registry_host(host, ok):
    from manifests.oci import check_registry_host

    if ok:
        assert check_registry_host(host) == host
    else:
        with pytest.raises(FerryError, match="is not HOST\\[:PORT\\]"):
            check_registry_host(host)


def test_docker_hub_api_host():
    assert parse_reference("ubuntu").api_host == "registry-1.docker.io"
    assert parse_reference("127.0.0.1:5000/a:1").api_host == "127.0.0.1:5000"


@pytest.mark.parametrize("text", [
    "", " app", "app:", "App:1", "team/App", "app:-x", "app@sha256:short", f"app@sha512:{'a' * 128}",
    "reg.example/", "a//b", "a/b/", "app:1 2", "reg.example:x:y/app", "-app", "app:" + "x" * 129,
])
def test_bad_references_are_one_clear_error(text):
    with pytest.raises(FerryError) as info:
        parse_reference(text)
    message = str(info.value)
    assert "image reference" in message and "\n" not in message


_component = st.from_regex(r"[a-z0-9]{1,6}(?:[._-][a-z0-9]{1,4}){0,2}", fullmatch=True)
_path = st.lists(_component, min_size=1, max_size=4).map("/".join)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,20}", fullmatch=True)
_host = st.one_of(
    st.just("localhost"),
    st.from_regex(r"[a-z][a-z0-9]{0,8}\.[a-z]{2,5}", fullmatch=True),
    st.builds(lambda h, p: f"{h}:{p}", st.sampled_from(["127.0.0.1", "localhost", "reg.example"]),
              st.integers(1, 65535)),
)
_digest = st.binary(min_size=1, max_size=8).map(lambda b: "sha256:" + hashlib.sha256(b).hexdigest())


@settings(max_examples=300, deadline=None)
@given(host=st.one_of(st.none(), _host), path=_path, tag=st.one_of(st.none(), _tag),
       digest=st.one_of(st.none(), _digest))
def test_reference_round_trips(host, path, tag, digest):
    assume(host or "/" not in path or "." not in path.split("/")[0])  # else its first part is a host
    text = (f"{host}/" if host else "") + path + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    ref = parse_reference(text)
    assert REPOSITORY_RE.match(ref.repository)
    assert ref.tag is None or TAG_RE.match(ref.tag)
    assert ref.digest == digest
    assert ref.tag == (tag or (None if digest else "latest"))
    if host:
        assert ref.registry == host and ref.repository == path
    else:
        assert ref.registry == "docker.io"
        assert ref.repository == (path if "/" in path else f"library/{path}")
    assert parse_reference(str(ref)) == ref  # the normal form parses to itself


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.printable + "é/:@", max_size=60))
def test_any_text_parses_or_fails_cleanly(text):
    try:
        ref = parse_reference(text)
    except FerryError as exc:
        assert "\n" not in str(exc)
    else:
        assert REPOSITORY_RE.match(ref.repository)


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1:5000", True), ("127.1.2.3", True), ("localhost", True), ("LOCALHOST:80", True),
    ("[::1]:5000", True), ("::1", True), ("128.0.0.1:5000", False), ("reg.example", False),
    ("localhost.example:5000", False), ("10.0.0.1", False),
])
def test_loopback_hosts(host, loopback):
    assert is_loopback_host(host) is loopback


# --------------------------------------------------------------------------- manifests


def _manifest(media_type=OCI_MANIFEST, **extra) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": media_type,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1, "size": 10},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 20}],
           **extra}
    return json.dumps(doc).encode()


def _index(*platforms: str) -> bytes:
    entries = []
    for i, p in enumerate(platforms):
        parts = p.split("/")
        plat = {"os": parts[0], "architecture": parts[1]}
        if len(parts) > 2:
            plat["variant"] = parts[2]
        entries.append({"mediaType": OCI_MANIFEST, "digest": "sha256:" + f"{i:064x}", "size": 5, "platform": plat})
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()


def test_image_manifest_lists_config_then_layers():
    doc = parse_manifest(_manifest())
    assert not doc.is_index
    assert [b.digest for b in doc.blobs] == [D1, D2]
    assert parse_manifest(_manifest(DOCKER_MANIFEST)).media_type == DOCKER_MANIFEST


def test_media_type_from_header_when_document_omits_it():
    data = json.dumps({"schemaVersion": 2, "config": {"mediaType": "a/b", "digest": D1, "size": 1},
                       "layers": []}).encode()
    assert parse_manifest(data, None).media_type == OCI_MANIFEST
    assert parse_manifest(data, DOCKER_MANIFEST).media_type == DOCKER_MANIFEST
    assert parse_manifest(data, "application/json").media_type == OCI_MANIFEST


@pytest.mark.parametrize("data, message", [
    (b"not json", "not JSON"),
    (b"[]", "not a JSON object"),
    (json.dumps({"schemaVersion": 1, "name": "x"}).encode(), "schema 1"),
    (_manifest("text/plain"), "not an image manifest"),
    (json.dumps({"schemaVersion": 2, "mediaType": "application/json", "layers": []}).encode(), "not an image manifest"),
    (_manifest(layers=[{"mediaType": "a/b", "digest": "sha512:" + "a" * 128, "size": 1}]), "sha256"),
    (_manifest(layers=[{"mediaType": "a/b", "digest": D2, "size": -1}]), "byte count"),
    (_manifest(layers="x"), "layers list"),
    (b" " * (4 * 1024 * 1024 + 1), "over the limit"),
])
def test_bad_manifests_are_refused(data, message):
    with pytest.raises(FormatError, match=message):
        parse_manifest(data, where="m")


def test_select_platform():
    index = parse_manifest(_index("linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/arm/v6"))
    assert str(select_platform(index, "linux/amd64").platform) == "linux/amd64"
    assert str(select_platform(index, "linux/arm64").platform) == "linux/arm64/v8"
    assert str(select_platform(index, "linux/arm/v6").platform) == "linux/arm/v6"
    with pytest.raises(FerryError, match="offers: linux/amd64, linux/arm/v6"):
        select_platform(index, "windows/amd64")
    with pytest.raises(FerryError, match="os/arch"):
        parse_platform("amd64")


# --------------------------------------------------------------------------- verified reading


def _reader(data: bytes, digest: str, size: int) -> DigestReader:
    return DigestReader(io.BytesIO(data).read, digest, size, "blob X")


def _read_all(reader: DigestReader, block: int) -> bytes:
    out = b""
    while chunk := reader.read(block):
        out += chunk
    return out


@given(st.binary(max_size=3000), st.integers(1, 700))
def test_digest_reader_passes_good_content(data, block):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert _read_all(_reader(data, digest, len(data)), block) == data


@given(st.binary(min_size=1, max_size=2000), st.integers(1, 700), st.data())
def test_digest_reader_refuses_changed_content(data, block, draw):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    i = draw.draw(st.integers(0, len(data) - 1))
    bad = data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
    with pytest.raises(VerificationError, match="blob X"):
        _read_all(_reader(bad, digest, len(data)), block)


def test_digest_reader_refuses_short_and_long_content():
    data = b"hello world"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with pytest.raises(VerificationError, match="got 5 bytes"):
        _read_all(_reader(data[:5], digest, len(data)), 4)
    with pytest.raises(VerificationError, match="more than"):
        _read_all(_reader(data + b"!", digest, len(data)), 100)
    # a reader that stops after exactly `size` bytes still sees a wrong digest
    reader = _reader(b"x" * len(data), digest, len(data))
    with pytest.raises(VerificationError, match="does not match"):
        reader.read(len(data))


def test_empty_blob_is_checked_too():
    empty = "sha256:" + hashlib.sha256(b"").hexdigest()
    assert _reader(b"", empty, 0).read(10) == b""
    with pytest.raises(VerificationError):
        _reader(b"", D1, 0).read(10)


# --------------------------------------------------------------------------- credentials


def test_docker_config_credentials(tmp_path):
    config = tmp_path / "config.json"
    auth = base64.b64encode(b"alice:s3cret:with:colons").decode()
    config.write_text(json.dumps({"auths": {
        "reg.example:5000": {"auth": auth},
        "https://other.example": {"username": "bob", "password": "pw"},
        "https://index.docker.io/v1/": {"identitytoken": "tok"},
    }}))
    assert load_credentials("reg.example:5000", config) == Credentials("alice", "s3cret:with:colons")
    assert load_credentials("other.example", config) == Credentials("bob", "pw")
    assert load_credentials("registry-1.docker.io", config) == Credentials(identity_token="tok")
    assert load_credentials("unknown.example", config) is None
    assert load_credentials("x", tmp_path / "absent.json") is None
    config.write_text("{broken")
    with pytest.raises(FerryError, match="Docker config"):
        load_credentials("x", config)


def test_credential_helper_missing_means_anonymous(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credsStore": "ferry-test-absent-helper"}))
    assert load_credentials("reg.example", config) is None


def test_parse_challenge():
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "registry.example",
                      "scope": "repository:a/b:pull,push"}
    assert parse_challenge('Basic realm="basic-realm"') == ("basic", {"realm": "basic-realm"})


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**60) | st.text(max_size=20)
    | st.sampled_from([OCI_MANIFEST, OCI_INDEX, D1, "sha256:x", "a/b"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["mediaType", "digest", "size", "config", "layers", "manifests", "platform",
                         "os", "architecture", "variant", "annotations", "schemaVersion", "x"]),
        inner, max_size=6),
    max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(_json_values, st.sampled_from([None, OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, "text/plain"]))
def test_manifest_parser_refuses_cleanly(doc, media_type):
    """Whatever JSON a registry or a bundle serves: a parsed manifest or one FormatError."""
    try:
        parsed = parse_manifest(json.dumps(doc).encode(), media_type)
    except FormatError as exc:
        assert "\n" not in str(exc)
    else:
        for d in (*parsed.blobs, *parsed.manifests):
            assert d.digest.startswith("sha256:") and d.size >= 0
