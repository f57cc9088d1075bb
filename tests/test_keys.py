"""ferry keys: generating, loading, encrypting; every misuse is one line and exit 2."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from manifests.errors import KeyFileError
from manifests.keys import key_id, load_private, load_public
from tests.support.common import assert_clean_failure, run_ferry


def test_generate_writes_private_0600_and_public(tmp_path: Path) -> None:
    result = run_ferry("keys", "generate", "hub-a", "--out", tmp_path / "keys")
    assert result.returncode == 0, result.stderr
    key, pub = tmp_path / "keys" / "hub-a.key", tmp_path / "keys" / "hub-a.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    kid = key_id(load_public(pub))
    assert kid in result.stdout
    assert key_id(load_private(key).public_key()) == kid
    shown = run_ferry("keys", "id", pub)
    assert shown.returncode == 0 and shown.stdout.strip() == kid


def test_generate_never_overwrites(tmp_path: Path) -> None:
    assert run_ferry("keys", "generate", "k", "--out", tmp_path).returncode == 0
    before = (tmp_path / "k.key").read_bytes()
    again = run_ferry("keys", "generate", "k", "--out", tmp_path)
    assert_clean_failure(again, code=2, contains="already exists")
    assert (tmp_path / "k.key").read_bytes() == before


def test_encrypted_key_needs_the_right_passphrase(tmp_path: Path) -> None:
    env = {"FERRY_KEY_PASSPHRASE": "correct horse"}
    assert run_ferry("keys", "generate", "enc", "--out", tmp_path, env=env).returncode == 0
    key = tmp_path / "enc.key"
    assert "ENCRYPTED PRIVATE KEY" in key.read_text()
    ok = run_ferry("keys", "id", key, env=env)
    assert ok.returncode == 0 and ok.stdout.strip() == key_id(load_public(tmp_path / "enc.pub"))
    assert_clean_failure(run_ferry("keys", "id", key, env={"FERRY_KEY_PASSPHRASE": "wrong"}),
                         code=2, contains="wrong passphrase")
    assert_clean_failure(run_ferry("keys", "id", key), code=2, contains="FERRY_KEY_PASSPHRASE")


def test_public_key_where_private_needed_and_corrupt_files(tmp_path: Path) -> None:
    assert run_ferry("keys", "generate", "k", "--out", tmp_path).returncode == 0
    with pytest.raises(KeyFileError, match="is a public key"):
        load_private(tmp_path / "k.pub")
    corrupt = tmp_path / "corrupt.key"
    corrupt.write_text("-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError, match="not a valid PEM private key"):
        load_private(corrupt)
    assert_clean_failure(run_ferry("keys", "id", corrupt), code=2)
    # another file given as a key: one line in the user's terms, no library FAQ link (found walking the guide)
    report = tmp_path / "report.json"
    report.write_text('{"format": "ferry-verify-report"}')
    r = run_ferry("keys", "id", report)
    assert_clean_failure(r, code=2, contains=f"{report}: not a valid PEM public key (no '-----BEGIN' line")
    assert "https://" not in r.stderr
    with pytest.raises(KeyFileError, match="not a valid PEM private key \\(no '-----BEGIN' line"):
        load_private(report)
    assert_clean_failure(run_ferry("keys", "id", tmp_path / "missing.pub"), code=2, contains=f"key file {tmp_path / 'missing.pub'}: not found")
    with pytest.raises(KeyFileError, match="is a private key"):
        load_public(tmp_path / "k.key")


def test_non_ed25519_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "ec.key").write_bytes(pem)
    with pytest.raises(KeyFileError, match="Ed25519"):
        load_private(tmp_path / "ec.key")


def test_cli_basics() -> None:
    version = run_ferry("--version")
    assert version.returncode == 0 and version.stdout.startswith("ferry ")
    helptext = run_ferry("--help").stdout
    for command in ("keys", "export", "inspect", "verify", "import", "status", "receipt", "audit"):
        assert command in helptext
