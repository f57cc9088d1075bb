"""Helpers for the export tests: real safetensors files, specs, and reading a bundle back."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from importer.content import stream_entry
from importer.medium import PackReader, find_bundles
from manifests.bundle import open_manifest
from manifests.model import Manifest
from manifests.trust import load_trust

MiB = 1 << 20


def write_safetensors(path: Path, tensors: list[tuple[str, bytes]]) -> None:
    """A real safetensors file: 8-byte LE header length, JSON header, raw data."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, data in tensors:
        header[name] = {"dtype": "F16", "shape": [len(data) // 2], "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _, data in tensors:
            f.write(data)


def tensors(count: int, size: int, seed: int = 0) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    return [(f"layer.{i}.weight", rng.randbytes(size)) for i in range(count)]


def make_model(folder: Path, count: int = 6, size: int = 2 * MiB, seed: int = 0) -> Path:
    write_safetensors(folder / "model.safetensors", tensors(count, size, seed))
    (folder / "config.json").write_text(json.dumps({"hidden": 128, "seed": seed}))
    return folder


def write_spec(path: Path, models: list[tuple[str, str, str]], name: str = "edge-ai", channel: str = "stable") -> Path:
    lines = ["apiVersion: ferry/v1", "kind: Bundle", "metadata:", f"  name: {name}", f"  channel: {channel}",
             "spec:", "  models:"]
    for n, v, p in models:
        lines += [f"    - name: {n}", f"      version: {v}", f"      path: {p}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_back(out: Path, pub: Path, held: dict[str, bytes] | None = None) -> tuple[Manifest, dict[str, bytes]]:
    """Verify every bundle under ``out`` and rebuild every file whose chunks it carries.

    Returns the manifest and {"kind/name/path": bytes}. Asserts one bundle is found. Chunks in
    packs that are absent (other volumes) are skipped, so a single volume can be checked alone.
    """
    bundles = find_bundles([out])
    assert len(bundles) == 1, bundles
    b = bundles[0]
    signed = open_manifest(b.manifest_bytes, b.signature_bytes, load_trust([pub]))
    m = signed.manifest
    files: dict[str, bytes] = {}
    with PackReader(m, b.volume_dirs) as reader:
        for c in m.chunks:
            if c.carried and reader.has(c):
                reader.read_chunk(c)
        for a in m.artifacts:
            for e in a.entries:
                if all(reader.has(m.chunk(cid)) for cid in e.chunks):
                    files[f"{a.kind}/{a.name}/{e.path or e.digest}"] = b"".join(stream_entry(e, m, reader))
    return m, files


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def urandom_model(folder: Path, mib: int) -> Path:
    write_safetensors(folder / "model.safetensors", [(f"t{i}", os.urandom(MiB)) for i in range(mib)])
    return folder


def assert_failure_after_progress(result, contains: str) -> None:  # noqa: ANN001
    """A failure found mid-export: progress lines may precede it, then exactly one error line."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("ferry: error:") and contains in lines[-1], result.stderr
    assert sum(line.startswith("ferry: error") for line in lines) == 1, result.stderr


def kill_when(cmd: list[str], reached: Callable[[], bool], timeout: float = 120) -> int:
    """Start ``cmd`` (output discarded, no key passphrase in its environment), kill -9 it once
    ``reached()`` is true; returns its exit status: ``-signal.SIGKILL`` if it was killed, its
    own status if it finished first."""
    env = {k: v for k, v in os.environ.items() if k not in ("FERRY_KEY_PASSPHRASE", "FERRY_DEBUG")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if reached():
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.001)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return proc.returncode
