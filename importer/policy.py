"""The edge's rules for what may be applied. Each rule lives here and nowhere else.

:func:`decide` is *the* version-monotonic rule: import, dry-run, and ``verify --state``
all ask it, so the plan shown is the decision taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
