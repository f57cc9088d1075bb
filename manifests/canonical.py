"""Canonical JSON: the one byte form of every signed document.

Encoding follows RFC 8785 (JCS) via the ``rfc8785`` package, restricted further as the
format requires: no floats at all, integers within I-JSON's exact range, UTF-8, no
insignificant whitespace, keys sorted. Decoding is strict: duplicate keys, floats, NaN and
non-canonical bytes are refused, so the bytes that were signed are the only valid bytes.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from .errors import FormatError

MAX_SAFE_INT = (1 << 53) - 1
MAX_DEPTH = 32


def _check(value: Any, depth: int = 0) -> None:
    """Refuse what the format forbids. ``depth`` counts the containers around ``value``: the
    document itself is at level 1 (depth 0), a value inside it at level 2, and every value,
    container or scalar, must be at level 32 or less (docs/bundle-format.md section 2)."""
    if depth >= MAX_DEPTH:
        raise FormatError("JSON nested deeper than 32 levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise FormatError("string holds a lone surrogate, not valid Unicode") from None
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise FormatError(f"integer {value} outside the exact JSON range (±2**53-1)")
        return
    if isinstance(value, float):
        raise FormatError("floats are not allowed in ferry documents")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise FormatError("JSON object keys must be strings")
            _check(item, depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check(item, depth + 1)
        return
    raise FormatError(f"value of type {type(value).__name__} cannot be encoded")


def encode(value: Any) -> bytes:
    """Return the canonical bytes of ``value`` (dicts, lists, str, int, bool, None)."""
    _check(value)
    return rfc8785.dumps(value)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FormatError(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def _no_float(text: str) -> Any:
    raise FormatError(f"floats are not allowed in ferry documents ({text[:20]})")


def _no_constant(text: str) -> Any:
    raise FormatError(f"{text} is not valid JSON")


def decode(data: bytes, *, what: str = "document", canonical: bool = True) -> Any:
    """Parse ``data`` strictly. With ``canonical`` the bytes must be exactly ``encode(result)``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{what} is not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_no_float,
            parse_constant=_no_constant,
        )
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from None
    except RecursionError:
        raise FormatError(f"{what}: JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:  # an integer literal over Python's 4300-digit conversion limit
        raise FormatError(f"{what}: integer literal too long") from None
    try:
        _check(value)
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from None
    if canonical and encode(value) != data:
        raise FormatError(f"{what} is not in canonical form (RFC 8785: sorted keys, no whitespace)")
    return value
