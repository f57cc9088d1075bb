"""Publishing benchmark (issue #14): what publishing a model into EDGE/oci adds to its import.

Exports one model (the export bench's fp16 safetensors, random bytes) once, then imports it
into a fresh EDGE state ``--rounds`` times each way, alternating which goes first: ``ferry
import`` as shipped (the model is published as a ModelPack artifact and a modelcar image into
``EDGE/oci``), and the same import with publishing switched off (``ModelTarget.publish``
replaced by a no-op in the child process, and staging not asked for the sha256s publishing
uses). Each run is timed with a ``sync`` after it (so that the data written counts), and its
CPU seconds (user + system, the import process and its threads) are kept. After each run
with publishing, the bytes it wrote are counted as the data extents of ``EDGE/oci`` that are
neither hard links of the model store's files nor shared with them by reflink (FIEMAP; a
``statvfs`` difference would count what others write to a shared disk). Prints the median
and spread of each, the time added by publishing (goal: at most 10%) and those bytes (goal:
no model bytes where hard links work).

Put ``--edge`` on the file system to measure: on XFS or btrfs the modelcar's data is
reflinked from the model store, elsewhere (ext4) it is copied (``copy_file_range``). On a
machine without one, a loop-mounted XFS image does (as root, with xfsprogs):
``truncate -s 4G /tmp/x.img && mkfs.xfs -m reflink=1 /tmp/x.img && mount -o loop /tmp/x.img /mnt``.

Usage: python bench/publish_bench.py [--mib 1024] [--rounds 5] [--dir /tmp/ferry-publish-bench] [--edge DIR]
"""

from __future__ import annotations

import argparse
import fcntl
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MiB = 1 << 20

#: The import, in a child process, with publishing switched off (the model is installed as
#: usual): no publishing step, and staging computes no sha256 for it.
NO_PUBLISH = ("import sys, importer.apply.models as m; "
              "m.ModelTarget.publish = lambda self, artifact, job, digests=None: (None, ''); "
              "stage = m.stage_model; "
              "m.stage_model = lambda *a, digests=None, **k: stage(*a, **k); "
              "from ferry.cli import main; sys.argv[0] = 'ferry'; main()")


#: FS_IOC_FIEMAP (linux/fs.h) and its flags (linux/fiemap.h).
FS_IOC_FIEMAP, FIEMAP_FLAG_SYNC, FIEMAP_EXTENT_SHARED, FIEMAP_EXTENT_LAST = 0xC020660B, 1, 0x2000, 1
_EXTENTS = 256


def own_bytes(path: Path) -> int:
    """Bytes of ``path``'s data extents that no other file shares (FIEMAP: an extent flagged
    SHARED is a reflink's); holes count nothing."""
    total, start = 0, 0
    with open(path, "rb") as f:
        while True:
            req = struct.pack("QQIIII", start, (1 << 64) - 1 - start, FIEMAP_FLAG_SYNC, 0, _EXTENTS, 0)
            buf = bytearray(req + bytes(56 * _EXTENTS))
            fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf)
            count = struct.unpack_from("I", buf, 20)[0]
            last = False
            for i in range(count):
                logical, _, length = struct.unpack_from("QQQ", buf, 32 + 56 * i)
                flags = struct.unpack_from("I", buf, 32 + 56 * i + 40)[0]
                if not flags & FIEMAP_EXTENT_SHARED:
                    total += length
                start, last = logical + length, bool(flags & FIEMAP_EXTENT_LAST)
            if count < _EXTENTS or last:
                return total


def published_bytes(edge: Path) -> int:
    """Data bytes that publishing put in ``EDGE/oci`` beside the model store: files that are
    hard links of the store's count nothing, reflinked extents nothing, the rest in full."""
    store = {(st.st_dev, st.st_ino) for p in (edge / "models").rglob("*") if p.is_file() and (st := p.stat())}
    seen, total = set(), 0
    for p in (edge / "oci").rglob("*"):
        st = p.lstat()
        if p.is_file() and (st.st_dev, st.st_ino) not in store and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += own_bytes(p)
    return total


def timed(cmd: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(cmd, check=True)
    return time.monotonic() - start


def fs_type(path: Path) -> str:
    done = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ferry-publish-bench"), help="model and bundle")
    ap.add_argument("--edge", type=Path, default=None, help="where the EDGE states go (default: under --dir)")
    a = ap.parse_args()
    import export_bench as eb  # the model generator and timing helpers (bench/ is sys.path[0])

    eb.CPU.update({"with": [], "without": []})

    work = a.dir
    edge_root = a.edge or work / "edges"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    edge_root.mkdir(parents=True, exist_ok=True)
    edge = edge_root / "ferry-publish-bench-edge"
    try:
        eb.make_model(work / "v1", eb.model_layout(a.mib * MiB))
        model_bytes = eb.du(work / "v1")
        subprocess.run(eb.ferry("keys", "generate", "hub", "--out", work / "keys"), check=True, capture_output=True)
        s1 = eb.spec(work / "v1.yaml", work / "v1", "1.0.0")
        subprocess.run(eb.ferry("export", s1, "--out", work / "bundle", "--key", work / "keys" / "hub.key",
                                "--state", work / "hub"), check=True, stdout=subprocess.DEVNULL)
        args = ["import", work / "bundle", "--trust", work / "keys" / "hub.pub", "--state", edge]
        commands = {"with": eb.ferry(*args), "without": [sys.executable, "-c", NO_PUBLISH, *map(str, args)]}
        times: dict[str, list[float]] = {"with": [], "without": []}
        space: list[int] = []
        fs = fs_type(edge_root)
        for r in range(a.rounds):
            for what in (("with", "without") if r % 2 == 0 else ("without", "with")):
                shutil.rmtree(edge, ignore_errors=True)
                subprocess.run(["sync"], check=True)
                t, _, rc = eb.run(commands[what], cpu=what, stdout=subprocess.DEVNULL)
                t += timed(["sync"])
                assert rc == 0, f"ferry import ({what} publishing) failed"
                times[what].append(t)
                if what == "with":
                    assert any((edge / "oci" / "blobs" / "sha256").iterdir()), "nothing was published"
                    space.append(published_bytes(edge))
                else:
                    assert not (edge / "oci").exists(), "publishing was not switched off"
    finally:
        shutil.rmtree(edge, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    def spread(xs: list[float]) -> str:
        return f"median {statistics.median(xs):6.2f} s, spread {min(xs):.2f}-{max(xs):.2f} s"

    w, wo = statistics.median(times["with"]), statistics.median(times["without"])
    added = max(space)
    print(f"{a.mib} MiB model ({model_bytes / MiB:.1f} MiB of files), EDGE on {fs}, "
          f"{a.rounds} rounds alternating, each run + sync")
    print(f"ferry import, publishing   : {spread(times['with'])}   ({', '.join(f'{t:.2f}' for t in times['with'])})")
    print(f"ferry import, no publishing: {spread(times['without'])}   "
          f"({', '.join(f'{t:.2f}' for t in times['without'])})")
    print(f"  publishing adds {w - wo:+.2f} s = {100 * (w - wo) / wo:+.1f}% of the import (goal <= +10%)")
    cw, cwo = statistics.median(eb.CPU["with"]), statistics.median(eb.CPU["without"])
    print(f"  CPU seconds (user+sys, median): {cw:.2f} with, {cwo:.2f} without publishing: {cw - cwo:+.2f} s "
          f"({100 * (cw - cwo) / cwo:+.1f}%)")
    print(f"  data publishing wrote beside the model (FIEMAP, not shared): {added / MiB:.2f} MiB "
          f"({100 * added / model_bytes:.2f}% of the model; goal: no model bytes where hard links work)")


if __name__ == "__main__":
    main()
