"""Peak RSS of ``ferry export`` and ``ferry import`` on legal but extreme safetensors files
(issue 11, item 6; issue 19, goal 2).

Each shape is one safetensors file in a model folder, exported by the real CLI in a child
process and the bundle then imported into a fresh edge state; each child's peak resident set
(``wait4`` rusage, ``ru_maxrss``) is printed beside the bound: the memory budget
(``--memory-budget``, default 256 MiB, ``manifests.budget``), passed to both commands. Not a
timed test: it prints figures. ``taskset -c 0-1 python bench/rss_bench.py`` shows the peak does
not depend on the core count (the pool is sized from the budget and the usable cores).

Shapes (``--shapes``, default all):
  tiny-600k    600,000 one-element F16 tensors (a 46 MB header)
  tiny-1250k   1,250,000 one-element F16 tensors (a 97 MB header, near the format's 100 MB cap)
  wide-64k     65,536 tensors of 16 KiB (at the cut-hint cap; its 5 MB header is over the default
               budget's header share, so content cuts)
  big-1g       one 1 GiB tensor (random bytes)

Usage: python bench/rss_bench.py [--shapes tiny-600k,big-1g] [--memory-budget MiB] [--dir /tmp/ferry-rss] [--keep]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

MiB = 1 << 20
BOUND = 256 * MiB


def write_safetensors(path: Path, count: int, size: int, *, random: bool = False) -> int:
    """``count`` tensors of ``size`` bytes each; the header is written as text, never as a
    dict in this process. Returns the header length."""
    parts = ['{"__metadata__":{"format":"pt"}']
    for i in range(count):
        parts.append(f',"t.{i}":{{"dtype":"F16","shape":[{size // 2}],"data_offsets":[{i * size},{(i + 1) * size}]}}')
    parts.append("}")
    raw = "".join(parts).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        del raw, parts
        left = count * size
        while left:
            step = min(left, 8 * MiB)
            f.write(os.urandom(step) if random else b"\x3c" * step)
            left -= step
    return path.stat().st_size


SHAPES = {
    "tiny-600k": (600_000, 2, False),
    "tiny-1250k": (1_250_000, 2, False),
    "wide-64k": (65_536, 16 * 1024, True),
    "big-1g": (1, 1024 * MiB, True),
}


def run_rss(args: list[object]) -> tuple[int, int]:
    """(peak RSS bytes, exit status) of one ferry command run in a child process."""
    proc = subprocess.Popen([sys.executable, "-m", "ferry", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode:
        print(err, file=sys.stderr)
    return usage.ru_maxrss * 1024, proc.returncode


def run_export(root: Path, name: str, budget: int) -> tuple[int, int, int, int]:
    """(peak RSS bytes, exit status) of one ``ferry export``, then of ``ferry import`` of it."""
    spec = root / f"{name}.yaml"
    spec.write_text("apiVersion: ferry/v1\nkind: Bundle\nmetadata: {name: rss}\n"
                    f"spec:\n  models:\n    - name: {name}\n      version: \"1.0.0\"\n      path: {root / name}\n")
    keys = root / "keys"
    if not (keys / "hub.key").exists():
        subprocess.run([sys.executable, "-m", "ferry", "keys", "generate", "hub", "--out", keys], check=True,
                       capture_output=True)
    out = root / f"{name}-out"
    shutil.rmtree(out, ignore_errors=True)
    limit = ["--memory-budget", f"{budget // MiB}MiB"]
    rss, code = run_rss(["export", spec, "--out", out, "--key", keys / "hub.key", "--state", root / "hub", *limit])
    edge = root / f"{name}-edge"
    shutil.rmtree(edge, ignore_errors=True)
    irss, icode = run_rss(["import", out, "--trust", keys / "hub.pub", "--state", edge, *limit]) if code == 0 else (0, -1)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(edge, ignore_errors=True)
    return rss, code, irss, icode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--memory-budget", type=int, default=BOUND // MiB, help="MiB, given to export and import")
    args = ap.parse_args()
    bound = args.memory_budget * MiB
    root = args.dir or Path(tempfile.mkdtemp(prefix="ferry-rss-"))
    root.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for name in args.shapes.split(","):
            count, size, random = SHAPES[name]
            folder = root / name
            folder.mkdir(exist_ok=True)
            # Written in a child process: Linux carries a process's peak RSS across fork and
            # exec, so this process must stay small for the export's figure to be its own.
            writer = multiprocessing.get_context("fork").Process(
                target=write_safetensors, args=(folder / "model.safetensors", count, size), kwargs={"random": random})
            writer.start()
            writer.join()
            total = (folder / "model.safetensors").stat().st_size
            rss, code, irss, icode = run_export(root, name, bound)
            results.append({"shape": name, "tensors": count, "fileBytes": total, "peakRssMiB": round(rss / MiB, 1),
                            "importPeakRssMiB": round(irss / MiB, 1), "boundMiB": bound // MiB,
                            "withinBound": max(rss, irss) <= bound, "exit": code, "importExit": icode})
            print(f"{name:12} {count:>9,} tensors {total / MiB:8.1f} MiB file  peak RSS export {rss / MiB:6.1f} MiB, "
                  f"import {irss / MiB:6.1f} MiB (bound {bound // MiB} MiB)"
                  f"{'' if code == 0 else f'  export exit {code}'}{'' if icode == 0 else f'  import exit {icode}'}",
                  flush=True)
            shutil.rmtree(folder)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
