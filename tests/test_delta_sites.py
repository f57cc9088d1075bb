"""Delta bundles for sites whose images live in a registry or the edge's OCI layout (issue #11
item 2), through the real CLI: images built as OCI layouts, pushed with skopeo to the hub's
Debian registry, imported into the edge's Debian registry (or ``EDGE/oci``), checked with
``skopeo inspect``.

The issue's flow: ``svc:1.0.0`` imported with ``--registry``, the receipt written,
``svc:1.1.0`` (only a small top layer changed) exported ``--since`` that receipt. The delta
must leave out the base layer, which the site registry holds, and the import must land the
right image; a registry that lost the blob is named in one line and nothing is half-applied.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from manifests.receipt import Receipt
from tests.support.common import KeyPair, assert_clean_failure, run_ferry
from tests.support.registry import Registry, layer, make_image, random_layer

BASE_SIZE = 4 << 20  # the unchanged base layer: incompressible, so sizes mean something


@dataclass
class Flow:
    repo: str
    base_digest: str  # the base layer's blob digest
    new_digest: str  # svc:1.1.0's manifest digest
    full: Path  # svc:1.0.0, a full bundle
    delta: Path  # svc:1.1.0 --since the receipt
    edge: Path  # the edge state 1.0.0 went into
    receipt: Receipt
    summary: dict  # export --json of the delta
    text: str  # export's text summary of the same delta (a second export of it)


def _spec(path: Path, ref: str) -> Path:
    path.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata: {name: svc, channel: stable}\n"
                    f"spec:\n  images:\n    - ref: {ref}\n")
    return path


def _bytes(bundle: Path) -> int:
    return sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())


def _flow(tmp: Path, repo: str, registry: Registry, keys: KeyPair, *edge_args: object) -> Flow:
    base = random_layer(BASE_SIZE, seed=zlib.crc32(repo.encode()))
    layout = tmp / "layout"
    make_image(layout, "1.0.0", [base, layer({"app/version": b"1.0.0"})])
    new_digest = make_image(layout, "1.1.0", [base, layer({"app/version": b"1.1.0"})])
    for tag in ("1.0.0", "1.1.0"):
        registry.push(layout, tag, repo)
    import hashlib

    base_digest = "sha256:" + hashlib.sha256(base).hexdigest()
    hub, edge = tmp / "hub", tmp / "edge"
    full = tmp / "full"
    done = run_ferry("export", _spec(tmp / "a.yaml", f"{registry.host}/{repo}:1.0.0"), "--out", full,
                     "--key", keys.key, "--state", hub)
    assert done.returncode == 0, done.stderr
    done = run_ferry("import", full, "--trust", keys.pub, "--state", edge, *edge_args)
    assert done.returncode == 0, done.stdout + done.stderr
    done = run_ferry("receipt", "--state", edge, "--out", tmp / "receipt.json")
    assert done.returncode == 0, done.stderr
    receipt = Receipt.from_bytes((tmp / "receipt.json").read_bytes())
    spec = _spec(tmp / "b.yaml", f"{registry.host}/{repo}:1.1.0")
    delta = tmp / "delta"
    done = run_ferry("export", spec, "--out", delta, "--key", keys.key, "--state", hub,
                     "--since", tmp / "receipt.json", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    text = run_ferry("export", spec, "--out", tmp / "delta-text", "--key", keys.key, "--state", tmp / "hub2",
                     "--since", tmp / "receipt.json")
    assert text.returncode == 0, text.stderr
    return Flow(repo, base_digest, new_digest, full, delta, edge, receipt, summary, text.stdout)


@pytest.fixture(scope="module")
def into_registry(registry: Registry, edge_registry: Registry, hub_keys: KeyPair,
                  tmp_path_factory: pytest.TempPathFactory) -> Flow:
    return _flow(tmp_path_factory.mktemp("delta-registry"), "field/svc", registry, hub_keys,
                 "--registry", edge_registry.host)


def test_the_receipt_lists_the_blobs_the_site_registry_holds(into_registry: Flow) -> None:
    assert into_registry.base_digest in into_registry.receipt.blobs
    (image,) = [a for a in into_registry.receipt.artifacts if a.kind == "image"]
    assert image.name == "field/svc:1.0.0" and image.content is not None and image.content.startswith("blake3:")


def test_a_delta_for_a_registry_site_leaves_out_what_the_registry_holds(into_registry: Flow) -> None:
    """Before: '12 of 12 chunk(s) carried' and a delta as large as the full bundle."""
    full, delta = _bytes(into_registry.full), _bytes(into_registry.delta)
    assert full > BASE_SIZE and delta < 64 * 1024, (full, delta)
    (gone,) = into_registry.summary["leftOut"]
    assert gone == {"reason": "site-blobs", "entries": 1, "chunks": gone["chunks"], "rawBytes": gone["rawBytes"],
                    "artifacts": ["image field/svc"]}
    assert gone["chunks"] >= 1 and BASE_SIZE < gone["rawBytes"] < BASE_SIZE + 4096
    assert "left out 1 blob(s)" in into_registry.text and "site's registry or OCI layout holds" in into_registry.text


def test_the_delta_lands_the_right_image(into_registry: Flow, edge_registry: Registry, hub_keys: KeyPair,
                                         registry: Registry) -> None:
    done = run_ferry("import", into_registry.delta, "--trust", hub_keys.pub, "--state", into_registry.edge,
                     "--registry", edge_registry.host)
    assert done.returncode == 0, done.stdout + done.stderr
    assert edge_registry.inspect(f"{into_registry.repo}:1.1.0")["Digest"] == into_registry.new_digest
    assert edge_registry.raw_manifest(f"{into_registry.repo}:1.1.0") == \
        registry.raw_manifest(f"{into_registry.repo}:1.1.0")
    assert edge_registry.inspect(f"{into_registry.repo}:1.0.0")["Layers"][0] == into_registry.base_digest


def test_a_blob_the_registry_lost_is_named_and_nothing_is_applied(registry: Registry, edge_registry: Registry,
                                                                   hub_keys: KeyPair, tmp_path: Path) -> None:
    flow = _flow(tmp_path, "field/lost", registry, hub_keys, "--registry", edge_registry.host)
    request = urllib.request.Request(f"{edge_registry.url}/v2/{flow.repo}/blobs/{flow.base_digest}", method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 202
    done = run_ferry("import", flow.delta, "--trust", hub_keys.pub, "--state", flow.edge,
                     "--registry", edge_registry.host)
    assert_clean_failure(done, code=1, contains=f"blob {flow.base_digest} is missing: the site registry "
                                                 f"{edge_registry.host} does not hold it")
    tags = subprocess.run(["skopeo", "list-tags", "--tls-verify=false", f"docker://{edge_registry.host}/{flow.repo}"],
                          check=True, capture_output=True, text=True, timeout=60).stdout
    assert json.loads(tags)["Tags"] == ["1.0.0"]  # 1.1.0 was not pushed, not even in part


def test_a_delta_for_a_layout_site_leaves_out_what_the_layout_holds(registry: Registry, hub_keys: KeyPair,
                                                                    tmp_path: Path) -> None:
    flow = _flow(tmp_path, "field/svc-layout", registry, hub_keys)
    assert flow.base_digest in flow.receipt.blobs
    assert _bytes(flow.delta) < 64 * 1024
    assert [x["reason"] for x in flow.summary["leftOut"]][0] == "site-blobs"
    done = run_ferry("import", flow.delta, "--trust", hub_keys.pub, "--state", flow.edge)
    assert done.returncode == 0, done.stdout + done.stderr
    inspected = subprocess.run(["skopeo", "inspect", f"oci:{flow.edge / 'oci'}:{flow.repo}:1.1.0"],
                               check=True, capture_output=True, text=True, timeout=60).stdout
    assert json.loads(inspected)["Digest"] == flow.new_digest


def test_an_installed_manifest_set_is_left_out_whole(hub_keys: KeyPair, tmp_path: Path) -> None:
    """A manifest set the receipt lists at the same version and content: the edge skips it,
    so the delta carries none of its files (and the import says it is the same)."""
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '1'}\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata: {name: s, channel: stable}\n"
                    f"spec:\n  manifests:\n    - name: conf\n      version: 1.0.0\n      path: {folder}\n")
    assert run_ferry("export", spec, "--out", tmp_path / "a", "--key", hub_keys.key,
                     "--state", tmp_path / "hub").returncode == 0
    edge = tmp_path / "edge"
    assert run_ferry("import", tmp_path / "a", "--trust", hub_keys.pub, "--state", edge).returncode == 0
    assert run_ferry("receipt", "--state", edge, "--out", tmp_path / "r.json").returncode == 0
    done = run_ferry("export", spec, "--out", tmp_path / "b", "--key", hub_keys.key, "--state", tmp_path / "hub",
                     "--since", tmp_path / "r.json", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["carriedChunks"] == 0
    assert [(x["reason"], x["entries"], x["artifacts"]) for x in summary["leftOut"]] == \
        [("installed", 1, ["manifests conf"])]
    again = run_ferry("import", tmp_path / "b", "--trust", hub_keys.pub, "--state", edge)
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_1_0_receipt_is_still_read(hub_keys: KeyPair, tmp_path: Path) -> None:
    """The older receipt form (no blobs, no content) makes a delta by chunks, as before."""
    old = {"format": "ferry-receipt", "formatVersion": "1.0", "site": "edge-1", "created": "2026-01-01T00:00:00Z",
           "chunks": [], "artifacts": [{"kind": "manifests", "name": "conf", "version": "1.0.0"}], "channels": {}}
    from manifests import canonical

    receipt = Receipt.from_bytes(canonical.encode(old))
    assert receipt.blobs == () and receipt.artifacts[0].content is None
    assert not receipt.holds_artifact("manifests", "conf", "1.0.0", "blake3:" + "0" * 64)


# --------------------------------------------------------------------------- the receipt, encoder and parser

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from manifests.errors import FormatError  # noqa: E402
from manifests.receipt import InstalledArtifact  # noqa: E402

_hex = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
_units = st.builds(InstalledArtifact, st.sampled_from(["model", "image", "manifests"]),
                   st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), st.just("1.0.0"),
                   st.one_of(st.none(), _hex.map(lambda h: "blake3:" + h)))


@settings(max_examples=60, deadline=None)
@given(blobs=st.lists(_hex.map(lambda h: "sha256:" + h), max_size=20), chunks=st.lists(_hex, max_size=10),
       units=st.lists(_units, max_size=5, unique_by=lambda a: (a.kind, a.name)))
def test_a_receipt_reads_back_what_it_says(blobs: list[str], chunks: list[str],
                                           units: list[InstalledArtifact]) -> None:
    receipt = Receipt("edge-1", "2026-01-01T00:00:00Z", tuple(chunks), tuple(units), (("stable", 3),), tuple(blobs))
    again = Receipt.from_bytes(receipt.to_bytes())
    assert again.blobs == tuple(sorted(set(blobs))) and again.chunks == tuple(sorted(set(chunks)))
    assert sorted(again.artifacts, key=lambda a: (a.kind, a.name)) == sorted(units, key=lambda a: (a.kind, a.name))
    assert all(again.held_blob(b) for b in blobs) and not again.held_blob("sha256:" + "g" * 64)
    for a in units:
        assert again.holds_artifact(a.kind, a.name, a.version, a.content or "") is (a.content is not None)


@pytest.mark.parametrize(("blobs", "message"), [
    ({"a": 1}, "receipt blobs must be a list of sha256: digests"),
    (["sha256:" + "b" * 64, "sha256:" + "a" * 64], "receipt blobs must be sorted, unique sha256: digests"),
    (["md5:abc"], "receipt blobs must be sorted, unique sha256: digests"),
])
def test_a_malformed_blob_list_is_one_line(blobs: object, message: str) -> None:
    from manifests import canonical

    doc = {"format": "ferry-receipt", "formatVersion": "1.1", "site": "edge-1", "created": "2026-01-01T00:00:00Z",
           "chunks": [], "blobs": blobs, "artifacts": [], "channels": {}}
    with pytest.raises(FormatError) as caught:
        Receipt.from_bytes(canonical.encode(doc))
    assert str(caught.value) == message
