"""The bundle contract (manifests/): canonical encoding, the manifest model and its limits,
paths, signatures and trust. Property tests where the input space is large."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from manifests import canonical, limits
from manifests.bundle import open_manifest, read_bounded
from manifests.chunks import compress_chunk, decompress_chunk
from manifests.digest import blake3_hex
from manifests.errors import FormatError, LimitError, VerificationError
from manifests.keys import generate, load_private
from manifests.model import Chunk, Manifest
from manifests.paths import check_tree, path_problem, safe_join
from manifests.signing import SignatureFile, sign, verify
from manifests.trust import Trust, TrustedKey, load_trust
from tests.support.forge import small_manifest

# ----------------------------------------------------------------------------- canonical JSON

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


@given(json_values)
def test_canonical_round_trip(value: object) -> None:
    data = canonical.encode(value)
    assert canonical.decode(data) == value
    assert canonical.encode(canonical.decode(data)) == data


@given(st.dictionaries(st.text(max_size=8), st.integers(0, 100), min_size=2, max_size=6))
def test_canonical_refuses_reordered_or_spaced_bytes(d: dict[str, int]) -> None:
    good = canonical.encode(d)
    spaced = json.dumps(d, sort_keys=True, ensure_ascii=False).encode()
    if spaced != good:
        with pytest.raises(FormatError, match="canonical"):
            canonical.decode(spaced)
    reordered = json.dumps(dict(reversed(list(d.items()))), separators=(",", ":"), ensure_ascii=False).encode()
    if reordered != good:
        with pytest.raises(FormatError):
            canonical.decode(reordered)


@pytest.mark.parametrize("doc", [b'{"a":1.5}', b'{"a":NaN}', b'{"a":1,"a":2}', b"\xff", b'{"a":', b'"\\ud800"'])
def test_canonical_refuses_floats_duplicates_and_bad_bytes(doc: bytes) -> None:
    with pytest.raises(FormatError):
        canonical.decode(doc)


def test_canonical_refuses_deep_nesting() -> None:
    with pytest.raises(FormatError):
        canonical.decode(b"[" * 100_000 + b"]" * 100_000)


@given(st.binary(max_size=200))
def test_decoder_never_crashes(data: bytes) -> None:
    try:
        canonical.decode(data)
    except FormatError:
        pass


# ----------------------------------------------------------------------------- manifest model


def test_manifest_round_trip_is_byte_exact() -> None:
    m = small_manifest()
    data = m.to_bytes()
    again = Manifest.from_bytes(data)
    assert again == m
    assert again.to_bytes() == data
    assert json.loads(data)["formatVersion"] == "1.1"


@given(st.dictionaries(
    st.from_regex(r"[a-z]{1,8}(/[a-z0-9_.-]{1,8}){0,2}", fullmatch=True).filter(lambda p: ".." not in p.split("/") and "." not in p.split("/")),
    st.binary(max_size=64), min_size=1, max_size=6))
def test_manifest_round_trip_property(files: dict[str, bytes]) -> None:
    try:
        check_tree(files)
    except FormatError:
        assume(False)
    m = small_manifest(files)
    assert Manifest.from_bytes(m.to_bytes()) == m


def test_unknown_major_version_is_refused_with_a_clear_message() -> None:
    d = small_manifest().to_dict()
    d["formatVersion"] = "2.0"
    with pytest.raises(FormatError, match="format version 2.0 is not supported"):
        Manifest.from_bytes(canonical.encode(d))


def test_newer_minor_version_with_unknown_fields_is_read() -> None:
    d = small_manifest().to_dict()
    d["formatVersion"] = "1.7"
    d["somethingNew"] = {"x": 1}
    assert Manifest.from_bytes(canonical.encode(d)).bundle.name == "edge-ai"


def test_oversize_manifest_is_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "manifest.json"
    with open(big, "wb") as f:
        f.truncate(limits.MAX_MANIFEST_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(LimitError, match="over the limit"):
        read_bounded(big, limits.MAX_MANIFEST_BYTES, "manifest")
    with pytest.raises(LimitError):
        Manifest.from_bytes(b" " * (limits.MAX_MANIFEST_BYTES + 1))


def _mutate(m: Manifest, **changes: object) -> bytes:
    """Encode a manifest with raw changes to its JSON, bypassing the writer's checks."""
    d = m.to_dict()
    for path, value in changes.items():
        target = d
        keys = path.split("__")
        for k in keys[:-1]:
            target = target[int(k)] if isinstance(target, list) else target[k]
        last = keys[-1]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return canonical.encode(d)


@pytest.mark.parametrize("changes, message", [
    ({"artifacts__0__files__0__path": "../etc/passwd"}, "'..'"),
    ({"artifacts__0__files__0__path": "/etc/passwd"}, "absolute"),
    ({"artifacts__0__files__0__path": "a\x00b"}, "control character"),
    ({"artifacts__0__files__0__path": "a\nb"}, "control character"),
    ({"artifacts__0__files__0__path": "a\x9b2Jb"}, "control character"),  # C1 CSI: a terminal escape
    ({"artifacts__0__files__1__path": "config.json"}, "duplicate path"),
    ({"artifacts__0__files__0__size": 5}, "add up"),
    ({"artifacts__0__version": "latest"}, "semantic version"),
    ({"artifacts__0__kind": "symlink"}, "kind must be one of"),
    ({"chunks__0__size": limits.MAX_CHUNK_SIZE + 1}, "outside"),
    ({"chunks__0__pack": 7}, "names pack 7"),
    ({"chunks__0__offset": 10**9}, "past the end"),
    ({"packs__0__volume": 3}, "volume 3"),
    ({"packs__0__name": "../x"}, "not allowed"),
    ({"bundle__sequence": 0}, "outside"),
    ({"bundle__created": "yesterday"}, "not allowed"),
])
def test_hostile_manifest_fields_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(FormatError, match=message):
        Manifest.from_bytes(_mutate(small_manifest(), **changes))


def test_chunk_not_carried_needs_a_delta_base() -> None:
    m = small_manifest()
    bare = tuple(Chunk(id=c.id, size=c.size) for c in m.chunks)
    with pytest.raises(FormatError, match="not a delta"):
        dataclasses.replace(m, chunks=bare).to_bytes()


def test_orphan_and_unlisted_chunks_are_refused() -> None:
    m = small_manifest()
    extra = Chunk(id="f" * 64, size=1, stored=1, pack=0, offset=0)
    with pytest.raises(FormatError):
        dataclasses.replace(m, chunks=m.chunks + (extra,)).to_bytes()
    with pytest.raises(FormatError, match="does not list"):
        dataclasses.replace(m, chunks=m.chunks[:1]).to_bytes()


def test_too_many_chunks_is_refused_by_count_before_building_objects() -> None:
    d = small_manifest().to_dict()
    d["chunks"] = [0] * (limits.MAX_CHUNKS + 1)
    with pytest.raises(LimitError, match="limit"):
        Manifest.from_dict(d)


# ----------------------------------------------------------------------------- paths


escaping = st.one_of(
    st.text(min_size=1, max_size=20).map(lambda s: "/" + s),
    st.lists(st.sampled_from(["a", "b", "..", "."]), min_size=1, max_size=6).map("/".join).filter(
        lambda p: ".." in p.split("/") or "." in p.split("/")),
    st.text(min_size=0, max_size=10).map(lambda s: s + "\x00"),
    st.text(min_size=1, max_size=10).map(lambda s: s + "\\..\\x"),
)


@given(escaping)
def test_escaping_or_absolute_paths_are_refused(path: str) -> None:
    assert path_problem(path) is not None


@given(st.text(min_size=1, max_size=40))
def test_accepted_paths_stay_inside_their_root(path: str) -> None:
    if path_problem(path) is None:
        joined = safe_join("/srv/edge", path)
        assert joined.startswith("/srv/edge/")


def test_case_fold_and_file_folder_collisions() -> None:
    with pytest.raises(FormatError, match="duplicate"):
        check_tree(["Model.bin", "model.bin"])
    with pytest.raises(FormatError, match="also a folder"):
        check_tree(["a", "a/b"])
    check_tree(["a/b", "a/c", "ab"])


# ----------------------------------------------------------------------------- chunks


def test_chunk_frame_round_trip_and_bomb() -> None:
    raw = b"x" * 100_000
    stored = compress_chunk(raw)
    assert decompress_chunk(stored, chunk_id=blake3_hex(raw), size=len(raw)) == raw
    # a frame that inflates beyond what the manifest declares is refused from its header
    with pytest.raises(VerificationError, match="declares"):
        decompress_chunk(stored, chunk_id=blake3_hex(raw), size=10)
    with pytest.raises(VerificationError, match="does not match"):
        decompress_chunk(compress_chunk(b"y" * 100_000), chunk_id=blake3_hex(raw), size=len(raw))
    with pytest.raises(VerificationError):
        decompress_chunk(stored[: len(stored) // 2], chunk_id=blake3_hex(raw), size=len(raw))


# ----------------------------------------------------------------------------- signatures


@pytest.fixture(scope="module")
def three_keys(tmp_path_factory: pytest.TempPathFactory) -> list:
    out = tmp_path_factory.mktemp("k")
    return [load_private(generate(f"k{i}", out)[0]) for i in range(3)]


def _trust(keys: list, threshold: int, channels: frozenset[str] | None = None) -> Trust:
    tks = [TrustedKey(name=f"k{i}", public=k.public_key(), channels=channels) for i, k in enumerate(keys)]
    return Trust(keys={t.keyid: t for t in tks}, threshold=threshold)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_single_byte_change_breaks_the_signature(three_keys: list, data: st.DataObject) -> None:
    body = small_manifest().to_bytes()
    sig = sign(body, three_keys[:1])
    trust = _trust(three_keys[:1], 1)
    assert verify(body, sig, trust, channel="stable").ok
    i = data.draw(st.integers(0, len(body) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = body[:i] + bytes([body[i] ^ flip]) + body[i + 1:]
    assert not verify(tampered, sig, trust, channel="stable").ok


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_signature_byte_change_fails(three_keys: list, data: st.DataObject) -> None:
    body = small_manifest().to_bytes()
    sig = sign(body, three_keys[:1])
    raw = bytearray(sig.signatures[0].sig)
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    bad = dataclasses.replace(sig, signatures=(dataclasses.replace(sig.signatures[0], sig=bytes(raw)),))
    assert not verify(body, bad, _trust(three_keys[:1], 1), channel="stable").ok


def test_threshold_counts_distinct_trusted_keys(three_keys: list) -> None:
    body = small_manifest().to_bytes()
    trust = _trust(three_keys, 2)
    assert verify(body, sign(body, three_keys[:2]), trust, channel="stable").ok
    one = sign(body, three_keys[:1])
    assert not verify(body, one, trust, channel="stable").ok
    doubled = dataclasses.replace(one, signatures=one.signatures * 2)
    verdict = verify(body, doubled, trust, channel="stable")
    assert not verdict.ok and "counted once" in " ".join(s.reason for s in verdict.signers)


def test_untrusted_key_and_channel_restriction(three_keys: list) -> None:
    body = small_manifest().to_bytes()
    assert not verify(body, sign(body, three_keys[2:]), _trust(three_keys[:2], 1), channel="stable").ok
    limited = _trust(three_keys[:1], 1, channels=frozenset({"beta"}))
    verdict = verify(body, sign(body, three_keys[:1]), limited, channel="stable")
    assert not verdict.ok and "may not sign channel" in verdict.summary


def test_signature_of_another_payload_type_is_not_accepted(three_keys: list) -> None:
    from manifests.signing import RECEIPT_PAYLOAD_TYPE

    body = small_manifest().to_bytes()
    as_receipt = sign(body, three_keys[:1], payload_type=RECEIPT_PAYLOAD_TYPE)
    relabelled = dataclasses.replace(as_receipt, payload_type="application/vnd.ferry.manifest.v1+json")
    assert not verify(body, relabelled, _trust(three_keys[:1], 1), channel="stable").ok


def test_open_manifest_verifies_before_parsing(three_keys: list) -> None:
    body = small_manifest().to_bytes()
    trust = _trust(three_keys[:1], 1)
    signed = open_manifest(body, sign(body, three_keys[:1]).to_bytes(), trust)
    assert signed.digest.startswith("sha256:") and signed.manifest.bundle.name == "edge-ai"
    garbage = b"not json at all"
    with pytest.raises(VerificationError):  # refused by signature, the parser never sees it
        open_manifest(garbage, sign(body, three_keys[:1]).to_bytes(), trust)


@given(st.binary(max_size=300))
def test_signature_file_parser_never_crashes(data: bytes) -> None:
    try:
        SignatureFile.from_bytes(data)
    except FormatError:
        pass


# ----------------------------------------------------------------------------- trust files


def test_trust_policy_and_bare_keys(tmp_path: Path) -> None:
    a = generate("a", tmp_path)
    b = generate("b", tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: ferry/v1\nkind: TrustPolicy\nthreshold: 2\nkeys:\n"
        "  - name: a\n    file: a.pub\n    channels: [stable]\n"
        "  - name: b\n    publicKey: |\n" + "".join(f"      {line}\n" for line in b[1].read_text().splitlines())
    )
    trust = load_trust([policy])
    assert trust.threshold == 2 and {k.name for k in trust.keys.values()} == {"a", "b"}
    assert trust.keys[a[2]].channels == frozenset({"stable"})
    bare = load_trust([a[1]])
    assert bare.threshold == 1 and list(bare.keys) == [a[2]]
    with pytest.raises(FormatError, match="already trusted"):
        load_trust([policy, a[1]])


@pytest.mark.parametrize("text, message", [
    ("kind: TrustPolicy\napiVersion: ferry/v1\nthreshold: 3\nkeys: [{name: a, file: a.pub}]", "threshold"),
    ("kind: Other", "neither"),
    ("{{{", "not valid"),
    ("apiVersion: ferry/v1\nkind: TrustPolicy\nkeys: [{name: a}]", "publicKey"),
])
def test_bad_trust_policies(tmp_path: Path, text: str, message: str) -> None:
    generate("a", tmp_path)
    p = tmp_path / "t.yaml"
    p.write_text(text)
    with pytest.raises(FormatError, match=message):
        load_trust([p])


@given(st.binary(max_size=300))
def test_trust_policy_parser_never_crashes(data: bytes) -> None:
    from manifests.errors import FerryError
    from manifests.trust import parse_policy

    try:
        parse_policy(data, "fuzz", Path("/nonexistent"))
    except FerryError:
        pass


# ----------------------------------------------------------------------------- JSON Schema


def test_published_schema_accepts_manifests_and_rejects_bad_shapes() -> None:
    import jsonschema

    schema_path = Path(__file__).resolve().parents[1] / "manifests" / "schema" / "bundle-manifest.schema.json"
    schema = json.loads(schema_path.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = json.loads(small_manifest().to_bytes())
    validator.validate(good)
    for bad_path in ("../x", "/abs", "a//b", "a/./b", "a\nb"):
        bad = json.loads(small_manifest().to_bytes())
        bad["artifacts"][0]["files"][0]["path"] = bad_path
        assert not validator.is_valid(bad), bad_path
    bad = json.loads(small_manifest().to_bytes())
    del bad["chunks"][0]["pack"]
    assert not validator.is_valid(bad)
