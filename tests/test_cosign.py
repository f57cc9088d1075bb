"""ferry sign and per-key passphrases (issue #15, item 1): two holders, two encrypted keys,
two passphrases, threshold 2 — on the real command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from manifests.bundle import MANIFEST_NAME, SIGNATURE_NAME
from tests.support.common import assert_clean_failure, run_ferry
from tests.support.export import make_model, write_spec

MiB = 1 << 20


def _keys(tmp: Path) -> dict[str, Path]:
    for name, secret in (("holder-a", "alpha pass"), ("holder-b", "bravo pass")):
        r = run_ferry("keys", "generate", name, "--out", tmp / "keys", env={"FERRY_KEY_PASSPHRASE": secret})
        assert r.returncode == 0, r.stderr
    (tmp / "policy.yaml").write_text(
        "apiVersion: ferry/v1\nkind: TrustPolicy\nthreshold: 2\nkeys:\n"
        "  - name: holder-a\n    file: keys/holder-a.pub\n  - name: holder-b\n    file: keys/holder-b.pub\n")
    return {"a": tmp / "keys" / "holder-a.key", "b": tmp / "keys" / "holder-b.key", "policy": tmp / "policy.yaml"}


def _export(tmp: Path, key_args: list[str], out: str = "usb", env: dict[str, str] | None = None,
            extra: tuple[str, ...] = (), seed: int = 0) -> subprocess.CompletedProcess[str]:
    model = make_model(tmp / f"model-{seed}", count=2, size=64 * 1024, seed=seed)
    spec = write_spec(tmp / f"bundle-{seed}.yaml", [("m", "1.0.0", str(model))])
    args: list[str] = []
    for k in key_args:
        args += ["--key", k]
    return run_ferry("export", spec, "--out", tmp / out, "--state", tmp / "hub", *args, *extra, env=env)


@pytest.fixture()
def holders(tmp_path: Path) -> dict[str, Path]:
    return _keys(tmp_path)


def test_two_holders_two_passphrases_threshold_two(tmp_path: Path, holders: dict[str, Path]) -> None:
    env = {"A_PASS": "alpha pass"}
    r = _export(tmp_path, [f"{holders['a']}:env=A_PASS"], env=env, out="single")
    assert r.returncode == 0, r.stderr
    # two volume folders carrying one bundle (the packs on the first): every one must be signed
    usb = tmp_path / "usb"
    shutil.copytree(tmp_path / "single", usb / "vol-001")
    (usb / "vol-002").mkdir()
    for name in (MANIFEST_NAME, SIGNATURE_NAME):
        shutil.copy(usb / "vol-001" / name, usb / "vol-002" / name)
    vols = sorted(usb.glob("vol-*"))
    assert len(vols) >= 2
    manifests = {v: (v / MANIFEST_NAME).read_bytes() for v in vols}
    # one signature: below the policy's threshold of 2
    assert_clean_failure(run_ferry("verify", usb, "--trust", holders["policy"]), code=1, contains="threshold is 2")
    # the second holder signs on "another machine": passphrase from a file descriptor
    rfd, wfd = os.pipe()
    os.write(wfd, b"bravo pass\n")
    os.close(wfd)
    try:
        r = subprocess.run([sys.executable, "-m", "ferry", "sign", str(usb), "--key", f"{holders['b']}:fd={rfd}",
                            "--trust", str(holders["policy"])], capture_output=True, text=True, pass_fds=(rfd,),
                           env={k: v for k, v in os.environ.items() if k != "FERRY_KEY_PASSPHRASE"})
    finally:
        os.close(rfd)
    assert r.returncode == 0, r.stderr
    assert "added 1 signature" in r.stdout
    for v in vols:  # every volume's signature file, the manifest bytes untouched
        assert (v / MANIFEST_NAME).read_bytes() == manifests[v]
        assert (v / SIGNATURE_NAME).read_bytes() == (vols[0] / SIGNATURE_NAME).read_bytes()
    ok = run_ferry("verify", usb, "--trust", holders["policy"], "--json")
    assert ok.returncode == 0, ok.stderr
    assert "holder-a" in ok.stdout and "holder-b" in ok.stdout
    shown = run_ferry("inspect", usb)
    assert shown.returncode == 0 and shown.stdout.count("signed by") == 1
    # signing again with the same key adds nothing and changes nothing
    sig = (vols[0] / SIGNATURE_NAME).read_bytes()
    again = run_ferry("sign", usb, "--key", f"{holders['b']}:env=B", "--trust", holders["policy"], env={"B": "bravo pass"})
    assert again.returncode == 0 and "nothing to add" in again.stdout
    assert (vols[0] / SIGNATURE_NAME).read_bytes() == sig


def test_both_keys_at_export_each_with_its_own_source(tmp_path: Path, holders: dict[str, Path]) -> None:
    (tmp_path / "b.pass").write_text("bravo pass\n")
    r = _export(tmp_path, [f"{holders['a']}:env=A_PASS", f"{holders['b']}:file={tmp_path / 'b.pass'}"],
                env={"A_PASS": "alpha pass"})
    assert r.returncode == 0, r.stderr
    assert run_ferry("verify", tmp_path / "usb", "--trust", holders["policy"]).returncode == 0


def test_one_variable_for_two_keys_is_refused(tmp_path: Path, holders: dict[str, Path]) -> None:
    r = _export(tmp_path, [str(holders["a"]), str(holders["b"])], env={"FERRY_KEY_PASSPHRASE": "alpha pass"})
    assert_clean_failure(r, code=2, contains="whose passphrase is it")
    assert not (tmp_path / "usb" / MANIFEST_NAME).exists()


def test_wrong_passphrase_names_its_source(tmp_path: Path, holders: dict[str, Path]) -> None:
    r = _export(tmp_path, [f"{holders['a']}:env=A_PASS"], env={"A_PASS": "bravo pass"})
    assert_clean_failure(r, code=2, contains="wrong passphrase in --key")
    r = _export(tmp_path, [f"{holders['a']}:env=UNSET_VAR"])
    assert_clean_failure(r, code=2, contains="UNSET_VAR is not set")
    r = _export(tmp_path, [str(holders["a"])])  # encrypted, no source, no terminal
    assert_clean_failure(r, code=2, contains="key is encrypted")


def test_cosignature_over_different_bytes_is_refused(tmp_path: Path, holders: dict[str, Path]) -> None:
    env = {"A_PASS": "alpha pass", "B_PASS": "bravo pass"}
    assert _export(tmp_path, [f"{holders['a']}:env=A_PASS"], out="one", env=env, seed=1).returncode == 0
    assert _export(tmp_path, [f"{holders['a']}:env=A_PASS"], out="two", env=env, seed=2).returncode == 0
    # bundle two carries bundle one's signature file: a signature over other bytes
    shutil.copy(tmp_path / "one" / SIGNATURE_NAME, tmp_path / "two" / SIGNATURE_NAME)
    before = (tmp_path / "two" / SIGNATURE_NAME).read_bytes()
    r = run_ferry("sign", tmp_path / "two", "--key", f"{holders['b']}:env=B_PASS", "--trust", holders["policy"], env=env)
    assert_clean_failure(r, code=1, contains="does not verify over these bytes")
    assert (tmp_path / "two" / SIGNATURE_NAME).read_bytes() == before
    # a signature by a key nobody named cannot be checked: refused too
    r = run_ferry("sign", tmp_path / "one", "--key", f"{holders['b']}:env=B_PASS", env=env)
    assert_clean_failure(r, code=1, contains="not known here")


def test_two_holder_flow_on_the_samples_with_a_signed_policy(tmp_path: Path, holders: dict[str, Path]) -> None:
    """The operator guide's flow: a signed policy (stable needs both holders) pinned at the edge,
    the samples exported by holder A, refused until holder B co-signs, then imported."""
    from tests.support.common import SAMPLES

    keys_dir = holders["a"].parent
    (tmp_path / "policy.yaml").write_text(
        "apiVersion: ferry/v1\nkind: TrustRoot\npolicyId: edge\nversion: 1\nexpires: 30d\n"
        "keys:\n  - {name: holder-a, file: keys/holder-a.pub}\n  - {name: holder-b, file: keys/holder-b.pub}\n"
        "thresholds: {root: 2, bundles: 1, channels: {stable: 2}}\n")
    env = {"A_PASS": "alpha pass", "B_PASS": "bravo pass"}
    root = tmp_path / "root.json"
    assert run_ferry("trust", "create", tmp_path / "policy.yaml", "--out", root).returncode == 0
    for who in ("a", "b"):
        r = run_ferry("trust", "sign", root, "--key", f"{keys_dir / f'holder-{who}.key'}:env={who.upper()}_PASS", env=env)
        assert r.returncode == 0, r.stderr
    edge = tmp_path / "edge"
    assert run_ferry("trust", "init", "--state", edge, root).returncode == 0
    usb = tmp_path / "usb"
    r = run_ferry("export", SAMPLES / "bundle.yaml", "--out", usb, "--state", tmp_path / "hub",
                  "--key", f"{holders['a']}:env=A_PASS", env=env)
    assert r.returncode == 0, r.stderr
    refused = run_ferry("import", usb, "--state", edge)
    assert_clean_failure(refused, code=1, contains="threshold is 2")
    r = run_ferry("sign", usb, "--key", f"{holders['b']}:env=B_PASS", "--trust", root, env=env)
    assert r.returncode == 0, r.stderr
    r = run_ferry("import", usb, "--state", edge)
    assert r.returncode == 0, r.stderr
    assert "imported" in r.stdout
