"""Hostile bundles against the real CLI: ``ferry verify`` and ``ferry import``.

Almost every bundle here carries a *valid signature by a trusted key* (tests.adversarial.forge
signs whatever manifest it is given), so each case attacks the check after the signature. Every
refusal must be one clear line, a non-zero exit, no traceback; for import, nothing already
installed may change (tests.adversarial.edge.snapshot before and after).

The edge under attack already holds ``installed-model`` 1.0.0 (imported by a fixture), so
"nothing changed" is checked against real installed files, ledger rows and links.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from manifests import canonical, limits
from manifests.bundle import MANIFEST_NAME, PACKS_DIR, SIGNATURE_NAME
from manifests.digest import blake3_hex
from manifests.keys import load_private
from manifests.signing import RECEIPT_PAYLOAD_TYPE
from tests.adversarial import forge
from tests.adversarial.edge import assert_refused, snapshot, tree, unchanged
from tests.support import bundles
from tests.support.common import KeyPair, run_ferry

FILES = {"config.json": b'{"hidden": 8}', "weights.bin": bytes(range(256)) * 600, "vocab/v.txt": b"a\nb\n"}


@pytest.fixture(scope="module")
def hub(hub_keys: KeyPair) -> Any:
    return load_private(hub_keys.key)


@pytest.fixture(scope="module")
def installed_edge(tmp_path_factory: pytest.TempPathFactory, hub_keys: KeyPair) -> Path:
    """An edge state holding installed-model 1.0.0 (bundle base-0001, sequence 1)."""
    root = tmp_path_factory.mktemp("installed")
    bundles.write_bundle(root / "base", [hub_keys.key],
                         [bundles.model("installed-model", "1.0.0", {"w.bin": os.urandom(5000), "c.json": b"{}"})],
                         bundle_id="base-0001", sequence=1)
    r = run_ferry("import", root / "base", "--trust", hub_keys.pub, "--state", root / "edge")
    assert r.returncode == 0, r.stderr
    assert snapshot(root / "edge"), "the fixture installed nothing"
    return root / "edge"


@pytest.fixture()
def edge(installed_edge: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "edge"
    shutil.copytree(installed_edge, copy, symlinks=True)
    return copy


def run_cases(cases: dict[str, Callable[[], None]]) -> None:
    """Run independent attack cases side by side (each is a few CLI subprocesses; the machine
    has 2 cores) and fail naming *every* case that did not hold, with its reason."""
    from concurrent.futures import ThreadPoolExecutor

    def one(item: tuple[str, Callable[[], None]]) -> str | None:
        name, case = item
        try:
            case()
        except AssertionError as exc:
            return f"{name}: {str(exc).splitlines()[0] if str(exc) else 'assertion failed'}"
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [f for f in pool.map(one, sorted(cases.items())) if f]
    assert not failures, f"{len(failures)} of {len(cases)} attacks were not refused cleanly:\n" + "\n".join(failures)


def import_refused(bundle: Path, edge: Path, pub: Path, *, contains: str | None = None,
                   may_add: tuple[str, ...] = (), ignore: tuple[str, ...] = ()) -> None:
    before = snapshot(edge)
    r = run_ferry("import", bundle, "--trust", pub, "--state", edge)
    assert_refused(r, contains=contains)
    assert unchanged(before, snapshot(edge), may_add=may_add, ignore=ignore)


def verify_refused(bundle: Path, pub: Path, *, contains: str | None = None) -> None:
    assert_refused(run_ferry("verify", bundle, "--trust", pub), contains=contains)


# --------------------------------------------------------------------------- hostile manifests
# Each case edits a valid draft (a raw dict) and is then signed by the trusted hub key.


def _files(d: forge.Draft) -> list[dict[str, Any]]:
    return d.artifacts[0]["files"]


def _set_path(path: str) -> Callable[[forge.Draft], None]:
    def edit(d: forge.Draft) -> None:
        _files(d)[0]["path"] = path
    return edit


def _dup_path(d: forge.Draft) -> None:
    _files(d)[1]["path"] = _files(d)[0]["path"]


def _casefold_dup(d: forge.Draft) -> None:
    _files(d)[1]["path"] = _files(d)[0]["path"].upper()


def _file_and_folder(d: forge.Draft) -> None:
    _files(d)[1]["path"] = _files(d)[0]["path"] + "/inner"


def _orphan_chunk(d: forge.Draft) -> None:
    raw = b"listed in no file"
    cid = blake3_hex(raw)
    d.manifest["chunks"].append({"id": cid, "size": len(raw), "stored": 1, "pack": 0, "offset": 0})
    d.manifest["chunks"].sort(key=lambda c: c["id"])
    d.replace_frame(cid, forge.frame(raw))


def _unlisted_chunk(d: forge.Draft) -> None:
    _files(d)[0]["chunks"].append("f" * 64)


def _chunk_past_pack(d: forge.Draft) -> None:
    d.manifest["chunks"][0]["offset"] = d.manifest["packs"][0]["size"]


def _overlap(d: forge.Draft) -> None:
    cs = sorted(d.manifest["chunks"], key=lambda c: c["offset"])
    cs[1]["offset"] = cs[0]["offset"] + 1


def _missing_pack_index(d: forge.Draft) -> None:
    d.manifest["chunks"][0]["pack"] = 7


def _huge_chunk(d: forge.Draft) -> None:
    d.manifest["chunks"][0]["size"] = limits.MAX_CHUNK_SIZE + 1


def _size_mismatch(d: forge.Draft) -> None:
    _files(d)[0]["size"] += 1


def _unsorted_chunks(d: forge.Draft) -> None:
    d.manifest["chunks"].reverse()


def _pack_name(name: str) -> Callable[[forge.Draft], None]:
    def edit(d: forge.Draft) -> None:
        old = d.manifest["packs"][0]["name"]
        d.manifest["packs"][0]["name"] = name
        d.packs[name] = d.packs.pop(old)
    return edit


def _set(*path_and_value: Any) -> Callable[[forge.Draft], None]:
    *path, value = path_and_value

    def edit(d: forge.Draft) -> None:
        node: Any = d.manifest
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return edit


def _delete(*path: Any) -> Callable[[forge.Draft], None]:
    def edit(d: forge.Draft) -> None:
        node: Any = d.manifest
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]
    return edit


def _not_carried(d: forge.Draft) -> None:
    for k in ("stored", "pack", "offset"):
        d.manifest["chunks"][0].pop(k)


HOSTILE_MANIFESTS: dict[str, Callable[[forge.Draft], None]] = {
    "dotdot-path": _set_path("../../../../tmp/ferry-escaped"),
    "dotdot-inside-path": _set_path("vocab/../../escaped"),
    "absolute-path": _set_path("/tmp/ferry-escaped"),
    "nul-in-path": _set_path("weights\x00.bin"),
    "newline-in-path": _set_path("weights\n.bin"),
    "backslash-path": _set_path("..\\..\\escaped"),
    "drive-letter-path": _set_path("C:escaped"),
    "dot-component": _set_path("./weights.bin"),
    "empty-path": _set_path(""),
    "non-nfc-path": _set_path("cafe\u0301.bin"),
    "overlong-component": _set_path("x" * 256),
    "duplicate-path": _dup_path,
    "casefold-duplicate-path": _casefold_dup,
    "file-is-also-folder": _file_and_folder,
    "model-name-traversal": _set("artifacts", 0, "name", ".."),
    "model-name-slash": _set("artifacts", 0, "name", "a/../../b"),
    "pack-name-traversal": _pack_name("../../escaped"),
    "unknown-major-version": _set("formatVersion", "2.0"),
    "garbage-version": _set("formatVersion", "1"),
    "not-a-ferry-bundle": _set("format", "other-bundle"),
    "orphan-chunk": _orphan_chunk,
    "chunk-listed-nowhere": _unlisted_chunk,
    "frame-past-pack-end": _chunk_past_pack,
    "overlapping-frames": _overlap,
    "pack-index-out-of-range": _missing_pack_index,
    "chunk-over-16mib": _huge_chunk,
    "entry-size-mismatch": _size_mismatch,
    "chunks-unsorted": _unsorted_chunks,
    "not-carried-without-base": _not_carried,
    "negative-sequence": _set("bundle", "sequence", -1),
    "unknown-kind": _set("artifacts", 0, "kind", "script"),
    "bad-semver": _set("artifacts", 0, "version", "latest"),
    "zero-volumes": _set("volumes", 0),
    "missing-chunks-field": _delete("chunks"),
    "link-entry-field": _set("artifacts", 0, "files", 0, "linkTarget", "/etc/passwd"),  # 1.x ignores, still regular
}
#: Cases whose manifest is valid 1.x (unknown fields are ignored) and so must *not* be refused.
ACCEPTED = {"link-entry-field"}


def test_hostile_manifests_signed_by_trusted_key(tmp_path: Path, hub: Any, hub_keys: KeyPair,
                                                 installed_edge: Path) -> None:
    """Each of HOSTILE_MANIFESTS, signed by the trusted hub key: verify and import refuse it
    in one line, and the edge's installed state is unchanged."""

    def case(name: str) -> Callable[[], None]:
        def attack() -> None:
            d = forge.draft(dict(FILES), bundle_id=f"hostile-{name}", sequence=2)
            HOSTILE_MANIFESTS[name](d)
            bundle = forge.write(d, tmp_path / name / "bundle", [hub])
            edge = tmp_path / name / "edge"
            shutil.copytree(installed_edge, edge, symlinks=True)
            if name in ACCEPTED:
                r = run_ferry("import", bundle, "--trust", hub_keys.pub, "--state", edge)
                assert r.returncode == 0, r.stderr
                installed = edge / "models" / "model-a" / "1.0.0"
                assert all(not p.is_symlink() for p in installed.rglob("*"))
                return
            verify_refused(bundle, hub_keys.pub)
            import_refused(bundle, edge, hub_keys.pub)
            assert not Path("/tmp/ferry-escaped").exists() and not (tmp_path / "ferry-escaped").exists()
        return attack

    run_cases({name: case(name) for name in HOSTILE_MANIFESTS})


def test_non_canonical_manifest_is_refused_even_when_signed(tmp_path: Path, hub: Any, hub_keys: KeyPair,
                                                            edge: Path) -> None:
    d = forge.draft(dict(FILES), sequence=2)
    bundle = forge.write(d, tmp_path / "b", [hub], canonical_form=False)
    verify_refused(bundle, hub_keys.pub, contains="canonical")
    import_refused(bundle, edge, hub_keys.pub, contains="canonical")


def test_duplicate_json_keys_are_refused_even_when_signed(tmp_path: Path, hub: Any, hub_keys: KeyPair,
                                                          edge: Path) -> None:
    """Two parsers reading different values from one signed document is a classic split-view."""
    d = forge.draft(dict(FILES), sequence=2)
    body = canonical.encode(d.manifest)
    body = body.replace(b'"volumes":1}', b'"volumes":1,"volumes":2}')
    bundle = forge.write(d, tmp_path / "b", [hub], body=body)
    verify_refused(bundle, hub_keys.pub, contains="duplicate")
    import_refused(bundle, edge, hub_keys.pub, contains="duplicate")


# --------------------------------------------------------------------------- hostile chunk frames


def _bomb(d: forge.Draft) -> None:
    """The 1 KiB chunk's frame is replaced by one declaring 1 KiB that inflates to 10 GiB."""
    c = next(c for c in d.manifest["chunks"] if c["size"] >= 1024)
    raw = os.urandom(1024)
    c["size"] = 1024
    forge_entry_for(d, c, raw)
    d.replace_frame(c["id"], forge.rle_bomb_frame(1024, 10 * 1024**3))


def forge_entry_for(d: forge.Draft, c: dict[str, Any], raw: bytes) -> None:
    """Make the manifest consistent with a chunk of ``raw`` (so only the frame is hostile)."""
    old = c["id"]
    c["id"] = blake3_hex(raw)
    d.manifest["chunks"].sort(key=lambda x: x["id"])
    for a in d.artifacts:
        for e in a["files"]:
            if old in e["chunks"]:
                e["chunks"] = [c["id"] if x == old else x for x in e["chunks"]]
                e["size"] = sum(d.chunk(x)["size"] for x in e["chunks"])


def _honest_bomb(d: forge.Draft) -> None:
    """Header and manifest agree on 16 MiB, the RLE blocks go on to 10 GiB."""
    c = d.manifest["chunks"][0]
    c["size"] = limits.MAX_CHUNK_SIZE
    forge_entry_for(d, c, bytes(limits.MAX_CHUNK_SIZE))
    d.replace_frame(c["id"], forge.rle_bomb_frame(limits.MAX_CHUNK_SIZE, 10 * 1024**3))


def _frame_without_size(d: forge.Draft) -> None:
    c = d.manifest["chunks"][0]
    d.replace_frame(c["id"], forge.frame_without_size(_raw_of(d, c["id"])))


def _raw_of(d: forge.Draft, cid: str) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompress(d.frame_of(cid))


def _wrong_declared_size(d: forge.Draft) -> None:
    c = d.manifest["chunks"][0]
    d.replace_frame(c["id"], forge.frame(_raw_of(d, c["id"]) + b"!"))


def _substituted_chunk(d: forge.Draft) -> None:
    """Chunk A's frame holds chunk B's bytes (same size): only the id check catches it."""
    cs = d.manifest["chunks"]
    a = cs[0]
    other = os.urandom(a["size"])
    d.replace_frame(a["id"], forge.frame(other))


def _wrong_file_identity(d: forge.Draft) -> None:
    _files(d)[0]["blake3"] = "0" * 64


def _not_zstd(d: forge.Draft) -> None:
    c = d.manifest["chunks"][0]
    d.replace_frame(c["id"], b"PK\x03\x04 not zstd at all")


HOSTILE_FRAMES: dict[str, Callable[[forge.Draft], None]] = {
    "bomb-1kib-declared-10gib-inflated": _bomb,
    "bomb-16mib-declared-10gib-inflated": _honest_bomb,
    "frame-without-content-size": _frame_without_size,
    "frame-declares-other-size": _wrong_declared_size,
    "substituted-chunk-content": _substituted_chunk,
    "file-blake3-mismatch": _wrong_file_identity,
    "not-a-zstd-frame": _not_zstd,
}


def test_hostile_chunk_frames_signed_by_trusted_key(tmp_path: Path, hub: Any, hub_keys: KeyPair,
                                                    installed_edge: Path) -> None:
    """Each of HOSTILE_FRAMES (bombs, substituted or mislabelled frames) inside a valid
    signature: refused by verify and import, nothing installed, nothing changed."""

    def case(name: str) -> Callable[[], None]:
        def attack() -> None:
            d = forge.draft(dict(FILES), bundle_id=f"frames-{name}", sequence=2, chunk_size=4096)
            HOSTILE_FRAMES[name](d)
            bundle = forge.write(d, tmp_path / name / "bundle", [hub])
            edge = tmp_path / name / "edge"
            shutil.copytree(installed_edge, edge, symlinks=True)
            verify_refused(bundle, hub_keys.pub)
            import_refused(bundle, edge, hub_keys.pub)
            assert not (edge / "models" / "model-a" / "1.0.0").exists()
        return attack

    run_cases({name: case(name) for name in HOSTILE_FRAMES})


def test_image_blob_with_wrong_sha256_is_refused(tmp_path: Path, hub: Any, hub_keys: KeyPair, edge: Path) -> None:
    """BLAKE3 and chunks all match, but the OCI digest the edge must reproduce does not."""
    d = forge.draft(specs=[bundles.image("team/app", "1.0.0", [os.urandom(2000)])], sequence=2)
    art = d.artifacts[0]
    layer = next(b for b in art["blobs"] if b["digest"] != art["image"]["manifest"] and b["size"] == 2000)
    layer["digest"] = "sha256:" + "e" * 64
    bundle = forge.write(d, tmp_path / "bundle", [hub])
    verify_refused(bundle, hub_keys.pub)
    # Blobs that verified may be left in the layout's content-addressed store (as a registry
    # keeps pushed blobs); nothing may name them: no index.json entry, no ledger row.
    import_refused(bundle, edge, hub_keys.pub, contains="sha256", may_add=("oci/blobs", "oci"))
    index = edge / "oci" / "index.json"
    assert not index.exists() or "team/app" not in index.read_text()


# --------------------------------------------------------------------------- the medium itself


def _good(tmp_path: Path, hub: Any, **kw: Any) -> tuple[forge.Draft, Path]:
    d = forge.draft(dict(FILES), sequence=kw.pop("sequence", 2), chunk_size=4096, **kw)
    return d, forge.write(d, tmp_path / "bundle", [hub])


def _pack(bundle: Path) -> Path:
    return next((bundle / PACKS_DIR).iterdir())


def _flip_byte(bundle: Path) -> None:
    p = _pack(bundle)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


def _truncate_pack(bundle: Path) -> None:
    p = _pack(bundle)
    os.truncate(p, p.stat().st_size // 2)


def _pack_is_symlink(bundle: Path) -> None:
    """The link points at a copy with the right bytes: it must still not be followed."""
    p = _pack(bundle)
    real = bundle.parent / "elsewhere.pack"
    shutil.move(p, real)
    p.symlink_to(real)


def _packs_dir_is_symlink(bundle: Path) -> None:
    real = bundle.parent / "elsewhere-packs"
    shutil.move(bundle / PACKS_DIR, real)
    (bundle / PACKS_DIR).symlink_to(real)


def _pack_is_folder(bundle: Path) -> None:
    p = _pack(bundle)
    p.unlink()
    p.mkdir()


def _pack_is_fifo(bundle: Path) -> None:
    p = _pack(bundle)
    p.unlink()
    os.mkfifo(p)


def _manifest_is_fifo(bundle: Path) -> None:
    (bundle / MANIFEST_NAME).unlink()
    os.mkfifo(bundle / MANIFEST_NAME)


def _manifest_links_to_dev_zero(bundle: Path) -> None:
    (bundle / MANIFEST_NAME).unlink()
    (bundle / MANIFEST_NAME).symlink_to("/dev/zero")


def _manifest_is_folder(bundle: Path) -> None:
    (bundle / MANIFEST_NAME).unlink()
    (bundle / MANIFEST_NAME).mkdir()


def _sig_links_elsewhere(bundle: Path) -> None:
    real = bundle.parent / "real.sig"
    shutil.move(bundle / SIGNATURE_NAME, real)
    (bundle / SIGNATURE_NAME).symlink_to(real)


def _pack_missing(bundle: Path) -> None:
    _pack(bundle).unlink()


def _manifest_2gib_sparse(bundle: Path) -> None:
    with open(bundle / MANIFEST_NAME, "r+b") as f:
        f.truncate(2 * 1024**3)


def _manifest_10m_chunks_sparse(bundle: Path) -> None:
    """A manifest listing 10 million chunks needs at least 10M minimal chunk records
    ({"id":"<64 hex>","size":N}, 80+ bytes each): refused from that size, never read."""
    with open(bundle / MANIFEST_NAME, "r+b") as f:
        f.truncate(10_000_000 * 80)


def _sig_2gib_sparse(bundle: Path) -> None:
    with open(bundle / SIGNATURE_NAME, "r+b") as f:
        f.truncate(2 * 1024**3)


MEDIUM_ATTACKS: dict[str, Callable[[Path], None]] = {
    "tampered-pack-byte": _flip_byte,
    "truncated-pack": _truncate_pack,
    "pack-missing": _pack_missing,
    "pack-is-symlink": _pack_is_symlink,
    "packs-folder-is-symlink": _packs_dir_is_symlink,
    "pack-is-folder": _pack_is_folder,
    "pack-is-fifo": _pack_is_fifo,
    "manifest-is-fifo": _manifest_is_fifo,
    "manifest-links-to-dev-zero": _manifest_links_to_dev_zero,
    "manifest-is-folder": _manifest_is_folder,
    "signature-is-symlink": _sig_links_elsewhere,
    "manifest-2gib-sparse": _manifest_2gib_sparse,
    "manifest-10-million-chunks-sparse": _manifest_10m_chunks_sparse,
    "signature-2gib-sparse": _sig_2gib_sparse,
}
#: A missing pack means "insert the volume", not an attack: import waits (exit 0) and applies nothing.
WAITS = {"pack-missing", "packs-folder-is-symlink", "pack-is-symlink", "pack-is-folder", "pack-is-fifo"}


def test_tampered_medium(tmp_path: Path, hub: Any, hub_keys: KeyPair, installed_edge: Path) -> None:
    """Each of MEDIUM_ATTACKS applied to a good bundle *after* signing (a courier or a
    compromised disk): verify refuses; import refuses, or for a pack it cannot use waits for
    the volume; nothing installed changes."""

    def case(name: str) -> Callable[[], None]:
        def attack() -> None:
            d = forge.draft(dict(FILES), sequence=2, chunk_size=4096, bundle_id=f"medium-{name}")
            bundle = forge.write(d, tmp_path / name / "bundle", [hub])
            edge = tmp_path / name / "edge"
            shutil.copytree(installed_edge, edge, symlinks=True)
            MEDIUM_ATTACKS[name](bundle)
            verify_refused(bundle, hub_keys.pub)
            if name in WAITS:
                before = snapshot(edge)
                r = run_ferry("import", bundle, "--trust", hub_keys.pub, "--state", edge, timeout=60)
                assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
                assert not (edge / "models" / "model-a").exists()
                assert unchanged(before, snapshot(edge), may_add=("store",))
                return
            import_refused(bundle, edge, hub_keys.pub)
        return attack

    run_cases({name: case(name) for name in MEDIUM_ATTACKS})


def test_count_limit_in_a_real_signed_manifest(tmp_path: Path, hub: Any, hub_keys: KeyPair) -> None:
    """1,048,577 chunks (one over the limit), 83 MiB of real canonical JSON under a valid
    signature: refused by the count, with one line. (10 million cannot fit under the size limit.)"""
    n = limits.MAX_CHUNKS + 1
    chunks = ",".join('{"id":"%064x","size":1}' % i for i in range(n))
    body = ('{"artifacts":[],"bundle":{"channel":"stable","created":"2026-11-23T12:00:00Z","id":"big",'
            '"name":"big","producer":"forge","sequence":1},"chunks":[' + chunks +
            '],"format":"ferry-bundle","formatVersion":"1.0","packs":[],"volumes":1}').encode()
    bundle = forge.write(forge.Draft({"volumes": 1, "packs": []}, {}), tmp_path / "b", [hub], body=body)
    verify_refused(bundle, hub_keys.pub, contains="limit")


# --------------------------------------------------------------------------- signatures and trust


def test_wrong_missing_and_untrusted_signatures(tmp_path: Path, hub: Any, hub_keys: KeyPair,
                                                other_keys: KeyPair, edge: Path) -> None:
    d = forge.draft(dict(FILES), sequence=2)
    body = canonical.encode(d.manifest)
    cases = {
        "over-other-bytes": forge.signature_bytes(body + b" ", [hub]),
        "untrusted-key": forge.signature_bytes(body, [load_private(other_keys.key)]),
        "receipt-payload-type": forge.signature_bytes(body, [hub], payload_type=RECEIPT_PAYLOAD_TYPE),
        "no-signatures": canonical.encode({"payloadType": "application/vnd.ferry.manifest.v1+json", "signatures": []}),
        "garbage": b"\x00\xff not a signature file",
    }
    for name, sig in cases.items():
        bundle = forge.write(d, tmp_path / name, [hub], sig=sig)
        verify_refused(bundle, hub_keys.pub)
        import_refused(bundle, edge, hub_keys.pub)
    unsigned = forge.write(d, tmp_path / "unsigned", [hub])
    (unsigned / SIGNATURE_NAME).unlink()
    verify_refused(unsigned, hub_keys.pub)
    import_refused(unsigned, edge, hub_keys.pub, contains="unsigned")


def test_threshold_and_channel_restrictions(tmp_path: Path, hub: Any, hub_keys: KeyPair,
                                            other_keys: KeyPair, edge: Path) -> None:
    pem = lambda p: "".join(f"      {line}\n" for line in p.read_text().splitlines())  # noqa: E731
    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: ferry/v1\nkind: TrustPolicy\nthreshold: 2\nkeys:\n"
                      f"  - name: hub\n    publicKey: |\n{pem(hub_keys.pub)}"
                      f"  - name: other\n    publicKey: |\n{pem(other_keys.pub)}")
    d = forge.draft(dict(FILES), sequence=2)
    one = forge.write(d, tmp_path / "one", [hub])
    verify_refused(one, policy)
    import_refused(one, edge, policy)
    channel_policy = tmp_path / "channel.yaml"
    channel_policy.write_text("apiVersion: ferry/v1\nkind: TrustPolicy\nkeys:\n"
                              f"  - name: hub\n    channels: [canary]\n    publicKey: |\n{pem(hub_keys.pub)}")
    verify_refused(one, channel_policy)
    import_refused(one, edge, channel_policy)


# --------------------------------------------------------------------------- replay, rollback, mix-and-match


def _import_ok(bundle: Path, edge: Path, pub: Path) -> None:
    r = run_ferry("import", bundle, "--trust", pub, "--state", edge)
    assert r.returncode == 0, r.stderr


def test_replay_of_an_old_bundle_and_downgrade_are_refused(tmp_path: Path, hub: Any, hub_keys: KeyPair,
                                                           edge: Path) -> None:
    v1 = forge.write(forge.draft({"w.bin": b"one" * 100}, bundle_id="r-1", sequence=2), tmp_path / "v1", [hub])
    withheld = forge.write(forge.draft(bundle_id="r-w", sequence=3,
                                       specs=[bundles.model("model-a", "1.5.0", {"w.bin": b"1.5" * 100})]),
                           tmp_path / "withheld", [hub])
    v2 = forge.write(forge.draft(bundle_id="r-2", sequence=4,
                                 specs=[bundles.model("model-a", "2.0.0", {"w.bin": b"two" * 100})]),
                     tmp_path / "v2", [hub])
    _import_ok(v1, edge, hub_keys.pub)
    _import_ok(v2, edge, hub_keys.pub)
    # the very bundle imported before, again: idempotent by design (not an error), changes nothing
    before = snapshot(edge)
    r = run_ferry("import", v1, "--trust", hub_keys.pub, "--state", edge)
    assert r.returncode == 0 and "already imported" in r.stdout, r.stdout + r.stderr
    assert unchanged(before, snapshot(edge))
    # replay of a signed bundle the edge never saw, older than what it holds: stale and refused
    import_refused(withheld, edge, hub_keys.pub, contains="older", ignore=("ledger:channels",))
    # downgrade: a *new* bundle (higher sequence) carrying the old version
    down = forge.write(forge.draft({"w.bin": b"one" * 100}, bundle_id="r-3", sequence=5), tmp_path / "down", [hub])
    import_refused(down, edge, hub_keys.pub, contains="older", ignore=("ledger:channels",))
    assert (edge / "models" / "model-a" / "current").resolve().name == "2.0.0"


def test_same_version_with_other_content_is_a_conflict(tmp_path: Path, hub: Any, hub_keys: KeyPair,
                                                       edge: Path) -> None:
    a = forge.write(forge.draft({"w.bin": b"a" * 100}, bundle_id="c-1", sequence=2), tmp_path / "a", [hub])
    b = forge.write(forge.draft({"w.bin": b"b" * 100}, bundle_id="c-2", sequence=3), tmp_path / "b", [hub])
    _import_ok(a, edge, hub_keys.pub)
    import_refused(b, edge, hub_keys.pub, contains="different content", ignore=("ledger:channels",))


def test_two_bundles_with_the_same_id_and_different_content(tmp_path: Path, hub: Any, hub_keys: KeyPair,
                                                            edge: Path) -> None:
    a = forge.write(forge.draft({"w.bin": b"a" * 100}, bundle_id="same-id", sequence=2), tmp_path / "a", [hub])
    b = forge.write(forge.draft(specs=[bundles.model("model-b", "1.0.0", {"w.bin": b"b" * 100})],
                                bundle_id="same-id", sequence=3), tmp_path / "b", [hub])
    _import_ok(a, edge, hub_keys.pub)
    import_refused(b, edge, hub_keys.pub, contains="same-id")
    assert not (edge / "models" / "model-b").exists()


def test_volume_from_another_bundle_is_not_mixed_in(tmp_path: Path, hub: Any, hub_keys: KeyPair,
                                                    edge: Path) -> None:
    """vol-002 of bundle B beside vol-001 of bundle A: two incomplete bundles, nothing applied;
    and B's pack renamed into A's vol-002 (same pack name) fails A's chunk ids."""
    files_a = {"w.bin": os.urandom(20000)}
    files_b = {"w.bin": os.urandom(20000)}
    a = forge.draft(files_a, bundle_id="mix-a", sequence=2, volumes=2, chunk_size=4096)
    b = forge.draft(files_b, bundle_id="mix-b", sequence=3, volumes=2, chunk_size=4096)
    forge.write(a, tmp_path / "a", [hub])
    forge.write(b, tmp_path / "b", [hub])
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copytree(tmp_path / "a" / "vol-001", mixed / "vol-001")
    shutil.copytree(tmp_path / "b" / "vol-002", mixed / "vol-002")
    r = run_ferry("verify", mixed, "--trust", hub_keys.pub)  # each half verifies; neither is whole
    assert r.returncode == 3 and "not given" in r.stderr and "internal error" not in r.stderr, r.stderr
    before = snapshot(edge)
    r = run_ferry("import", mixed, "--trust", hub_keys.pub, "--state", edge)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert not (edge / "models" / "model-a").exists()
    assert {k: v for k, v in snapshot(edge).items() if not k.startswith("store")} == \
           {k: v for k, v in before.items() if not k.startswith("store")}
    # same pack *name*, other bundle's bytes: A's manifest, B's pack
    spliced = tmp_path / "spliced"
    shutil.copytree(tmp_path / "a", spliced)
    pa = next((spliced / "vol-002" / PACKS_DIR).iterdir())
    pb = next((tmp_path / "b" / "vol-002" / PACKS_DIR).iterdir())
    pa.write_bytes(pb.read_bytes())
    verify_refused(spliced, hub_keys.pub)
    import_refused(spliced, edge, hub_keys.pub)


# --------------------------------------------------------------------------- links planted in the edge state


@pytest.mark.parametrize("where", ["models/model-a", "models/model-a/1.0.0", "models", "store"])
def test_symlink_planted_in_the_edge_state_is_not_written_through(where: str, tmp_path: Path, hub: Any,
                                                                  hub_keys: KeyPair, edge: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("do not touch")
    link = edge / where
    if link.exists():
        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    before_outside = tree(outside)
    _d, bundle = _good(tmp_path, hub, bundle_id=f"link-{where.replace('/', '-')}")
    before = snapshot(edge)
    r = run_ferry("import", bundle, "--trust", hub_keys.pub, "--state", edge)
    assert tree(outside) == before_outside, f"import wrote through the planted link {where}"
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    if r.returncode != 0:
        assert_refused(r, contains="link")
    # whatever happened, the state is consistent: the model is wholly installed or absent
    current = edge / "models" / "model-a" / "current"
    if current.exists() and not (edge / "models").is_symlink():
        files = {p.relative_to(current).as_posix(): p.read_bytes() for p in current.rglob("*") if p.is_file()}
        assert files == FILES
    del before


# --------------------------------------------------------------------------- hostile manifest sets (signed)

DEPLOY = (b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: %s\n  namespace: default\nspec:\n"
          b"  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n"
          b"    spec: {containers: [{name: a, image: team/app:1.0.0}]}\n")
HOSTILE_SETS: dict[str, bytes] = {
    "yaml-alias-bomb": b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                       b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                       b"e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
                       b"g: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n",
    "yaml-deep-nesting": b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "not-kubernetes": b"just: some\nyaml: here\n",
    "python-tag": b"!!python/object/apply:os.system ['touch /tmp/ferry-pwned']\n",
    "not-utf8": b"\xff\xfe\x00k\x00i\x00n\x00d\x00",
    "name-with-slashes": DEPLOY % b"../../../tmp/ferry-escaped",
    "duplicate-object": DEPLOY % b"web" + b"---\n" + DEPLOY % b"web",
}


def test_hostile_manifest_sets_signed_by_trusted_key(tmp_path: Path, hub: Any, hub_keys: KeyPair,
                                                     installed_edge: Path) -> None:
    """A manifests artifact is parsed again at the edge (to pin images by digest): YAML bombs,
    tags, non-objects and path-like names inside a valid signature are refused, nothing written."""

    def case(name: str) -> Callable[[], None]:
        def attack() -> None:
            spec = bundles.Spec("manifests", "app", "1.0.0", files={"app.yaml": HOSTILE_SETS[name]})
            d = forge.draft(specs=[spec], bundle_id=f"set-{name}", sequence=2)
            bundle = forge.write(d, tmp_path / name / "bundle", [hub])
            edge = tmp_path / name / "edge"
            shutil.copytree(installed_edge, edge, symlinks=True)
            import_refused(bundle, edge, hub_keys.pub)
            assert not (edge / "manifests" / "app").exists()
            assert not Path("/tmp/ferry-pwned").exists() and not Path("/tmp/ferry-escaped").exists()
        return attack

    run_cases({name: case(name) for name in HOSTILE_SETS})


# --------------------------------------------------------------------------- the hub reading an edge receipt


def test_hostile_receipt_given_to_export(tmp_path: Path, hub_keys: KeyPair) -> None:
    """``export --since`` reads a file that came back across the gap: garbage, a wrong format,
    an oversize (sparse) file, a FIFO: one clear line each, no bundle left looking finished."""
    from tests.support.export import make_model, write_spec

    make_model(tmp_path / "m", count=2, size=64 * 1024)
    spec = write_spec(tmp_path / "bundle.yaml", [("m", "1.0.0", "m")])
    receipts = {
        "garbage": b"\x00\xffnot json",
        "wrong-format": canonical.encode({"format": "ferry-bundle", "formatVersion": "1.0"}),
        "future-major": canonical.encode({"format": "ferry-receipt", "formatVersion": "9.0"}),
        "huge-int": b'{"chunks":' + b"9" * 5000 + b"}",
        "unsorted-chunks": canonical.encode({"format": "ferry-receipt", "formatVersion": "1.0", "site": "e",
                                             "created": "2026-11-23T12:00:00Z", "chunks": ["f" * 64, "0" * 64]}),
    }
    for name, data in receipts.items():
        (tmp_path / name).write_bytes(data)
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as f:
        f.truncate(limits.MAX_RECEIPT_BYTES + 1)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for name in [*receipts, "sparse", "fifo"]:
        out = tmp_path / f"out-{name}"
        r = run_ferry("export", spec, "--out", out, "--key", hub_keys.key, "--state", tmp_path / "hub",
                      "--since", tmp_path / name, timeout=60)
        assert_refused(r)
        assert not any(out.rglob(MANIFEST_NAME)), name


# --------------------------------------------------------------------------- inspect reads without any key


def test_inspect_of_hostile_unsigned_bundles(tmp_path: Path, hub: Any) -> None:
    """``ferry inspect`` parses a manifest that no signature vouches for (it needs no key), so
    the parser itself is the boundary: every hostile body is one clear line, never a hang."""
    d = forge.draft(dict(FILES))
    bodies = {
        "garbage": b"\x00\xff\xfe garbage",
        "deep-nesting": b"[" * 200_000 + b"]" * 200_000,
        "int-5000-digits": b"1" * 5000,
        "non-canonical": forge.encode(d.manifest, canonical_form=False),
        "dotdot-path": None,
    }
    for name, body in bodies.items():
        hostile = d.copy()
        if body is None:
            _set_path("../../x")(hostile)
        bundle = forge.write(hostile, tmp_path / name, [hub], body=body)
        assert_refused(run_ferry("inspect", bundle, timeout=60))
    for name, attack in (("fifo", _manifest_is_fifo), ("dev-zero", _manifest_links_to_dev_zero),
                         ("2gib", _manifest_2gib_sparse)):
        bundle = forge.write(d, tmp_path / name, [hub])
        attack(bundle)
        assert_refused(run_ferry("inspect", bundle, timeout=60))


# --------------------------------------------------------------------------- names that look like ferry's own


TRICKY_NAMES = {
    "a.bin": b"A" * 9000,
    ".a.bin.part": b"was the temporary name of a.bin (found by this suite: it was lost)",
    "x/y": b"y" * 5000,
    "x/.y.part": b"Y",
    ".partial-1.0.0": b"looks like the staging folder",
    "current": b"looks like the current link",
    ".current.tmp": b"looks like the link being switched",
    "n" * 251 + ".bin": b"a 255-byte name (its temporary name was too long: found by this suite)",
    "d" * 200 + "/" + "e" * 255: b"deep and long",
}


def test_file_names_that_look_like_ferrys_own_are_installed_exactly(tmp_path: Path, hub: Any,
                                                                    hub_keys: KeyPair, edge: Path) -> None:
    """A model may hold files named like ferry's temporary or bookkeeping names, or names of the
    maximum length: every one is installed exactly, nothing is lost or overwritten."""
    bundle = forge.write(forge.draft(dict(TRICKY_NAMES), sequence=2, chunk_size=4096), tmp_path / "b", [hub])
    _import_ok(bundle, edge, hub_keys.pub)
    current = edge / "models" / "model-a" / "current"
    got = {p.relative_to(current).as_posix(): p.read_bytes() for p in current.rglob("*") if p.is_file()}
    assert got == TRICKY_NAMES
    assert os.readlink(current) == "1.0.0"


def test_image_manifest_naming_a_blob_the_bundle_does_not_carry(tmp_path: Path, hub: Any, hub_keys: KeyPair,
                                                                edge: Path) -> None:
    """Extraneous or missing dependencies: the signed image's OCI manifest names a layer that is
    not among its blobs. Nothing is tagged: a broken image never appears at the edge."""
    d = forge.draft(specs=[bundles.image("team/app", "1.0.0", [os.urandom(3000), os.urandom(2000)])], sequence=2)
    art = d.artifacts[0]
    art["blobs"].remove(next(b for b in art["blobs"] if b["size"] == 2000))
    used = {c for b in art["blobs"] for c in b["chunks"]}
    d.manifest["chunks"] = [c for c in d.manifest["chunks"] if c["id"] in used]
    bundle = forge.write(d, tmp_path / "b", [hub])
    import_refused(bundle, edge, hub_keys.pub, contains="does not carry", may_add=("oci",))
    index = edge / "oci" / "index.json"
    assert not index.exists() or "team/app" not in index.read_text()


# --------------------------------------------------------------------------- what the terminal shows


def test_manifest_text_cannot_forge_terminal_output(tmp_path: Path, hub: Any, hub_keys: KeyPair, edge: Path) -> None:
    """Text from a manifest reaches operators' and auditors' terminals. An escape sequence (clear
    the line, print a fake PASS) is refused by the format; rich markup in paths or the producer
    ('[/]' crashed inspect and verify before this suite) is printed as plain text."""
    d = forge.draft({"a[/]b.bin": b"A" * 100, "[bold red]x": b"x"}, sequence=2)
    d.manifest["bundle"]["producer"] = "[/] [link=http://evil.example]click[/link] [green]PASS"
    bundle = forge.write(d, tmp_path / "markup", [hub])
    for args in (("inspect", bundle), ("verify", bundle, "--trust", hub_keys.pub)):
        r = run_ferry(*args)
        assert r.returncode == 0 and "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
        assert "[/] [link=http://evil.example]click[/link]" in r.stdout, r.stdout
    _import_ok(bundle, edge, hub_keys.pub)
    for field, value in (("producer", "ferry\x1b[2K\r\x1b[32mPASS: all verified"), ("producer", "x\x9b31m")):
        hostile = d.copy()
        hostile.manifest["bundle"][field] = value
        bundle = forge.write(hostile, tmp_path / f"esc-{len(value)}", [hub])
        for args in (("inspect", bundle), ("verify", bundle, "--trust", hub_keys.pub)):
            r = run_ferry(*args)
            assert_refused(r, contains="control character")
            assert "\x1b" not in r.stdout + r.stderr and "\x9b" not in r.stdout + r.stderr
