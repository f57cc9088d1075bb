"""Cost of many chunks (issue 19, goal 1): manifest bytes per chunk and import time per million.

100 GB of 64 KiB chunks would be 1.6 M chunk ids; ferry keeps its chunks at 1-16 MiB inside
tensors and cuts at tensor boundaries, so a model has about 256 chunks per GiB plus one per
tensor, but the manifest, the receipt and the edge's chunk index must still stay compact and
fast when a bundle has many chunks. This writes a bundle of one model cut into ``--chunks``
fixed-size chunks (the test suite's second writer, ``tests/support/bundles.py``), imports it
with the real CLI into a fresh edge state, and prints manifest bytes per chunk, receipt bytes
per chunk, and the import's wall time and CPU seconds scaled to one million chunks. Each
import runs ``--repeat`` times (median and spread printed): the machine may be shared.

Usage: python bench/index_bench.py [--chunks 50000] [--chunk-size 1024] [--repeat 3] [--dir /tmp/ferry-index]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.bundles import model, write_bundle  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=50_000)
    ap.add_argument("--chunk-size", type=int, default=1024, help="bytes per chunk (small: the count is measured)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ferry-index"))
    args = ap.parse_args()
    work = args.dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        subprocess.run([sys.executable, "-m", "ferry", "keys", "generate", "hub", "--out", work / "keys"],
                       check=True, capture_output=True)
        data = os.urandom(args.chunks * args.chunk_size)
        write_bundle(work / "b", [work / "keys" / "hub.key"], [model("many", "1.0.0", {"weights.bin": data})],
                     chunk_size=args.chunk_size)
        manifest = (work / "b" / "manifest.json").stat().st_size
        walls, cpus = [], []
        for i in range(args.repeat):
            edge = work / f"edge-{i}"
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ferry", "import", work / "b", "--trust", work / "keys" / "hub.pub",
                            "--state", edge], check=True, capture_output=True)
            walls.append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        subprocess.run([sys.executable, "-m", "ferry", "receipt", "--state", work / "edge-0", "--out",
                        work / "receipt.json"], check=True, capture_output=True)
        receipt = (work / "receipt.json").stat().st_size
        scale = 1_000_000 / args.chunks
        print(f"{args.chunks:,} chunks of {args.chunk_size} B: manifest {manifest / args.chunks:.0f} B per chunk, "
              f"receipt {receipt / args.chunks:.0f} B per chunk")
        print(f"import per million chunks: wall median {statistics.median(walls) * scale:.0f} s "
              f"(spread {min(walls) * scale:.0f}-{max(walls) * scale:.0f} s), CPU median "
              f"{statistics.median(cpus) * scale:.0f} s over {args.repeat} runs")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
