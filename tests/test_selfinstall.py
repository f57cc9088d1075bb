"""ferry export --self-install: ferry's own wheels carried into the air gap and installed there
with pip --no-index in a fresh virtual environment (issue #12 item 5).

pip download takes the dependencies from this machine's package index (the hub's index; a local
file index where the tests run). Only that step may need an index: the install at the "edge"
runs with no index, no configuration and no find-links but the carried wheels.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundler.selfinstall import Target, requirements
from manifests.errors import UsageError
from tests.support.common import KeyPair, assert_clean_failure, run_ferry
from tests.support.export import make_model, write_spec


def _edge_env(tmp: Path) -> dict[str, str]:
    """An environment with no pip configuration at all: no index, no find-links, no constraints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(Path(sys.prefix))))
    env["HOME"] = str(tmp / "home")
    return env


@pytest.fixture(scope="module")
def self_install_bundle(tmp_path_factory: pytest.TempPathFactory, hub_keys: KeyPair) -> Path:
    tmp = tmp_path_factory.mktemp("self-install")
    make_model(tmp / "m", count=1, size=64 * 1024)
    spec = write_spec(tmp / "bundle.yaml", [("tiny", "1.0.0", "m")])
    r = run_ferry("export", spec, "--out", tmp / "usb", "--key", hub_keys.key, "--state", tmp / "hub",
                  "--self-install", timeout=900)
    if r.returncode != 0 and "downloading the dependencies" in r.stderr:
        pytest.skip(f"pip download could not reach a package index here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    sums = hashlib.sha256((tmp / "usb" / "self-install" / "SHA256SUMS").read_bytes()).hexdigest()
    assert f"SHA256SUMS sha256 {sums}" in r.stdout  # what the operator carries with the change record
    return tmp / "usb"


def test_payload_holds_ferry_and_every_dependency(self_install_bundle: Path) -> None:
    folder = self_install_bundle / "self-install"
    wheels = sorted(p.name for p in (folder / "wheels").iterdir())
    assert any(w.startswith("ferry-") for w in wheels)
    names = {w.split("-")[0].lower().replace("_", "-") for w in wheels}
    for req in requirements():
        name = req.split(";")[0].split("[")[0]
        for sep in "<>=!~ ":
            name = name.split(sep)[0]
        assert name.lower().replace("_", "-") in names, (name, wheels)
    lines = (folder / "SHA256SUMS").read_text().splitlines()
    assert len(lines) == len(wheels)
    for line in lines:
        digest, path = line.split("  ")
        assert hashlib.sha256((folder / path).read_bytes()).hexdigest() == digest


def test_payload_is_signed_content_of_the_bundle(self_install_bundle: Path, hub_keys: KeyPair) -> None:
    r = run_ferry("verify", self_install_bundle, "--trust", hub_keys.pub, "--json")
    assert r.returncode == 0, r.stderr
    assert '"ferry-self-install"' in r.stdout


def test_install_in_a_fresh_venv_with_no_index(self_install_bundle: Path, tmp_path: Path) -> None:
    edge = tmp_path / "edge-usb"
    shutil.copytree(self_install_bundle / "self-install", edge)  # what the operator carried over
    r = subprocess.run(["sh", str(edge / "install.sh"), str(tmp_path / "venv")], capture_output=True, text=True,
                       env=_edge_env(tmp_path), cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    version = subprocess.run([str(tmp_path / "venv" / "bin" / "ferry"), "--version"], capture_output=True,
                             text=True, env=_edge_env(tmp_path), timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("ferry "), version.stderr


def test_a_tampered_wheel_is_not_installed(self_install_bundle: Path, tmp_path: Path) -> None:
    edge = tmp_path / "edge-usb"
    shutil.copytree(self_install_bundle / "self-install", edge)
    (ferry_wheel,) = (edge / "wheels").glob("ferry-*.whl")
    ferry_wheel.write_bytes(ferry_wheel.read_bytes() + b"tampered")
    r = subprocess.run(["sh", str(edge / "install.sh"), str(tmp_path / "venv")], capture_output=True, text=True,
                       env=_edge_env(tmp_path), cwd=tmp_path, timeout=600)
    assert r.returncode == 1
    assert "does not match SHA256SUMS; not installing" in r.stderr
    assert not (tmp_path / "venv").exists()


@pytest.mark.parametrize("target", [Target(python="3"), Target(python="3.11; rm"), Target(platform="linux x86")])
def test_bad_targets_are_usage_errors(target: Target) -> None:
    with pytest.raises(UsageError):
        target.check()


def test_target_options_need_self_install(tmp_path: Path, hub_keys: KeyPair) -> None:
    r = run_ferry("export", tmp_path / "b.yaml", "--out", tmp_path / "o", "--key", hub_keys.key,
                  "--self-install-python", "3.11")
    assert_clean_failure(r, code=2, contains="go with --self-install")
