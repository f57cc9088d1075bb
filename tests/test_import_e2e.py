"""Hub to edge with the real exporter: a model, an image from a real registry and a manifest
set, exported with ``ferry export`` and imported with ``ferry import`` into a second registry
(or the state's OCI layout), checked with ``skopeo``."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.support.common import KeyPair, run_ferry
from tests.support.registry import Registry, layer, make_image, random_layer

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  namespace: demo
spec:
  selector: {{matchLabels: {{app: app}}}}
  template:
    metadata: {{labels: {{app: app}}}}
    spec:
      containers:
        - name: app
          image: {image}
          volumeMounts: [{{name: model, mountPath: /srv/model, readOnly: true}}]
      volumes:
        - name: model
          image: {{reference: "models/tiny:1.0.0", pullPolicy: IfNotPresent}}
---
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: tiny
  namespace: demo
spec:
  predictor:
    model:
      modelFormat: {{name: pytorch}}
      storageUri: oci://models/tiny:1.0.0
"""


@pytest.fixture(scope="module")
def hub_bundle(tmp_path_factory: pytest.TempPathFactory, registry: Registry, hub_keys: KeyPair) -> dict:
    work = tmp_path_factory.mktemp("e2e")
    layout = work / "img"
    digest = make_image(layout, "2.0.0", [random_layer(1 << 20, seed=11), layer({"app.txt": b"e2e"})])
    registry.push(layout, "2.0.0", "team/e2e")
    ref = f"{registry.host}/team/e2e:2.0.0"
    (work / "model").mkdir()
    (work / "model" / "weights.bin").write_bytes(bytes(range(256)) * 4096)
    (work / "model" / "config.json").write_text('{"dim": 4}')
    (work / "kube").mkdir()
    (work / "kube" / "deploy.yaml").write_text(DEPLOYMENT.format(image=ref))
    spec = work / "bundle.yaml"
    spec.write_text(f"""apiVersion: ferry/v1
kind: Bundle
metadata:
  name: e2e
  channel: stable
spec:
  models:
    - name: tiny
      version: 1.0.0
      path: model
  images:
    - ref: {ref}
  manifests:
    - name: app
      version: 2.0.0
      path: kube
""")
    out = work / "bundle"
    r = run_ferry("export", spec, "--out", out, "--key", hub_keys.key, "--state", work / "hub")
    assert r.returncode == 0, r.stderr
    return {"bundle": out, "digest": digest, "ref": ref, "work": work}


def test_export_then_import_into_edge_registry(tmp_path: Path, hub_bundle: dict, edge_registry: Registry,
                                               hub_keys: KeyPair) -> None:
    state = tmp_path / "edge"
    r = run_ferry("import", hub_bundle["bundle"], "--trust", hub_keys.pub, "--state", state,
                  "--registry", edge_registry.host, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    arts = {a["kind"]: a for a in doc["bundles"][0]["artifacts"]}
    assert {a["status"] for a in arts.values()} == {"applied"}
    pinned = f"{edge_registry.host}/team/e2e@{hub_bundle['digest']}"
    assert arts["image"]["ref"] == pinned
    assert edge_registry.inspect("team/e2e:2.0.0")["Digest"] == hub_bundle["digest"]
    assert (state / "models" / "tiny" / "current" / "weights.bin").read_bytes() == bytes(range(256)) * 4096
    text = "".join(p.read_text() for p in (state / "manifests" / "app").rglob("*.yaml"))
    assert pinned in text and hub_bundle["ref"] not in text
    # the model is published to the site registry too (issue 14): ModelPack form and modelcar
    raw = edge_registry.raw_manifest("models/tiny:1.0.0")
    model_digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert json.loads(raw)["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert edge_registry.inspect("models/tiny:1.0.0-modelcar")["Layers"]
    assert model_digest in "".join(e["reason"] for e in _audit(state) if e["decision"] == "published")
    # workloads naming the model by its hub-side name are pinned to the modelcar (issue 14, item 2),
    # and the import reports that reference as the model's
    car = edge_registry.inspect("models/tiny:1.0.0-modelcar")["Digest"]
    assert arts["model"]["ref"] == f"{edge_registry.host}/models/tiny@{car}"
    volume, isvc = _model_refs_written(state / "manifests" / "app")
    assert volume == f"{edge_registry.host}/models/tiny@{car}"
    assert isvc == f"oci://{edge_registry.host}/models/tiny@{car}"

    again = run_ferry("import", hub_bundle["bundle"], "--trust", hub_keys.pub, "--state", state,
                      "--registry", edge_registry.host, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["bundles"][0]["status"] == "repeat"
    status = json.loads(run_ferry("status", "--state", state, "--json").stdout)
    assert {(a["kind"], a["name"], a["version"]) for a in status["installed"]} == {
        ("model", "tiny", "1.0.0"), ("image", "team/e2e:2.0.0", "2.0.0"), ("manifests", "app", "2.0.0")}
    assert {a["ref"] for a in status["installed"] if a["kind"] == "model"} == {arts["model"]["ref"]}


def test_export_then_import_into_oci_layout(tmp_path: Path, hub_bundle: dict, hub_keys: KeyPair) -> None:
    state = tmp_path / "edge"
    r = run_ferry("import", hub_bundle["bundle"], "--trust", hub_keys.pub, "--state", state)
    assert r.returncode == 0, r.stdout + r.stderr
    out = subprocess.run(["skopeo", "inspect", f"oci:{state / 'oci'}:team/e2e:2.0.0"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["Digest"] == hub_bundle["digest"]
    # the model is published into the layout: pulled back through ferry serve, byte-identical
    from tests.test_serve import start_serve, stop

    model = state / "models" / "tiny" / "1.0.0"
    server = start_serve(state)
    try:
        for tag, copy in (("1.0.0", "mp"), ("1.0.0-modelcar", "car")):
            subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                            f"docker://{server.host}/models/tiny:{tag}", f"oci:{tmp_path / copy}:x"],
                           capture_output=True, check=True, timeout=120)
    finally:
        stop(server)
    for f in model.iterdir():
        blob = tmp_path / "mp" / "blobs" / "sha256" / hashlib.sha256(f.read_bytes()).hexdigest()
        assert blob.read_bytes() == f.read_bytes()
        assert (state / "oci" / "blobs" / "sha256" / blob.name).stat().st_ino == f.stat().st_ino  # a hard link
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{tmp_path / 'car'}:x", str(tmp_path / "unpacked")],
                   capture_output=True, check=True, timeout=120)
    for f in model.iterdir():
        assert (tmp_path / "unpacked" / "rootfs" / "models" / f.name).read_bytes() == f.read_bytes()
    # workloads are pinned to the modelcar's digest in the layout
    car = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{state / 'oci'}:models/tiny:1.0.0-modelcar"],
                                    capture_output=True, text=True, check=True).stdout)["Digest"]
    assert _model_refs_written(state / "manifests" / "app") == (f"models/tiny@{car}", f"oci://models/tiny@{car}")
    # layout blobs are exact bytes: they serve as chunk store (the receipt lists their chunks)
    run_ferry("receipt", "--state", state, "--out", tmp_path / "r.json").check_returncode()
    manifest = json.loads((hub_bundle["bundle"] / "manifest.json").read_bytes())
    receipt = json.loads((tmp_path / "r.json").read_bytes())
    assert set(receipt["chunks"]) == {c["id"] for c in manifest["chunks"]} - _manifest_set_chunks(manifest)


def _model_refs_written(folder: Path) -> tuple[str, str]:
    """The image volume's reference and the InferenceService's storageUri in the GitOps folder."""
    import yaml

    docs = {d["kind"]: d for p in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())}
    volume = docs["Deployment"]["spec"]["template"]["spec"]["volumes"][0]["image"]["reference"]
    return volume, docs["InferenceService"]["spec"]["predictor"]["model"]["storageUri"]


def _manifest_set_chunks(manifest: dict) -> set[str]:
    """Chunks only a manifest set uses: its files are rewritten at the edge, so not held."""
    others = {c for a in manifest["artifacts"] if a["kind"] != "manifests" for e in a.get("files", a.get("blobs", []))
              for c in e["chunks"]}
    return {c for a in manifest["artifacts"] if a["kind"] == "manifests" for e in a["files"]
            for c in e["chunks"]} - others


def _audit(state: Path) -> list[dict]:  # type: ignore[type-arg]
    """The edge's audit trail entries."""
    return [json.loads(line) for line in (state / "audit" / "trail.jsonl").read_text().splitlines()]
