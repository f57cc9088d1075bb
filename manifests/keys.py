"""Ed25519 key files: generation, loading, and key ids.

Private keys are PKCS#8 PEM (encrypted with the passphrase in ``FERRY_KEY_PASSPHRASE`` when
it is set), public keys SubjectPublicKeyInfo PEM. A key id is the lowercase hex sha256 of
the public key's DER SubjectPublicKeyInfo: anyone can recompute it with openssl.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import KeyFileError

PASSPHRASE_ENV = "FERRY_KEY_PASSPHRASE"
MAX_KEY_FILE_BYTES = 64 * 1024


def key_id(public: Ed25519PublicKey) -> str:
    """A key's id: sha256 (64 hex) of its DER SubjectPublicKeyInfo, as TUF computes key ids."""
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def public_pem(public: Ed25519PublicKey) -> bytes:
    """The public key as PEM (SubjectPublicKeyInfo), the ``.pub`` file format."""
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode("utf-8") if value else None


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"{path}: too large to be a key file")
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except IsADirectoryError:
        raise KeyFileError(f"{path}: is a folder, not a key file") from None
    except PermissionError:
        raise KeyFileError(f"{path}: permission denied") from None


def generate(name: str, out_dir: Path) -> tuple[Path, Path, str]:
    """Write ``NAME.key`` (0600) and ``NAME.pub`` into ``out_dir``; never overwrite either."""
    from .model import NAME_RE

    if not NAME_RE.match(name):
        raise KeyFileError(f"key name {name!r} must be letters, digits, '.', '_' or '-'")
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for p in (key_path, pub_path):
        if p.exists() or p.is_symlink():
            raise KeyFileError(f"{p} already exists; ferry never overwrites a key")
    private = Ed25519PrivateKey.generate()
    secret = _passphrase()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption()
    )
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    # O_EXCL: a key appearing between the check and the write is not overwritten either.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(pub_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(public_pem(private.public_key()))
        f.flush()
        os.fsync(f.fileno())
    return key_path, pub_path, key_id(private.public_key())


def load_private(path: Path) -> Ed25519PrivateKey:
    """Load a signing key; one clear KeyFileError for every way this can go wrong."""
    data = _read(path)
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise KeyFileError(f"{path}: is a public key; signing needs the private key (.key)")
    secret = _passphrase()
    try:
        key = serialization.load_pem_private_key(data, password=secret)
    except TypeError:
        if secret is None:
            raise KeyFileError(f"{path}: key is encrypted; set {PASSPHRASE_ENV}") from None
        raise KeyFileError(f"{path}: key is not encrypted, but {PASSPHRASE_ENV} is set; unset it") from None
    except ValueError as exc:
        if secret is not None and b"ENCRYPTED" in data:
            raise KeyFileError(f"{path}: wrong passphrase in {PASSPHRASE_ENV}") from None
        raise KeyFileError(f"{path}: not a valid PEM private key ({str(exc).splitlines()[0]})") from None
    except UnsupportedAlgorithm:
        raise KeyFileError(f"{path}: unsupported key algorithm; ferry uses Ed25519") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: is a {type(key).__name__.replace('_', '')}, ferry needs an Ed25519 key")
    return key


def parse_public(data: bytes, where: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM ``data``; ``where`` names it in errors.

    Raises:
        KeyFileError: a private key, not PEM, or not Ed25519.
    """
    if b"PRIVATE KEY-----" in data:
        raise KeyFileError(f"{where}: is a private key; give the public key (.pub), never share the .key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{where}: not a valid PEM public key ({str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{where}: is not an Ed25519 public key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in the ``.pub`` file ``path``.

    Raises:
        KeyFileError: unreadable, a private key, or not an Ed25519 public key.
    """
    return parse_public(_read(path), str(path))


def load_any_public(path: Path) -> Ed25519PublicKey:
    """The public half of a key file, private (with passphrase) or public."""
    data = _read(path)
    if b"PRIVATE KEY-----" in data:
        return load_private(path).public_key()
    return parse_public(data, str(path))
