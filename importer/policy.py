"""The edge's rules for what may be applied. Each rule lives here and nowhere else.

:func:`decide` is *the* version-monotonic rule: import, dry-run, and ``verify --state``
all ask it, so the plan shown is the decision taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from datetime import datetime, timedelta, timezone

from manifests.errors import FerryError, UsageError
from manifests.version import compare_versions

Action = Literal["new", "same", "newer", "older", "conflict", "downgrade"]
#: Actions that install the incoming version.
APPLIES: frozenset[str] = frozenset({"new", "newer", "downgrade"})
#: Actions that refuse it (the import exits non-zero).
REFUSES: frozenset[str] = frozenset({"older", "conflict"})


@dataclass(frozen=True)
class Installed:
    """What the edge holds for one (kind, name)."""

    version: str
    content: str  # manifests.digest.artifact_content_digest of what was installed


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str

    @property
    def applies(self) -> bool:
        return self.action in APPLIES

    @property
    def refused(self) -> bool:
        return self.action in REFUSES


def decide(installed: Installed | None, version: str, content: str, *,
           allow_downgrade: bool = False) -> Decision:
    """Whether an incoming artifact version may replace what is installed.

    - nothing installed: ``new``;
    - same version, same content: ``same`` (idempotent, nothing to do);
    - same version, different content: ``conflict`` (refused: a version names one content);
    - newer: ``newer``;
    - older: ``older`` (refused), or ``downgrade`` when the operator allowed it with a reason.
    """
    if installed is None:
        return Decision("new", "not installed")
    order = compare_versions(version, installed.version)
    if order == 0:
        if content == installed.content:
            return Decision("same", f"{version} already installed")
        return Decision("conflict", f"{version} is installed with different content")
    if order > 0:
        return Decision("newer", f"{installed.version} -> {version}")
    if allow_downgrade:
        return Decision("downgrade", f"downgrade {installed.version} -> {version} allowed by operator")
    return Decision("older", f"{version} is older than installed {installed.version}")


Freshness = Literal["new", "stale", "repeat"]


def bundle_freshness(last_sequence: int | None, already_imported: bool, sequence: int, *,
                     allow_downgrade: bool = False) -> Freshness:
    """Where a bundle stands on its channel.

    ``repeat``: this exact manifest was imported before (idempotent, not a replay error) —
    except when the operator allows downgrades: importing an earlier bundle again is how a
    site rolls back, so it is weighed artifact by artifact like any stale bundle;
    ``stale``: its sequence is at or below the channel's last (artifacts apply only if newer);
    ``new``: otherwise.
    """
    if already_imported and not allow_downgrade:
        return "repeat"
    if last_sequence is not None and sequence <= last_sequence:
        return "stale"
    return "new"


_DURATION_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_max_age(text: str, option: str = "--max-age") -> timedelta:
    """Durations (``--max-age``, ``--expires``, policy expiries): a whole number with a unit,
    m (minutes), h, d or w, e.g. ``30d``. Raises UsageError naming ``option``."""
    value, unit = text[:-1], text[-1:].lower()
    if unit not in _DURATION_UNITS or not value.isdigit() or int(value) <= 0:
        raise UsageError(f"{option} {text!r} is not a duration like 90m, 12h, 30d or 2w")
    return timedelta(seconds=int(value) * _DURATION_UNITS[unit])


def bundle_age_problem(created: str, now: datetime, max_age: timedelta | None) -> str | None:
    """Why a bundle is too old to import (defends against a freeze: a courier withholding
    updates and delivering an old, validly signed bundle), or None.

    With a maximum age, a bundle dated more than a day in the future is refused too: it would
    otherwise pass any age check.
    """
    if max_age is None:
        return None
    made = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    age = now - made
    if age < -timedelta(days=1):
        return f"bundle was created {created}, in the future (check the hub's clock)"
    if age > max_age:
        return f"bundle was created {created}, {age.days} day(s) ago: older than --max-age ({_days(max_age)})"
    return None


def _days(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 86400}d" if seconds % 86400 == 0 else f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds // 60}m"
