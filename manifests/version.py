"""Artifact versions are Semantic Versions 2.0.0; precedence decides downgrades."""

from __future__ import annotations

import re

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


def _identifier_rule(a: str, b: str) -> str:
    """Which SemVer 2.0.0 §11.4 clause orders pre-release identifiers ``a`` and ``b`` (a != b)."""
    if a.isdigit() and b.isdigit():
        return f"§11.4.1: numeric identifiers compare numerically ({a} vs {b})"
    if a.isdigit() or b.isdigit():
        return "§11.4.3: a numeric identifier has lower precedence than one with letters"
    rule = f"§11.4.2: identifiers with letters compare in ASCII order ({a!r} vs {b!r})"
    split_a = re.fullmatch(r"([A-Za-z-]+)([0-9]+)", a)
    split_b = re.fullmatch(r"([A-Za-z-]+)([0-9]+)", b)
    if split_a and split_b and split_a.group(1) == split_b.group(1):
        word = split_a.group(1)
        rule += (f", so {word}{max(int(split_a.group(2)), int(split_b.group(2)))} sorts before "
                 f"{word}{min(int(split_a.group(2)), int(split_b.group(2)))}; number pre-releases as a "
                 f"separate identifier ({word}.{split_a.group(2)}, {word}.{split_b.group(2)}), which compares "
                 "numerically") if len(split_a.group(2)) != len(split_b.group(2)) else ""
    return rule


def precedence_rule(a: str, b: str) -> str:
    """The SemVer 2.0.0 clause (semver.org, §10 and §11) that orders version ``a`` against ``b``,
    in words, for messages that refuse an import.

    Args:
        a, b: semantic versions (strings, as in a manifest).
    Returns:
        One clause such as ``"§11.3: a pre-release has lower precedence than its release"``;
        for versions of equal precedence, the §10 rule (build metadata does not order).
    Raises:
        FormatError: either text is not a semantic version.
    """
    va, vb = parse_version(a), parse_version(b)
    for part in ("major", "minor", "patch"):
        if getattr(va, part) != getattr(vb, part):
            return "§11.2: major, minor and patch compare numerically, in that order"
    if va.prerelease == vb.prerelease:
        if va.build != vb.build:
            return "§10: build metadata (after '+') does not order versions, so both have the same precedence"
        return "the versions are equal"
    if va.prerelease is None or vb.prerelease is None:
        return "§11.3: a pre-release (after '-') has lower precedence than its release"
    ids_a, ids_b = va.prerelease.split("."), vb.prerelease.split(".")
    for x, y in zip(ids_a, ids_b):
        if x != y:
            return _identifier_rule(x, y)
    return "§11.4.4: a larger set of pre-release identifiers has higher precedence when the preceding ones are equal"
