"""ferry inspect: what a bundle holds, readable without any key, clearly marked unverified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from manifests.receipt import Receipt
from tests.support.common import assert_clean_failure, run_ferry
from tests.support.export import MiB, make_model, read_back, write_spec


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, hub_keys) -> Path:  # noqa: ANN001
    root = tmp_path_factory.mktemp("inspect")
    make_model(root / "m", count=8, size=4 * MiB, seed=2)
    spec = write_spec(root / "bundle.yaml", [("sentiment", "1.2.0", "m")])
    common = ["--key", hub_keys.key, "--state", root / "state"]
    assert run_ferry("export", spec, "--out", root / "full", *common).returncode == 0
    assert run_ferry("export", spec, "--out", root / "vols", "--max-volume-size", "20MiB", *common).returncode == 0
    m, _ = read_back(root / "full", hub_keys.pub)
    (root / "r.json").write_bytes(Receipt("edge-7", "2026-02-02T00:00:00Z",
                                          tuple(sorted(c.id for c in m.chunks))).to_bytes())
    assert run_ferry("export", spec, "--out", root / "delta", "--since", root / "r.json", *common).returncode == 0
    return root


def test_plain_output(bundles: Path, hub_keys) -> None:  # noqa: ANN001
    r = run_ferry("inspect", bundles / "full")
    assert r.returncode == 0, r.stderr
    assert "unverified" in r.stdout and "sentiment 1.2.0" in r.stdout
    assert hub_keys.keyid in r.stdout and "full bundle" in r.stdout


def test_json_output(bundles: Path, hub_keys) -> None:  # noqa: ANN001
    r = run_ferry("inspect", bundles / "full", "--json")
    doc = json.loads(r.stdout)["bundles"][0]
    assert doc["verified"] is False and doc["signers"] == [hub_keys.keyid]
    assert doc["artifacts"][0]["name"] == "sentiment" and doc["artifacts"][0]["entries"] == 2
    assert doc["chunks"] == doc["carriedChunks"] > 0 and doc["volumes"] == 1 and doc["base"] is None


def test_volumes_one_or_all(bundles: Path) -> None:
    one = json.loads(run_ferry("inspect", bundles / "vols" / "vol-002", "--json").stdout)["bundles"][0]
    every = json.loads(run_ferry("inspect", bundles / "vols", "--json").stdout)["bundles"][0]
    assert one["volumes"] == every["volumes"] >= 2
    assert one["volumesPresent"] == [2]
    assert every["volumesPresent"] == list(range(1, every["volumes"] + 1))
    assert every["packsPresent"] == every["packs"] > one["packsPresent"]


def test_delta_base_is_shown(bundles: Path) -> None:
    r = run_ferry("inspect", bundles / "delta")
    assert "delta bundle against the receipt of site edge-7" in r.stdout
    doc = json.loads(run_ferry("inspect", bundles / "delta", "--json").stdout)["bundles"][0]
    assert doc["base"]["site"] == "edge-7" and doc["carriedChunks"] == 0


def test_not_a_bundle(tmp_path: Path) -> None:
    assert_clean_failure(run_ferry("inspect", tmp_path), code=2, contains="not a ferry bundle")
    assert_clean_failure(run_ferry("inspect", tmp_path / "nope"), code=2, contains="no such bundle folder")
