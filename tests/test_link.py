"""Bundles over a link (issue #18): push to the real registry fixture, import from it fetching
only what the site lacks, resume after kill -9, and the faults a link brings (through a
loopback proxy in front of the real registry)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.link import FetchStats, _verified_chunks, coalesce, fetch_signed, parse_rate
from manifests.chunks import compress_chunk
from manifests.digest import blake3_hex
from manifests.oci import Descriptor
from manifests.errors import RegistryError, UsageError, VerificationError
from manifests.link import OciRef, parse_oci_ref, read_artifact
from manifests.model import Chunk
from manifests.progress import Silent
from manifests.trust import load_trust
from tests.support.common import REPO, assert_clean_failure, run_ferry
from tests.support.export import MiB, make_model, urandom_model, write_safetensors, write_spec
from tests.support.linkproxy import Proxy
from transport.registry import RangeAnswer, RegistryClient

# --------------------------------------------------------------------------- pure parts

_NAME = st.from_regex(r"[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}", fullmatch=True)
_TAG = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(host=st.sampled_from(["127.0.0.1:5000", "registry.hub", "reg.example.org:443", "localhost"]),
       repo=_NAME, tag=_TAG)
def test_oci_references_round_trip(host: str, repo: str, tag: str) -> None:
    ref = parse_oci_ref(f"oci://{host}/{repo}:{tag}")
    assert ref == OciRef(host, repo, tag, None)
    assert parse_oci_ref(str(ref)) == ref


@given(st.text(max_size=40))
def test_oci_reference_parser_never_crashes(text: str) -> None:
    try:
        parse_oci_ref("oci://" + text)
    except UsageError:
        pass


@pytest.mark.parametrize("bad", ["registry/repo:1", "oci://", "oci://host", "oci://host/Repo:1",
                                 "oci://host/repo", "oci://host/repo:bad tag", "oci://ho st/repo:1",
                                 "oci://host/repo@sha256:00"])
def test_bad_oci_references_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_oci_ref(bad)


def test_channel_reference_needs_no_tag() -> None:
    assert parse_oci_ref("oci://host:5000/ferry/edge", need_tag=False) == OciRef("host:5000", "ferry/edge")


@given(st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 1 << 16)), min_size=1, max_size=40),
       st.integers(0, 1 << 16), st.integers(1 << 16, 1 << 21))
@settings(max_examples=200)
def test_coalesced_ranges_cover_every_chunk_within_the_limits(spans: list[tuple[int, int]], gap: int,
                                                              limit: int) -> None:
    chunks, at = [], 0
    for i, (skip, stored) in enumerate(spans):  # non-overlapping frames, as in a pack
        at += skip
        chunks.append(Chunk(id=f"{i:064x}", size=stored, stored=stored, pack=0, offset=at))
        at += stored
    groups = coalesce(list(reversed(chunks)), gap=gap, limit=limit)
    assert [c for g in groups for c in g] == chunks  # all of them, once, in pack order
    for g in groups:
        span = g[-1].offset + g[-1].stored - g[0].offset
        assert len(g) == 1 or span <= limit
        for a, b in zip(g, g[1:]):
            assert b.offset - (a.offset + a.stored) <= gap
    for a, b in zip(groups, groups[1:]):  # split only where the gap or the limit says so
        gap_between = b[0].offset - (a[-1].offset + a[-1].stored)
        assert gap_between > gap or b[0].offset + b[0].stored - a[0].offset > limit


class _PiecesClient:
    """A registry's Range answers cut into pieces of the given sizes (as a socket may deliver
    them), read through the client's :class:`transport.registry.RangeAnswer`: what
    :func:`importer.link._verified_chunks` must reassemble chunk by chunk."""

    host = "test"

    def __init__(self, blob: bytes, cuts: list[int]) -> None:
        self.blob, self.cuts = blob, cuts

    def open_range(self, repo: str, digest: str, start: int, length: int) -> RangeAnswer:
        return RangeAnswer(_cut(self.blob[start:start + length], self.cuts), start, length, "test")


def _cut(data: bytes, cuts: list[int]) -> Callable[[int], bytes]:
    """``read(n)`` over ``data`` that returns at most the next of ``cuts`` bytes (cycling), b"" at the end."""
    at, i = 0, 0

    def read(n: int) -> bytes:
        nonlocal at, i
        out = data[at:at + min(n, cuts[i % len(cuts)])]
        at, i = at + len(out), i + 1
        return out

    return read


@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), min_size=1, max_size=8),
       st.lists(st.integers(0, 900), max_size=12), st.integers(0, 3000))
@settings(max_examples=200, deadline=None)
def test_a_range_answer_gives_exactly_the_bytes_asked_however_they_arrive(
        data: bytes, cuts: list[int], reads: list[int], sent: int) -> None:
    sent = min(sent, len(data))
    answer = RangeAnswer(_cut(data[:sent], cuts), 10, len(data), "registry test: blob b")
    at = 0
    for n in reads:
        n = min(n, answer.left)
        if at + n > sent:  # the answer ends first: one line saying how much is missing
            with pytest.raises(RegistryError, match=rf"ended {len(data) - sent} bytes short of the range "
                                                    rf"10-{9 + len(data)} \(truncated\)"):
                answer.read(n)
            return
        assert answer.read(n) == data[at:at + n]
        at += n
        assert answer.left == len(data) - at
    assert answer.received == at


@given(st.lists(st.tuples(st.integers(0, 300), st.binary(min_size=1, max_size=400)), min_size=1, max_size=12),
       st.lists(st.integers(1, 700), min_size=1, max_size=8))
@settings(max_examples=100, deadline=None)
def test_a_coalesced_range_cut_anywhere_gives_every_chunk_verified_once(
        parts: list[tuple[int, bytes]], cuts: list[int]) -> None:
    pack, chunks = bytearray(), []
    for i, (gap, raw) in enumerate(parts):  # frames with gaps between them (chunks the site holds)
        pack += os.urandom(gap)
        stored = compress_chunk(raw)
        chunks.append(Chunk(id=blake3_hex(raw), size=len(raw), stored=len(stored), pack=0, offset=len(pack)))
        pack += stored
    stats = FetchStats("oci://test/r:1")
    blob = Descriptor("application/octet-stream", "sha256:" + "0" * 64, len(pack))
    got = list(_verified_chunks(_PiecesClient(bytes(pack), cuts), "r", blob, "p", list(chunks),  # type: ignore[arg-type]
                                stats, None, 1, 0.0, lambda s: None, Silent()))
    assert stats.chunks_fetched == len(chunks)
    assert [c.offset for c, _, _ in got] == [c.offset for c in chunks]
    for c, (_, stored, raw) in zip(chunks, got):
        assert c.offset is not None and c.stored is not None
        assert stored == pack[c.offset:c.offset + c.stored]
        assert blake3_hex(raw) == c.id and len(raw) == c.size  # the checked raw bytes come with it


@pytest.mark.parametrize("text, rate", [("500K", 500 << 10), ("10M", 10 << 20), ("1G", 1 << 30), ("4096", 4096),
                                        ("2MiB/s", 2 << 20)])
def test_limit_rate_units(text: str, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "10", "-5M", "1.5M"])
def test_bad_limit_rates_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_rate(text)


def test_an_oci_manifest_that_is_not_a_bundle_is_refused() -> None:
    from manifests.errors import FormatError
    from manifests.oci import OCI_MANIFEST

    image = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": "sha256:" + "0" * 64, "size": 2}, "layers": []}).encode()
    with pytest.raises(FormatError, match="not a ferry bundle"):
        read_artifact(image, OCI_MANIFEST, "oci://h/r:1")


# --------------------------------------------------------------------------- end to end


def _export(tmp: Path, name: str, model: Path, version: str, keys, *extra: object) -> Path:  # noqa: ANN001
    spec = write_spec(tmp / f"{name}.yaml", [("m", version, str(model))])
    out = tmp / name
    r = run_ferry("export", spec, "--out", out, "--key", keys.key, "--state", tmp / "hub", *extra)
    assert r.returncode == 0, r.stderr
    return out


def _import_json(ref: str, state: Path, keys, *extra: object) -> tuple[int, dict, str]:  # noqa: ANN001
    r = run_ferry("import", ref, "--trust", keys.pub, "--state", state, "--json", *extra)
    doc = json.loads(r.stdout) if r.stdout.strip() else {}
    return r.returncode, doc, r.stderr


def _model_bytes(state: Path) -> bytes:
    files = sorted((state / "models" / "m").rglob("model.safetensors"))
    assert files, list((state / "models").rglob("*"))
    return files[-1].read_bytes()


def test_push_import_next_version_fetches_only_new_chunks(tmp_path: Path, registry, hub_keys) -> None:  # noqa: ANN001
    from tests.support.export import tensors

    v1 = tensors(8, 1 * MiB, seed=1)
    write_safetensors(tmp_path / "src1" / "model.safetensors", v1)
    b1 = _export(tmp_path, "b1", tmp_path / "src1", "1.0.0", hub_keys)
    ref1 = f"oci://{registry.host}/link/e2e:1"
    r = run_ferry("push", b1, ref1, "--json")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["uploaded"] == 3 and first["skipped"] == 0  # manifest, signature file, one pack
    r = run_ferry("push", b1, ref1, "--json")
    assert json.loads(r.stdout)["uploaded"] == 0  # the registry holds every blob: nothing is sent

    # inspect and verify read the registry
    r = run_ferry("inspect", ref1, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["bundles"][0]["bundle"]["sequence"] == 1
    r = run_ferry("verify", ref1, "--trust", hub_keys.pub)
    assert r.returncode == 0, r.stderr

    edge = tmp_path / "edge"
    code, doc, err = _import_json(ref1, edge, hub_keys)
    assert code == 0, err
    fetched1 = doc["bundles"][0]["fetched"]
    assert fetched1["chunksFetched"] == fetched1["chunksNeeded"] > 0
    assert _model_bytes(edge) == (tmp_path / "src1" / "model.safetensors").read_bytes()
    assert not (edge / "link").exists()  # no copy of the bundle is assembled at the edge

    # the next version: one tensor of eight changed
    v2 = list(v1)
    v2[3] = (v2[3][0], os.urandom(MiB))
    write_safetensors(tmp_path / "src2" / "model.safetensors", v2)
    b2 = _export(tmp_path, "b2", tmp_path / "src2", "1.1.0", hub_keys)
    ref2 = f"oci://{registry.host}/link/e2e:2"
    assert run_ferry("push", b2, ref2).returncode == 0
    code, doc, err = _import_json(ref2, edge, hub_keys)
    assert code == 0, err
    fetched2 = doc["bundles"][0]["fetched"]
    stored2 = sum(f.stat().st_size for f in (b2 / "packs").iterdir())
    assert 0 < fetched2["chunksFetched"] < fetched1["chunksFetched"]
    assert fetched2["bytesFetched"] < stored2 / 4, (fetched2, stored2)  # about 1 MiB of 8 MiB, plus the manifest
    assert _model_bytes(edge) == (tmp_path / "src2" / "model.safetensors").read_bytes()

    # the same bundle again: nothing but the manifest and signatures travel
    code, doc, err = _import_json(ref2, edge, hub_keys)
    assert code == 0 and doc["bundles"][0]["status"] == "repeat"
    assert doc["bundles"][0]["fetched"]["chunksFetched"] == 0


def test_signatures_are_verified_before_any_pack_is_fetched(tmp_path: Path, registry, hub_keys,  # noqa: ANN001
                                                            other_keys) -> None:  # noqa: ANN001
    b = _export(tmp_path, "b", make_model(tmp_path / "src", count=2, size=256 * 1024), "1.0.0", hub_keys)
    ref = parse_oci_ref(f"oci://{registry.host}/link/untrusted:1")
    assert run_ferry("push", b, str(ref)).returncode == 0
    client = RegistryClient(registry.host)
    with pytest.raises(VerificationError, match="not trusted"):
        fetch_signed(client, ref, tmp_path / "link", lambda _d: load_trust([other_keys.pub]),
                     FetchStats(str(ref)), Silent())
    assert client.calls == {"GET": 3}  # the OCI manifest, manifest.json and its signature file; no pack
    r = run_ferry("import", str(ref), "--trust", other_keys.pub, "--state", tmp_path / "edge")
    assert_clean_failure(r, code=1, contains="not trusted")
    assert not (tmp_path / "edge" / "models").exists()


def test_import_resumes_after_kill_9_without_fetching_verified_chunks_again(tmp_path: Path, registry,  # noqa: ANN001
                                                                          hub_keys) -> None:  # noqa: ANN001
    b = _export(tmp_path, "b", urandom_model(tmp_path / "src", 16), "1.0.0", hub_keys)
    ref = f"oci://{registry.host}/link/resume:1"
    assert run_ferry("push", b, ref).returncode == 0
    edge = tmp_path / "edge"
    env = {k: v for k, v in os.environ.items() if k != "FERRY_DEBUG"}
    # The real CLI, checkpointing every MiB (64 MiB in production) so that this 16 MiB file has
    # several checkpoints: the store records the verified chunks, nothing else does.
    child = ("import sys, importer.apply.models as m; m.CHECKPOINT_BYTES = 1 << 20; "
             "from ferry.cli import main; sys.argv[0] = 'ferry'; main()")
    proc = subprocess.Popen([sys.executable, "-c", child, "import", ref, "--trust", str(hub_keys.pub), "--state",
                             str(edge), "--limit-rate", "2M"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        written = 0
        while time.monotonic() < deadline and proc.poll() is None:
            parts = [p for p in (edge / "models").rglob(".part*") if p.is_file()] if (edge / "models").is_dir() else []
            written = max((p.stat().st_size for p in parts), default=0)
            if written >= 5 * MiB:  # at least 4 MiB of 16 verified, written and recorded
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the import ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (edge / "link").exists()  # no copy of the bundle: chunks go straight into the model
    code, doc, err = _import_json(ref, edge, hub_keys)
    assert code == 0, err
    f = doc["bundles"][0]["fetched"]
    assert f["chunksAlready"] > 0 and f["chunksFetched"] + f["chunksAlready"] == f["chunksNeeded"]
    stored = sum(p.stat().st_size for p in (b / "packs").iterdir())
    assert f["bytesFetched"] <= stored - 3 * MiB, f  # what was verified before the kill was not fetched again
    assert _model_bytes(edge) == (tmp_path / "src" / "model.safetensors").read_bytes()


# --------------------------------------------------------------------------- faults


@pytest.fixture
def proxied(tmp_path: Path, registry, hub_keys):  # noqa: ANN001, ANN201
    """A bundle pushed to the registry, and a fault proxy in front of it."""
    b = _export(tmp_path, "b", make_model(tmp_path / "src", count=6, size=512 * 1024), "1.0.0", hub_keys)
    repo = f"link/faults-{tmp_path.name[-12:].lower().replace('_', '-')}"
    r = run_ferry("push", b, f"oci://{registry.host}/{repo}:1", "--json")
    assert r.returncode == 0, r.stderr
    client = RegistryClient(registry.host)
    data, mt, _ = client.get_manifest(repo, "1")
    art = read_artifact(data, mt, "test")
    proxy = Proxy(registry.host)
    proxy.pack_digests = {d.digest for d in art.packs.values()}
    yield proxy, f"oci://{proxy.host}/{repo}:1", tmp_path
    proxy.stop()


def _nothing_applied(edge: Path) -> None:
    assert not (edge / "models").exists() or not any((edge / "models").rglob("*.safetensors"))


def test_a_truncated_answer_is_retried(proxied, hub_keys) -> None:  # noqa: ANN001
    proxy, ref, tmp = proxied
    proxy.set("truncate", times=1)
    code, doc, err = _import_json(ref, tmp / "edge", hub_keys)
    assert code == 0, err
    assert doc["bundles"][0]["fetched"]["retries"] == 1
    assert "truncated" in err or "connection" in err.lower() or "short" in err


def test_a_pack_range_truncated_while_fetched_ahead_is_fetched_again_from_the_first_chunk_not_verified(
        proxied, hub_keys) -> None:  # noqa: ANN001
    proxy, ref, tmp = proxied
    proxy.set("truncate-pack", times=1)
    code, doc, err = _import_json(ref, tmp / "edge", hub_keys)
    assert code == 0, err
    assert doc["bundles"][0]["fetched"]["retries"] == 1 and "retrying" in err
    spans = [tuple(map(int, r.removeprefix("bytes=").split("-"))) for _, p, r in proxy.requests
             if r and p.split("/blobs/")[-1] in proxy.pack_digests]
    assert len(spans) == 2, spans  # the pack in one range, read across every chunk; then its retry
    (start1, end1), (start2, end2) = spans
    assert start1 < start2 <= (start1 + end1 + 1) // 2 and end2 == end1  # what was verified is not fetched again
    assert _model_bytes(tmp / "edge") == (tmp / "src" / "model.safetensors").read_bytes()


def test_a_registry_that_ignores_range_still_works(proxied, hub_keys) -> None:  # noqa: ANN001
    proxy, ref, tmp = proxied
    proxy.set("ignore-range")
    code, doc, err = _import_json(ref, tmp / "edge", hub_keys)
    assert code == 0, err
    assert _model_bytes(tmp / "edge") == (tmp / "src" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("fault, code, words", [
    ("corrupt", 1, "do not match a signed chunk id"),
    ("lie-range", 1, "do not match a signed chunk id"),
    ("truncate", 2, "connection lost"),
    ("no-packs", 2, "not found"),
])
@pytest.mark.parametrize("command", ["import", "verify"])
def test_faults_that_persist_are_refused_with_one_line_and_nothing_applied(proxied, hub_keys, fault: str, code: int,  # noqa: ANN001
                                                                           words: str, command: str) -> None:
    proxy, ref, tmp = proxied
    proxy.set(fault)
    if command == "import":
        r = run_ferry("import", ref, "--trust", hub_keys.pub, "--state", tmp / "edge")
    else:  # verify streams through the same reader: the same line, no report of a "bad" bundle
        r = run_ferry("verify", ref, "--trust", hub_keys.pub, "--report", tmp / "report.json")
        assert not (tmp / "report.json").exists()
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("ferry: error")]
    assert len(errors) == 1 and words in errors[0] and "gave up after" in errors[0], r.stderr
    _nothing_applied(tmp / "edge")


def test_a_tag_that_moves_between_requests_is_read_once(proxied, registry, hub_keys) -> None:  # noqa: ANN001
    proxy, ref, tmp = proxied
    b2 = _export(tmp, "b2", make_model(tmp / "src2", count=2, size=128 * 1024, seed=7), "2.0.0", hub_keys)
    repo = ref.split("/", 3)[3].rsplit(":", 1)[0]
    assert run_ferry("push", b2, f"oci://{registry.host}/{repo}:2").returncode == 0
    proxy.other_tag = "2"
    proxy.set("flip-tag")
    code, doc, err = _import_json(ref, tmp / "edge", hub_keys)
    assert code == 0, err
    manifests = [p for m, p, _ in proxy.requests if "/manifests/" in p]
    assert len(manifests) == 1  # the tag is resolved once; everything after is by digest
    assert _model_bytes(tmp / "edge") == (tmp / "src" / "model.safetensors").read_bytes()


# --------------------------------------------------------------------------- each chunk checked once


def _count_checks(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Count every chunk check (:func:`manifests.chunks.decompress_chunk`) wherever the edge calls
    it: chunk id -> the modules that checked it."""
    import importer.content
    import importer.link
    import importer.medium
    import importer.store
    from manifests.chunks import decompress_chunk

    seen: dict[str, list[str]] = {}
    for module in (importer.content, importer.link, importer.medium, importer.store):
        def counting(stored: bytes, *, chunk_id: str, size: int, _where: str = module.__name__,
                     **kw: object) -> bytes:
            seen.setdefault(chunk_id, []).append(_where)
            return decompress_chunk(stored, chunk_id=chunk_id, size=size, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(module, "decompress_chunk", counting)
    return seen


def test_a_registry_import_checks_each_fetched_chunk_exactly_once(tmp_path: Path, registry, hub_keys,  # noqa: ANN001
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from importer.run import ImportOptions, run_import

    b = _export(tmp_path, "b", urandom_model(tmp_path / "src", 6), "1.0.0", hub_keys)
    ref = f"oci://{registry.host}/link/once:1"
    assert run_ferry("push", b, ref).returncode == 0
    carried = {c["id"] for c in json.loads((b / "manifest.json").read_text())["chunks"] if c.get("pack") is not None}
    assert len(carried) > 3

    seen = _count_checks(monkeypatch)
    report = run_import(ImportOptions(paths=[], trust=[hub_keys.pub], state=tmp_path / "edge",
                                      links=[parse_oci_ref(ref)]), Silent())
    assert report.exit_code == 0
    assert report.bundles[0].fetched["chunksFetched"] == len(carried)
    assert _model_bytes(tmp_path / "edge") == (tmp_path / "src" / "model.safetensors").read_bytes()
    # checked by the fetcher as it arrived (so that a bad answer could be retried), never again
    assert seen == {cid: ["importer.link"] for cid in carried}

    # from a medium, each chunk is still checked where it is read: by the import's pool
    seen.clear()
    report = run_import(ImportOptions(paths=[b], trust=[hub_keys.pub], state=tmp_path / "edge2"), Silent())
    assert report.exit_code == 0
    assert seen == {cid: ["importer.content"] for cid in carried}


@pytest.mark.parametrize("tamper", ["flip a byte", "another chunk's bytes", "one byte short"])
def test_a_chunk_changed_after_the_fetchers_check_never_reaches_a_file(tmp_path: Path, registry, hub_keys,  # noqa: ANN001
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       tamper: str) -> None:
    """The hand-off is in-process memory (a frozen Verified holding immutable bytes); should it
    ever be wrong (a bug between the check and the write), the chunk's id and size are compared
    when it is taken and the entry's BLAKE3 over what was written: the model is refused."""
    from importer.content import Verified
    from importer.link import RegistryPacks
    from importer.run import ImportOptions, run_import

    b = _export(tmp_path, "b", urandom_model(tmp_path / "src", 4), "1.0.0", hub_keys)
    ref = f"oci://{registry.host}/link/tamper:1"
    assert run_ferry("push", b, ref).returncode == 0
    real = RegistryPacks.read_stored
    handed: list[Verified] = []

    def tampered(self: RegistryPacks, chunk: Chunk) -> Verified:
        got = real(self, chunk)
        handed.append(got)
        if len(handed) != 2:
            return got
        if tamper == "flip a byte":
            return Verified(got.chunk_id, bytes([got.raw[0] ^ 1]) + got.raw[1:])
        if tamper == "one byte short":
            return Verified(got.chunk_id, got.raw[:-1])
        return handed[0]  # the first chunk again, in place of the second

    monkeypatch.setattr(RegistryPacks, "read_stored", tampered)
    report = run_import(ImportOptions(paths=[], trust=[hub_keys.pub], state=tmp_path / "edge",
                                      links=[parse_oci_ref(ref)]), Silent())
    assert len(handed) >= 2
    assert report.exit_code == 1
    (art,) = report.bundles[0].artifacts
    assert art.status.value == "failed", art
    assert "does not match" in art.reason or "handed over as chunk" in art.reason, art.reason
    _nothing_applied(tmp_path / "edge")


@pytest.mark.parametrize("volumes", [1, 3])
def test_verify_oci_streams_each_chunk_once_and_reports_as_for_the_folder(tmp_path: Path, registry,  # noqa: ANN001
                                                                          hub_keys,  # noqa: ANN001
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          volumes: int) -> None:
    from ferry.cli import app

    split = ("--max-volume-size", "18MiB") if volumes > 1 else ()
    b = _export(tmp_path, "b", urandom_model(tmp_path / "src", 6 if volumes == 1 else 40), "1.0.0", hub_keys, *split)
    assert json.loads((b / "manifest.json" if volumes == 1 else b / "vol-001" / "manifest.json")
                      .read_text())["volumes"] == volumes
    ref = f"oci://{registry.host}/link/verify:1"
    assert run_ferry("push", b, ref).returncode == 0
    mfile = b / "manifest.json" if volumes == 1 else b / "vol-001" / "manifest.json"
    carried = {c["id"] for c in json.loads(mfile.read_text())["chunks"] if c.get("pack") is not None}
    seen = _count_checks(monkeypatch)
    app(["verify", ref, "--trust", str(hub_keys.pub), "--report", str(tmp_path / "oci.json")], standalone_mode=False)
    # checked as it arrived, once: no copy of the packs is read back (importer.medium would check it again)
    assert seen == {cid: ["importer.link"] for cid in carried}

    r = run_ferry("verify", b, "--trust", hub_keys.pub, "--report", tmp_path / "folder.json")
    assert r.returncode == 0, r.stderr

    def comparable(doc: dict) -> dict:
        doc = {k: v for k, v in doc.items() if k not in ("inputs", "verifiedAt")}
        doc["bundles"] = [{k: v for k, v in x.items() if k != "locations"} for x in doc["bundles"]]
        return doc

    oci = json.loads((tmp_path / "oci.json").read_text())
    folder = json.loads((tmp_path / "folder.json").read_text())
    assert oci["verdict"] == "pass" and oci["inputs"] == [ref]
    assert comparable(oci) == comparable(folder)
