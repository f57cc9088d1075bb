"""Images through the real CLI: ``ferry export`` from the hub registry, ``ferry import`` into
the edge registry or the edge's OCI layout, checked with skopeo."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.common import assert_clean_failure, run_ferry
from tests.support.registry import Registry, layer, make_image, random_layer


def _spec(path: Path, *refs: str) -> Path:
    items = "".join(f"    - ref: {ref}\n" for ref in refs)
    path.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata: {name: e2e, channel: stable}\n"
                    f"spec:\n  images:\n{items}")
    return path


@pytest.fixture(scope="module")
def exported(registry: Registry, hub_keys, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("e2e-images")
    digest = make_image(tmp / "layout", "2.4.0", [random_layer(2 << 20, seed=11), layer({"app": b"e2e"})])
    registry.push(tmp / "layout", "2.4.0", "team/e2e")
    spec = _spec(tmp / "spec.yaml", f"{registry.host}/team/e2e:2.4.0")
    result = run_ferry("export", spec, "--out", tmp / "out", "--key", hub_keys.key, "--state", tmp / "hub")
    assert result.returncode == 0, result.stderr
    return {"bundle": tmp / "out", "digest": digest, "tmp": tmp}


def test_export_import_into_registry(exported, registry, edge_registry, hub_keys, tmp_path):
    result = run_ferry("import", exported["bundle"], "--trust", hub_keys.pub, "--state", tmp_path / "edge",
                       "--registry", edge_registry.host, "--json")
    assert result.returncode == 0, result.stderr
    [artifact] = json.loads(result.stdout)["bundles"][0]["artifacts"]
    assert artifact["ref"] == f"{edge_registry.host}/team/e2e@{exported['digest']}"
    assert edge_registry.inspect("team/e2e:2.4.0")["Digest"] == exported["digest"]
    assert edge_registry.raw_manifest("team/e2e:2.4.0") == registry.raw_manifest("team/e2e:2.4.0")

    again = run_ferry("import", exported["bundle"], "--trust", hub_keys.pub, "--state", tmp_path / "edge")
    assert again.returncode == 0, again.stderr


def test_export_import_into_layout(exported, hub_keys, tmp_path):
    result = run_ferry("import", exported["bundle"], "--trust", hub_keys.pub, "--state", tmp_path / "edge")
    assert result.returncode == 0, result.stderr
    inspected = subprocess.run(["skopeo", "inspect", f"oci:{tmp_path / 'edge' / 'oci'}:team/e2e:2.4.0"],
                               check=True, capture_output=True, text=True, timeout=60).stdout
    assert json.loads(inspected)["Digest"] == exported["digest"]


def test_export_from_unreachable_registry_is_one_line(hub_keys, tmp_path):
    spec = _spec(tmp_path / "spec.yaml", "127.0.0.1:9/team/app:1.0.0")
    result = run_ferry("export", spec, "--out", tmp_path / "out", "--key", hub_keys.key, "--state", tmp_path / "hub")
    assert_clean_failure(result, code=2, contains="registry 127.0.0.1:9 is unreachable")


def test_import_to_unreachable_registry_fails_clearly(exported, hub_keys, tmp_path):
    result = run_ferry("import", exported["bundle"], "--trust", hub_keys.pub, "--state", tmp_path / "edge",
                       "--registry", "127.0.0.1:9")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "registry 127.0.0.1:9 is unreachable" in result.stdout + result.stderr


def test_samples_land_in_the_edge_registry_and_workloads_are_pinned(edge_registry, hub_keys, tmp_path):
    """The sample bundle (image from its OCI layout): the edge registry gets the image with the
    layout's digest, and the GitOps copy of the Deployment names it by that digest."""
    samples = Path(__file__).resolve().parents[1] / "samples"
    index = json.loads((samples / "images" / "sentiment-server" / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    out = tmp_path / "out"
    done = run_ferry("export", samples / "bundle.yaml", "--out", out, "--key", hub_keys.key, "--state", tmp_path / "hub")
    assert done.returncode == 0, done.stderr
    done = run_ferry("import", out, "--trust", hub_keys.pub, "--state", tmp_path / "edge",
                     "--registry", edge_registry.host)
    assert done.returncode == 0, done.stderr
    assert edge_registry.inspect("team/sentiment-server:1.2.0")["Digest"] == digest
    pinned = f"{edge_registry.host}/team/sentiment-server@{digest}"
    deployments = list((tmp_path / "edge" / "manifests" / "sentiment-app").glob("*deployment*.yaml"))
    assert deployments and all(f"image: {pinned}" in p.read_text() for p in deployments)


def test_platform_and_dry_run(registry, edge_registry, hub_keys, tmp_path):
    """export --platform carries one platform; import --dry-run pushes nothing; then import does."""
    from tests.support.registry import make_index

    make_index(tmp_path / "layout", "7.0.0", {"amd64": [layer({"p": b"amd64"})], "arm64": [layer({"p": b"arm64"})]})
    registry.push(tmp_path / "layout", "7.0.0", "team/plat")
    spec = _spec(tmp_path / "spec.yaml", f"{registry.host}/team/plat:7.0.0")
    out = tmp_path / "out"
    done = run_ferry("export", spec, "--out", out, "--key", hub_keys.key, "--state", tmp_path / "hub",
                     "--platform", "linux/arm64")
    assert done.returncode == 0, done.stderr
    args = ("import", out, "--trust", hub_keys.pub, "--state", tmp_path / "edge", "--registry", edge_registry.host)
    done = run_ferry(*args, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{edge_registry.host}/team/plat:7.0.0"],
                          capture_output=True, timeout=60).returncode != 0
    done = run_ferry(*args)
    assert done.returncode == 0, done.stderr
    assert edge_registry.inspect("team/plat:7.0.0")["Architecture"] == "arm64"


@pytest.mark.parametrize("target", ["registry", "layout"])
def test_kill_during_import_then_rerun(registry, edge_registry, hub_keys, tmp_path, target):
    """kill -9 at random moments of an image import; the rerun completes with the same digest
    and the layout holds no temporary files."""
    import os
    import random
    import signal
    import sys
    import time

    layout = tmp_path / "layout"
    repo = f"team/killed-{target}"
    digest = make_image(layout, "1.0.0", [random_layer(24 << 20, seed=21), random_layer(6 << 20, seed=22)])
    registry.push(layout, "1.0.0", repo)
    out = tmp_path / "out"
    done = run_ferry("export", _spec(tmp_path / "spec.yaml", f"{registry.host}/{repo}:1.0.0"), "--out", out,
                     "--key", hub_keys.key, "--state", tmp_path / "hub")
    assert done.returncode == 0, done.stderr
    args = ["import", str(out), "--trust", str(hub_keys.pub), "--state", str(tmp_path / "edge")]
    if target == "registry":
        args += ["--registry", edge_registry.host]
    rng = random.Random(7)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "ferry", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.5))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = run_ferry(*args)
    assert done.returncode == 0, done.stderr
    if target == "registry":
        assert edge_registry.inspect(f"{repo}:1.0.0")["Digest"] == digest
    else:
        oci = tmp_path / "edge" / "oci"
        inspected = subprocess.run(["skopeo", "inspect", f"oci:{oci}:{repo}:1.0.0"], check=True,
                                   capture_output=True, text=True, timeout=60).stdout
        assert json.loads(inspected)["Digest"] == digest
        assert not list((oci / "blobs" / "sha256").glob(".*"))


def test_import_registry_given_as_url_is_refused_clearly(exported, hub_keys, tmp_path):
    result = run_ferry("import", exported["bundle"], "--trust", hub_keys.pub, "--state", tmp_path / "edge",
                       "--registry", "http://registry.local:5000")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "is not HOST[:PORT]" in result.stdout + result.stderr
