"""Images hub to edge against two real registries (Debian's docker-registry) and real skopeo.

The hub side is ``bundler.sources.images.image_source``; the edge side is
``importer.apply.images``. Between them, :func:`carry` does what the bundle does: it reads
every blob stream to the end (as the writer does) and rebuilds each blob from chunks
checked by ``importer.content.stream_entry`` (as the importer does).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundler.sources import SourceArtifact
from bundler.sources.images import image_source
from manifests.progress import Silent
from importer.apply.images import ImageTarget, apply_image, client_for, missing_blobs, pinned_ref
from importer.content import stream_entry
from manifests.digest import blake3_hex
from manifests.errors import FerryError, VerificationError
from manifests.model import Artifact, BundleInfo, Chunk, Entry, Manifest
from tests.support.registry import Registry, layer, make_image, make_index, random_layer

SAMPLE_LAYOUT = Path(__file__).resolve().parents[1] / "samples" / "images" / "sentiment-server"
CHUNK = 1 << 20


class Carried:
    """A source artifact as the edge sees it: an Artifact plus verified chunk reads."""

    def __init__(self, src: SourceArtifact) -> None:
        self.chunks: dict[str, bytes] = {}
        entries = []
        for f in src.files:
            with f.open() as stream:
                data = stream.read()  # reading to the end verifies the blob's digest
            ids = []
            for i in range(0, max(len(data), 1), CHUNK):
                piece = data[i:i + CHUNK]
                self.chunks[blake3_hex(piece)] = piece
                ids.append(blake3_hex(piece))
            entries.append(Entry(size=len(data), blake3=blake3_hex(data), chunks=tuple(ids),
                                 digest=f.digest, media_type=f.media_type))
        self.artifact = Artifact(kind="image", name=src.name, version=src.version,
                                 entries=tuple(entries), image=src.image)
        self.manifest = Manifest(
            bundle=BundleInfo("t", "t", "stable", 1, "2026-01-01T00:00:00Z", "test"), artifacts=(self.artifact,),
            chunks=tuple(Chunk(cid, len(b)) for cid, b in sorted(self.chunks.items())), packs=())
        self.read: list[str] = []  # digests whose chunks the edge read

    def read_chunk(self, chunk: Chunk) -> bytes:
        return self.chunks[chunk.id]

    def read_entry(self, entry: Entry) -> Iterator[bytes]:
        self.read.append(entry.digest or "")
        return stream_entry(entry, self.manifest, self)

    def tamper(self, digest: str) -> None:
        """Flip a byte of the blob's first chunk, as a corrupted medium would."""
        entry = next(e for e in self.artifact.entries if e.digest == digest)
        cid = entry.chunks[0]
        data = bytearray(self.chunks[cid])
        data[len(data) // 2] ^= 0xFF
        self.chunks[cid] = bytes(data)


def source(ref: str, **kw) -> SourceArtifact:
    args = {"layout": None, "version": None, "platform": None, "insecure_registries": frozenset()}
    args.update(kw)
    return image_source(ref, progress=Silent(), **args)


def layer_digests(carried: Carried) -> list[str]:
    return [e.digest for e in carried.artifact.entries if "layer" in (e.media_type or "")]


def skopeo_oci(layout: Path, name: str, *, raw: bool = False) -> bytes:
    cmd = ["skopeo", "inspect", *(["--raw"] if raw else []), f"oci:{layout}:{name}"]
    return subprocess.run(cmd, check=True, capture_output=True, timeout=60).stdout


@pytest.fixture(scope="module")
def hub_image(registry: Registry, tmp_path_factory) -> dict:
    """team/app:1.0.0 on the hub registry: two layers, one of 3 MiB (streamed in a PATCH)."""
    layout = tmp_path_factory.mktemp("hub-app")
    base = random_layer(3 << 20, seed=1)
    digest = make_image(layout, "1.0.0", [base, layer({"app.txt": b"v1"})])
    registry.push(layout, "1.0.0", "team/app")
    return {"ref": f"{registry.host}/team/app:1.0.0", "digest": digest, "base": base}


# --------------------------------------------------------------------------- hub -> edge registry


def test_registry_to_registry_is_byte_identical(registry, edge_registry, hub_image):
    src = source(hub_image["ref"])
    assert (src.kind, src.name, src.version) == ("image", "team/app", "1.0.0")
    assert src.image.manifest == hub_image["digest"] and src.image.tag == "1.0.0"
    assert src.image.source == hub_image["ref"]
    assert [f.media_type.rsplit(".", 2)[-2] for f in src.files][:2] == ["manifest", "config"]
    carried = Carried(src)
    target = ImageTarget(edge_registry.host, None)
    assert missing_blobs(carried.artifact, target) == {e.digest for e in carried.artifact.entries}

    ref = apply_image(carried.artifact, carried.read_entry, target)

    assert ref == f"{edge_registry.host}/team/app@{hub_image['digest']}" == pinned_ref(carried.artifact, target)
    landed = edge_registry.inspect("team/app:1.0.0")
    assert landed["Digest"] == hub_image["digest"]
    assert edge_registry.raw_manifest("team/app:1.0.0") == registry.raw_manifest("team/app:1.0.0")
    assert landed["Layers"] == layer_digests(carried)


def test_reapply_reads_and_uploads_nothing(edge_registry, hub_image):
    carried = Carried(source(hub_image["ref"]))
    target = ImageTarget(edge_registry.host, None)
    apply_image(carried.artifact, carried.read_entry, target)  # (already there if run after the test above)
    assert missing_blobs(carried.artifact, target) == set()
    client = client_for(target)
    before = dict(client.calls)
    carried.read.clear()
    apply_image(carried.artifact, carried.read_entry, target)
    writes = {m: client.calls.get(m, 0) - before.get(m, 0) for m in ("POST", "PATCH", "PUT")}
    assert writes == {"POST": 0, "PATCH": 0, "PUT": 0}
    assert carried.read == []


def test_shared_layer_is_mounted_not_uploaded(registry, edge_registry, hub_image, tmp_path):
    """A second repository sharing the 3 MiB base layer: the edge mounts it across repositories."""
    carried = Carried(source(hub_image["ref"]))
    target = ImageTarget(edge_registry.host, None)
    apply_image(carried.artifact, carried.read_entry, target)

    digest = make_image(tmp_path, "2.0.0", [hub_image["base"], layer({"other.txt": b"o"})])
    registry.push(tmp_path, "2.0.0", "team/other")
    other = Carried(source(f"{registry.host}/team/other:2.0.0"))
    base_digest = layer_digests(other)[0]
    assert base_digest in layer_digests(carried)

    missing = missing_blobs(other.artifact, target)
    assert base_digest not in missing and digest in missing
    client = client_for(target)
    before = client.calls.get("PATCH", 0)
    apply_image(other.artifact, other.read_entry, target)
    assert base_digest not in other.read
    assert client.calls.get("PATCH", 0) == before  # the only large blob was mounted, not streamed
    assert edge_registry.inspect("team/other:2.0.0")["Digest"] == digest


@pytest.mark.parametrize("size", [2 << 20, 50_000], ids=["streamed", "monolithic"])
def test_tampered_blob_is_refused_and_nothing_tagged(registry, edge_registry, tmp_path, size):
    repo = f"team/tampered-{size}"
    make_image(tmp_path, "1.0.0", [random_layer(size, seed=7)])
    registry.push(tmp_path, "1.0.0", repo)
    carried = Carried(source(f"{registry.host}/{repo}:1.0.0"))
    bad = layer_digests(carried)[0]
    carried.tamper(bad)
    target = ImageTarget(edge_registry.host, None)
    with pytest.raises(VerificationError, match=bad):
        apply_image(carried.artifact, carried.read_entry, target)
    client = client_for(target)
    assert not client.has_blob(repo, bad)
    assert client.manifest_digest(repo, "1.0.0") is None


# --------------------------------------------------------------------------- platforms


@pytest.fixture(scope="module")
def hub_multiarch(registry: Registry, tmp_path_factory) -> dict:
    layout = tmp_path_factory.mktemp("hub-multi")
    digest = make_index(layout, "3.1.0", {"amd64": [layer({"a": b"amd64"})], "arm64": [layer({"a": b"arm64"})]})
    registry.push(layout, "3.1.0", "team/multi")
    index = json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())
    return {"ref": f"{registry.host}/team/multi:3.1.0", "digest": digest,
            "children": {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}}


def test_whole_index_is_carried_without_platform(registry, edge_registry, hub_multiarch):
    src = source(hub_multiarch["ref"])
    assert src.image.manifest == hub_multiarch["digest"] and src.image.platform is None
    digests = {f.digest for f in src.files}
    assert set(hub_multiarch["children"].values()) <= digests
    carried = Carried(src)
    apply_image(carried.artifact, carried.read_entry, ImageTarget(edge_registry.host, None))
    assert edge_registry.raw_manifest("team/multi:3.1.0") == registry.raw_manifest("team/multi:3.1.0")
    for arch, child in hub_multiarch["children"].items():
        assert edge_registry.inspect(f"team/multi@{child}")["Architecture"] == arch


def test_platform_selects_and_pins_one_manifest(edge_registry, hub_multiarch, tmp_path):
    src = source(hub_multiarch["ref"], platform="linux/arm64")
    arm = hub_multiarch["children"]["arm64"]
    assert src.image.manifest == arm and src.image.platform == "linux/arm64"
    assert hub_multiarch["digest"] not in {f.digest for f in src.files}
    assert hub_multiarch["children"]["amd64"] not in {f.digest for f in src.files}
    carried = Carried(src)
    layout = tmp_path / "oci"
    ref = apply_image(carried.artifact, carried.read_entry, ImageTarget(None, layout))
    # no edge registry: pinned by digest, keeping the host the hub read it from
    assert ref == f"{hub_multiarch['ref'].split('/')[0]}/team/multi@{arm}"
    assert json.loads(skopeo_oci(layout, "team/multi:3.1.0"))["Architecture"] == "arm64"
    with pytest.raises(FerryError, match="no manifest for platform linux/s390x .*offers: linux/amd64, linux/arm64"):
        source(hub_multiarch["ref"], platform="linux/s390x")


# --------------------------------------------------------------------------- OCI layouts


def test_layout_to_layout_sample_image(tmp_path):
    """The sample image (read from its layout) lands in the edge layout, readable by skopeo."""
    index = json.loads((SAMPLE_LAYOUT / "index.json").read_text())
    sample_digest = index["manifests"][0]["digest"]
    src = source("registry.example:5000/team/sentiment-server:1.2.0", layout=SAMPLE_LAYOUT)
    assert src.name == "team/sentiment-server" and src.image.manifest == sample_digest
    assert src.image.source == "registry.example:5000/team/sentiment-server:1.2.0"  # as workloads name it
    carried = Carried(src)
    edge = tmp_path / "oci"
    target = ImageTarget(None, edge)
    assert missing_blobs(carried.artifact, target) == {e.digest for e in carried.artifact.entries}
    assert not edge.exists()  # asking changes nothing

    assert apply_image(carried.artifact, carried.read_entry, target) == f"registry.example:5000/team/sentiment-server@{sample_digest}"

    raw = skopeo_oci(edge, "team/sentiment-server:1.2.0", raw=True)
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == sample_digest
    assert json.loads((edge / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert missing_blobs(carried.artifact, target) == set()
    assert not list((edge / "blobs" / "sha256").glob(".*"))  # no temporary files left

    # a second image joins the same layout; the first stays; the same name again is replaced
    other = tmp_path / "hub"
    make_image(other, "0.1.0", [layer({"x": b"1"})])
    second = Carried(source("team/tool:0.1.0", layout=other))
    apply_image(second.artifact, second.read_entry, target)
    newer = make_image(other, "0.1.0", [layer({"x": b"2"})])
    third = Carried(source("team/tool:0.1.0", layout=other))
    apply_image(third.artifact, third.read_entry, target)
    names = {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
             for m in json.loads((edge / "index.json").read_text())["manifests"]}
    assert names == {"team/sentiment-server:1.2.0": sample_digest, "team/tool:0.1.0": newer}
    assert json.loads(skopeo_oci(edge, "team/tool:0.1.0"))["Digest"] == newer


def test_layout_tampered_blob_leaves_nothing(tmp_path):
    hub = tmp_path / "hub"
    make_image(hub, "1.0.0", [random_layer(100_000, seed=3)])
    carried = Carried(source("team/bad:1.0.0", layout=hub))
    bad = layer_digests(carried)[0]
    carried.tamper(bad)
    edge = tmp_path / "oci"
    with pytest.raises(VerificationError, match=bad):
        apply_image(carried.artifact, carried.read_entry, ImageTarget(None, edge))
    assert not (edge / "blobs" / "sha256" / bad.split(":")[1]).exists()
    assert not list((edge / "blobs" / "sha256").glob(".*"))
    assert json.loads((edge / "index.json").read_text())["manifests"] == []


# --------------------------------------------------------------------------- hub-side refusals


def test_hub_layout_blob_changed_on_disk_fails_naming_it(tmp_path):
    make_image(tmp_path, "1.0.0", [layer({"a": b"original"})])
    src = source("team/app:1.0.0", layout=tmp_path)
    blob = next(f for f in src.files if "layer" in f.media_type)
    path = tmp_path / "blobs" / "sha256" / blob.digest.split(":")[1]
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=f"blob {blob.digest}.*does not match"):
        with blob.open() as stream:
            while stream.read(7):
                pass


def test_hub_registry_blob_corrupted_in_storage_fails_naming_it(registry, tmp_path):
    make_image(tmp_path, "1.0.0", [layer({"a": b"will be corrupted"})])
    registry.push(tmp_path, "1.0.0", "team/corrupt")
    src = source(f"{registry.host}/team/corrupt:1.0.0")
    blob = next(f for f in src.files if "layer" in f.media_type)
    hexd = blob.digest.split(":")[1]
    stored = registry.root / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] / hexd / "data"
    data = bytearray(stored.read_bytes())
    data[10] ^= 1
    stored.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=f"blob {blob.digest} of {registry.host}/team/corrupt"):
        with blob.open() as stream:
            stream.read()


def test_unreachable_registry_is_one_clear_line():
    with pytest.raises(FerryError) as info:
        source("127.0.0.1:9/team/app:1.0.0")
    assert str(info.value) == "registry 127.0.0.1:9 is unreachable (Connection refused)"
    with pytest.raises(FerryError, match="unreachable"):
        missing_blobs(_any_artifact(), ImageTarget("127.0.0.1:9", None))


@pytest.mark.parametrize("ref, kw, message", [
    ("team/app:latest", {}, "tag 'latest' is not a semantic version; add `version: X.Y.Z`"),
    ("team/app:1.0.0", {"version": "one"}, "version 'one' is not a semantic version"),
    ("team/app:3.0.0", {}, "has no image named '3.0.0' .*it holds: 1.0.0, 2.0.0"),
])
def test_bad_items_are_one_clear_error(tmp_path, ref, kw, message):
    make_image(tmp_path, "1.0.0", [layer({"a": b"1"})])
    make_image(tmp_path, "2.0.0", [layer({"a": b"2"})])
    with pytest.raises(FerryError, match=message):
        source(ref, layout=tmp_path, **kw)


def test_layout_selection_by_name_or_only_image(tmp_path):
    digest = make_image(tmp_path, "whatever", [layer({"a": b"1"})])
    src = source("team/app:latest", layout=tmp_path, version="1.0.0")
    assert src.image.manifest == digest and src.version == "1.0.0" and src.image.tag == "latest"
    with pytest.raises(FerryError, match="not an OCI image layout|OCI layout marker"):
        source("team/app:1.0.0", layout=tmp_path / "blobs")


def test_missing_image_in_registry(registry):
    with pytest.raises(FerryError, match=f"image {registry.host}/team/absent:1.0.0 not found"):
        source(f"{registry.host}/team/absent:1.0.0")


def _any_artifact() -> Artifact:
    data = b"{}"
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    from manifests.model import ImageInfo

    entry = Entry(size=2, blake3=blake3_hex(data), chunks=(blake3_hex(data),), digest=d,
                  media_type="application/vnd.oci.image.manifest.v1+json")
    return Artifact(kind="image", name="team/app", version="1.0.0", entries=(entry,),
                    image=ImageInfo("team/app", "1.0.0", d, entry.media_type))


# --------------------------------------------------------------------------- credentials


def _docker_config(folder: Path, host: str, user: str, password: str) -> Path:
    import base64

    folder.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return folder


def test_login_from_docker_config(auth_registry, edge_registry, tmp_path, monkeypatch):
    """Basic auth with the credentials `docker login` leaves in the Docker config."""
    digest = make_image(tmp_path / "layout", "1.0.0", [layer({"secret": b"x"})])
    auth_registry.push(tmp_path / "layout", "1.0.0", "team/private")
    ref = f"{auth_registry.host}/team/private:1.0.0"

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    with pytest.raises(FerryError, match=f"registry {auth_registry.host} requires a login .*docker login"):
        source(ref)
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path / "bad", auth_registry.host, "ferry", "wrong")))
    with pytest.raises(FerryError, match="refused the credentials"):
        source(ref)
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path / "good", auth_registry.host, "ferry", "s3cret")))
    carried = Carried(source(ref))
    assert carried.artifact.image.manifest == digest

    # and the edge pushes with credentials too (back into the same registry, another repository)
    target = ImageTarget(auth_registry.host, None)
    renamed = Artifact(kind="image", name="team/copy", version="1.0.0", entries=carried.artifact.entries,
                       image=carried.artifact.image.__class__("team/copy", "1.0.0", digest,
                                                              carried.artifact.image.media_type))
    apply_image(renamed, carried.read_entry, target)
    assert auth_registry.inspect("team/copy:1.0.0")["Digest"] == digest
    assert carried.read == [digest]  # config and layer were mounted from team/private, not sent


def test_bearer_token_login(token_registry, tmp_path, monkeypatch):
    """A registry behind a token service: anonymous pull works, push needs the login."""
    reg, tokens = token_registry
    digest = make_image(tmp_path / "layout", "1.0.0", [layer({"t": b"token"})])
    reg.push(tmp_path / "layout", "1.0.0", "team/tok")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    carried = Carried(source(f"{reg.host}/team/tok:1.0.0"))  # anonymous pull
    assert carried.artifact.image.manifest == digest
    assert "repository:team/tok:pull" in tokens.requests

    renamed = Artifact(kind="image", name="team/tok2", version="1.0.0", entries=carried.artifact.entries,
                       image=carried.artifact.image.__class__("team/tok2", "1.0.0", digest,
                                                              carried.artifact.image.media_type))
    from importer.apply import images as edge_images

    edge_images._clients.clear()
    with pytest.raises(FerryError, match=f"registry {reg.host}: access to .* denied"):
        apply_image(renamed, carried.read_entry, ImageTarget(reg.host, None))
    edge_images._clients.clear()
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path / "good", reg.host, "ferry", "s3cret")))
    apply_image(renamed, carried.read_entry, ImageTarget(reg.host, None))
    assert reg.inspect("team/tok2:1.0.0")["Digest"] == digest
    assert "repository:team/tok2:pull,push" in tokens.requests


def test_docker_schema2_image_and_pinned_source_ref(registry, edge_registry):
    """A Docker (not OCI) manifest, pushed with our own client, read by tag+digest."""
    from manifests.oci import DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST
    from transport.registry import RegistryClient

    client = RegistryClient(registry.host)
    blob = layer({"docker": b"schema2"})
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    descs = []
    for data, media_type in ((config, DOCKER_CONFIG), (blob, DOCKER_LAYER_GZIP)):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        client.upload_blob("team/docker", digest, len(data), iter([data]))
        descs.append({"mediaType": media_type, "size": len(data), "digest": digest})
    manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": descs[0],
                           "layers": descs[1:]}, indent=3).encode()
    digest = client.put_manifest("team/docker", "5.0.0", manifest, DOCKER_MANIFEST)

    src = source(f"{registry.host}/team/docker:5.0.0@{digest}")
    assert src.image.manifest == digest and src.image.media_type == DOCKER_MANIFEST and src.version == "5.0.0"
    carried = Carried(src)
    apply_image(carried.artifact, carried.read_entry, ImageTarget(edge_registry.host, None))
    assert edge_registry.raw_manifest("team/docker:5.0.0") == manifest


def test_transport_follows_docker():
    from transport.registry import RegistryClient

    assert RegistryClient("127.0.0.1:5000").base == "http://127.0.0.1:5000"
    assert RegistryClient("localhost:5000").base == "http://localhost:5000"
    assert RegistryClient("registry.example:5000").base == "https://registry.example:5000"


def test_registry_dying_mid_blob_is_one_clear_line(tmp_path):
    """A registry that stops halfway through a blob: an error naming the blob, no traceback."""
    from tests.support.registry import start_registry

    (tmp_path / "reg").mkdir()
    reg = start_registry(tmp_path / "reg")
    try:
        make_image(tmp_path / "layout", "1.0.0", [random_layer(32 << 20, seed=5)])  # more than socket buffers hold
        reg.push(tmp_path / "layout", "1.0.0", "team/dying")
        src = source(f"{reg.host}/team/dying:1.0.0")
        blob = max(src.files, key=lambda f: f.size)
        with pytest.raises(FerryError, match=f"blob {blob.digest} of team/dying failed \\(connection lost after") as info:
            with blob.open() as stream:
                stream.read(1 << 16)
                reg.process.kill()
                reg.process.wait()
                while stream.read(1 << 16):
                    pass
        assert "\n" not in str(info.value)
    finally:
        if reg.process.poll() is None:
            reg.process.kill()
            reg.process.wait()


def test_layout_refuses_an_image_missing_a_blob(tmp_path):
    """A (signed but wrong) artifact that leaves out a layer never gets a name in the layout."""
    make_image(tmp_path / "hub", "1.0.0", [layer({"a": b"1"}), layer({"b": b"2"})])
    carried = Carried(source("team/partial:1.0.0", layout=tmp_path / "hub"))
    dropped = layer_digests(carried)[1]
    art = carried.artifact
    partial = Artifact(kind="image", name=art.name, version=art.version, image=art.image,
                       entries=tuple(e for e in art.entries if e.digest != dropped))
    edge = tmp_path / "oci"
    with pytest.raises(VerificationError, match=f"references {dropped}, which the image does not carry"):
        apply_image(partial, carried.read_entry, ImageTarget(None, edge))
    assert json.loads((edge / "index.json").read_text())["manifests"] == []


def test_registry_refuses_an_image_missing_a_blob(edge_registry, tmp_path):
    make_image(tmp_path / "hub", "1.0.0", [layer({"a": b"3"}), layer({"b": b"4"})])
    carried = Carried(source("team/partial-reg:1.0.0", layout=tmp_path / "hub"))
    dropped = layer_digests(carried)[1]
    art = carried.artifact
    partial = Artifact(kind="image", name=art.name, version=art.version, image=art.image,
                       entries=tuple(e for e in art.entries if e.digest != dropped))
    target = ImageTarget(edge_registry.host, None)
    with pytest.raises(FerryError, match="storing manifest .* failed \\(400: MANIFEST_BLOB_UNKNOWN"):
        apply_image(partial, carried.read_entry, target)
    assert client_for(target).manifest_digest("team/partial-reg", "1.0.0") is None


def test_platform_on_a_single_platform_image_warns(tmp_path):
    """export --platform applies to every image; a single-platform image is carried as it is,
    with a warning when its platform differs."""
    make_image(tmp_path, "1.0.0", [layer({"a": b"1"})], arch="amd64")
    same = source("team/one:1.0.0", layout=tmp_path, platform="linux/amd64")
    assert same.warnings == [] and same.image.platform is None
    other = source("team/one:1.0.0", layout=tmp_path, platform="linux/arm64")
    assert other.image.manifest == same.image.manifest
    assert other.warnings == [f"image team/one:1.0.0 (layout {tmp_path}) is a single-platform image for "
                              "linux/amd64; --platform linux/arm64 does not apply to it"]
