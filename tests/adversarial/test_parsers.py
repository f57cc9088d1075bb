"""Fuzzing every parser that reads medium or network data: each may only ever raise a
manifests.errors.FerryError subclass (one clear line at the CLI), never anything else.

Random bytes alone rarely get past the JSON layer, so most properties here are
*structure-aware*: they start from a valid document and replace, delete or duplicate any
field with hostile JSON values, or splice bytes into valid encodings.
"""

from __future__ import annotations

import atexit
import base64
import copy
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manifests import canonical
from manifests.errors import FerryError
from manifests.keys import public_pem
from manifests.model import Manifest
from manifests.receipt import Receipt
from manifests.signing import SignatureFile
from manifests.trust import parse_policy
from tests.adversarial import forge

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

HOSTILE_STRINGS = [
    "", "..", ".", "/", "/etc/passwd", "../../x", "a/../b", "a//b", "a\x00b", "a\nb", "C:x", "a\\b",
    "CON", "ｆｕｌｌ", "e\u0301", "x" * 300, "0" * 64, "sha256:" + "0" * 64, "1.0.0", "99.0.0", "2.0",
    "1.0", "ferry-bundle", "ferry-receipt", "model", "image", "manifests", "-----BEGIN PUBLIC KEY-----",
]
HOSTILE_INTS = [0, -1, 1, 255, 256, 65535, 1 << 24, 1 << 32, (1 << 53) - 1, -((1 << 53) - 1)]

json_leaf = (st.none() | st.booleans() | st.sampled_from(HOSTILE_INTS) | st.integers(-(2**53) + 1, 2**53 - 1)
             | st.sampled_from(HOSTILE_STRINGS) | st.text(max_size=8))
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["id", "path", "size", "name", "x"]) | st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """``base`` with one to three fields replaced by hostile values, deleted or duplicated."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        op = draw(st.sampled_from(["set", "set", "set", "delete", "duplicate"]))
        if op == "delete":
            del parent[path[-1]]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(path[-1], copy.deepcopy(parent[path[-1]]))
        else:
            parent[path[-1]] = draw(json_value)
    return doc


@st.composite
def spliced(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a random slice replaced by random bytes (covers truncation and growth)."""
    start = draw(st.integers(0, len(data)))
    end = draw(st.integers(start, min(len(data), start + 16)))
    return data[:start] + draw(st.binary(max_size=16)) + data[end:]


def only_ferry_errors(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except FerryError as exc:
        assert str(exc) and "\n" not in str(exc).strip(), f"error is not one line: {exc!r}"


def encode_or_none(doc: Any) -> bytes | None:
    try:
        return canonical.encode(doc)
    except FerryError:
        return None


# --------------------------------------------------------------------------- the manifest

BASE = forge.draft({"config.json": b"{}", "weights.bin": bytes(range(256)) * 3, "tok/v.txt": b"v"}, chunk_size=300)
BASE_MANIFEST = BASE.manifest
BASE_BYTES = canonical.encode(BASE_MANIFEST)
IMAGE_ARTIFACT = {
    "kind": "image", "name": "team/app", "version": "1.0.0",
    "blobs": [{"digest": "sha256:" + "a" * 64, "mediaType": "application/vnd.oci.image.manifest.v1+json",
               "size": 1, "blake3": "b" * 64, "chunks": []}],
    "image": {"repository": "team/app", "tag": "1.0.0", "manifest": "sha256:" + "a" * 64,
              "mediaType": "application/vnd.oci.image.manifest.v1+json"},
}
WITH_IMAGE = copy.deepcopy(BASE_MANIFEST)
WITH_IMAGE["artifacts"].append(IMAGE_ARTIFACT)
WITH_IMAGE["base"] = {"receipt": "sha256:" + "c" * 64, "site": "edge-1", "created": "2026-11-23T12:00:00Z"}


def test_the_fuzz_bases_are_valid() -> None:
    """The mutations start from documents a reader accepts, so they probe past the first check."""
    Manifest.from_bytes(BASE_BYTES)


@FUZZ
@given(mutated(BASE_MANIFEST) | mutated(WITH_IMAGE))
def test_manifest_parser_refuses_hostile_fields_cleanly(doc: Any) -> None:
    data = encode_or_none(doc)
    if data is not None:
        only_ferry_errors(Manifest.from_bytes, data)


@FUZZ
@given(spliced(BASE_BYTES))
def test_manifest_parser_refuses_spliced_bytes_cleanly(data: bytes) -> None:
    only_ferry_errors(Manifest.from_bytes, data)


@pytest.mark.parametrize("data", [
    b"1" * 5000,  # over Python's int-conversion digit limit (found by this suite: was ValueError)
    b"[" * 200_000, b"{\"a\":" * 50_000, b"\xef\xbb\xbf{}", b"\"\\ud800\"", b"\x00", b"",
    b'{"format":"ferry-bundle","formatVersion":"1.0","chunks":' + b"9" * 4400 + b"}",
], ids=["int-5000-digits", "deep-array", "deep-object", "bom", "lone-surrogate", "nul", "empty", "long-int-field"])
def test_manifest_parser_pathological_documents(data: bytes) -> None:
    only_ferry_errors(Manifest.from_bytes, data)


# --------------------------------------------------------------------------- signature files

SIG_BASE = {"payloadType": "application/vnd.ferry.manifest.v1+json",
            "signatures": [{"keyid": "0" * 64, "sig": base64.b64encode(b"s" * 64).decode()}]}


@FUZZ
@given(mutated(SIG_BASE) | st.binary(max_size=200).map(lambda b: {"raw": b.hex()}))
def test_signature_file_parser_refuses_hostile_fields_cleanly(doc: Any) -> None:
    data = encode_or_none(doc)
    if data is not None:
        only_ferry_errors(SignatureFile.from_bytes, data)


@FUZZ
@given(spliced(canonical.encode(SIG_BASE)))
def test_signature_file_parser_refuses_spliced_bytes_cleanly(data: bytes) -> None:
    only_ferry_errors(SignatureFile.from_bytes, data)


# --------------------------------------------------------------------------- receipts

RECEIPT_BASE = {"format": "ferry-receipt", "formatVersion": "1.0", "site": "edge-1",
                "created": "2026-11-23T12:00:00Z", "chunks": ["0" * 64, "1" * 64],
                "artifacts": [{"kind": "model", "name": "m", "version": "1.0.0"}], "channels": {"stable": 7}}


def test_receipt_base_is_valid() -> None:
    Receipt.from_bytes(canonical.encode(RECEIPT_BASE))


@FUZZ
@given(mutated(RECEIPT_BASE))
def test_receipt_parser_refuses_hostile_fields_cleanly(doc: Any) -> None:
    data = encode_or_none(doc)
    if data is not None:
        only_ferry_errors(Receipt.from_bytes, data)


@FUZZ
@given(spliced(canonical.encode(RECEIPT_BASE)))
def test_receipt_parser_refuses_spliced_bytes_cleanly(data: bytes) -> None:
    only_ferry_errors(Receipt.from_bytes, data)


# --------------------------------------------------------------------------- trust policies


def _policy_base() -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = public_pem(Ed25519PrivateKey.generate().public_key()).decode()
    return {"apiVersion": "ferry/v1", "kind": "TrustPolicy", "threshold": 1,
            "keys": [{"name": "a", "publicKey": pem, "channels": ["stable"]},
                     {"name": "b", "file": "b.pub"}]}


POLICY_BASE = _policy_base()
POLICY_DIR = Path(tempfile.mkdtemp(prefix="ferry-fuzz-policy-"))
atexit.register(shutil.rmtree, POLICY_DIR, True)
(POLICY_DIR / "b.pub").write_text(POLICY_BASE["keys"][0]["publicKey"].replace("a", "a"))


@FUZZ
@given(mutated(POLICY_BASE), st.booleans())
def test_trust_policy_parser_refuses_hostile_fields_cleanly(doc: Any, as_yaml: bool) -> None:
    try:
        data = yaml.safe_dump(doc).encode() if as_yaml else json.dumps(doc).encode()
    except (ValueError, yaml.YAMLError):
        return
    only_ferry_errors(parse_policy, data, "fuzz", POLICY_DIR)


@pytest.mark.parametrize("text", [
    "apiVersion: ferry/v1\nkind: TrustPolicy\nkeys:\n - name: a\n   file: \"a\\0b\"\n",  # was ValueError
    "apiVersion: ferry/v1\nkind: TrustPolicy\nkeys:\n - name: a\n   file: /dev/zero\n",  # was unbounded read
    "apiVersion: ferry/v1\nkind: TrustPolicy\nkeys:\n - name: a\n   file: /\n",
    "a: &a [*a]\n",  # a recursive alias
    "!!python/object:os.system {}\n",
    "? [a]\n: b\n",
    "x: " + "[" * 10_000 + "]" * 10_000 + "\n",
])
def test_trust_policy_pathological_documents(text: str) -> None:
    only_ferry_errors(parse_policy, text.encode(), "fuzz", POLICY_DIR)


# --------------------------------------------------------------------------- spec (hub side)


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_spec_parser_refuses_random_text_cleanly(data: bytes) -> None:
    from bundler.spec import parse_spec

    only_ferry_errors(parse_spec, data, POLICY_DIR / "bundle.yaml")


SPEC_BASE = {"apiVersion": "ferry/v1", "kind": "Bundle", "metadata": {"name": "edge-ai", "channel": "stable"},
             "spec": {"models": [{"name": "m", "version": "1.0.0", "path": "models/m"}],
                      "images": [{"ref": "team/app:1.0.0", "layout": "images/app", "version": "1.0.0"}],
                      "manifests": [{"name": "s", "version": "1.0.0", "path": "kube"}]}}


@FUZZ
@given(mutated(SPEC_BASE))
def test_spec_parser_refuses_hostile_fields_cleanly(doc: Any) -> None:
    from bundler.spec import parse_spec

    only_ferry_errors(parse_spec, yaml.safe_dump(doc), POLICY_DIR / "bundle.yaml")


# --------------------------------------------------------------------------- network and auditor documents


@FUZZ
@given(st.binary(max_size=200) | mutated({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "a" * 64, "size": 2},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "b" * 64,
                "size": 3, "annotations": {"k": "v"}}]}).map(lambda d: json.dumps(d).encode()))
def test_oci_manifest_parser_refuses_hostile_documents_cleanly(data: bytes) -> None:
    from manifests.oci import parse_manifest

    only_ferry_errors(parse_manifest, data, None)


def test_oci_manifest_parser_deep_nesting() -> None:
    from manifests.oci import parse_manifest

    only_ferry_errors(parse_manifest, b"[" * 100_000 + b"]" * 100_000, None)


@FUZZ
@given(st.binary(max_size=200) | mutated({
    "format": "ferry-audit-export", "formatVersion": "1.0", "exported": "2026-11-23T12:00:00Z",
    "head": {"format": "ferry-audit-head", "seq": 0, "hash": "sha256:" + "a" * 64},
    "entries": []}).map(lambda d: encode_or_none(d) or b""))
def test_audit_export_parser_refuses_hostile_documents_cleanly(data: bytes) -> None:
    from importer.audit import parse_export

    only_ferry_errors(parse_export, data)


# --------------------------------------------------------------------------- packs (chunk frames)

PACK_MANIFEST = Manifest.from_bytes(BASE_BYTES)
PACK_BYTES = bytes(next(iter(BASE.packs.values())))
PACK_NAME = next(iter(BASE.packs))


def _read_all_chunks(pack: bytes) -> None:
    from importer.content import stream_entry
    from importer.medium import PackReader

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "packs").mkdir()
        (Path(tmp) / "packs" / PACK_NAME).write_bytes(pack)
        with PackReader(PACK_MANIFEST, [Path(tmp)]) as reader:
            for chunk in PACK_MANIFEST.chunks:
                only_ferry_errors(reader.read_chunk, chunk)
            for artifact in PACK_MANIFEST.artifacts:
                for entry in artifact.entries:
                    only_ferry_errors(lambda e=entry: b"".join(stream_entry(e, PACK_MANIFEST, reader)))


@FUZZ
@given(st.binary(max_size=len(PACK_BYTES) + 64) | spliced(PACK_BYTES))
def test_pack_reader_refuses_random_and_spliced_packs_cleanly(pack: bytes) -> None:
    _read_all_chunks(pack)


@FUZZ
@given(st.integers(0, 2**64 - 1) | st.none(), st.integers(0, 1 << 22), st.integers(0, 255))
def test_forged_frame_headers_never_inflate_past_the_declared_size(declared: int | None, inflated: int, byte: int) -> None:
    """Any declared/real size combination: refused or exactly the declared bytes, never more."""
    from manifests.chunks import decompress_chunk
    from manifests.digest import blake3_hex

    stored = forge.rle_bomb_frame(declared, inflated, byte)
    size = min(inflated, 1 << 24)
    try:
        raw = decompress_chunk(stored, chunk_id=blake3_hex(bytes([byte]) * size), size=size)
    except FerryError:
        return
    assert len(raw) == size == declared == inflated


# --------------------------------------------------------------------------- model files read at the hub


@st.composite
def safetensors_like(draw: st.DrawFn) -> bytes:
    """A safetensors header (often lying about offsets or its own length) plus some data."""
    header = draw(mutated({"__metadata__": {"format": "pt"},
                           "t0": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]},
                           "t1": {"dtype": "F16", "shape": [4], "data_offsets": [8, 16]}}))
    text = json.dumps(header).encode()
    claimed = draw(st.sampled_from([len(text), len(text) + 1, 0, 2**63, 7]) | st.integers(0, 2**64 - 1))
    return claimed.to_bytes(8, "little") + text + draw(st.binary(max_size=64))


@FUZZ
@given(safetensors_like() | st.binary(max_size=120))
def test_model_file_boundaries_never_crash_and_cover_the_file(data: bytes) -> None:
    """Format-aware chunk boundaries come from a header an untrusted model file supplies: any
    header gives pieces that cover the file exactly, in order, or the whole file as one piece."""
    from bundler.chunker import segments

    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        pieces = segments(Path(f.name), len(data))
    assert pieces[0][0] == 0 and pieces[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
