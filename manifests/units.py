"""Sizes and rates as operators write them: ``32GiB``, ``500MB``, ``10GB/month``.

One home for the unit rule, read on both sides: the hub's ``--max-volume-size`` and
``--max-bytes``, site profiles, and the edge's ``ferry site set --memory/--link``
(docs/spec.md, *Sizes*). Pure.
"""

from __future__ import annotations

import re

from .errors import UsageError

#: IEC units are powers of 1024 (``KiB`` ... ``TiB``, IEC 80000-13); SI units powers of 1000
#: (``KB`` ... ``TB`` and the bare ``K`` ... ``T``, as printed on USB sticks). Case does not matter.
UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*\Z")
#: A link's period (``--link 10GB/month``): the bytes one bundle for that site may take.
PERIODS = ("day", "week", "month")


def parse_size(text: str, *, what: str = "size") -> int:
    """Bytes in ``text`` such as ``32GiB``, ``500MB`` or ``4096``.

    Args:
        text: a number (digits, optionally ``.digits``) and an optional unit from :data:`UNITS`.
        what: how the value is named in the error (``--memory``, ``spec.models[0]...``).
    Returns:
        the size in bytes (rounded down to a whole byte), more than 0.
    Raises:
        UsageError: not a size, an unknown unit, or 0 bytes.
    """
    m = _SIZE_RE.match(text or "")
    unit = m.group(2).lower() if m else ""
    if not m or unit not in UNITS:
        raise UsageError(f"{what} {text!r} is not a size like 32GiB, 500MB or 4096")
    # Decimal arithmetic on the text avoids float rounding for values like 1.5GiB.
    whole, _, frac = m.group(1).partition(".")
    scale = UNITS[unit]
    value = int(whole) * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)
    if value <= 0:
        raise UsageError(f"{what} {text!r} must be more than 0 bytes")
    return value


def parse_link(text: str, *, what: str = "--link") -> tuple[int, str]:
    """A link budget ``SIZE/PERIOD`` such as ``10GB/month`` into (bytes, period).

    Args:
        text: a size (:func:`parse_size`), ``/``, and one of :data:`PERIODS`.
        what: how the value is named in the error.
    Returns:
        (bytes per period, the period).
    Raises:
        UsageError: no ``/``, a bad size or an unknown period.
    """
    size, slash, period = (text or "").partition("/")
    period = period.strip().lower()
    if not slash or period not in PERIODS:
        raise UsageError(f"{what} {text!r} is not a link budget like 10GB/month (periods: {', '.join(PERIODS)})")
    return parse_size(size, what=what), period
