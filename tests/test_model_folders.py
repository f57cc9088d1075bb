"""Issue 11 item 5: model folders as they are found on disk — Hugging Face cache snapshots
(and ``hf://`` references, offline), sparse files (estimated, and holes kept at the edge)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from bundler.export import stored_estimate
from bundler.sources.hfcache import hub_cache, resolve_hf
from manifests.errors import SpecError
from tests.support.common import assert_clean_failure, run_ferry

MiB = 1 << 20
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hf_cache(root: Path, files: dict[str, bytes]) -> Path:
    """A hub cache as huggingface_hub writes it: blobs, refs/main, snapshot links into ../../blobs."""
    repo = root / "hub" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    snap = repo / "snapshots" / COMMIT
    for rel, data in files.items():
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        up = "../" * (rel.count("/") + 2)
        link.symlink_to(f"{up}blobs/{blob}")
    return snap


def _spec(path: Path, model_path: str) -> Path:
    path.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata: {name: hf}\n"
                    f"spec:\n  models:\n    - name: tiny\n      version: \"1.0.0\"\n      path: '{model_path}'\n")
    return path


FILES = {"config.json": b'{"a": 1}', "model.safetensors": os.urandom(3 * MiB), "sub/tokenizer.json": b"{}"}


@pytest.mark.parametrize("how", ["folder", "hf-ref", "hf-ref-rev"])
def test_hugging_face_snapshot_exports_as_plain_files(how, hub_keys, tmp_path):
    snap = hf_cache(tmp_path, FILES)
    path = {"folder": str(snap), "hf-ref": "hf://org/tiny", "hf-ref-rev": f"hf://org/tiny@{COMMIT}"}[how]
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out"
    done = run_ferry("export", _spec(tmp_path / "s.yaml", path), "--out", out, "--key", hub_keys.key,
                     "--state", tmp_path / "hub-state", env=env)
    assert done.returncode == 0, done.stderr
    edge = tmp_path / "edge"
    done = run_ferry("import", out, "--trust", hub_keys.pub, "--state", edge)
    assert done.returncode == 0, done.stdout + done.stderr
    current = edge / "models" / "tiny" / "current"
    for rel, data in FILES.items():
        assert not (current / rel).is_symlink() and (current / rel).read_bytes() == data


def test_snapshot_link_outside_its_cache_folder_is_refused(hub_keys, tmp_path):
    snap = hf_cache(tmp_path, {"config.json": b"{}"})
    secret = tmp_path / "secret.txt"
    secret.write_text("hub private file")
    (snap / "leak.txt").symlink_to(secret)
    done = run_ferry("export", _spec(tmp_path / "s.yaml", str(snap)), "--out", tmp_path / "out",
                     "--key", hub_keys.key, "--state", tmp_path / "hub-state")
    assert_clean_failure(done, code=2, contains="symlink leaves the Hugging Face cache folder")


def test_hf_reference_resolution_offline(tmp_path):
    hf_cache(tmp_path, {"config.json": b"{}"})
    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    assert resolve_hf("hf://org/tiny", env).name == COMMIT
    assert resolve_hf(f"hf://org/tiny@{COMMIT}", env).name == COMMIT
    with pytest.raises(SpecError, match="huggingface-cli download org/other"):
        resolve_hf("hf://org/other", env)
    with pytest.raises(SpecError, match="revision 'v2'"):
        resolve_hf("hf://org/tiny@v2", env)
    with pytest.raises(SpecError, match="not a Hugging Face reference"):
        resolve_hf("hf://../etc@x", env)
    assert hub_cache({"HF_HOME": "/x"}) == Path("/x/hub")
    assert hub_cache({"HF_HUB_CACHE": "/y", "HF_HOME": "/x"}) == Path("/y")


def test_free_space_counts_what_a_sparse_file_occupies() -> None:
    assert stored_estimate(3 << 30, 11 * MiB) == 11 * MiB + 32 * MiB
    assert stored_estimate(10 * MiB, 10 * MiB) == 10 * MiB
    assert stored_estimate(10 * MiB, 1 * MiB) == 10 * MiB  # never more than the length


def test_sparse_file_travels_small_and_lands_sparse(hub_keys, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    sparse = model / "weights.bin"
    data = os.urandom(MiB)
    with open(sparse, "wb") as f:
        f.truncate(512 * MiB)
        f.seek(100 * MiB)
        f.write(data)
    if os.stat(sparse).st_blocks * 512 > 64 * MiB:
        pytest.skip("this file system does not keep holes")
    out = tmp_path / "out"
    done = run_ferry("export", _spec(tmp_path / "s.yaml", str(model)), "--out", out, "--key", hub_keys.key,
                     "--state", tmp_path / "hub-state", "--json")
    assert done.returncode == 0, done.stderr
    assert sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) < 8 * MiB
    edge = tmp_path / "edge"
    done = run_ferry("import", out, "--trust", hub_keys.pub, "--state", edge)
    assert done.returncode == 0, done.stdout + done.stderr
    landed = edge / "models" / "model" / "current" / "weights.bin"
    landed = next((edge / "models").glob("*/current/weights.bin"))
    st = os.stat(landed)
    assert st.st_size == 512 * MiB
    assert st.st_blocks * 512 < 64 * MiB  # holes kept, not 512 MiB written
    with open(landed, "rb") as f:
        f.seek(100 * MiB)
        assert f.read(MiB) == data
        f.seek(0)
        assert f.read(MiB) == bytes(MiB)
    json.loads(run_ferry("status", "--state", edge, "--json").stdout)
