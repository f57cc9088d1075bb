"""Serve benchmark: ``ferry serve`` against ``python -m http.server`` on the same blob, side by side.

Prints the figures issue 14 sets as goals:
  * total rate of N concurrent pulls (default 16) of one big blob through ``ferry serve``
    / the same through ``python -m http.server`` serving the layout's blob folder   (>= 1/1.5)
  * peak RSS of the ``ferry serve`` process (VmHWM)                                  (< 128 MiB)
Every pull is checked byte-identical (sha256). Loopback only.

Usage: python bench/serve_bench.py [--mib 1024] [--pulls 16] [--dir /tmp/ferry-serve-bench] [--rounds 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

MiB = 1 << 20


def make_layout(root: Path, mib: int) -> tuple[str, int]:
    """An OCI layout with one image whose single layer is ``mib`` MiB of random bytes."""
    blobs = root / "oci" / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    sha, tmp = hashlib.sha256(), blobs / "tmp"
    with open(tmp, "wb") as f:
        for _ in range(mib):
            data = os.urandom(MiB)
            sha.update(data)
            f.write(data)
    layer = "sha256:" + sha.hexdigest()
    tmp.rename(blobs / layer.split(":")[1])

    def put(doc: dict) -> dict:
        data = json.dumps(doc).encode()
        d = hashlib.sha256(data).hexdigest()
        (blobs / d).write_bytes(data)
        return {"digest": f"sha256:{d}", "size": len(data)}

    config = put({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer]}})
    manifest = put({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer,
                                "size": mib * MiB}]})
    (root / "oci" / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "oci" / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
         "annotations": {"org.opencontainers.image.ref.name": "bench/model:1"}}]}))
    return layer, mib * MiB


def pull_all(url: str, pulls: int, digest: str) -> float:
    """Seconds for ``pulls`` concurrent GETs of ``url``; each must hash to ``digest``."""
    bad: list[str] = []

    def one() -> None:
        sha = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=600) as resp:
            while chunk := resp.read(MiB):
                sha.update(chunk)
        if "sha256:" + sha.hexdigest() != digest:
            bad.append(url)

    threads = [threading.Thread(target=one) for _ in range(pulls)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    if bad:
        sys.exit(f"{len(bad)} pulls were not byte-identical: {bad[0]}")
    return took


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=int(os.environ.get("FERRY_BENCH_MIB", "1024")))
    ap.add_argument("--pulls", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ferry-serve-bench"))
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    digest, size = make_layout(args.dir, args.mib)
    ferry = subprocess.Popen([sys.executable, "-m", "ferry", "serve", "--state", str(args.dir),
                              "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    assert ferry.stdout is not None
    ferry_url = ferry.stdout.readline().split(" at ", 1)[1].split()[0]
    static = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1",
                               "--directory", str(args.dir / "oci" / "blobs" / "sha256")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert static.stdout is not None
    static_port = static.stdout.readline().split("port ")[1].split()[0]
    try:
        urllib.request.urlopen(f"{ferry_url}/v2/bench/model/blobs/{digest}", timeout=600).read(1)  # first hash
        best_ferry = best_static = float("inf")
        for _ in range(args.rounds):
            best_static = min(best_static, pull_all(
                f"http://127.0.0.1:{static_port}/{digest.split(':')[1]}", args.pulls, digest))
            best_ferry = min(best_ferry, pull_all(f"{ferry_url}/v2/bench/model/blobs/{digest}", args.pulls, digest))
        rss = peak_rss_kib(ferry.pid)
    finally:
        ferry.terminate()
        static.terminate()
        ferry.wait()
        static.wait()
    total = size * args.pulls / MiB
    print(f"{args.pulls} concurrent pulls of a {args.mib} MiB blob, byte-identical")
    print(f"  http.server : {best_static:7.2f} s  {total / best_static:8.1f} MiB/s")
    print(f"  ferry serve : {best_ferry:7.2f} s  {total / best_ferry:8.1f} MiB/s")
    print(f"  time ratio ferry/static: {best_ferry / best_static:.2f} (goal <= 1.5)")
    print(f"  ferry serve peak RSS: {rss / 1024:.1f} MiB (goal < 128)")
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
