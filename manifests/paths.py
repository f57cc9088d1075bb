"""Which paths a bundle may name. Checked on the manifest, before anything is written.

A path in a manifest is a relative POSIX path in normal form: components joined by ``/``,
none empty, ``.`` or ``..``; no leading ``/``, no backslash, no NUL or other control
characters (C0, DEL, C1) nor display-forging format characters (:mod:`manifests.text`), valid UTF-8 in Unicode NFC, within the length limits. The format has no link
entries at all: every entry is a regular file's bytes.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable

from .errors import FormatError
from .limits import MAX_PATH_BYTES, MAX_PATH_COMPONENT_BYTES
from .text import forbidden_char


def path_problem(path: object) -> str | None:
    """Why ``path`` is not an allowed bundle path, or None when it is."""
    if not isinstance(path, str):
        return "is not a string"
    if path == "":
        return "is empty"
    bad = forbidden_char(path)  # C0, DEL, C1 and display-forging format characters (section 2)
    if bad is not None:
        return f"contains a control character or invisible format character ({bad}: NUL, newline, U+202E, ...)"
    if "\\" in path:
        return "contains a backslash"
    if path.startswith("/"):
        return "is absolute"
    if len(path) >= 2 and path[1] == ":" and path[0].isalpha():
        return "starts with a drive letter"
    try:
        raw = path.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode"
    if len(raw) > MAX_PATH_BYTES:
        return f"is longer than {MAX_PATH_BYTES} bytes"
    if unicodedata.normalize("NFC", path) != path:
        return "is not in Unicode NFC"
    for part in path.split("/"):
        if part == "":
            return "has an empty component (leading, trailing or doubled '/')"
        if part in (".", ".."):
            return f"has a '{part}' component"
        if len(part.encode("utf-8")) > MAX_PATH_COMPONENT_BYTES:
            return f"has a component longer than {MAX_PATH_COMPONENT_BYTES} bytes"
    return None


def check_path(path: object, *, where: str = "path") -> str:
    """Return ``path`` if allowed, else raise FormatError naming it."""
    problem = path_problem(path)
    if problem:
        raise FormatError(f"{where} {path!r} {problem}")
    assert isinstance(path, str)
    return path


def check_tree(paths: Iterable[str], *, where: str = "artifact") -> None:
    """Refuse duplicates and a path that is both a file and a folder of another path.

    Case-insensitive duplicates are refused too: they collide on the FAT/exFAT media and on
    case-insensitive file systems an edge may use.
    """
    seen: dict[str, str] = {}
    files: set[str] = set()
    for path in paths:
        folded = path.casefold()
        if folded in seen:
            raise FormatError(f"{where}: duplicate path {path!r} (same as {seen[folded]!r})")
        seen[folded] = path
        files.add(folded)
    for folded in files:
        parts = folded.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in files:
                raise FormatError(f"{where}: {seen[prefix]!r} is a file and also a folder of {seen[folded]!r}")


def safe_join(root: os.PathLike[str] | str, path: str) -> str:
    """Join a checked bundle path below ``root``; the result never leaves ``root``."""
    check_path(path)
    base = os.path.abspath(root)
    full = os.path.normpath(os.path.join(base, *path.split("/")))
    if os.path.commonpath([base, full]) != base or full == base:
        raise FormatError(f"path {path!r} escapes its folder")
    return full
