"""Names, tags and digests end where the text ends: a trailing newline is not a valid ending.

Python's ``$`` also matches just before a final ``\\n``, so ``re.match(r"^name$", "name\\n")``
succeeds; every anchored pattern of the format therefore ends in ``\\Z`` (re module docs,
"Regular Expression Syntax"). A name, tag or digest with a newline would otherwise pass a check
and then end up in a path, a URL or a terminal line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from manifests.errors import FormatError
from manifests.model import NAME_RE, TAG_RE
from manifests.oci import parse_reference
from manifests.receipt import CONTENT_RE

NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True)


@given(name=NAMES, tail=st.sampled_from(["\n", "\r\n", "\n\n"]))
def test_a_name_or_tag_with_a_trailing_newline_is_no_name(name: str, tail: str) -> None:
    assert NAME_RE.match(name) and TAG_RE.match(name)
    assert not NAME_RE.match(name + tail)
    assert not TAG_RE.match(name + tail)


@given(name=NAMES)
def test_a_reference_ending_in_a_newline_is_refused(name: str) -> None:
    parse_reference(f"registry.example:5000/models/llm:{name}")
    with pytest.raises(FormatError):
        parse_reference(f"registry.example:5000/models/llm:{name}\n")


def test_a_content_digest_with_a_trailing_newline_is_no_digest() -> None:
    digest = "blake3:" + "ab" * 32
    assert CONTENT_RE.match(digest)
    assert not CONTENT_RE.match(digest + "\n")


HOSTS = st.sampled_from(["registry.example", "localhost", "ferry.site", "10.0.0.7", "[::1]"])
PORTS = st.sampled_from(["", ":5000", ":443"])


@given(host=HOSTS, port=PORTS, tail=st.sampled_from(["\n", "\r\n"]))
def test_a_registry_host_with_a_trailing_newline_is_refused(host: str, port: str, tail: str) -> None:
    from manifests.errors import UsageError
    from manifests.link import parse_oci_ref
    from manifests.oci import check_registry_host

    assert check_registry_host(host + port) == host + port
    with pytest.raises(UsageError):  # --registry, --insecure-registry
        check_registry_host(host + port + tail)
    parse_oci_ref(f"oci://{host}{port}/team/bundles:v1")
    with pytest.raises(UsageError, match="HOST"):  # push, import and watch oci://HOST/...
        parse_oci_ref(f"oci://{host}{port}{tail}/team/bundles:v1")


@given(minor=st.integers(0, 9999), tail=st.sampled_from(["\n", "\r\n"]))
def test_a_format_version_with_a_trailing_newline_is_no_version(minor: int, tail: str) -> None:
    from manifests.model import FORMAT_NAME, SUPPORTED_MAJOR, check_format

    check_format(FORMAT_NAME, f"{SUPPORTED_MAJOR}.{minor}", FORMAT_NAME, "manifest")
    with pytest.raises(FormatError, match="is not MAJOR.MINOR"):
        check_format(FORMAT_NAME, f"{SUPPORTED_MAJOR}.{minor}{tail}", FORMAT_NAME, "manifest")


def test_a_credential_helper_name_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    from manifests.errors import RegistryError
    from transport.registry import load_credentials

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credHelpers": {"registry.example": "pass\n"}}))
    with pytest.raises(RegistryError, match="invalid credential helper"):
        load_credentials("registry.example", config)
