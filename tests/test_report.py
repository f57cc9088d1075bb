"""The verification report: schema, HTML rendered in headless Chromium, escaping."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importer.report import (ArtifactReport, BundleReport, Check, ChunkCounts, EntryReport, Report,
                             SignerReport, render_html)
from tests.support.common import REPO, KeyPair, run_ferry
from tests.test_verify import build, tamper

SCHEMA = json.loads((REPO / "manifests" / "schema" / "verify-report.schema.json").read_bytes())
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def chromium(url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Debian's headless Chromium, offline and with a throwaway profile."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp / 'chromium-profile'}", "--window-size=1200,1600", *args, url],
        capture_output=True, timeout=120, cwd=tmp)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def hostile_report() -> Report:
    evil = '<script>alert("x")</script><img src=http://example.com/x.png>&amp;'
    entry = EntryReport(size=3, blake3="a" * 64, status="bad", reason=evil, path=f"dir/{evil}.json")
    art = ArtifactReport(kind="model", name="m", version="1.0.0", size=3, content_digest="blake3:" + "b" * 64,
                         status="bad", chunks=ChunkCounts(1, 0, 1), entries=(entry,),
                         bad_chunks=(("c" * 64, evil),))
    bundle = BundleReport(manifest_digest="sha256:" + "d" * 64, locations=(evil,),
                          checks=(Check("chunks", False, evil),),
                          signers=(SignerReport("e" * 64, evil, True, True, "ok"),), threshold=1,
                          info={"name": "b", "id": "i", "channel": "stable", "sequence": 1,
                                "created": "2026-11-23T12:00:00Z", "producer": evil},
                          format_version="1.0", volumes_expected=1, artifacts=(art,))
    return Report(ferry_version="0.1.0", verified_at="2026-11-23T12:00:00Z", inputs=(evil,),
                  trust={"threshold": 1, "keys": [{"keyid": "e" * 64, "name": evil, "channels": None}]},
                  bundles=(bundle,))


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update(name for name, _ in attrs)


def structure(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    return parser


def test_html_escapes_every_text_and_loads_nothing() -> None:
    page = render_html(hostile_report())
    found = structure(page)
    assert found.tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "div", "dl",
                          "dt", "dd", "table", "thead", "tbody", "tr", "th", "td", "span"}, found.tags
    assert found.attrs <= {"lang", "charset", "http-equiv", "content", "class"}, found.attrs
    assert "&lt;script&gt;" in page
    assert "&amp;amp;" in page  # even entities in the data are shown as typed
    assert "default-src 'none'" in page  # and the page forbids fetching anything anyway


def test_reports_validate_against_the_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    doc = hostile_report().to_dict()
    jsonschema.validate(doc, SCHEMA)
    assert doc["verdict"] == "fail" and doc["failures"][0]["check"] == "chunks"
    empty = Report(ferry_version="0.1.0", verified_at="2026-11-23T12:00:00Z", inputs=(), trust={"threshold": 1, "keys": []})
    jsonschema.validate(empty.to_dict(), SCHEMA)
    assert empty.verdict == "fail" and "no bundle found" in empty.summary
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dict(doc, verdict="maybe"), SCHEMA)


def test_html_report_in_headless_chromium(tmp_path: Path, hub_keys: KeyPair) -> None:
    built = build(tmp_path / "bundle", hub_keys.key)
    bad_chunk = built.manifest.artifact("model", "resnet").entries[1].chunks[2]
    tamper(built.path, built.manifest, bad_chunk)
    page = tmp_path / "report.html"
    result = run_ferry("verify", built.path, "--trust", hub_keys.pub, "--html", page, "--report", tmp_path / "r.json")
    assert result.returncode == 1
    html = page.read_text(encoding="utf-8")
    assert "script" not in structure(html).tags and not {"src", "href"} & structure(html).attrs

    dom = chromium(page.as_uri(), tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = re.sub(r"<[^>]+>", " ", dom.stdout.decode("utf-8"))
    text = re.sub(r"\s+", " ", text)
    for expected in ("ferry verification report", "FAIL", "edge-ai", "resnet", "library/app",
                     bad_chunk, "tampered", built.manifest.bundle.id, hub_keys.keyid):
        assert expected in text, expected

    shot = tmp_path / "report.png"
    result = chromium(page.as_uri(), tmp_path, f"--screenshot={shot}")
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert png_size(data) == (1200, 1600)
    assert len(data) > 20_000  # a rendered page of tables, not a blank one


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200), st.text(max_size=200))
def test_html_never_lets_data_become_markup(reason: str, path: str) -> None:
    entry = EntryReport(size=1, blake3="a" * 64, status="bad", reason=reason, path=path)
    art = ArtifactReport(kind="model", name=path, version=reason, size=1, content_digest="blake3:" + "b" * 64,
                         status="bad", chunks=ChunkCounts(1, 0, 1), entries=(entry,), bad_chunks=(("c" * 64, reason),))
    bundle = BundleReport(manifest_digest="sha256:" + "d" * 64, locations=(path,),
                          checks=(Check("content", False, reason),), artifacts=(art,))
    report = Report(ferry_version="0.1.0", verified_at="2026-11-23T12:00:00Z", inputs=(path,),
                    trust={"threshold": 1, "keys": [{"keyid": "e" * 64, "name": reason, "channels": None}]},
                    bundles=(bundle,))
    page = render_html(report)
    found = structure(page)
    assert "script" not in found.tags and found.attrs <= {"lang", "charset", "http-equiv", "content", "class"}
    assert page.count("<table>") == 6  # the data never opens or closes a table of its own
