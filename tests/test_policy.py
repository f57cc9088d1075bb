"""importer.policy: the version rule and the channel-sequence rule, as properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from importer.policy import APPLIES, REFUSES, Installed, bundle_freshness, decide
from manifests.version import compare_versions

versions = st.builds(lambda a, b, c, pre: f"{a}.{b}.{c}" + (f"-rc.{pre}" if pre is not None else ""),
                     st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.none() | st.integers(0, 3))
contents = st.sampled_from(["blake3:aa", "blake3:bb"])


@given(versions, contents)
def test_nothing_installed_is_new(version: str, content: str) -> None:
    assert decide(None, version, content).action == "new"


@given(versions, contents, versions, contents, st.booleans())
def test_decide_is_version_monotonic(have: str, have_content: str, version: str, content: str, allow: bool) -> None:
    d = decide(Installed(have, have_content), version, content, allow_downgrade=allow)
    order = compare_versions(version, have)
    assert d.applies == (d.action in APPLIES) and d.refused == (d.action in REFUSES)
    assert not (d.applies and d.refused)
    if order > 0:
        assert d.action == "newer"
    elif order == 0:
        # one version names one content: never re-applied, never replaced, even with the flag
        # (the strategy has no build metadata; see test_build_metadata_is_a_rebuild)
        assert d.action == ("same" if content == have_content else "conflict")
    else:
        assert d.action == ("downgrade" if allow else "older")
    assert d.reason


@given(st.none() | st.integers(1, 100), st.booleans(), st.integers(1, 100), st.booleans())
def test_bundle_freshness(last: int | None, seen: bool, sequence: int, allow: bool) -> None:
    f = bundle_freshness(last, seen, sequence, allow_downgrade=allow)
    if seen and not allow:
        assert f == "repeat"  # the same bundle again is idempotent, not a replay error
    elif last is not None and sequence <= last:
        assert f == "stale"
    else:
        assert f == "new"


def test_max_age_parsing_and_the_age_rule() -> None:
    from datetime import datetime, timedelta, timezone

    from importer.policy import bundle_age_problem, parse_max_age
    from manifests.errors import FerryError

    assert parse_max_age("30d") == timedelta(days=30)
    assert parse_max_age("12h") == timedelta(hours=12)
    assert parse_max_age("2w") == timedelta(weeks=2)
    for bad in ("30", "d", "-3d", "0d", "1.5d", "30y", ""):
        with pytest.raises(FerryError, match="not a duration"):
            parse_max_age(bad)
    now = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
    assert bundle_age_problem("2026-10-01T00:00:00Z", now, None) is None  # no limit, no opinion
    assert bundle_age_problem("2026-11-01T00:00:00Z", now, timedelta(days=30)) is None
    problem = bundle_age_problem("2026-10-01T00:00:00Z", now, timedelta(days=30))
    assert problem is not None and "older than --max-age (30d)" in problem
    future = bundle_age_problem("2026-12-01T00:00:00Z", now, timedelta(days=30))
    assert future is not None and "in the future" in future


def test_build_metadata_is_a_rebuild_of_the_same_precedence() -> None:
    """SemVer 2.0 §10: 1.2.0+build.2 has 1.2.0's precedence. Different content is refused with
    the rule and both ways out; --allow-downgrade (audited) replaces the installed build; the
    same version string with other content stays a conflict even then."""
    have = Installed("1.2.0", "blake3:aa")
    d = decide(have, "1.2.0+build.2", "blake3:bb")
    assert d.action == "conflict"
    assert "§10" in d.reason and "build metadata" in d.reason and "--allow-downgrade" in d.reason
    assert decide(have, "1.2.0+build.2", "blake3:bb", allow_downgrade=True).action == "downgrade"
    assert decide(have, "1.2.0+build.2", "blake3:aa").action == "same"
    forced = decide(have, "1.2.0", "blake3:bb", allow_downgrade=True)
    assert forced.action == "conflict" and "a version names one content" in forced.reason


@pytest.mark.parametrize("installed, incoming, clause, hint", [
    ("1.0.0-rc9", "1.0.0-rc10", "§11.4.2", "rc.10"),
    ("1.0.0", "1.0.0-rc.1", "§11.3", None),
    ("1.0.0-rc.10", "1.0.0-rc.9", "§11.4.1", None),
    ("1.0.0-alpha", "1.0.0-1", "§11.4.3", None),
    ("1.0.0-rc.1", "1.0.0-rc", "§11.4.4", None),
    ("2.0.0", "1.9.9", "§11.2", None),
])
def test_older_names_the_semver_clause(installed: str, incoming: str, clause: str, hint: str | None) -> None:
    d = decide(Installed(installed, "blake3:aa"), incoming, "blake3:bb")
    assert d.action == "older"
    assert clause in d.reason and "--allow-downgrade" in d.reason
    if hint:
        assert hint in d.reason


@given(versions, versions)
def test_precedence_rule_is_symmetric_and_total(a: str, b: str) -> None:
    from manifests.version import precedence_rule

    rule = precedence_rule(a, b)
    assert rule.split(":")[0] == precedence_rule(b, a).split(":")[0]
    assert (rule == "the versions are equal") == (a == b)
