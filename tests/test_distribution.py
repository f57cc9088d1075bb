"""The pure rules of ``ferry serve`` (manifests.distribution): ranges, routes, ref names."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from manifests.distribution import (RangeNotSatisfiable, RouteError, parse_range, parse_route,
                                    split_ref_name, tags_page)

HEX = re.compile(r"^sha256:[0-9a-f]{64}$")


@given(size=st.integers(0, 1 << 40), first=st.integers(0, 1 << 42), last=st.integers(0, 1 << 42))
def test_range_first_last_matches_rfc9110(size: int, first: int, last: int) -> None:
    header = f"bytes={first}-{last}"
    if size == 0 or first >= size or last < first:
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, size)
    else:
        assert parse_range(header, size) == (first, min(last, size - 1))


@given(size=st.integers(1, 1 << 40), suffix=st.integers(1, 1 << 42))
def test_suffix_range_is_the_last_bytes(size: int, suffix: int) -> None:
    assert parse_range(f"bytes=-{suffix}", size) == (max(0, size - suffix), size - 1)


@given(header=st.text(max_size=200), size=st.integers(0, 1 << 40))
def test_any_header_gives_a_valid_range_none_or_416(header: str, size: int) -> None:
    try:
        got = parse_range(header, size)
    except RangeNotSatisfiable:
        return
    if got is not None:
        first, last = got
        assert 0 <= first <= last < size


@given(path=st.text(alphabet="/v2abcmnifestblobsha256:.%_-0123456789ef", max_size=120))
def test_routes_only_ever_name_checked_digests_as_files(path: str) -> None:
    try:
        route = parse_route(path)
    except RouteError as exc:
        assert exc.status in (400, 404)
        return
    assert ".." not in (route.name or "")
    if route.kind in ("blob", "referrers"):
        assert route.reference is not None and HEX.match(route.reference)
    if route.kind == "manifest":
        assert route.reference is not None and "/" not in route.reference and ".." not in route.reference[:2]


def test_routes() -> None:
    d = "sha256:" + "ab" * 32
    assert parse_route("/v2/").kind == "base"
    assert parse_route(f"/v2/a/b/c/blobs/{d}").name == "a/b/c"
    assert parse_route("/v2/models/m/manifests/1.0").reference == "1.0"
    assert parse_route("/v2/models/m/tags/list").kind == "tags"
    for bad in ("/v2/../x/blobs/" + d, "/v2/a/blobs/sha256:" + "AB" * 32, "/v2/a/manifests/..", "/x"):
        with pytest.raises(RouteError):
            parse_route(bad)


def test_ref_names_and_pages() -> None:
    assert split_ref_name("models/sentiment:1.2.0") == ("models/sentiment", "1.2.0")
    assert split_ref_name("latest") is None and split_ref_name("Up/per:1") is None
    doc, more = tags_page("r", ["b", "a", "c"], "2", None)
    assert (doc["tags"], more) == (["a", "b"], "b")
    assert tags_page("r", ["b", "a", "c"], None, "b") == ({"name": "r", "tags": ["c"]}, None)


@given(n=st.one_of(st.text(max_size=12), st.sampled_from(["²", "⁴", "１", "١", "3", "0", "12"])),
       tags=st.lists(st.text(alphabet="abc019.", min_size=1, max_size=5), max_size=20, unique=True))
def test_any_page_size_is_a_page_or_a_usage_error(n: str, tags: list[str]) -> None:
    # found hunting: n=² (isdigit() yet not int()) crashed the server with a traceback and a 500
    from manifests.errors import UsageError

    try:
        doc, _ = tags_page("r", tags, n, None)
    except UsageError:
        assert not (n.isascii() and n.isdigit() and len(n) <= 9)
        return
    assert n.isascii() and n.isdigit() and doc["tags"] == sorted(tags)[:int(n)]
