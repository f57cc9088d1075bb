"""The format rules issue #13 made explicit (docs/bundle-format.md), and the defect kinds it found.

Rules, on the parsers (Hypothesis where the input is text): ``created`` is a real UTC instant,
display-forging format characters are refused like control characters, signatures are
standard padded base64 only, nesting is counted from the document at level 1, an empty file
has no chunks, frames carry no checksum. Defects, on the real CLI: nothing stored breaks a
read-only command, a refusal is audited however long its reason, one bad bundle never stops
the others, everything the limits allow installs, junk beside a good bundle is a warning.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.audit import MAX_TEXT, fit_text, make_entry
from importer.policy import bundle_age_problem
from manifests import canonical, limits
from manifests.bundle import MANIFEST_NAME
from manifests.chunks import compress_chunk, decompress_chunk
from manifests.digest import blake3_hex
from manifests.errors import FormatError, LimitError, VerificationError
from manifests.model import Manifest
from manifests.paths import path_problem
from manifests.receipt import Receipt
from manifests.signing import SignatureFile, decode_sig
from manifests.text import FORBIDDEN_RANGES, forbidden_char, parse_utc, parse_utc_or_none
from tests.support import bundles
from tests.support.common import KeyPair, assert_clean_failure, run_ferry
from tests.support.forge import small_manifest

BAD_TIMES = ["2099-13-45T99:99:99Z", "2016-12-31T23:59:60Z", "2026-02-30T25:61:61Z", "2026-02-29T12:00:00Z",
             "0000-01-01T00:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T12:00:00.5Z", "2026-01-01T12:00:00+00:00",
             "2026-01-01t12:00:00z", "2026-1-01T12:00:00Z"]


# --------------------------------------------------------------------------- created: a real instant


def _manifest_dict(**bundle: object) -> dict:
    d = small_manifest().to_dict()
    d["bundle"].update(bundle)
    return d


@pytest.mark.parametrize("created", BAD_TIMES)
def test_created_that_is_no_real_instant_is_refused_when_the_manifest_is_read(created: str) -> None:
    with pytest.raises(FormatError, match="created"):
        Manifest.from_bytes(canonical.encode(_manifest_dict(created=created)))


@pytest.mark.parametrize("created", BAD_TIMES[:3])
def test_base_and_receipt_times_are_checked_the_same_way(created: str) -> None:
    d = _manifest_dict()
    d["base"] = {"receipt": "sha256:" + "a" * 64, "site": "edge-1", "created": created}
    with pytest.raises(FormatError, match="created"):
        Manifest.from_dict(d)
    receipt = {"format": "ferry-receipt", "formatVersion": "1.0", "site": "edge-1", "created": created,
               "chunks": [], "artifacts": [], "channels": {}}
    with pytest.raises(FormatError, match="created"):
        Receipt.from_bytes(canonical.encode(receipt))


@settings(max_examples=300)
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))
def test_every_real_instant_is_accepted_and_means_itself(moment: datetime) -> None:
    moment = moment.replace(microsecond=0)
    text = moment.isoformat() + "Z"
    assert parse_utc(text) == moment.replace(tzinfo=timezone.utc)


@settings(max_examples=500)
@given(st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z"))
def test_a_time_of_the_right_shape_is_accepted_exactly_when_it_is_a_calendar_instant(text: str) -> None:
    try:
        real = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        real = None
    got = parse_utc_or_none(text)
    assert (got is None) == (real is None)
    if real is not None:
        assert got == real.replace(tzinfo=timezone.utc)


@settings(max_examples=300)
@given(st.text(max_size=30))
def test_time_parser_never_raises_anything_but_format_error(text: str) -> None:
    try:
        parse_utc(text)
    except FormatError:
        pass


@pytest.mark.parametrize("created", BAD_TIMES[:3])
def test_max_age_never_fails_on_a_time_that_is_no_instant(created: str) -> None:
    problem = bundle_age_problem(created, datetime.now(timezone.utc), timedelta(days=30))
    assert problem is not None and "not a real UTC instant" in problem


# --------------------------------------------------------------------------- forbidden characters


FORBIDDEN = st.sampled_from(FORBIDDEN_RANGES).flatmap(lambda r: st.integers(r[0], r[1])).map(chr)


@settings(max_examples=300)
@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=10), FORBIDDEN,
       st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=10))
def test_a_forbidden_character_anywhere_is_refused_in_paths_and_producer(before: str, bad: str, after: str) -> None:
    text = f"a{before}{bad}{after}".replace("/", "_").replace("\\", "_")
    assert forbidden_char(text) == f"U+{ord(bad):04X}"
    assert path_problem(text) is not None
    with pytest.raises(FormatError):
        Manifest.from_dict(_manifest_dict(producer=text))


@pytest.mark.parametrize("bidi", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
                                  "\u2069", "\u200f", "\u061c", "\ufeff", "\u200b"])
def test_bidi_and_invisible_controls_are_refused_in_a_signed_manifest(bidi: str) -> None:
    d = small_manifest({f"evil{bidi}txt.bin": b"x"}).to_dict()
    with pytest.raises(FormatError, match="format character"):
        Manifest.from_bytes(canonical.encode(d))


@settings(max_examples=300)
@given(st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Cn", "Zl", "Zp")), min_size=1, max_size=20))
def test_printable_text_is_never_refused_as_forbidden(text: str) -> None:
    # Unassigned code points (Cn) are not printable text: U+2065 lies in the forbidden range
    # U+2060-206F on purpose (an explicit list, the same whatever Unicode version a reader has).
    assert forbidden_char(text) is None


@pytest.mark.parametrize("where, limit", [("files", limits.MAX_ENTRIES), ("chunks", limits.MAX_CHUNK_REFS)])
def test_count_limits_too_large_for_the_conformance_suite_are_refused_before_reading_on(where: str,
                                                                                     limit: int) -> None:
    d = _manifest_dict()
    if where == "files":
        d["artifacts"][0]["files"] = [0] * (limit + 1)
    else:
        d["artifacts"][0]["files"][0]["chunks"] = [0] * (limit + 1)
    with pytest.raises(LimitError, match=f"more than the limit of {limit}"):
        Manifest.from_dict(d)


def test_producer_is_capped_at_255_characters() -> None:
    Manifest.from_dict(_manifest_dict(producer="p" * 255))
    with pytest.raises(FormatError, match="longer than 255"):
        Manifest.from_dict(_manifest_dict(producer="p" * 256))


# --------------------------------------------------------------------------- signatures: standard padded base64


@settings(max_examples=300)
@given(st.binary(min_size=64, max_size=64))
def test_standard_padded_base64_is_the_one_signature_text(sig: bytes) -> None:
    text = base64.b64encode(sig).decode()
    assert decode_sig(text) == sig
    for variant in {text.rstrip("="), base64.urlsafe_b64encode(sig).decode(), text[:40] + "\n" + text[40:],
                    text[:85] + "B==" if text[85] != "B" else text[:85] + "C=="} - {text}:
        with pytest.raises(FormatError):
            decode_sig(variant)


def test_signature_file_refuses_uppercase_key_ids_and_short_signatures() -> None:
    good = {"keyid": "a" * 64, "sig": base64.b64encode(b"s" * 64).decode()}
    SignatureFile.from_bytes(canonical.encode({"payloadType": "t", "signatures": [good]}))
    for bad in ({**good, "keyid": "A" * 64}, {**good, "sig": base64.b64encode(b"s" * 63).decode()}):
        with pytest.raises(FormatError):
            SignatureFile.from_bytes(canonical.encode({"payloadType": "t", "signatures": [bad]}))


# --------------------------------------------------------------------------- nesting, empty files, frames


def test_nesting_is_counted_from_the_document_at_level_one() -> None:
    def nested(levels: int) -> bytes:  # ``levels`` arrays, the innermost holding a scalar one level deeper
        return b"[" * levels + b"1" + b"]" * levels

    canonical.decode(nested(31))  # the scalar is at level 32
    with pytest.raises(FormatError, match="32 levels"):
        canonical.decode(nested(32))  # the scalar is at level 33
    canonical.decode(b"[" * 32 + b"]" * 32)  # an empty array at level 32
    with pytest.raises(FormatError, match="32 levels"):
        canonical.decode(b"[" * 33 + b"]" * 33)


def test_an_empty_file_has_no_chunks_and_a_zero_length_chunk_is_refused() -> None:
    m = small_manifest({"empty.txt": b"", "a.bin": b"a"})
    assert Manifest.from_bytes(canonical.encode(m.to_dict())) == m
    d = m.to_dict()
    empty = blake3_hex(b"")
    d["artifacts"][0]["files"][1]["chunks"] = [empty]  # empty.txt sorts after a.bin
    d["chunks"] = sorted(d["chunks"] + [{"id": empty, "size": 0, "stored": 9, "pack": 0, "offset": 90}],
                         key=lambda c: c["id"])
    with pytest.raises(FormatError, match="size = 0"):
        Manifest.from_dict(d)


def test_a_bundle_without_chunks_has_no_packs() -> None:
    m = small_manifest({"empty.txt": b""}).to_dict()
    m["chunks"], m["packs"] = [], []
    assert Manifest.from_dict(m).packs == ()


def test_a_frame_with_the_checksum_flag_is_refused() -> None:
    raw = b"hello ferry" * 50
    frame = zstandard.ZstdCompressor(write_content_size=True, write_checksum=True).compress(raw)
    with pytest.raises(VerificationError, match="checksum"):
        decompress_chunk(frame, chunk_id=blake3_hex(raw), size=len(raw))
    assert decompress_chunk(compress_chunk(raw), chunk_id=blake3_hex(raw), size=len(raw)) == raw


# --------------------------------------------------------------------------- audit: a reason of any length


@settings(max_examples=100)
@given(st.text(min_size=0, max_size=9000))
def test_any_reason_fits_an_audit_entry(text: str) -> None:
    fitted = fit_text(text)
    assert len(fitted) <= MAX_TEXT
    entry = make_entry(0, "sha256:" + "0" * 64, "2026-01-01T00:00:00Z", "refused", text, bundle=None,
                       manifest_digest=None, signers=[], artifact=None, version_before=None, version_after=None,
                       note=text)
    assert entry["reason"] == fitted
    if len(text) <= MAX_TEXT and not any("\ud800" <= c <= "\udfff" for c in text):
        assert fitted == text
    elif len(text) > MAX_TEXT:
        assert "[truncated:" in fitted and f"{len(text)} characters" in fitted


# --------------------------------------------------------------------------- the defects on the real CLI


def _import(*paths: Path, keys: KeyPair, state: Path, extra: tuple[str, ...] = ()) -> "object":
    return run_ferry("import", *paths, "--trust", keys.pub, "--state", state, *extra)


def _audit_entries(state: Path) -> list[dict]:
    r = run_ferry("audit", "show", "--state", state, "--json")
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def test_a_stored_time_that_is_no_instant_never_breaks_status(tmp_path: Path, hub_keys: KeyPair) -> None:
    """Written by an older ferry that checked shape only: status still answers."""
    bundles.write_bundle(tmp_path / "b", [hub_keys.key], [bundles.model("m", "1.0.0", {"a.bin": b"a" * 100})])
    assert _import(tmp_path / "b", keys=hub_keys, state=tmp_path / "edge").returncode == 0
    with sqlite3.connect(tmp_path / "edge" / "state.db") as db:
        db.execute("UPDATE bundles SET created='2099-13-45T99:99:99Z'")
    for args in (("--json",), ()):
        r = run_ferry("status", "--state", tmp_path / "edge", *args)
        assert r.returncode == 0, r.stderr
        assert "2099-13-45T99:99:99Z" in r.stdout


@pytest.mark.parametrize("created", ["2099-13-45T99:99:99Z", "2026-12-31T23:59:60Z"])
def test_import_refuses_a_signed_bundle_whose_time_is_no_instant(tmp_path: Path, hub_keys: KeyPair,
                                                                 created: str) -> None:
    bundles.write_bundle(tmp_path / "b", [hub_keys.key], [bundles.model("m", "1.0.0", {"a.bin": b"a" * 100})],
                         created=created)
    r = _import(tmp_path / "b", keys=hub_keys, state=tmp_path / "edge", extra=("--max-age", "30d"))
    assert_clean_failure(r, contains="created")
    assert "internal error" not in r.stderr
    r = run_ferry("status", "--state", tmp_path / "edge")
    assert r.returncode == 0, r.stderr


def test_a_refusal_with_a_long_reason_is_audited_and_other_bundles_still_import(tmp_path: Path,
                                                                                 hub_keys: KeyPair) -> None:
    """A courier flips one byte in a pack of a bundle whose file path is 4,000 bytes long: the
    refusal quoting the path is longer than an audit reason may be, yet it is recorded
    (truncated, with a digest), and the good bundle beside it is applied."""
    long_path = "/".join(["d" * 250] * 16) + "/w.bin"
    assert len(long_path.encode()) > 4000
    m = bundles.write_bundle(tmp_path / "bad", [hub_keys.key],
                             [bundles.model("long", "1.0.0", {long_path: os.urandom(5000)})], name="bad",
                             channel="other")
    bundles.tamper(tmp_path / "bad", m, m.artifacts[0].entries[0].chunks[0])
    bundles.write_bundle(tmp_path / "good", [hub_keys.key], [bundles.model("good", "2.0.0", {"g.bin": b"g" * 300})],
                         name="good")
    state = tmp_path / "edge"
    r = _import(tmp_path / "bad", tmp_path / "good", keys=hub_keys, state=state)
    assert r.returncode == 1, r.stderr
    assert "audit:" not in r.stderr
    assert (state / "models" / "good" / "current" / "g.bin").read_bytes() == b"g" * 300
    refused = [e for e in _audit_entries(state) if e["decision"] == "refused"]
    assert refused and all(len(e["reason"]) <= MAX_TEXT for e in refused)
    assert any("[truncated:" in e["reason"] and "sha256:" in e["reason"] for e in refused)
    assert run_ferry("audit", "verify", "--state", state).returncode == 0


def test_a_version_of_255_characters_installs(tmp_path: Path, hub_keys: KeyPair) -> None:
    version = "1.0.0-" + "v" * 249
    assert len(version) == 255
    bundles.write_bundle(tmp_path / "b", [hub_keys.key], [bundles.model("m", version, {"a.bin": b"a" * 3000})])
    state = tmp_path / "edge"
    r = _import(tmp_path / "b", keys=hub_keys, state=state)
    assert r.returncode == 0, r.stderr
    assert (state / "models" / "m" / version / "a.bin").read_bytes() == b"a" * 3000
    assert os.readlink(state / "models" / "m" / "current") == version


def test_junk_volume_beside_a_good_bundle_is_a_warning_and_the_bundle_imports(tmp_path: Path,
                                                                               hub_keys: KeyPair) -> None:
    files = {"a.bin": os.urandom(3000), "b.bin": os.urandom(3000)}
    bundles.write_bundle(tmp_path / "usb", [hub_keys.key], [bundles.model("m", "1.0.0", files)], volumes=2,
                         chunk_size=1024)
    junk = tmp_path / "usb" / "vol-009"
    junk.mkdir()
    with open(junk / MANIFEST_NAME, "wb") as f:  # sparse: 200 MiB on paper, nothing on disk
        f.truncate(200 * 1024 * 1024)
    state = tmp_path / "edge"
    r = _import(tmp_path / "usb", keys=hub_keys, state=state)
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "vol-009" in r.stderr
    assert {p.name: p.read_bytes() for p in (state / "models" / "m" / "current").iterdir()} == files
    r = _import(tmp_path / "usb", keys=hub_keys, state=state, extra=("--json",))
    assert any("vol-009" in w for w in json.loads(r.stdout)["warnings"])
    r = run_ferry("verify", tmp_path / "usb", "--trust", hub_keys.pub, "--json")
    assert r.returncode == 1  # the auditor is told about the junk ...
    report = json.loads(r.stdout)
    assert any(c["name"] == "medium" and "vol-009" in c["reason"] for c in report["checks"])
    assert [b["verdict"] for b in report["bundles"]] == ["pass"]  # ... and the bundle beside it still verifies


def test_verify_of_one_volume_checks_it_and_says_incomplete(tmp_path: Path, hub_keys: KeyPair) -> None:
    """Each volume verifies on its own: its signatures, manifest and the chunks it carries.
    The others not given make the verdict incomplete (exit 3), not a failure (exit 1)."""
    m = bundles.write_bundle(tmp_path / "usb", [hub_keys.key],
                             [bundles.model("m", "1.0.0", {"a.bin": os.urandom(5000)})], volumes=3, chunk_size=1024)
    r = run_ferry("verify", tmp_path / "usb" / "vol-001", "--trust", hub_keys.pub)
    assert_clean_failure(r, code=3, contains="volume")
    assert run_ferry("verify", tmp_path / "usb", "--trust", hub_keys.pub).returncode == 0
    on_one = next(c for c in m.chunks if c.pack is not None and m.packs[c.pack].volume == 1)
    bundles.tamper(tmp_path / "usb", m, on_one.id)
    r = run_ferry("verify", tmp_path / "usb" / "vol-001", "--trust", hub_keys.pub)
    assert_clean_failure(r, code=1)


def test_a_pack_missing_from_a_present_volume_is_damage(tmp_path: Path, hub_keys: KeyPair) -> None:
    m = bundles.write_bundle(tmp_path / "usb", [hub_keys.key],
                             [bundles.model("m", "1.0.0", {"a.bin": os.urandom(5000)})], volumes=2, chunk_size=1024)
    pack = next(p for p in m.packs if p.volume == 2)
    (tmp_path / "usb" / "vol-002" / "packs" / pack.name).unlink()
    r = run_ferry("verify", tmp_path / "usb", "--trust", hub_keys.pub)
    assert_clean_failure(r, code=1)
    r = run_ferry("verify", tmp_path / "usb", "--trust", hub_keys.pub, "--json")
    assert pack.name in r.stdout and "damaged" in r.stdout


@given(st.text(max_size=60))
def test_printable_text_never_holds_a_forbidden_character_and_keeps_the_rest(text: str) -> None:
    from manifests.text import FORBIDDEN_RE, printable

    shown = printable(text)
    assert forbidden_char(shown) is None
    if forbidden_char(text) is None:
        assert shown == text
    else:  # each one escaped where it stood: the rest unchanged, in order
        assert FORBIDDEN_RE.sub("", text) == "".join(
            part for part in __import__("re").split(r"\\u\{[0-9A-F]{4,5}\}", shown))
