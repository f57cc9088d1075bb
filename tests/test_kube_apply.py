"""Edge side of manifest sets: GitOps folder and server-side apply (against tests/support/fakekube)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from importer.apply.kube import (
    ManifestTarget,
    apply_manifests,
    origin_of,
    write_gitops,
)
from manifests.digest import Hasher, blake3_hex
from manifests.errors import FerryError, VerificationError
from manifests.model import Artifact, BundleInfo, Entry, ImageInfo
from tests.support.fakekube import APPLY_PATCH, FakeKube

DIGEST = "sha256:" + "5" * 64
PINNED = f"edge.local:5000/team/sentiment@{DIGEST}"
SIDECAR = "edge.local:5000/library/busybox@sha256:" + "6" * 64

APP = b"""\
apiVersion: v1
kind: Namespace
metadata:
  name: sentiment
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sentiment-server
  namespace: sentiment
  labels: {app.kubernetes.io/name: sentiment}
  annotations: {owner: ml-team}
spec:
  selector: {matchLabels: {app: sentiment}}
  template:
    metadata: {labels: {app: sentiment}}
    spec:
      containers:
      - {name: server, image: "registry.example:5000/team/sentiment:1.2.0"}
      - {name: sidecar, image: "busybox:1.36"}
"""

POLICY = b"""\
apiVersion: control.kubestellar.io/v1alpha1
kind: BindingPolicy
metadata: {name: sentiment-edge}
spec:
  clusterSelectors:
  - matchLabels: {location-group: edge}
  downsync:
  - objectSelectors:
    - matchLabels: {app.kubernetes.io/name: sentiment}
"""

ORIGIN = {"bundle": "edge-ai", "bundle-id": "b-0007", "channel": "stable", "sequence": "7"}
IMAGES = {"registry.example:5000/team/sentiment:1.2.0": PINNED, "busybox:1.36": SIDECAR}


def make_set(files: dict[str, bytes], *, name: str = "sentiment-app",
             version: str = "1.2.0") -> tuple[Artifact, Iterator[bytes]]:
    """An artifact for ``files`` and a read_entry that streams and verifies, as the importer's does."""
    entries = tuple(Entry(size=len(d), blake3=blake3_hex(d), chunks=(blake3_hex(d),), path=p)
                    for p, d in sorted(files.items()))

    def read_entry(entry: Entry) -> Iterator[bytes]:
        data = files[entry.path or ""]
        hasher = Hasher()
        for i in range(0, len(data), 64):
            hasher.update(data[i:i + 64])
            yield data[i:i + 64]
        if hasher.blake3 != entry.blake3:
            raise VerificationError(f"{entry.path}: content does not match its BLAKE3")

    return Artifact(kind="manifests", name=name, version=version, entries=entries), read_entry  # type: ignore[return-value]


def apply_set(files: dict[str, bytes], target: ManifestTarget, **kw: object):  # type: ignore[no-untyped-def]
    art, read = make_set(files, **kw)  # type: ignore[arg-type]
    return apply_manifests(art, read, target, image_refs=IMAGES, origin=ORIGIN)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- GitOps folder

EXPECTED_DEPLOYMENT = f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sentiment-server
  namespace: sentiment
  labels:
    app.kubernetes.io/name: sentiment
  annotations:
    owner: ml-team
    ferry.io/bundle: edge-ai
    ferry.io/bundle-id: b-0007
    ferry.io/channel: stable
    ferry.io/sequence: '7'
    ferry.io/set: sentiment-app
    ferry.io/version: 1.2.0
spec:
  selector:
    matchLabels:
      app: sentiment
  template:
    metadata:
      labels:
        app: sentiment
    spec:
      containers:
      - name: server
        image: {PINNED}
      - name: sidecar
        image: {SIDECAR}
"""


def test_gitops_folder_exact(tmp_path: Path) -> None:
    target = ManifestTarget(gitops_dir=tmp_path / "gitops", kubeconfig=None, context=None)
    result = apply_set({"policy.yaml": POLICY, "app.yaml": APP}, target)
    out = tmp_path / "gitops" / "sentiment-app"
    assert result.written == out
    assert result.applied == ["Namespace sentiment", "Deployment.apps sentiment/sentiment-server",
                              "BindingPolicy.control.kubestellar.io sentiment-edge"]
    assert sorted(os.listdir(tmp_path / "gitops")) == ["sentiment-app"]  # no temporary folders left
    assert sorted(os.listdir(out)) == ["0001-namespace-sentiment.yaml", "0002-deployment-sentiment-server.yaml",
                                       "0003-bindingpolicy-sentiment-edge.yaml"]
    assert (out / "0002-deployment-sentiment-server.yaml").read_text() == EXPECTED_DEPLOYMENT
    assert (out / "0001-namespace-sentiment.yaml").read_text() == (
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: sentiment\n  annotations:\n"
        "    ferry.io/bundle: edge-ai\n    ferry.io/bundle-id: b-0007\n    ferry.io/channel: stable\n"
        "    ferry.io/sequence: '7'\n    ferry.io/set: sentiment-app\n    ferry.io/version: 1.2.0\n")


def test_gitops_output_validates_against_the_kubestellar_schema(tmp_path: Path) -> None:
    import yaml

    from tests.support.kubeschema import validate

    apply_set({"policy.yaml": POLICY}, ManifestTarget(tmp_path, None, None))
    (written,) = (tmp_path / "sentiment-app").iterdir()
    assert validate(yaml.safe_load(written.read_text())) == []


def test_gitops_folder_is_replaced_wholly(tmp_path: Path) -> None:
    target = ManifestTarget(gitops_dir=tmp_path, kubeconfig=None, context=None)
    apply_set({"app.yaml": APP, "policy.yaml": POLICY}, target)
    (tmp_path / "sentiment-app" / "stray.yaml").write_text("left by hand\n")
    apply_set({"policy.yaml": POLICY}, target, version="1.3.0")
    assert os.listdir(tmp_path) == ["sentiment-app"]
    assert os.listdir(tmp_path / "sentiment-app") == ["0001-bindingpolicy-sentiment-edge.yaml"]
    assert "ferry.io/version: 1.3.0" in (tmp_path / "sentiment-app" / "0001-bindingpolicy-sentiment-edge.yaml").read_text()


def test_gitops_repairs_an_interrupted_swap(tmp_path: Path) -> None:
    """A crash between the two renames of the fallback swap: the old set is put back, then replaced."""
    old = tmp_path / ".sentiment-app.ferry-old"
    old.mkdir()
    (old / "0001-old.yaml").write_text("old\n")
    half = tmp_path / ".sentiment-app.ferry-new-abc"
    half.mkdir()
    (half / "partial.yaml").write_text("partial\n")
    apply_set({"policy.yaml": POLICY}, ManifestTarget(tmp_path, None, None))
    assert os.listdir(tmp_path) == ["sentiment-app"]
    assert os.listdir(tmp_path / "sentiment-app") == ["0001-bindingpolicy-sentiment-edge.yaml"]


def test_gitops_without_exchange_support_uses_two_renames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from importer.fsroot import FsRoot

    target = ManifestTarget(tmp_path, None, None)
    apply_set({"app.yaml": APP}, target)
    monkeypatch.setattr(FsRoot, "exchange", lambda self, a, b: False)
    apply_set({"policy.yaml": POLICY}, target, version="1.3.0")
    assert os.listdir(tmp_path) == ["sentiment-app"]
    assert os.listdir(tmp_path / "sentiment-app") == ["0001-bindingpolicy-sentiment-edge.yaml"]


def test_nothing_is_written_when_the_bytes_do_not_verify(tmp_path: Path) -> None:
    target = ManifestTarget(gitops_dir=tmp_path, kubeconfig=None, context=None)
    apply_set({"app.yaml": APP}, target)
    before = {p.name: p.read_bytes() for p in (tmp_path / "sentiment-app").iterdir()}
    art, _ = make_set({"app.yaml": APP, "policy.yaml": POLICY}, version="1.3.0")
    _, tampered = make_set({"app.yaml": APP, "policy.yaml": POLICY.replace(b"edge}", b"evil}")}, version="1.3.0")
    with pytest.raises(VerificationError):
        apply_manifests(art, tampered, target, image_refs=IMAGES, origin=ORIGIN)
    assert {p.name: p.read_bytes() for p in (tmp_path / "sentiment-app").iterdir()} == before
    assert os.listdir(tmp_path) == ["sentiment-app"]


def test_edge_refuses_a_bad_document_even_if_signed(tmp_path: Path) -> None:
    with pytest.raises(FerryError, match=r"app.yaml document 2: not a Kubernetes object \(no kind\)"):
        apply_set({"app.yaml": b"apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nfoo: 1\n"},
                  ManifestTarget(tmp_path, None, None))
    assert not (tmp_path / "sentiment-app").exists()


def test_no_target_is_an_error() -> None:
    with pytest.raises(FerryError, match="no target"):
        apply_set({"app.yaml": APP}, ManifestTarget(None, None, None))


def test_origin_of_bundle() -> None:
    info = BundleInfo(name="edge-ai", id="b-0007", channel="stable", sequence=7,
                      created="2026-11-23T10:00:00Z", producer="ferry 0.1.0")
    assert origin_of(info) == ORIGIN


def test_write_gitops_cleans_up_after_a_failed_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from importer.apply import kube

    def boom(obj: object) -> bytes:
        raise OSError(28, "No space left on device")

    apply_set({"policy.yaml": POLICY}, ManifestTarget(tmp_path, None, None))
    monkeypatch.setattr(kube, "render", boom)
    with pytest.raises(FerryError, match="No space left on device"):
        apply_set({"app.yaml": APP}, ManifestTarget(tmp_path, None, None), version="2.0.0")
    assert os.listdir(tmp_path) == ["sentiment-app"]
    assert os.listdir(tmp_path / "sentiment-app") == ["0001-bindingpolicy-sentiment-edge.yaml"]
    assert write_gitops  # the function under test, exercised through apply_manifests


# --------------------------------------------------------------------------- cluster (fake API server)


def _crds() -> bytes:
    from tests.support.kubeschema import crds_yaml

    return crds_yaml()


def test_cluster_apply_order_and_requests(fakekube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = fakekube.kubeconfig(tmp_path / "kubeconfig")
    result = apply_set({"app.yaml": APP, "policy.yaml": POLICY, "zz-crds.yaml": _crds()},
                       ManifestTarget(None, kubeconfig, None))
    patches = fakekube.applies()
    kinds = [p.body["kind"] for p in patches]
    assert kinds == ["Namespace"] + ["CustomResourceDefinition"] * 5 + ["Deployment", "BindingPolicy"]
    assert result.applied == [
        "Namespace sentiment",
        *(f"CustomResourceDefinition.apiextensions.k8s.io {n}.control.kubestellar.io"
          for n in ("bindingpolicies", "bindings", "combinedstatuses", "customtransforms", "statuscollectors")),
        "Deployment.apps sentiment/sentiment-server",
        "BindingPolicy.control.kubestellar.io sentiment-edge",
    ]
    assert result.skipped == []
    for p in patches:
        assert p.content_type == APPLY_PATCH
        assert p.query == {"fieldManager": "ferry", "force": "true"}
        assert p.body["metadata"]["annotations"]["ferry.io/version"] == "1.2.0"
        assert p.body["metadata"]["annotations"]["ferry.io/bundle-id"] == "b-0007"
    assert [p.path for p in patches][-2:] == [
        "/apis/apps/v1/namespaces/sentiment/deployments/sentiment-server",
        "/apis/control.kubestellar.io/v1alpha1/bindingpolicies/sentiment-edge",
    ]
    deployment = fakekube.get_object("apps/v1", "Deployment", "sentiment-server", "sentiment")
    assert deployment is not None
    assert [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]] == [PINNED, SIDECAR]
    assert deployment["metadata"]["managedFields"][0]["manager"] == "ferry"
    # discovery was refreshed after the CRDs, before the BindingPolicy was looked up
    paths = [(r.method, r.path) for r in fakekube.requests]
    last_crd = max(i for i, (m, p) in enumerate(paths) if m == "PATCH" and "customresourcedefinitions" in p)
    assert ("GET", "/apis") in paths[last_crd:]
    assert fakekube.get_object("control.kubestellar.io/v1alpha1", "BindingPolicy", "sentiment-edge") is not None


def test_cluster_namespace_defaults_to_the_context(fakekube: FakeKube, tmp_path: Path) -> None:
    fakekube.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "wds-apps"}})
    kubeconfig = fakekube.kubeconfig(tmp_path / "kubeconfig", namespace="wds-apps", context="wds1")
    cm = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: edge}\n"
    apply_set({"cm.yaml": cm}, ManifestTarget(None, kubeconfig, "wds1"))
    (patch,) = fakekube.applies()
    assert patch.path == "/api/v1/namespaces/wds-apps/configmaps/settings"


def test_cluster_never_overwrites_a_newer_set_version(fakekube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = fakekube.kubeconfig(tmp_path / "kubeconfig")
    apply_set({"app.yaml": APP}, ManifestTarget(None, kubeconfig, None), version="2.0.0")
    newer = fakekube.get_object("apps/v1", "Deployment", "sentiment-server", "sentiment")
    fakekube.requests.clear()

    result = apply_set({"app.yaml": APP}, ManifestTarget(None, kubeconfig, None), version="1.2.0")
    assert result.applied == []
    assert [oid for oid, _ in result.skipped] == ["Namespace sentiment", "Deployment.apps sentiment/sentiment-server"]
    assert "holds version 2.0.0 of set 'sentiment-app', newer than 1.2.0" in result.skipped[1][1]
    assert fakekube.applies() == []
    assert fakekube.get_object("apps/v1", "Deployment", "sentiment-server", "sentiment") == newer

    # the same version again, or a newer one, applies
    assert apply_set({"app.yaml": APP}, ManifestTarget(None, kubeconfig, None), version="2.0.0").skipped == []
    assert apply_set({"app.yaml": APP}, ManifestTarget(None, kubeconfig, None), version="2.1.0").skipped == []


def test_cluster_downgrade_when_the_operator_allows_it(fakekube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = fakekube.kubeconfig(tmp_path / "kubeconfig")
    apply_set({"app.yaml": APP}, ManifestTarget(None, kubeconfig, None), version="2.0.0")
    art, read = make_set({"app.yaml": APP}, version="1.0.0")
    result = apply_manifests(art, read, ManifestTarget(None, kubeconfig, None), image_refs=IMAGES,
                             origin=ORIGIN, allow_downgrade=True)
    assert result.skipped == [] and len(result.applied) == 2
    deployment = fakekube.get_object("apps/v1", "Deployment", "sentiment-server", "sentiment")
    assert deployment is not None and deployment["metadata"]["annotations"]["ferry.io/version"] == "1.0.0"


def test_cluster_object_of_another_set_is_taken_over(fakekube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = fakekube.kubeconfig(tmp_path / "kubeconfig")
    apply_set({"app.yaml": APP}, ManifestTarget(None, kubeconfig, None), name="other-set", version="9.0.0")
    result = apply_set({"app.yaml": APP}, ManifestTarget(None, kubeconfig, None), version="1.0.0")
    assert result.skipped == []


def test_cluster_rejection_is_one_line(fakekube: FakeKube, tmp_path: Path) -> None:
    """The fake checks custom resources against their CRD, as a WDS does: an invalid policy fails."""
    kubeconfig = fakekube.kubeconfig(tmp_path / "kubeconfig")
    bad = POLICY.replace(b"{location-group: edge}", b"{location-group: 'edge!'}")
    with pytest.raises(FerryError) as err:
        apply_set({"policy.yaml": bad, "crds.yaml": _crds()}, ManifestTarget(None, kubeconfig, None))
    message = str(err.value)
    assert "\n" not in message
    assert "applying BindingPolicy.control.kubestellar.io sentiment-edge: HTTP 422" in message
    assert "location-group" in message


def test_cluster_unknown_kind_is_one_line(fakekube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = fakekube.kubeconfig(tmp_path / "kubeconfig")
    with pytest.raises(FerryError, match="does not serve this kind") as err:
        apply_set({"policy.yaml": POLICY}, ManifestTarget(None, kubeconfig, None))  # CRDs not installed
    assert "\n" not in str(err.value)


def test_cluster_namespace_missing_is_one_line(fakekube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = fakekube.kubeconfig(tmp_path / "kubeconfig")
    cm = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: nowhere}\n"
    with pytest.raises(FerryError, match=r'HTTP 404 .*namespaces "nowhere" not found'):
        apply_set({"cm.yaml": cm}, ManifestTarget(None, kubeconfig, None))


def test_cluster_unreachable_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake = FakeKube()
    fake.server = type("S", (), {"server_address": ("127.0.0.1", port)})()  # type: ignore[assignment]
    kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig")
    with pytest.raises(FerryError) as err:
        apply_set({"app.yaml": APP}, ManifestTarget(None, kubeconfig, None))
    assert f"cannot reach http://127.0.0.1:{port}" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("content, context, expected", [
    (None, None, "kubeconfig .*: not found"),
    ("not: [a kubeconfig", None, "cannot be used"),
    ("- a list\n", None, "cannot be used \\(not a kubeconfig"),
    ("apiVersion: v1\nkind: Config\n", None, "has no current-context; pass --context"),
    ("apiVersion: v1\nkind: Config\ncontexts: [{name: a}]\n", None, "has no current-context; pass --context NAME \\(one of: a\\)"),
])
def test_bad_kubeconfig_is_one_line(tmp_path: Path, content: str | None, context: str | None, expected: str) -> None:
    path = tmp_path / "kubeconfig"
    if content is not None:
        path.write_text(content)
    with pytest.raises(FerryError, match=expected) as err:
        apply_set({"app.yaml": APP}, ManifestTarget(None, path, context))
    assert "\n" not in str(err.value)


def test_unknown_context_is_one_line(fakekube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = fakekube.kubeconfig(tmp_path / "kubeconfig")
    with pytest.raises(FerryError, match="--context wds9: .* has no such context \\(it has: wds1\\)"):
        apply_set({"app.yaml": APP}, ManifestTarget(None, kubeconfig, "wds9"))


def test_cluster_and_gitops_together(fakekube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = fakekube.kubeconfig(tmp_path / "kubeconfig")
    result = apply_set({"app.yaml": APP}, ManifestTarget(tmp_path / "gitops", kubeconfig, None))
    assert len(result.applied) == 2 and result.written == tmp_path / "gitops" / "sentiment-app"
    assert len(fakekube.applies()) == 2


def test_sample_set_round_trip_into_a_fake_wds(fakekube: FakeKube, tmp_path: Path) -> None:
    """samples/kubestellar/sentiment read by the hub source, applied at the edge to a WDS that
    already has KubeStellar's CRDs: every object lands, the image pinned, the policy valid."""
    import yaml

    from bundler.sources.kube import manifests_source
    from tests.support.common import SAMPLES
    from tests.support.kubeschema import validate

    for crd in yaml.safe_load_all(_crds()):
        fakekube.put_object(crd, manager="kubestellar")
    source = manifests_source("sentiment-app", "1.2.0", SAMPLES / "kubestellar" / "sentiment")
    files = {f.path or "": f.open().read() for f in source.files}
    art, read = make_set(files)
    assert "models/sentiment:1.2.0" in source.images  # the image volume's model is listed beside the image
    (ref,) = [r for r in source.images if r != "models/sentiment:1.2.0"]
    car = f"edge.local:5000/models/sentiment@sha256:{'c' * 64}"
    result = apply_manifests(art, read, ManifestTarget(tmp_path / "gitops", fakekube.kubeconfig(tmp_path / "kc"), None),
                             image_refs={ref: PINNED, "models/sentiment:1.2.0": car}, origin=ORIGIN)
    assert result.applied[0] == "Namespace sentiment" and len(result.applied) == 4
    deployment = fakekube.get_object("apps/v1", "Deployment", "sentiment", "sentiment")
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == PINNED
    assert deployment["spec"]["template"]["spec"]["volumes"][0]["image"]["reference"] == car
    policy = fakekube.get_object("control.kubestellar.io/v1alpha1", "BindingPolicy", "sentiment")
    assert policy is not None and policy["spec"]["clusterSelectors"] == [{"matchLabels": {"location-group": "edge"}}]
    written = {p.name: yaml.safe_load(p.read_text()) for p in (tmp_path / "gitops" / "sentiment-app").iterdir()}
    assert len(written) == 4
    for body in written.values():
        if body["kind"] == "BindingPolicy":
            assert validate(body) == []


def test_set_name_is_never_a_path(tmp_path: Path) -> None:
    with pytest.raises(FerryError, match="is not allowed"):
        apply_set({"app.yaml": APP}, ManifestTarget(tmp_path, None, None), name="../escape")
    assert os.listdir(tmp_path) == []


def test_rewrite_follows_the_hubs_carried_rule() -> None:
    """Whatever the hub counted as carried (no warning), the edge rewrites; nothing else."""
    from manifests.kube import image_is_carried
    from importer.apply.kube import resolve_image

    carried = [ImageInfo(repository="team/sentiment", tag="1.2.0", manifest=DIGEST,
                         media_type="application/vnd.oci.image.manifest.v1+json",
                         source="registry.example:5000/team/sentiment:1.2.0")]
    refs = {"team/sentiment:1.2.0": PINNED, "registry.example:5000/team/sentiment:1.2.0": PINNED}
    for ref in ["registry.example:5000/team/sentiment:1.2.0", "team/sentiment:1.2.0",
                "docker.io/team/sentiment:1.2.0", "other.example/team/sentiment:1.2.0"]:
        assert image_is_carried(ref, carried) and resolve_image(ref, refs) == PINNED, ref
    for ref in ["team/sentiment", "team/sentiment:1.1.0", "team/other:1.2.0", "team/sentiment@sha256:" + "6" * 64]:
        assert not image_is_carried(ref, carried) and resolve_image(ref, refs) is None, ref
    assert resolve_image("team/x", {"team/x@sha256:" + "7" * 64: "pinned"}) is None  # a digest is not :latest
    assert resolve_image("team/x@sha256:" + "7" * 64, {"r.example/team/x@sha256:" + "7" * 64: "p"}) == "p"
    assert resolve_image("nginx", {"docker.io/library/nginx:latest": "p"}) == "p"


_WRITER = """
import sys
from pathlib import Path
from manifests.kube import parse_documents
from importer.apply.kube import write_gitops
root, a, b = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes(), Path(sys.argv[3]).read_bytes()
sets = [parse_documents(a, "a.yaml"), parse_documents(b, "b.yaml")]
print("ready", flush=True)
i = 0
while True:
    write_gitops(root, "sentiment-app", sets[i % 2])
    i += 1
"""


def test_gitops_folder_survives_kill_9_at_random_points(tmp_path: Path) -> None:
    """A GitOps agent reading the folder after a crash finds one whole set, never a mix or none."""
    import random
    import signal
    import subprocess
    import sys
    import time

    from manifests.kube import parse_documents
    from importer.apply.kube import gitops_file_name, render

    (tmp_path / "a.yaml").write_bytes(APP)
    (tmp_path / "b.yaml").write_bytes(POLICY)
    whole = [{gitops_file_name(i, o): render(o) for i, o in enumerate(parse_documents(data, "x"), start=1)}
             for data in (APP, POLICY)]
    root = tmp_path / "gitops"
    rng = random.Random(7)
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(root), str(tmp_path / "a.yaml"),
                                 str(tmp_path / "b.yaml")], stdout=subprocess.PIPE, cwd=Path(__file__).parents[1])
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 0.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        folder = root / "sentiment-app"
        if folder.exists():
            assert {p.name: p.read_bytes() for p in folder.iterdir()} in whole
        apply_set({"policy.yaml": POLICY}, ManifestTarget(root, None, None))  # the next import cleans up
        assert os.listdir(root) == ["sentiment-app"]
        whole.append({p.name: p.read_bytes() for p in folder.iterdir()})  # what the writer replaces next


def test_gitops_refuses_to_replace_a_link_or_file(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "gitops"
    root.mkdir()
    os.symlink(elsewhere, root / "sentiment-app")
    with pytest.raises(FerryError, match="exists and is not a folder"):
        apply_set({"policy.yaml": POLICY}, ManifestTarget(root, None, None))
    assert os.listdir(elsewhere) == [] and (root / "sentiment-app").is_symlink()


# --------------------------------------------------------------------------- reading a kubeconfig

import tempfile  # noqa: E402

import yaml  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from importer.apply.kube import read_kubeconfig  # noqa: E402
from manifests.errors import UsageError  # noqa: E402

_CONTEXT_NAMES = st.from_regex(r"[a-z][a-z0-9@_.-]{0,20}", fullmatch=True)
_NAMESPACES = st.one_of(st.none(), st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True))


@settings(max_examples=60, deadline=None)
@given(contexts=st.dictionaries(_CONTEXT_NAMES, _NAMESPACES, max_size=5), current=st.data())
def test_kubeconfig_contexts_are_read_as_written(contexts: dict[str, str | None], current: st.DataObject) -> None:
    chosen = current.draw(st.one_of(st.none(), st.sampled_from(sorted(contexts))) if contexts else st.none())
    doc: dict[str, object] = {"apiVersion": "v1", "kind": "Config", "contexts": [
        {"name": name, "context": {"cluster": "c", **({"namespace": ns} if ns else {})}} for name, ns in contexts.items()]}
    if chosen is not None:
        doc["current-context"] = chosen
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kubeconfig"
        path.write_text(yaml.safe_dump(doc))
        config = read_kubeconfig(path)
    assert list(config.contexts) == list(contexts) and config.current == chosen
    for name, namespace in contexts.items():  # an explicit context: with or without a current one
        assert config.choose(name) == (name, namespace or "default")
    if chosen is None:
        with pytest.raises(UsageError, match="has no current-context; pass --context"):
            config.choose(None)
    else:
        assert config.choose(None) == (chosen, contexts[chosen] or "default")
    with pytest.raises(UsageError, match="has no such context"):
        config.choose("not-" + "x" * 30)


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=200))
def test_any_kubeconfig_text_is_read_or_refused_with_a_ferry_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kubeconfig"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            read_kubeconfig(path).choose(None)
        except FerryError as err:
            assert "\n" not in str(err)
