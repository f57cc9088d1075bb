"""Import benchmark: ferry import against ``zstd -d | tar -x`` + ``sha256sum``, side by side in one run.

Prints the ratios issues 4 and 19 set as goals:
  * time of ``ferry import`` (fresh state) + ``sync`` /
    time of ``zstd -d | tar -x`` + ``sha256sum`` of every file + ``sync``      (<= 0.5, issue 19 goal 3;
                                                                              issue 4 asked <= 1.25)
  * peak RSS of the import process                                           (<= 256 MiB)
  * time of re-importing the same bundle / first import                      (<= 0.15)

Usage: python bench/import_bench.py [--mib 1024] [--dir /tmp/ferry-import-bench] [--rounds 2] [--keep]
(FERRY_BENCH_MIB also sets the size). The model is the export bench's: fp16 safetensors written
by hand (random bytes), exported once with the real ``ferry export``. With ``--rounds`` > 1 both
sides run that many times, alternating; the median of each counts, with the spread (the machine is shared).
The import publishes the model into EDGE/oci as shipped: put ``--dir`` on XFS or btrfs to measure
it with reflinks, on ext4 the modelcar is a copy (bench/publish_bench.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
MiB = 1 << 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=int(os.environ.get("FERRY_BENCH_MIB", "1024")))
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ferry-import-bench"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    import export_bench as eb  # the model generator and timing helpers (bench/ is sys.path[0])
    work = a.dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        layout = eb.model_layout(a.mib * MiB)
        eb.make_model(work / "v1", layout)
        subprocess.run(eb.ferry("keys", "generate", "hub", "--out", work / "keys"), check=True, capture_output=True)
        s1 = eb.spec(work / "v1.yaml", work / "v1", "1.0.0")
        subprocess.run(eb.ferry("export", s1, "--out", work / "bundle", "--key", work / "keys" / "hub.key",
                                "--state", work / "hub"), check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["sh", "-c", f"tar -cf - -C {work} v1 | zstd -3 -T0 -q > {work}/v1.tar.zst"], check=True)
        subprocess.run(["sync"], check=True)

        baseline = (f"mkdir -p {work}/untar && zstd -d -c -q {work}/v1.tar.zst | tar -x -C {work}/untar && "
                    f"find {work}/untar -type f -print0 | xargs -0 sha256sum > /dev/null && sync")
        t_base: list[float] = []
        t_import: list[float] = []
        rss = 0
        for _ in range(a.rounds):
            shutil.rmtree(work / "untar", ignore_errors=True)
            shutil.rmtree(work / "edge", ignore_errors=True)
            subprocess.run(["sync"], check=True)
            t, _, rc = eb.run(["sh", "-c", baseline])
            assert rc == 0, "baseline failed"
            t_base.append(t)
            shutil.rmtree(work / "untar", ignore_errors=True)
            subprocess.run(["sync"], check=True)
            t, peak, rc = eb.run(eb.ferry("import", work / "bundle", "--trust", work / "keys" / "hub.pub",
                                          "--state", work / "edge"), stdout=subprocess.DEVNULL)
            assert rc == 0, "ferry import failed"
            t_sync, _, _ = eb.run(["sync"])
            t_import.append(t + t_sync)
            rss = max(rss, peak)
        t_agains = []
        for _ in range(a.rounds):
            t, rss_again, rc = eb.run(eb.ferry("import", work / "bundle", "--trust", work / "keys" / "hub.pub",
                                               "--state", work / "edge"), stdout=subprocess.DEVNULL)
            assert rc == 0, "re-import failed"
            t_agains.append(t)
            rss = max(rss, rss_again)
        t_again = statistics.median(t_agains)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    base, first = statistics.median(t_base), statistics.median(t_import)
    print(f"model: {a.mib} MiB fp16 safetensors in {len(layout)} shard(s); {os.cpu_count()} cores; "
          f"median of {a.rounds} (spread in brackets)")
    print(f"zstd -d | tar -x + sha256sum + sync : {base:7.2f} s   ({min(t_base):.2f}-{max(t_base):.2f}: "
          f"{', '.join(f'{t:.2f}' for t in t_base)})")
    print(f"ferry import (fresh state) + sync   : {first:7.2f} s   ({min(t_import):.2f}-{max(t_import):.2f}: "
          f"{', '.join(f'{t:.2f}' for t in t_import)})")
    ratios = sorted(i / b for i, b in zip(t_import, t_base))
    print(f"  time ratio ferry / peer: {first / base:.2f}x, per round {ratios[0]:.2f}-{ratios[-1]:.2f}x "
          f"(issue #19 goal 3: <= 0.5x)")
    print(f"peak RSS of ferry import            : {rss / MiB:7.1f} MiB (goal <= 256 MiB)")
    print(f"re-import of the same bundle        : {t_again:7.2f} s   ratio {t_again / first:.2f}x of the first "
          f"(goal <= 0.15x)   (all: {', '.join(f'{t:.2f}' for t in t_agains)})")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (the machine is shared)")


if __name__ == "__main__":
    main()
