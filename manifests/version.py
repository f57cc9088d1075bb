"""Artifact versions are Semantic Versions 2.0.0; precedence decides downgrades."""

from __future__ import annotations

import semver

from .errors import FormatError


def parse_version(text: object, *, where: str = "version") -> semver.Version:
    """Parse a semantic version (a leading ``v`` is not part of semver and is refused)."""
    if not isinstance(text, str):
        raise FormatError(f"{where} must be a string like 1.2.0")
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        raise FormatError(f"{where} {text!r} is not a semantic version (like 1.2.0)") from None


def is_version(text: object) -> bool:
    """Whether ``text`` is a semantic version (SemVer 2.0.0) that :func:`parse_version` accepts."""
    try:
        parse_version(text)
    except FormatError:
        return False
    return True


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` precedes, equals or follows ``b`` (build metadata ignored, per semver)."""
    return parse_version(a).compare(parse_version(b))
