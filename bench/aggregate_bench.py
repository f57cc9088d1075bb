"""``ferry aggregate``'s FedAvg against reading the same files once (issue 17, "Speed and memory").

Writes ``--sites`` (default 8) update files of an fp16 safetensors model of ``--size-mib``
(default 1024; the issue's figure) split into tensors of ``--tensor-mib`` (default 64), then,
side by side, alternating, ``--runs`` times each (default 3; the median counts, the spread
is printed; a first untimed cat warms the page cache for both):

* ``cat`` of all the update files to /dev/null (the peer: reading every update once);
* :func:`bundler.aggregate.aggregate` on them in a child process (weighted by example counts),
  with that child's peak RSS (``VmHWM`` of /proc/self/status: ``ru_maxrss`` survives exec and
  would report the parent's peak from writing the files).

Prints the ratio (target <= 1.5), both sides' CPU time, the peak RSS beside the bound (256 MiB + the largest
tensor), the cores the aggregator's threads may use and the load average before and after (on
a shared machine the figures vary with it). Not a timed test: it prints figures. Needs
``sites x size`` free disk plus one model, and as much free memory for the page cache.

Usage: python bench/aggregate_bench.py [--size-mib 1024] [--tensor-mib 64] [--sites 8] [--runs 3] [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


def write_update(path: Path, size: int, tensor: int, seed: int) -> None:
    """An fp16 safetensors file of ``size`` bytes in tensors of ``tensor`` bytes, values ~N(0, 1)."""
    count = max(1, size // tensor)
    header: dict[str, object] = {}
    for i in range(count):
        header[f"layer.{i}.weight"] = {"dtype": "F16", "shape": [tensor // 2], "data_offsets": [i * tensor, (i + 1) * tensor]}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _ in range(count):
            f.write(rng.standard_normal(tensor // 2, dtype=np.float32).astype(np.float16).tobytes())


CHILD = """
import resource, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from bundler.aggregate import aggregate
files = {files!r}
t = time.perf_counter()
aggregate([(f"site-{{i}}", Path(p), 100 * (i + 1)) for i, p in enumerate(files)], Path({out!r}))
seconds = time.perf_counter() - t
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
use = resource.getrusage(resource.RUSAGE_SELF)
print(seconds, hwm * 1024, use.ru_utime + use.ru_stime)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--tensor-mib", type=int, default=64)
    ap.add_argument("--sites", type=int, default=8)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="ferry-agg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        files = []
        for i in range(args.sites):
            p = work / f"site-{i}.safetensors"
            if not p.exists():
                write_update(p, args.size_mib * MiB, args.tensor_mib * MiB, i)
            files.append(str(p))
        cat_s, agg_s, rss, cat_cpu, agg_cpu = [], [], 0, [], []
        load_before = os.getloadavg()
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)  # warm the cache
        for _ in range(args.runs):
            t, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
            cat_s.append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cat_cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            out = work / "out.safetensors"
            r = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), files=files, out=str(out))],
                               capture_output=True, text=True, check=True)
            seconds, peak, cpu = r.stdout.split()
            agg_s.append(float(seconds))
            agg_cpu.append(float(cpu))
            rss = max(rss, int(peak))
            out.unlink()
        bound = 256 * MiB + args.tensor_mib * MiB
        print(f"{args.sites} updates of a {args.size_mib} MiB fp16 model ({args.tensor_mib} MiB tensors)")
        cat_m, agg_m = statistics.median(cat_s), statistics.median(agg_s)
        ratios = sorted(a / c for a, c in zip(agg_s, cat_s))
        print(f"cat to /dev/null: median {cat_m:.2f} s ({min(cat_s):.2f}-{max(cat_s):.2f})   "
              f"ferry aggregate (FedAvg): median {agg_m:.2f} s ({min(agg_s):.2f}-{max(agg_s):.2f})")
        print(f"ratio of medians {agg_m / cat_m:.2f}, per pair {ratios[0]:.2f}-{ratios[-1]:.2f} (target <= 1.5)")
        print(f"CPU time (user + system, all threads; steadier than wall time on a busy machine): cat median "
              f"{statistics.median(cat_cpu):.2f} s, aggregate median {statistics.median(agg_cpu):.2f} s")
        print(f"aggregate peak RSS {rss / MiB:.0f} MiB (bound 256 MiB + largest tensor = {bound / MiB:.0f} MiB)")
        load = " ".join(f"{x:.2f}" for x in load_before), " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"{len(os.sched_getaffinity(0))} core(s); load average (1, 5, 15 min) before {load[0]}, after {load[1]}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
