"""The edge's rules for what may be applied. Each rule lives here and nowhere else.

:func:`unit` is what each version-monotonic rule protects (an image tag, a model's
``current``, an applied manifest set).

:func:`decide` is *the* version-monotonic rule: import, dry-run, and ``verify --state``
all ask it, so the plan shown is the decision taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from datetime import datetime, timedelta

from manifests.text import parse_utc_or_none
from manifests.errors import FerryError, UsageError
from manifests.model import Artifact
from manifests.version import compare_versions, parse_version, precedence_rule

Action = Literal["new", "same", "newer", "older", "conflict", "downgrade", "switch", "unfit"]
#: Actions that install the incoming version (``switch``: another variant of the installed version).
APPLIES: frozenset[str] = frozenset({"new", "newer", "downgrade", "switch"})
#: Actions that refuse it (the import exits non-zero; ``unfit``: a variant the site cannot run).
REFUSES: frozenset[str] = frozenset({"older", "conflict", "unfit"})


@dataclass(frozen=True)
class Installed:
    """What the edge holds for one protected unit (see :func:`unit`)."""

    version: str
    content: str  # manifests.digest.artifact_content_digest of what was installed
    variant: str | None = None  # the model variant installed (manifests.variants), None without variants


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


def unit(artifact: Artifact) -> tuple[str, str]:
    """The unit the version-monotonic rule protects: what an import would *overwrite*.

    - an image: its **tag**, ``("image", "repository:tag")``. A registry holds many tags of
      one repository side by side (an LTS line beside the current one, ``-alpine`` variants,
      cosign ``sha256-<hex>.sig`` signature and attestation tags); a tag never moves to older
      content, but importing ``app:1.0.1`` beside an installed ``app:1.1.0`` replaces nothing;
    - a model: its name, ``("model", name)``, i.e. the model's ``current`` pointer;
    - a manifest set: its name, ``("manifests", name)``, the set applied as a whole.

    The edge ledger (``importer.state``, table ``installed``) is keyed by this pair; a bundle
    lists each unit once (``manifests.model``). Source: docs/spec.md "Versions", docs/bundle-format.md
    "Artifacts".

    Args:
        artifact: an artifact of a verified manifest (an image carries ``artifact.image``).
    Returns:
        ``(kind, unit name)``.
    """
    return artifact.key  # defined beside the artifact (manifests.model.Artifact.key): one home


def _advice(have: str) -> str:
    """What to publish instead: the next patch release after the installed version."""
    nxt = parse_version(have).bump_patch() if parse_version(have).prerelease is None else \
        parse_version(have).finalize_version()
    return f"publish the change under a higher version (e.g. {nxt})"


def decide(installed: Installed | None, version: str, content: str, *,
           allow_downgrade: bool = False, variant: str | None = None) -> Decision:
    """Whether an incoming version of one unit (:func:`unit`) may replace what is installed.

    Precedence is SemVer 2.0.0 (semver.org §11); every refusal names the clause that decided
    (:func:`manifests.version.precedence_rule`) and what to do.

    - nothing installed: ``new``;
    - same version string, same content: ``same`` (idempotent, nothing to do);
    - same version string, different content: ``conflict``, always (a version names one content),
      except another *variant* of that version (``variant`` differs from the installed one):
      ``switch``, not a downgrade (variants of one version share it; docs/spec.md, *Variants*);
    - same precedence, different build metadata (``1.2.0`` installed, ``1.2.0+build.2``
      incoming; §10: build metadata does not order versions) and different content: a
      rebuild. ``conflict`` by default; with ``allow_downgrade`` (the operator's explicit,
      audited override) ``downgrade``, i.e. the rebuild replaces the installed build;
    - higher precedence: ``newer``;
    - lower precedence: ``older`` (refused), or ``downgrade`` when the operator allowed it.

    Args:
        installed: what the edge holds for this unit, or None.
        version: the incoming semantic version (text).
        content: the incoming content digest (``manifests.digest.artifact_content_digest``).
        allow_downgrade: the operator's ``--allow-downgrade`` (given with a reason).
        variant: the incoming model variant's name, None for an artifact without variants.
    Returns:
        The :class:`Decision` with a one-line reason.
    Raises:
        FormatError: a version is not a semantic version (a verified manifest never has one).
    """
    if installed is None:
        return Decision("new", "not installed")
    have = installed.version
    order = compare_versions(version, have)
    if order == 0:
        if content == installed.content:
            return Decision("same", f"{version} already installed" if version == have
                            else f"{have} is installed with the same content")
        if version == have and variant is not None and variant != installed.variant:
            return Decision("switch", f"variant {installed.variant or '(none)'} -> {variant} of {version} "
                                      "(another variant of the same version, not a downgrade)")
        if version == have:
            return Decision("conflict", f"{version} is installed with different content: a version names one "
                                        f"content; {_advice(have)}")
        rule = precedence_rule(version, have)
        if allow_downgrade:
            return Decision("downgrade", f"rebuild {have} -> {version} allowed by operator (SemVer 2.0 {rule})")
        return Decision("conflict", f"{version} has the same precedence as installed {have} but different content "
                                    f"(SemVer 2.0 {rule}): {_advice(have)}, or replace the installed build with "
                                    "--allow-downgrade --reason")
    if order > 0:
        return Decision("newer", f"{have} -> {version}")
    rule = precedence_rule(version, have)
    if allow_downgrade:
        return Decision("downgrade", f"downgrade {have} -> {version} allowed by operator")
    return Decision("older", f"{version} is older than installed {have} (SemVer 2.0 {rule}); "
                             f"{_advice(have)}, or roll back on purpose with --allow-downgrade --reason")


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


class Ledger(Protocol):
    """What :func:`gate` reads of the edge's ledger (:class:`importer.state.EdgeState`)."""

    def digests_for_bundle_id(self, bundle_id: str) -> list[str]: ...

    def bundle_status(self, digest: str) -> str | None: ...

    def last_sequence(self, channel: str) -> int | None: ...


@dataclass(frozen=True)
class Gate:
    """The bundle-level verdict, before any artifact is planned.

    ``freshness``: :data:`Freshness`, or None when the bundle is refused. ``refusal``: why the
    bundle as a whole is refused ("" when it is not). ``stale``: for a stale bundle, the
    phrase appended to its artifacts' reasons ("" otherwise); ``last``: the channel's last
    sequence, for the warning."""

    freshness: Freshness | None
    refusal: str = ""
    stale: str = ""
    last: int | None = None


#: What the import says of a bundle it imported completely before (and ``verify --state``).
REPEAT_REASON = "already imported; nothing to do"


def gate(ledger: Ledger, digest: str, bundle_id: str, channel: str, sequence: int, created: str, *,
         now: datetime, max_age: timedelta | None = None, allow_downgrade: bool = False) -> Gate:
    """May a verified bundle be imported at all? The one gate ``ferry import``, its dry run and
    ``ferry verify --state`` run (docs/edge-state.md, "Bundles and channels"; threat model: replay,
    freeze, bundle id reuse).

    Args:
        ledger: the edge's ledger (read only). digest: the bundle's manifest digest
            (``sha256:<hex>``). bundle_id, channel, sequence, created: its signed ``bundle``
            fields (``created`` ``YYYY-MM-DDTHH:MM:SSZ``).
        now: the edge's clock (UTC). max_age: ``import --max-age`` (None: no limit).
        allow_downgrade: ``import --allow-downgrade`` (an imported bundle is weighed again).
    Returns:
        refused (another bundle with this id was imported; older than ``max_age``), ``repeat``
        (imported completely before), ``stale`` (sequence at or below the channel's last:
        artifacts apply only where newer) or ``new``.
    """
    others = [d for d in ledger.digests_for_bundle_id(bundle_id) if d != digest]
    if others:
        return Gate(None, f"bundle id {bundle_id!r} was imported before with different content "
                          f"(manifest {others[0]}); two bundles may not share an id")
    imported = ledger.bundle_status(digest) == "imported"  # importer.plan.BundleStatus.IMPORTED
    too_old = bundle_age_problem(created, now, max_age)
    if too_old and not imported:
        return Gate(None, too_old)
    last = ledger.last_sequence(channel)
    fresh = bundle_freshness(last, imported, sequence, allow_downgrade=allow_downgrade)
    if fresh == "stale":
        return Gate(fresh, stale=f" (stale bundle: sequence {sequence} is not after {last}, the last imported on "
                                 f"channel {channel!r})", last=last)
    return Gate(fresh, last=last)


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
    made = parse_utc_or_none(created)  # checked when the manifest was read; never trusted to parse here
    if made is None:
        return f"bundle's created time {created[:40]!r} is not a real UTC instant, so its age is unknown"
    age = now - made
    if age < -timedelta(days=1):
        return f"bundle was created {created}, in the future (check the hub's clock)"
    if age > max_age:
        return f"bundle was created {created}, {age.days} day(s) ago: older than --max-age ({_days(max_age)})"
    return None


def _days(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 86400}d" if seconds % 86400 == 0 else f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds // 60}m"
