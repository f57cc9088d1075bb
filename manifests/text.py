"""Rules for the text a manifest carries: which characters may never appear, and UTC times.

Two rules of ``docs/bundle-format.md`` live here, each in one place:

* **Forbidden characters** (section 2): readers print manifest strings and paths on
  terminals and in reports. Control characters (C0, DEL, C1) could inject escape sequences;
  Unicode *format* characters that change how text is displayed without being visible
  (bidirectional embeddings, overrides and isolates such as U+202E, zero-width characters,
  invisible operators, the byte-order mark, tags) could make ``evil.exe\u202etxt.bin`` show as
  something else. The set is an explicit list of ranges (:data:`FORBIDDEN_RANGES`), not a
  Unicode property, so that every implementation refuses exactly the same strings whatever
  Unicode version its library has.
* **UTC times** (section 3.1): ``YYYY-MM-DDTHH:MM:SSZ`` naming a real instant of the
  proleptic Gregorian calendar, years 0001-9999, seconds 00-59 (no leap second), no fraction,
  no offset other than ``Z``. Checked when a manifest or receipt is read, so nothing stored
  from one can later fail to parse.

Pure functions, no I/O.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from .errors import FormatError

#: Code point ranges (inclusive) never allowed in a manifest string or path
#: (docs/bundle-format.md section 2, "Forbidden characters").
FORBIDDEN_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x001F),    # C0 controls (NUL, newline, ESC, ...)
    (0x007F, 0x009F),    # DEL and C1 controls (CSI, ...)
    (0x00AD, 0x00AD),    # soft hyphen (invisible)
    (0x061C, 0x061C),    # Arabic letter mark (bidi)
    (0x180E, 0x180E),    # Mongolian vowel separator (invisible)
    (0x200B, 0x200F),    # zero-width space, non-joiner, joiner; LRM, RLM
    (0x2028, 0x202E),    # line and paragraph separators; LRE, RLE, PDF, LRO, RLO
    (0x2060, 0x206F),    # word joiner, invisible operators; LRI, RLI, FSI, PDI; deprecated format
    (0xFEFF, 0xFEFF),    # zero-width no-break space (byte-order mark)
    (0xFFF9, 0xFFFB),    # interlinear annotation controls
    (0xE0000, 0xE007F),  # tag characters
)

FORBIDDEN_RE = re.compile("[" + "".join(
    re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}"
    for lo, hi in FORBIDDEN_RANGES) + "]")

#: The one shape of a UTC time in ferry documents (then checked for meaning by :func:`parse_utc`).
UTC_TIME_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z")
UTC_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def forbidden_char(text: str) -> str | None:
    """The first forbidden character of ``text`` as ``U+XXXX``, or None when there is none.

    Args:
        text: any string (a manifest field or a path).
    Returns:
        e.g. ``"U+202E"``, or None.
    Rule: docs/bundle-format.md section 2 (forbidden characters), :data:`FORBIDDEN_RANGES`.
    """
    found = FORBIDDEN_RE.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def printable(text: object) -> str:
    """``text`` safe to print on a terminal: each forbidden character (:data:`FORBIDDEN_RANGES`:
    escape sequences, bidi overrides...) shown as ``\\u{XXXX}``; any other text unchanged.

    Args:
        text: a string from elsewhere (what a site reported in its return bundle); other values
            are shown as ``str(text)``.
    Returns:
        The text, without a forbidden character.
    Rule: docs/bundle-format.md section 2 (forbidden characters), for text no reader refused.
    """
    return FORBIDDEN_RE.sub(lambda m: f"\\u{{{ord(m.group()):04X}}}", str(text))


def parse_utc(text: object, *, where: str = "time") -> datetime:
    """The instant a ferry UTC time names, or FormatError.

    Args:
        text: the field's value, e.g. ``"2026-11-23T12:00:00Z"``.
        where: the field, for the message (``"bundle.created"``).
    Returns:
        an aware ``datetime`` in UTC, whole seconds.
    Raises:
        FormatError: not a string of the shape ``YYYY-MM-DDTHH:MM:SSZ``, or not a real
            instant (month 13, February 30, hour 24, minute 60, second 60: no leap seconds).
    Rule: docs/bundle-format.md section 3.1 (``created``).
    """
    if not isinstance(text, str) or not UTC_TIME_RE.match(text):
        raise FormatError(f"{where} must be a UTC time like 2026-01-31T12:00:00Z")
    try:
        made = datetime.strptime(text, UTC_TIME_FORMAT)
    except ValueError:
        raise FormatError(f"{where} {text!r} is not a real UTC instant (calendar date, hour 00-23, "
                          "minute and second 00-59)") from None
    if made.isoformat() + "Z" != text:  # belt and braces: the text is exactly this instant's form
        raise FormatError(f"{where} {text!r} is not a real UTC instant")
    return made.replace(tzinfo=timezone.utc)


def parse_utc_or_none(text: object) -> datetime | None:
    """:func:`parse_utc` for readers of stored values (``ferry status``, ``--max-age``): a value
    that is not a real instant yields None instead of an error, so that nothing stored by an
    older ferry can break a read-only command."""
    try:
        return parse_utc(text)
    except FormatError:
        return None
