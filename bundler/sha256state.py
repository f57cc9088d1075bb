"""SHA-256 whose running state can be saved and restored: the hub resumes the modelcar
layer's hash (format 1.3, docs/bundle-format.md 3.2.3) where a killed export left it, instead
of reading every file it had hashed again.

``hashlib`` cannot export a hash's state, and no maintained Python package does at OpenSSL's
speed (``rehash`` pokes at OpenSSL 1.1's private structures; the pure C ones have no SHA-NI
and run at a fifth of it). OpenSSL's low-level ``SHA256_Init/Update/Final`` (in libcrypto 1.1
and 3, deprecated but exported) keep the state in the public ``SHA256_CTX`` (``openssl/sha.h``:
eight 32-bit words of chaining value, the bit count in two 32-bit words, a 64-byte block and
two counters: 112 bytes), the same assembly ``hashlib`` runs. ctypes calls it without the GIL.

A saved state is only ever restored on the hub that saved it (the hub state folder), and is
checked on restore: its bit count must be the layer offset it claims to be at, and its
digest length SHA-256's (32 bytes; :meth:`Sha256.restore`). Where
libcrypto cannot be loaded, :func:`resumable` returns None and the caller hashes with
``hashlib`` (nothing is saved; a resumed export reads the files again).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
import sys
from typing import Any

from manifests.errors import FormatError

#: sizeof(SHA256_CTX) in openssl/sha.h (SHA_LONG h[8], Nl, Nh, data[16]; unsigned num, md_len)
CTX_SIZE = 112
#: SHA256_CTX.md_len of a SHA-256 (not SHA-224) context: the bytes SHA256_Final writes.
DIGEST_SIZE = 32
#: A saved state names its layout and byte order, so another one is never restored into it.
STATE_TAG = f"openssl-sha256-ctx-v1-{sys.byteorder}"

_lib: Any = None
_loaded = False


def _libcrypto() -> Any:
    """libcrypto with the SHA256_* signatures set, or None where it cannot be loaded."""
    global _lib, _loaded
    if not _loaded:
        _loaded = True
        for name in (ctypes.util.find_library("crypto"), "libcrypto.so.3", "libcrypto.so.1.1"):
            if not name:
                continue
            try:
                lib = ctypes.CDLL(name)
                lib.SHA256_Init.argtypes = [ctypes.c_void_p]
                lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
                lib.SHA256_Final.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            except (OSError, AttributeError):
                continue
            if _self_test(lib):
                _lib = lib
                break
    return _lib


def _self_test(lib: Any) -> bool:
    """The library computes SHA-256 and keeps its bit count where SHA256_CTX says."""
    import hashlib

    ctx = ctypes.create_string_buffer(CTX_SIZE)
    data = bytes(range(256)) * 3
    if lib.SHA256_Init(ctx) != 1 or lib.SHA256_Update(ctx, data, len(data)) != 1:
        return False
    if _bits(ctx.raw) != 8 * len(data):
        return False
    out = ctypes.create_string_buffer(32)
    return bool(lib.SHA256_Final(out, ctx) == 1 and out.raw == hashlib.sha256(data).digest())


def _bits(raw: bytes) -> int:
    low, high = struct.unpack_from("=II", raw, 32)  # Nl, Nh after h[8]
    return (high << 32) | low


class Sha256:
    """One SHA-256 computation (``update``/``hexdigest`` as hashlib's), whose state
    :meth:`save` gives and :meth:`restore` takes back. Not thread-safe; ``update`` releases
    the GIL."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self._ctx = ctypes.create_string_buffer(CTX_SIZE)
        lib.SHA256_Init(self._ctx)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        if not n:
            return
        if isinstance(data, bytes):
            self._lib.SHA256_Update(self._ctx, data, n)
            return
        view = memoryview(data)
        if view.readonly:  # a read-only buffer ctypes cannot point at: one copy
            self._lib.SHA256_Update(self._ctx, bytes(view), n)
            return
        buf = (ctypes.c_char * n).from_buffer(view)
        try:
            self._lib.SHA256_Update(self._ctx, buf, n)
        finally:
            del buf  # releases the export of the caller's buffer (a window may be reused)

    @property
    def hashed(self) -> int:
        """Bytes hashed so far."""
        return _bits(self._ctx.raw) // 8

    def save(self) -> str:
        """The state, as text for the hub state: ``STATE_TAG:<hex>``."""
        return f"{STATE_TAG}:{self._ctx.raw.hex()}"

    def restore(self, saved: str, hashed: int) -> bool:
        """Take back a state :meth:`save` gave, if it is of this layout, has hashed exactly
        ``hashed`` bytes (the bit count and the block's fill agree) and is a SHA-256 context
        (``md_len`` 32: another value makes SHA256_Final write a short or no digest); False
        (the state unchanged) otherwise."""
        tag, _, hexed = saved.rpartition(":")
        try:
            raw = bytes.fromhex(hexed)
        except ValueError:
            return False
        if tag != STATE_TAG or len(raw) != CTX_SIZE or _bits(raw) != 8 * hashed:
            return False
        num, md_len = struct.unpack_from("=II", raw, 104)
        if num != hashed % 64:  # the bytes waiting in the block: the count agrees
            return False
        if md_len != DIGEST_SIZE:  # SHA256_Final writes md_len bytes: 28 (SHA-224) or 0 give a wrong digest
            return False
        ctypes.memmove(self._ctx, raw, CTX_SIZE)
        return True

    def digest(self) -> bytes:
        """The digest; the object is final afterwards.

        Raises:
            FormatError: OpenSSL's SHA256_Final refused the context (a damaged state).
        """
        out = ctypes.create_string_buffer(DIGEST_SIZE)
        if self._lib.SHA256_Final(out, self._ctx) != 1:
            raise FormatError("SHA-256: OpenSSL refused the hash's state (SHA256_Final failed)")
        return out.raw

    def hexdigest(self) -> str:
        return self.digest().hex()


def resumable() -> Sha256 | None:
    """A fresh :class:`Sha256`, or None where libcrypto's SHA256_* cannot be used."""
    lib = _libcrypto()
    return Sha256(lib) if lib is not None else None
