"""Every file argument that is missing reads the same: ``ferry: error: trust file /x: not found``
(one helper, :func:`manifests.bundle.not_found`), exit 2, whatever command and option named it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.common import KeyPair, assert_clean_failure, run_ferry

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "samples" / "bundle.yaml"


@pytest.fixture(scope="module")
def usb(tmp_path_factory: pytest.TempPathFactory, hub_keys: KeyPair) -> Path:
    """The sample bundle, from the real exporter."""
    out = tmp_path_factory.mktemp("missing") / "usb"
    done = run_ferry("export", SPEC, "--out", out, "--key", hub_keys.key, "--state", out.parent / "hub")
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("what, args", [
    ("trust file", lambda t, k: ["verify", t.parent / "usb", "--trust", t / "MISSING"]),
    ("trust file", lambda t, k: ["import", t.parent / "usb", "--trust", t / "MISSING", "--state", t / "edge"]),
    ("trust file", lambda t, k: ["import", t.parent / "usb", "--trust", t / "MISSING", "--state", t / "edge", "--dry-run"]),
    ("key file", lambda t, k: ["keys", "id", t / "MISSING"]),
    ("key file", lambda t, k: ["export", SPEC, "--out", t / "o", "--key", t / "MISSING", "--state", t / "hub"]),
    ("key file", lambda t, k: ["sites", "add", "site-01", "--key", t / "MISSING", "--hub", t / "hub"]),
    ("passphrase file", lambda t, k: ["export", SPEC, "--out", t / "o", "--key", f"{k.key}:file={t / 'MISSING'}",
                                      "--state", t / "hub"]),
    ("spec file", lambda t, k: ["export", t / "MISSING", "--out", t / "o", "--key", k.key, "--state", t / "hub"]),
    ("receipt", lambda t, k: ["export", SPEC, "--out", t / "o", "--key", k.key, "--state", t / "hub",
                              "--since", t / "MISSING"]),
    ("site profile", lambda t, k: ["profile", "add", t / "MISSING", "--state", t / "hub"]),
    ("site profile", lambda t, k: ["export", SPEC, "--out", t / "o", "--key", k.key, "--state", t / "hub",
                                   "--profile", t / "MISSING"]),
    ("policy", lambda t, k: ["trust", "show", t / "MISSING"]),
    ("token file", lambda t, k: ["serve", "--state", t / "edge", "--token-file", t / "MISSING"]),
    ("basic-auth file", lambda t, k: ["serve", "--state", t / "edge", "--basic-auth-file", t / "MISSING"]),
    ("TLS certificate", lambda t, k: ["serve", "--state", t / "edge", "--tls-cert", t / "MISSING",
                                      "--tls-key", t / "MISSING"]),
    ("kubeconfig", lambda t, k: ["site", "set", "--state", t / "edge", "--name", "a", "--kubeconfig", t / "MISSING"]),
    # an import checks its inputs before anything is read, its dry run too (no cluster is contacted)
    ("kubeconfig", lambda t, k: ["import", t.parent / "usb", "--trust", k.pub, "--state", t / "edge",
                                 "--kubeconfig", t / "MISSING", "--dry-run"]),
    ("kubeconfig", lambda t, k: ["import", t.parent / "usb", "--trust", k.pub, "--state", t / "edge",
                                 "--kubeconfig", t / "MISSING"]),
    ("kubeconfig", lambda t, k: ["watch", t.parent / "usb", "--trust", k.pub, "--state", t / "edge", "--once",
                                 "--kubeconfig", t / "MISSING"]),
])
def test_a_missing_file_argument_reads_like_every_other(usb: Path, hub_keys: KeyPair, tmp_path: Path, what: str,
                                                        args) -> None:
    # found in review: a missing --trust said "--trust /x: No such file or directory" (the OS's words)
    tmp_path = usb.parent / tmp_path.name  # beside the sample bundle: t.parent / "usb" is it
    tmp_path.mkdir()
    (tmp_path / "edge").mkdir()
    result = run_ferry(*args(tmp_path, hub_keys), timeout=60)
    assert_clean_failure(result, code=2, contains=f"ferry: error: {what} {tmp_path / 'MISSING'}: not found")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("dry", [True, False])
def test_an_import_checks_its_apply_targets_before_reading_anything(usb: Path, hub_keys: KeyPair, tmp_path: Path,
                                                                   dry: bool) -> None:
    """A kubeconfig that is not one, a context it lacks, a --manifests-dir that is a file: one
    line naming the file, exit 2, and the edge state is not even made (found: the dry run
    exited 0, the import applied the images and model, then failed the manifest set with exit 1)."""
    garbage = tmp_path / "kubeconfig.yaml"
    garbage.write_text("clusters: [\n")
    real = tmp_path / "wec.yaml"
    real.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://192.0.2.1:6443'}}]\n"
                    "users: [{name: u, user: {token: t}}]\ncontexts: [{name: wec-1, context: {cluster: c, user: u}}]\n"
                    "current-context: wec-1\n")
    a_file = tmp_path / "gitops"
    a_file.write_text("not a folder")
    edge = tmp_path / "edge"
    for extra, says in ((["--kubeconfig", garbage], f"--kubeconfig {garbage}: cannot be used"),
                        (["--kubeconfig", real, "--context", "nope"],
                         f"--context nope: the kubeconfig {real} has no such context (it has: wec-1)"),
                        (["--manifests-dir", a_file], f"--manifests-dir {a_file}: not a folder")):
        result = run_ferry("import", usb, "--trust", hub_keys.pub, "--state", edge, *extra,
                           *(["--dry-run"] if dry else []), timeout=60)
        assert_clean_failure(result, code=2, contains=f"ferry: error: {says}")
        assert not edge.exists()
