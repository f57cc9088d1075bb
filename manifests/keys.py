"""Ed25519 key files: generation, loading, per-key passphrases, and key ids.

Private keys are PKCS#8 PEM (encrypted with the passphrase in ``FERRY_KEY_PASSPHRASE`` when
it is set at ``keys generate``), public keys SubjectPublicKeyInfo PEM. A key id is the
lowercase hex sha256 of the public key's DER SubjectPublicKeyInfo: anyone can recompute it
with openssl.

Signing commands name each key as ``PATH[:SOURCE]`` (:func:`parse_key_ref`), where SOURCE
says where *that* key's passphrase comes from: ``env=VAR``, ``fd=N`` or ``file=PATH``. An
encrypted key without a source is asked for on the terminal (no echo); the single variable
``FERRY_KEY_PASSPHRASE`` is used only when exactly one ``--key`` is given, so two holders'
passphrases are never one secret (issue #15).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import KeyFileError, UsageError

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
    """A key file's bytes (at most MAX_KEY_FILE_BYTES). Raises KeyFileError, worded as every
    missing or unreadable file ferry is given (:func:`manifests.bundle.read_bounded`)."""
    from .bundle import read_bounded
    from .errors import FerryError

    try:
        return read_bounded(path, MAX_KEY_FILE_BYTES, "key file", place="source")
    except FerryError as exc:
        raise KeyFileError(str(exc)) from None


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


def _decode_private(path: Path, data: bytes, secret: bytes | None, source: str) -> Ed25519PrivateKey:
    """PEM bytes -> Ed25519 key; ``source`` names where ``secret`` came from, for messages."""
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise KeyFileError(f"{path}: is a public key; signing needs the private key (.key)")
    try:
        key = serialization.load_pem_private_key(data, password=secret)
    except TypeError:
        if secret is None:
            raise KeyFileError(f"{path}: key is encrypted; give its passphrase (--key {path}:env=VAR, :fd=N or "
                               f":file=PATH, a terminal, or {PASSPHRASE_ENV} for a single key)") from None
        raise KeyFileError(f"{path}: key is not encrypted, but {source} gives a passphrase; drop it") from None
    except ValueError as exc:
        if secret is not None and b"ENCRYPTED" in data:
            raise KeyFileError(f"{path}: wrong passphrase in {source}") from None
        raise KeyFileError(f"{path}: not a valid PEM private key ({_pem_problem(data, exc)})") from None
    except UnsupportedAlgorithm:
        raise KeyFileError(f"{path}: unsupported key algorithm; ferry uses Ed25519") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: is a {type(key).__name__.replace('_', '')}, ferry needs an Ed25519 key")
    return key


def load_private(path: Path) -> Ed25519PrivateKey:
    """Load a signing key with the passphrase in ``FERRY_KEY_PASSPHRASE`` (if set).

    Raises KeyFileError (exit 2) for every way this can go wrong, in one line.
    """
    return _decode_private(path, _read(path), _passphrase(), PASSPHRASE_ENV)


#: ``PATH:env=VAR``, ``PATH:fd=N``, ``PATH:file=PATH`` (the last colon-suffix of this shape).
_SOURCE_RE = re.compile(r"^(?P<path>.+):(?P<kind>env|fd|file)=(?P<arg>.+)\Z", re.DOTALL)
MAX_PASSPHRASE_BYTES = 4096


@dataclass(frozen=True)
class KeyRef:
    """A private key file named on the command line, and where its passphrase comes from.

    ``kind`` is None (unencrypted, the terminal, or ``FERRY_KEY_PASSPHRASE`` for a single
    key), ``"env"`` (the environment variable ``arg``), ``"fd"`` (read the open file
    descriptor ``arg`` to its end) or ``"file"`` (the file ``arg``); one trailing newline of
    an fd or file is dropped.
    """

    path: Path
    kind: str | None = None
    arg: str | None = None

    @property
    def source(self) -> str:
        return PASSPHRASE_ENV if self.kind is None else f"--key {self.path}:{self.kind}={self.arg}"


def parse_key_ref(text: str) -> KeyRef:
    """``PATH[:env=VAR|:fd=N|:file=PATH]`` -> KeyRef. Raises UsageError for an empty path or a bad fd."""
    m = _SOURCE_RE.match(text)
    if m is None:
        if not text:
            raise UsageError("--key needs a key file")
        return KeyRef(Path(text))
    if m["kind"] == "fd" and not m["arg"].isdigit():
        raise UsageError(f"--key {text}: fd= needs a file descriptor number")
    return KeyRef(Path(m["path"]), m["kind"], m["arg"])


def _read_source(ref: KeyRef) -> bytes:
    """The passphrase a KeyRef's source gives (env, fd or file), one trailing newline dropped."""
    if ref.kind == "env":
        value = os.environ.get(ref.arg or "")
        if not value:
            raise KeyFileError(f"{ref.source}: the environment variable {ref.arg} is not set")
        return value.encode("utf-8")
    try:
        if ref.kind == "fd":
            chunks: list[bytes] = []
            fd = int(ref.arg or "")
            while sum(len(c) for c in chunks) <= MAX_PASSPHRASE_BYTES:
                part = os.read(fd, 1024)
                if not part:
                    break
                chunks.append(part)
            data = b"".join(chunks)
        else:
            with open(ref.arg or "", "rb") as f:
                data = f.read(MAX_PASSPHRASE_BYTES + 1)
    except FileNotFoundError:
        from .bundle import not_found

        raise KeyFileError(not_found("passphrase file", ref.arg or "")) from None
    except OSError as exc:
        raise KeyFileError(f"{ref.source}: cannot read the passphrase ({exc.strerror or exc})") from None
    if len(data) > MAX_PASSPHRASE_BYTES:
        raise KeyFileError(f"{ref.source}: passphrase over {MAX_PASSPHRASE_BYTES} bytes")
    data = data[:-1] if data.endswith(b"\n") else data
    if not data:
        raise KeyFileError(f"{ref.source}: the passphrase is empty")
    return data


def load_signing_keys(refs: Sequence[KeyRef | Path], *,
                      ask: Callable[[str], bytes | None] | None = None) -> list[Ed25519PrivateKey]:
    """Load every ``--key`` with its own passphrase.

    Args:
        refs: the keys as named (a bare Path is a KeyRef without source).
        ask: prompts for a passphrase on the terminal (no echo); returns None when there is
            no terminal. Called only for an encrypted key without a source.
    Returns the keys in the order given.
    Raises:
        UsageError: ``FERRY_KEY_PASSPHRASE`` is set while several keys are given without
            sources (which key it belongs to is ambiguous).
        KeyFileError: a key or its passphrase is missing, wrong or unreadable.
    """
    named = [r if isinstance(r, KeyRef) else KeyRef(Path(r)) for r in refs]
    env = _passphrase()
    if env is not None and len(named) > 1 and any(r.kind is None for r in named):
        raise UsageError(f"{PASSPHRASE_ENV} is set but {len(refs)} --key are given: whose passphrase is it? "
                         "give each encrypted key its own source (--key KEY:env=VAR, :fd=N or :file=PATH)")
    keys = []
    for ref in named:
        data = _read(ref.path)
        encrypted = b"ENCRYPTED PRIVATE KEY-----" in data
        if ref.kind is not None:
            secret: bytes | None = _read_source(ref)
        elif env is not None:
            secret = env
        elif encrypted and ask is not None:
            secret = ask(f"passphrase for {ref.path}: ")
        else:
            secret = None
        keys.append(_decode_private(ref.path, data, secret, ref.source))
    return keys


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
        raise KeyFileError(f"{where}: not a valid PEM public key ({_pem_problem(data, exc)})") from None
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


def _pem_problem(data: bytes, exc: Exception) -> str:
    """Why ``data`` did not load as a PEM key, in the user's terms: no PEM block at all (another
    file given), or the library's first sentence without its FAQ link."""
    if b"-----BEGIN " not in data:
        return "no '-----BEGIN' line: give a .key or .pub file that `ferry keys generate` wrote"
    first = str(exc).splitlines()[0] if str(exc) else "unreadable"
    return first.split(" See https://", 1)[0].strip() or "unreadable"
