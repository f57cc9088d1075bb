"""zstd level against data kind: why ferry compresses tensor data at level 1 and the rest at 3.

For each kind of data, cut into 4 MiB chunks as an export does, prints the stored size (a
share of raw) and the single-core rate (MB of raw per CPU second) at levels 1, 2 and 3 with
ferry's compressor (``manifests.chunks.compressor``). Weights: fp16, bf16 and fp32 values from
N(0, 0.02) (the LLM-shaped model of the other benchmarks is fp16); text and binaries: tars of
this Python's standard library and of /usr/bin (an uncompressed image layer), and of
/usr/share/doc (mostly gzip files); a gzip layer. Figures in bench/README.md, Goal 3.

Usage: python bench/level_bench.py [--mib 64]
"""

from __future__ import annotations

import argparse
import gzip
import io
import sysconfig
import tarfile
import time

import numpy as np

from manifests.chunks import compressor

MiB = 1 << 20


def tar_of(folder: str, most: int) -> bytes:
    """An uncompressed tar of ``folder``'s files, cut at ``most`` bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        try:
            tar.add(folder, recursive=True)
        except OSError:
            pass
    return buf.getvalue()[:most]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=64, help="MiB of each kind of data (the tars: at most that)")
    n = ap.parse_args().mib * MiB
    rng = np.random.default_rng(1)
    f32 = rng.normal(0, 0.02, n // 4).astype(np.float32)
    data = {
        "fp16 N(0, 0.02)": rng.normal(0, 0.02, n // 2).astype(np.float16).tobytes(),
        "bf16 N(0, 0.02)": np.concatenate([f32, rng.normal(0, 0.02, n // 4).astype(np.float32)])
        .view(np.uint32).__rshift__(16).astype(np.uint16).tobytes(),
        "fp32 N(0, 0.02)": f32.tobytes(),
        "tar of the Python standard library": tar_of(sysconfig.get_paths()["stdlib"], 2 * n),
        "tar of /usr/bin": tar_of("/usr/bin", 2 * n),
        "tar of /usr/share/doc": tar_of("/usr/share/doc", 2 * n),
    }
    data["gzip layer"] = gzip.compress(data["tar of /usr/bin"][:n // 2], 6)
    for name, raw in data.items():
        chunks = [memoryview(raw)[i:i + 4 * MiB] for i in range(0, len(raw), 4 * MiB)]
        row = []
        for level in (1, 2, 3):
            cctx, best = compressor(level), float("inf")
            for _ in range(2):
                start = time.thread_time()
                size = sum(len(cctx.compress(c)) for c in chunks)
                best = min(best, time.thread_time() - start)
            row.append(f"level {level}: {size / len(raw):.4f} {len(raw) / best / 1e6:6.0f} MB/s")
        print(f"{name:36s} {len(raw) / MiB:5.0f} MiB   " + "   ".join(row), flush=True)


if __name__ == "__main__":
    main()
