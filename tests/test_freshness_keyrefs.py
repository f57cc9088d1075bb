"""Pure parsers and rules of issue #15, as properties: --key sources and signed times."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from manifests.errors import UsageError
from manifests.freshness import SKEW, bundle_time_problem
from manifests.keys import parse_key_ref
from manifests.root import format_time

paths = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40)


@given(paths, st.sampled_from(["env", "file"]), st.text(st.characters(codec="utf-8", exclude_characters="\x00:"),
                                                         min_size=1, max_size=20))
def test_key_ref_takes_the_last_source_suffix(path: str, kind: str, arg: str) -> None:
    # a path may itself hold ":env=" (a colon in a file name): the last suffix is the source
    ref = parse_key_ref(f"{path}:{kind}={arg}")
    assert (ref.path, ref.kind, ref.arg) == (Path(path), kind, arg)


@given(paths.filter(lambda p: ":env=" not in p and ":fd=" not in p and ":file=" not in p))
def test_a_plain_path_is_a_path(path: str) -> None:
    ref = parse_key_ref(path)
    assert ref.kind is None and ref.path == Path(path)


def test_fd_needs_a_number() -> None:
    assert parse_key_ref("k.key:fd=3").arg == "3"
    with pytest.raises(UsageError):
        parse_key_ref("k.key:fd=three")


BASE = datetime(2026, 6, 1, tzinfo=timezone.utc)
offsets = st.integers(-10**7, 10**7).map(lambda s: timedelta(seconds=s))


@given(offsets, st.integers(1, 10**7).map(lambda s: timedelta(seconds=s)), offsets)
def test_bundle_time_rule(created_off: timedelta, valid: timedelta, now_off: timedelta) -> None:
    created = (BASE + created_off).replace(microsecond=0)
    expires = created + valid
    now = BASE + now_off
    problem = bundle_time_problem(format_time(created), format_time(expires), now)
    if created > now + SKEW:
        assert problem is not None and "hub's clock looks ahead" in problem
    elif now >= expires:
        assert problem is not None and "expired" in problem
    else:
        assert problem is None
    assert bundle_time_problem(format_time(created), None, now) is None  # no expiry: never refused here


@given(offsets)
def test_a_clock_behind_what_the_site_accepted_is_named(back: timedelta) -> None:
    now = BASE
    seen = BASE + abs(back) + SKEW + timedelta(seconds=1)
    problem = bundle_time_problem(format_time(BASE), format_time(BASE + timedelta(days=1)), now, seen)
    assert problem is not None and "this machine's clock looks wrong" in problem
