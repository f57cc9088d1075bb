"""ferry export end to end through the real CLI: the bundle verifies and reads back byte for byte."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from bundler.export import check_space
from manifests.bundle import MANIFEST_NAME
from manifests.errors import FerryError
from manifests.receipt import Receipt
from tests.support.common import assert_clean_failure, run_ferry
from tests.support.export import (MiB, assert_failure_after_progress, dir_size, make_model, read_back, tensors,
                                  write_safetensors, write_spec)


def export(tmp_path: Path, spec: Path, keys, out: Path, *extra: object):  # noqa: ANN001, ANN201
    r = run_ferry("export", spec, "--out", out, "--key", keys.key, "--state", tmp_path / "state", "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_export_reads_back_byte_for_byte(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    make_model(tmp_path / "m" / "sentiment", count=5, size=3 * MiB)
    (tmp_path / "m" / "sentiment" / "sub").mkdir()
    (tmp_path / "m" / "sentiment" / "sub" / "empty.txt").write_bytes(b"")
    (tmp_path / "single.safetensors").write_bytes(b"not really safetensors")
    spec = write_spec(tmp_path / "bundle.yaml", [("sentiment", "1.2.0", "m/sentiment"),
                                                 ("tiny", "0.1.0", str(tmp_path / "single.safetensors"))])
    out = tmp_path / "out"
    doc = export(tmp_path, spec, hub_keys, out)
    manifest, files = read_back(out, hub_keys.pub)
    assert doc["digest"].startswith("sha256:") and doc["bundle"]["sequence"] == 1
    assert [(a.kind, a.name, a.version) for a in manifest.artifacts] == [("model", "sentiment", "1.2.0"),
                                                                        ("model", "tiny", "0.1.0")]
    src = tmp_path / "m" / "sentiment"
    assert files == {
        "model/sentiment/config.json": (src / "config.json").read_bytes(),
        "model/sentiment/model.safetensors": (src / "model.safetensors").read_bytes(),
        "model/sentiment/sub/empty.txt": b"",
        "model/tiny/single.safetensors": b"not really safetensors",
    }
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "manifest.json.sig", "packs"]
    assert not list(out.rglob("*.tmp"))


def test_sequence_is_next_per_channel(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    make_model(tmp_path / "m", count=1, size=4096)
    spec = write_spec(tmp_path / "bundle.yaml", [("a", "1.0.0", "m")])
    first = export(tmp_path, spec, hub_keys, tmp_path / "o1")
    second = export(tmp_path, spec, hub_keys, tmp_path / "o2")
    other = export(tmp_path, write_spec(tmp_path / "b2.yaml", [("a", "1.0.0", "m")], channel="beta"),
                   hub_keys, tmp_path / "o3")
    assert [d["bundle"]["sequence"] for d in (first, second, other)] == [1, 2, 1]
    assert first["bundle"]["id"] != second["bundle"]["id"]


def test_shared_chunks_are_stored_once(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    make_model(tmp_path / "a", count=4, size=2 * MiB, seed=7)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "extra.txt").write_text("only in b")
    spec = write_spec(tmp_path / "bundle.yaml", [("a", "1.0.0", "a"), ("b", "1.0.0", "b")])
    out = tmp_path / "out"
    doc = export(tmp_path, spec, hub_keys, out)
    manifest, files = read_back(out, hub_keys.pub)
    a, b = manifest.artifact("model", "a"), manifest.artifact("model", "b")
    assert {c for e in a.entries for c in e.chunks} <= {c for e in b.entries for c in e.chunks}
    assert doc["storedBytes"] < 1.1 * a.size  # b's copy costs nothing
    assert files["model/b/model.safetensors"] == (tmp_path / "a" / "model.safetensors").read_bytes()


def test_delta_bundle_leaves_out_what_the_edge_holds(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    ts = tensors(10, 2 * MiB, seed=11)
    write_safetensors(tmp_path / "v1" / "model.safetensors", ts)
    full = export(tmp_path, write_spec(tmp_path / "v1.yaml", [("m", "1.0.0", "v1")]), hub_keys, tmp_path / "o1")
    m1, _ = read_back(tmp_path / "o1", hub_keys.pub)
    receipt = tmp_path / "receipt.json"
    receipt.write_bytes(Receipt(site="edge-1", created="2026-01-01T00:00:00Z",
                                chunks=tuple(sorted(c.id for c in m1.chunks))).to_bytes())
    changed = list(ts)
    changed[3] = (changed[3][0], random.Random(1).randbytes(2 * MiB))
    write_safetensors(tmp_path / "v2" / "model.safetensors", changed)
    delta = export(tmp_path, write_spec(tmp_path / "v2.yaml", [("m", "1.1.0", "v2")]), hub_keys, tmp_path / "o2",
                   "--since", receipt)
    m2, files = read_back(tmp_path / "o2", hub_keys.pub)
    assert m2.base is not None and m2.base.site == "edge-1"
    held = {c.id for c in m1.chunks}
    assert all(not c.carried for c in m2.chunks if c.id in held)
    assert all(c.carried for c in m2.chunks if c.id not in held)
    assert delta["storedBytes"] <= 0.15 * full["storedBytes"]
    entry = m2.artifact("model", "m").entries[0]
    assert sum(m2.chunk(c).size for c in entry.chunks) == entry.size


def test_volumes_stay_within_the_limit_and_verify_alone(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    make_model(tmp_path / "m", count=12, size=4 * MiB, seed=3)
    spec = write_spec(tmp_path / "bundle.yaml", [("big", "1.0.0", "m")])
    out = tmp_path / "out"
    limit = 20 * MiB
    doc = export(tmp_path, spec, hub_keys, out, "--max-volume-size", "20MiB")
    vols = sorted(out.iterdir())
    assert [v.name for v in vols] == [f"vol-{i:03d}" for i in range(1, len(vols) + 1)] and len(vols) >= 3
    assert doc["volumes"] == [str(v) for v in vols]
    manifests = set()
    for v in vols:
        assert dir_size(v) <= limit
        manifests.add((v / MANIFEST_NAME).read_bytes())
        m, _ = read_back(v, hub_keys.pub)  # each volume verifies on its own
        assert m.volumes == len(vols)
    assert len(manifests) == 1
    _, files = read_back(out, hub_keys.pub)
    assert files["model/big/model.safetensors"] == (tmp_path / "m" / "model.safetensors").read_bytes()


def test_too_small_volume_is_refused(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    make_model(tmp_path / "m", count=1, size=4096)
    spec = write_spec(tmp_path / "bundle.yaml", [("a", "1.0.0", "m")])
    r = run_ferry("export", spec, "--out", tmp_path / "o", "--key", hub_keys.key, "--state", tmp_path / "s",
                  "--max-volume-size", "1MiB")
    assert_clean_failure(r, code=2, contains="--max-volume-size must be at least")
    r = run_ferry("export", spec, "--out", tmp_path / "o", "--key", hub_keys.key, "--state", tmp_path / "s",
                  "--max-volume-size", "lots")
    assert_clean_failure(r, code=2, contains="not a size")


def test_out_folder_must_be_new_or_empty(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    make_model(tmp_path / "m", count=1, size=4096)
    spec = write_spec(tmp_path / "bundle.yaml", [("a", "1.0.0", "m")])
    export(tmp_path, spec, hub_keys, tmp_path / "o")
    r = run_ferry("export", spec, "--out", tmp_path / "o", "--key", hub_keys.key, "--state", tmp_path / "state")
    assert_clean_failure(r, code=2, contains="already holds a finished bundle")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "holiday.jpg").write_bytes(b"x")
    r = run_ferry("export", spec, "--out", tmp_path / "busy", "--key", hub_keys.key, "--state", tmp_path / "state")
    assert_clean_failure(r, code=2, contains="not empty")
    assert (tmp_path / "busy" / "holiday.jpg").read_bytes() == b"x"


def test_free_space_is_checked_with_the_figures() -> None:
    check_space(10, 10, "/media/usb")
    with pytest.raises(FerryError, match=r"need 2.0 GiB, have 1.0 GiB on /media/usb"):
        check_space(2 << 30, 1 << 30, "/media/usb")


def test_free_space_refusal_on_a_small_filesystem(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here; the pure check above covers the rule")
    try:
        make_model(tmp_path / "m", count=6, size=2 * MiB)
        spec = write_spec(tmp_path / "bundle.yaml", [("a", "1.0.0", "m")])
        r = run_ferry("export", spec, "--out", mnt / "o", "--key", hub_keys.key, "--state", tmp_path / "s")
        assert_clean_failure(r, code=2, contains="not enough free space: need")
        assert str(mnt) in r.stderr
        assert not (mnt / "o").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_unchanged_files_use_the_chunk_cache(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    make_model(tmp_path / "m", count=3, size=2 * MiB)
    spec = write_spec(tmp_path / "bundle.yaml", [("a", "1.0.0", "m")])
    export(tmp_path, spec, hub_keys, tmp_path / "o1")
    assert (tmp_path / "state" / "chunk-cache.sqlite").exists()
    export(tmp_path, spec, hub_keys, tmp_path / "o2")
    m1, f1 = read_back(tmp_path / "o1", hub_keys.pub)
    m2, f2 = read_back(tmp_path / "o2", hub_keys.pub)
    assert f1 == f2 and m1.artifacts == m2.artifacts


def test_warns_for_images_the_bundle_does_not_carry(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    from tests.support.common import SAMPLES

    spec = tmp_path / "bundle.yaml"
    spec.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata:\n  name: app-only\nspec:\n  manifests:\n"
                    "    - name: sentiment-app\n      version: 1.2.0\n"
                    f"      path: {SAMPLES / 'kubestellar/sentiment'}\n")
    r = run_ferry("export", spec, "--out", tmp_path / "o", "--key", hub_keys.key, "--state", tmp_path / "s", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert any("sentiment-server" in w and "does not carry" in w for w in doc["warnings"])
    assert "warning:" in r.stderr and "sentiment-server" in r.stderr
    manifest, files = read_back(tmp_path / "o", hub_keys.pub)
    assert manifest.artifacts[0].kind == "manifests" and manifest.artifacts[0].images


def test_sample_spec_with_image_model_and_manifests(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    from tests.support.common import SAMPLES

    doc = export(tmp_path, SAMPLES / "bundle.yaml", hub_keys, tmp_path / "o")
    assert doc["warnings"] == []
    manifest, files = read_back(tmp_path / "o", hub_keys.pub)
    assert [a.kind for a in manifest.artifacts] == ["image", "model", "manifests"]
    assert files["model/sentiment/model.safetensors"] == (SAMPLES / "models/sentiment/model.safetensors").read_bytes()


def test_cached_chunks_are_checked_against_the_bytes(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    """A cache entry whose key matches the file but not its bytes (same path, size, mtime and
    inode, the ctime too: a file system that keeps none, a clock set back): the cache is
    caught, never trusted."""
    import os
    import sqlite3

    make_model(tmp_path / "m", count=3, size=2 * MiB, seed=1)
    spec = write_spec(tmp_path / "bundle.yaml", [("a", "1.0.0", "m")])
    export(tmp_path, spec, hub_keys, tmp_path / "o1")
    target = tmp_path / "m" / "model.safetensors"
    st = target.stat()
    with open(target, "r+b") as f:
        f.seek(st.st_size - 100)
        f.write(b"\xff" * 100)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    db = sqlite3.connect(tmp_path / "state" / "chunk-cache.sqlite")  # the ctime moved: give the entry the new one
    with db:
        assert db.execute("UPDATE file_versions SET ctime_ns=? WHERE path=?",
                          (target.stat().st_ctime_ns, str(target))).rowcount == 1
    db.close()
    args = ("export", spec, "--out", tmp_path / "o2", "--key", hub_keys.key, "--state", tmp_path / "state")
    assert_failure_after_progress(run_ferry(*args), "changed since ferry last chunked it")
    assert not (tmp_path / "o2" / MANIFEST_NAME).exists()
    r = run_ferry(*args)  # the same command again: the stale entry is gone, the file is cut anew
    assert r.returncode == 0, r.stderr
    _, files = read_back(tmp_path / "o2", hub_keys.pub)
    assert files["model/a/model.safetensors"] == target.read_bytes()


def test_model_folder_rules(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    import os

    make_model(tmp_path / "m", count=1, size=4096)
    (tmp_path / "m" / "alias.json").symlink_to("config.json")  # inside the folder: carried as a file
    spec = write_spec(tmp_path / "bundle.yaml", [("a", "1.0.0", "m")])
    export(tmp_path, spec, hub_keys, tmp_path / "o")
    _, files = read_back(tmp_path / "o", hub_keys.pub)
    assert files["model/a/alias.json"] == (tmp_path / "m" / "config.json").read_bytes()

    os.mkfifo(tmp_path / "m" / "pipe")
    r = run_ferry("export", spec, "--out", tmp_path / "o2", "--key", hub_keys.key, "--state", tmp_path / "s")
    assert_clean_failure(r, code=2, contains="not a regular file")
    (tmp_path / "m" / "pipe").unlink()
    (tmp_path / "m" / "Config.json").write_text("{}")
    r = run_ferry("export", spec, "--out", tmp_path / "o2", "--key", hub_keys.key, "--state", tmp_path / "s")
    assert_clean_failure(r, code=2, contains="duplicate path")
    assert not (tmp_path / "o2").exists()


def test_paths_that_look_like_markup_are_printed_as_text(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    make_model(tmp_path / "[red]m[/]", count=1, size=4096)
    spec = write_spec(tmp_path / "bundle.yaml", [("a", "1.0.0", "'[red]m[/]'")])
    r = run_ferry("export", spec, "--out", tmp_path / "o[/]", "--key", hub_keys.key, "--state", tmp_path / "s")
    assert r.returncode == 0, r.stderr
    assert "o[/]" in r.stdout
    read_back(tmp_path / "o[/]", hub_keys.pub)


def test_the_bundle_does_not_depend_on_the_core_count(tmp_path: Path, hub_keys, monkeypatch) -> None:  # noqa: ANN001
    """Where cores are left beside the pool, the whole-file hash runs on a thread of its own
    (bundler.chunker, Cutter.file): chunks, packs and entry hashes are the same bytes as on one core."""
    from bundler import export as export_mod
    from manifests import budget
    from manifests.progress import Silent

    write_safetensors(tmp_path / "m" / "model.safetensors",
                      tensors(3, 9 * MiB, seed=11) + [("norm", b"\x02" * 4096)] + tensors(2, 5 * MiB, seed=12))
    spec = write_spec(tmp_path / "bundle.yaml", [("m", "1.0.0", "m")])
    bundles = {}
    for cpus in (1, 16):
        monkeypatch.setattr(budget, "usable_cpus", lambda cpus=cpus: cpus)
        out = tmp_path / f"out{cpus}"
        result = export_mod.export(export_mod.ExportOptions(spec=spec, out=out, keys=(hub_keys.key,),
                                                            state=tmp_path / f"state{cpus}"), Silent())
        bundles[cpus] = (result.manifest, {p.name: p.read_bytes() for p in (out / "packs").iterdir()})
    (one, packs_one), (many, packs_many) = bundles[1], bundles[16]
    assert one.chunks == many.chunks and one.packs == many.packs and one.artifacts == many.artifacts
    assert packs_one == packs_many
    _, files = read_back(tmp_path / "out16", hub_keys.pub)
    assert files["model/m/model.safetensors"] == (tmp_path / "m" / "model.safetensors").read_bytes()


def test_tensor_data_is_compressed_at_the_tensor_level(tmp_path: Path, hub_keys) -> None:  # noqa: ANN001
    """Each stored frame is zstd at manifests.chunks.TENSOR_LEVEL (1) for chunks of tensor data
    and DEFAULT_LEVEL (3) for the header and other files, the same frames when the chunks come
    back through the chunk cache (a second export), and level 1 stores fp16 weights no larger."""
    import numpy as np
    import zstandard

    from manifests.chunks import DEFAULT_LEVEL, TENSOR_LEVEL

    rng = np.random.default_rng(5)
    weights = [(f"layer.{i}.weight", rng.normal(0, 0.02, n).astype(np.float16).tobytes())
               for i, n in enumerate((3 * MiB, 256 * 1024, 2 * MiB))]
    path = tmp_path / "m" / "model.safetensors"
    write_safetensors(path, weights)
    data_start = path.stat().st_size - sum(len(w) for _, w in weights)
    words = [f"tok{i}" for i in range(4000)]
    text = json.dumps({"vocab": {w: i for i, w in enumerate(words)},
                       "merges": [f"{random.Random(i).choice(words)} {w}" for i, w in enumerate(words * 20)]})
    (tmp_path / "m" / "tokenizer.json").write_text(text)
    spec = write_spec(tmp_path / "bundle.yaml", [("m", "1.0.0", "m")])
    frames: dict[str, bytes] = {}
    packs = []
    for out in (tmp_path / "o1", tmp_path / "o2"):  # the second reads its chunks back through the chunk cache
        export(tmp_path, spec, hub_keys, out)
        manifest, files = read_back(out, hub_keys.pub)
        assert files["model/m/model.safetensors"] == path.read_bytes()
        packs.append({p.name: p.read_bytes() for p in (out / "packs").iterdir()})
        for c in manifest.chunks:
            assert c.pack is not None and c.offset is not None and c.stored is not None
            frames[c.id] = packs[-1][manifest.packs[c.pack].name][c.offset:c.offset + c.stored]
    assert packs[0] == packs[1]
    source = {"model.safetensors": path.read_bytes(), "tokenizer.json": text.encode()}
    levels: dict[int, list[tuple[int, int]]] = {TENSOR_LEVEL: [], DEFAULT_LEVEL: []}
    for e in manifest.artifacts[0].entries:
        offset = 0
        for cid in e.chunks:
            raw = source[e.path or ""][offset:offset + manifest.chunk(cid).size]
            level = TENSOR_LEVEL if e.path == "model.safetensors" and offset >= data_start else DEFAULT_LEVEL
            cctx = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
            assert frames[cid] == cctx.compress(raw), (e.path, offset, level)
            other = zstandard.ZstdCompressor(level=TENSOR_LEVEL + DEFAULT_LEVEL - level, write_content_size=True,
                                             write_checksum=False).compress(raw)
            levels[level].append((len(frames[cid]), len(other)))
            offset += len(raw)
    assert len(levels[TENSOR_LEVEL]) >= 3 and levels[DEFAULT_LEVEL]  # three tensors; the header and the text
    assert sum(s for s, _ in levels[TENSOR_LEVEL]) <= sum(o for _, o in levels[TENSOR_LEVEL])  # weights: no larger
    assert sum(s for s, _ in levels[DEFAULT_LEVEL]) < sum(o for _, o in levels[DEFAULT_LEVEL])  # text: level 3 smaller
